"""End-to-end check of the Grafana dashboards against a real Prometheus.

Every panel target's PromQL `expr` in dashboards/overview.json and
dashboards/job.json is run, with its template variables substituted, against
the Prometheus that scrapes `huaweicloud-job-exporter demo` (fixtures `demo`
and `prometheus` in conftest.py), and must return data. The template variables'
own `label_values(...)` queries are checked the same way.

Substitutions: the filter variables ($cloud_service, $cloud_region,
$project_id, $job_type, $job, $instance) become `.*` (Grafana's "All"),
$__rate_interval becomes 1m, $window 5m, and $job_id a job id read from the
exporter's metrics. Discovery panels are skipped while no discovery series exists at all
(DISCOVERY_METRICS). Prometheus loads deploy/prometheus/alerts.yml, so ALERTS and the recording
rules exist. In the drill-down dashboard some panels only apply to some
jobs (Failure to a failed job, Ended to a finished one, Sub-jobs to a job with
sub-jobs): each of its targets must return data for at least one demo job.
"""

import json
import math
import pathlib
import re
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
DASHBOARDS = {name: ROOT / "dashboards" / f"{name}.json" for name in ("overview", "job")}

FILTER_VARS = ("cloud_service", "cloud_region", "project_id", "job_type", "job", "instance")
FIXED_VARS = {"__rate_interval": "1m", "__interval": "15s", "__range": "5m", "window": "5m", "datasource": ""}

# How long a query may stay empty after the exporter came up: rate() needs two
# scrapes (every 1s), the demo's first refresh a moment.
WAIT_SECONDS = 60
# Range queries look back this far.
RANGE_SECONDS = 60

# Panels whose series only exist once something happened that the demo does not
# (yet) do: they must return data if the series exist, and are reported as
# xfail, with the reason, if not.
NEEDS_EVENT = {}  # the demo injects throttling, 5xx and timeouts and has an IAM account
NEEDS_EVENT_WAIT_SECONDS = 5

# Discovery panels read the discovery self-metrics. A build without discovery, or a demo with no
# discovery target, exports none of them: those panels are skipped then, and must return data as
# soon as any of these series exists.
DISCOVERY_METRICS = "huaweicloud_job_exporter_discover"


def _load(name):
    return json.loads(DASHBOARDS[name].read_text(encoding="utf-8"))


def _targets(name):
    """(panel title, panel type, target) for every query target of a dashboard."""
    out = []
    for panel in _load(name)["panels"]:
        for target in panel.get("targets", []):
            out.append((panel["title"], panel["type"], target))
    return out


def substitute(expr, job_id=None):
    """Replace Grafana template variables ($name, ${name}, ${name:fmt}) in expr."""

    def repl(m):
        name = m.group(1) or m.group(2)
        if name in FILTER_VARS:
            return ".*"
        if name in FIXED_VARS:
            return FIXED_VARS[name]
        if name == "job_id":
            assert job_id is not None, f"no job_id to substitute in {expr!r}"
            return job_id
        raise AssertionError(f"unknown template variable ${name} in {expr!r}")

    out = re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)", repl, expr)
    assert "$" not in out, out
    return out


def for_test(expr):
    """The expression as tested: `X or vector(0)` (a stat's 0 when nothing
    matches) is tested as X, so that the real series must exist."""
    return re.sub(r"\s+or\s+vector\(0\)\s*$", "", expr)


def has_data(result):
    """A Prometheus result list with at least one sample that is a number."""
    for series in result:
        values = series.get("values") or ([series["value"]] if "value" in series else [])
        for _, v in values:
            if not math.isnan(float(v)):
                return True
    return False


def _ids(name):
    return [f"{name}:{title}:{t['refId']}" for title, _, t in _targets(name)]


@pytest.fixture(scope="module")
def warm(demo, prometheus):
    """Prometheus has scraped the demo a few times and every job metric exists."""
    prometheus.wait_for("huaweicloud_job_status", timeout=WAIT_SECONDS)
    prometheus.wait_for("huaweicloud_job_exporter_build_info", timeout=WAIT_SECONDS)
    # rate()/increase() need at least two samples in their window.
    prometheus.wait_for("count_over_time(huaweicloud_job_exporter_build_info[1m]) >= 3", timeout=WAIT_SECONDS)
    return prometheus


def wait_for_data(prometheus, expr, timeout=WAIT_SECONDS):
    """Poll an instant query until it returns a sample that is a number."""
    deadline = time.monotonic() + timeout
    result = []
    while True:
        result = prometheus.query(expr)
        if has_data(result) or time.monotonic() >= deadline:
            return result
        time.sleep(1)


def test_dashboards_have_targets():
    for name in DASHBOARDS:
        targets = _targets(name)
        assert targets, f"{name}.json has no panel targets"
        for title, _, t in targets:
            assert t.get("expr", "").strip(), f"{name}.json panel {title!r} target {t['refId']} has no expr"


@pytest.mark.parametrize("title,ptype,target", _targets("overview"), ids=_ids("overview"))
def test_overview_target_returns_data(warm, title, ptype, target):
    expr = for_test(substitute(target["expr"]))
    if DISCOVERY_METRICS in expr and not warm.query(f'count({{__name__=~"{DISCOVERY_METRICS}.*"}})'):
        pytest.skip("no discovery series in this Prometheus: this build or the demo has no discovery target")
    needs_event = NEEDS_EVENT.get(("overview", title))
    result = wait_for_data(warm, expr, timeout=NEEDS_EVENT_WAIT_SECONDS if needs_event else WAIT_SECONDS)
    if needs_event and not has_data(result):
        pytest.xfail(f"no data yet: {needs_event}")
    assert has_data(result), f"overview panel {title!r} ({target['refId']}) returned no data:\n{expr}\n-> {result!r}"
    if target.get("range", not target.get("instant", False)):
        series = warm.query_range(expr, RANGE_SECONDS)
        assert has_data(series), f"overview panel {title!r} ({target['refId']}): range query returned no data:\n{expr}"


@pytest.fixture(scope="module")
def job_ids(warm):
    """Demo job ids, richest first (sub-jobs, entities, finished, failed)."""
    rank = {}
    for expr, weight in (
        ("group by (job_id) (huaweicloud_job_status)", 0),
        ("group by (job_id) (huaweicloud_job_subjob_status)", 8),
        ("group by (job_id) (huaweicloud_job_entity_info)", 4),
        ("group by (job_id) (huaweicloud_job_end_timestamp_seconds)", 2),
        ("group by (job_id) (huaweicloud_job_failure_info)", 1),
    ):
        for series in warm.query(expr):
            jid = series["metric"]["job_id"]
            rank[jid] = rank.get(jid, 0) + weight
    assert rank, "the demo exports no job"
    return sorted(rank, key=lambda j: (-rank[j], j))


@pytest.mark.parametrize("title,ptype,target", _targets("job"), ids=_ids("job"))
def test_job_target_returns_data(warm, job_ids, title, ptype, target):
    deadline = time.monotonic() + WAIT_SECONDS
    tried = []
    while True:
        for jid in job_ids:
            expr = for_test(substitute(target["expr"], job_id=jid))
            result = warm.query(expr)
            if has_data(result):
                if target.get("range", not target.get("instant", False)):
                    series = warm.query_range(expr, RANGE_SECONDS)
                    assert has_data(series), f"job panel {title!r} ({target['refId']}): range query returned no data:\n{expr}"
                return
            tried.append(jid)
        if time.monotonic() >= deadline:
            break
        time.sleep(2)
    pytest.fail(
        f"job panel {title!r} ({target['refId']}) returned no data for any of {len(set(tried))} demo jobs:\n"
        f"{substitute(target['expr'], job_id='<job_id>')}"
    )


def _variables():
    out = []
    for name in DASHBOARDS:
        for var in _load(name)["templating"]["list"]:
            if var["type"] == "query":
                q = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
                out.append((name, var["name"], q))
    return out


@pytest.mark.parametrize("dashboard,var,query", _variables(), ids=[f"{d}:{v}" for d, v, _ in _variables()])
def test_variable_query_returns_values(warm, dashboard, var, query):
    m = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", query.strip(), re.S)
    assert m, f"{dashboard}.json variable {var}: not a label_values(metric, label) query: {query}"
    selector, label = m.group(1), m.group(2)
    expr = f"group by ({label}) ({substitute(selector)})"
    result = wait_for_data(warm, expr)
    values = sorted({s["metric"].get(label, "") for s in result} - {""})
    assert values, f"{dashboard}.json variable {var} has no values: {expr}"
