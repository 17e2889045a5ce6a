"""The whole alerting path, end to end: the simulator serves a failed job and a job stuck in INIT,
the exporter polls it, a real Prometheus scrapes the exporter with the README's scrape config and
evaluates deploy/prometheus/alerts.yml, Debian's Alertmanager runs the shipped example
configuration (deploy/alertmanager/alertmanager.yml), and its notifications reach a webhook server
in this test.

What the test changes, and nothing else:
  * README's prometheus.yml: the target address (the README's `exporter-host:10037` does not
    resolve here); a `global:` block with 1 s intervals, `rule_files:` and `alerting:` are added
    around it;
  * alerts.yml: every `for:` becomes 1s (expressions and `keep_firing_for` as shipped);
  * alertmanager.yml: the receivers' webhook URLs and the route's group_wait/group_interval.
"""
import copy
import json
import re
import shutil
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
import yaml

from conftest import ROOT, Process, free_port, wait_http

AK = "DEMOACCESSKEY0000001"
SK = "demo-secret-key-for-the-simulator-only"
PROJECT = "0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e"
FOREVER = 1e12
RUNBOOK = "https://github.com/huaweicloud-job-exporter/huaweicloud-job-exporter/blob/main/docs/runbook.md"

SCENARIO = [
    {"job_id": "evs-fail", "project_id": PROJECT, "service": "evs", "job_type": "extendVolume",
     "start_secs": -500, "init_secs": 0, "run_secs": 60,
     "outcome": {"result": "fail", "error_code": "EVS.2024", "fail_reason": "quota exceeded"},
     "entities": {"volume_id": "vol-9"}, "sub_jobs": []},
    # Began two hours ago and never left INIT: over createVolume's default 1 h threshold.
    {"job_id": "evs-init", "project_id": PROJECT, "service": "evs", "job_type": "createVolume",
     "start_secs": -7200, "init_secs": FOREVER, "run_secs": 1,
     "outcome": {"result": "success"}, "entities": {}, "sub_jobs": []},
    {"job_id": "evs-ok", "project_id": PROJECT, "service": "evs", "job_type": "createVolume",
     "start_secs": -300, "init_secs": 0, "run_secs": 30,
     "outcome": {"result": "success"}, "entities": {}, "sub_jobs": []},
]


def readme_prometheus_yml():
    """The `# prometheus.yml` block of README.md, as written there."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```yaml\n(# prometheus\.yml\n.*?)```", text, re.S)
    assert len(blocks) == 1, f"README.md has {len(blocks)} `# prometheus.yml` blocks"
    return blocks[0]


def test_readme_prometheus_yml_is_valid_as_written(tmp_path):
    """promtool accepts the README's prometheus.yml without any change."""
    cfg = tmp_path / "prometheus.yml"
    cfg.write_text(readme_prometheus_yml())
    out = subprocess.run(["promtool", "check", "config", str(cfg)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


class Webhook:
    """An HTTP server that records Alertmanager's webhook notifications."""

    def __init__(self):
        self.notifications = []
        self.lock = threading.Lock()
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with hook.lock:
                    hook.notifications.append(json.loads(body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def firing(self, alertname):
        """(notification index, alert) for every firing alert named alertname received so far."""
        with self.lock:
            return [(i, a) for i, n in enumerate(self.notifications) for a in n["alerts"]
                    if a["status"] == "firing" and a["labels"]["alertname"] == alertname]

    def wait_firing(self, alertname, job_id=None, timeout=60):
        """The first firing alertname (for job_id, if given) notified, and its notification."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            hits = [(i, a) for i, a in self.firing(alertname) if job_id is None or a["labels"].get("job_id") == job_id]
            if hits:
                with self.lock:
                    return hits[0][1], self.notifications[hits[0][0]]
            time.sleep(0.2)
        raise AssertionError(f"no {alertname} notification for {job_id} in {timeout}s: {self.notifications}")

    def resolved(self):
        with self.lock:
            return [a for n in self.notifications for a in n["alerts"] if a["status"] == "resolved"]

    def stop(self):
        self.server.shutdown()


def exporter_config(sim_url):
    return (f"mode: cached\nrefresh_interval: 1s\n"
            f"accounts:\n  - name: demo\n    access_key: {AK}\n    secret_key: {SK}\n"
            f"targets:\n  - account: demo\n    cloud_service: evs\n    cloud_region: cn-north-4\n"
            f"    project_id: {PROJECT}\n    endpoint: {sim_url}/evs\n"
            f"    jobs: {[j['job_id'] for j in SCENARIO]}\n")


def start_exporter(exporter_bin, cfg, port):
    p = Process([exporter_bin, f"--config.file={cfg}", f"--web.listen-address=127.0.0.1:{port}"], "exporter")
    try:
        wait_http(f"http://127.0.0.1:{port}/-/ready")
    except AssertionError:
        p.stop()
        raise AssertionError(p.output())
    return p


def shortened_rules(path):
    rules = yaml.safe_load((ROOT / "deploy/prometheus/alerts.yml").read_text(encoding="utf-8"))
    for group in rules["groups"]:
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = "1s"
    path.write_text(yaml.safe_dump(rules, sort_keys=False))


def alertmanager_config(path, webhook_url):
    am = yaml.safe_load((ROOT / "deploy/alertmanager/alertmanager.yml").read_text(encoding="utf-8"))
    for receiver in am["receivers"]:
        for hook in receiver["webhook_configs"]:
            hook["url"] = webhook_url
    am["route"]["group_wait"] = "1s"
    am["route"]["group_interval"] = "1s"
    path.write_text(yaml.safe_dump(am, sort_keys=False))


def prometheus_config(path, exporter_addr, rules_path, am_addr):
    readme = yaml.safe_load(readme_prometheus_yml())
    scrape = copy.deepcopy(readme["scrape_configs"])
    assert [t for sc in scrape for c in sc["static_configs"] for t in c["targets"]] == ["exporter-host:10037"]
    scrape[0]["static_configs"][0]["targets"] = [exporter_addr]
    cfg = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(rules_path)],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [am_addr]}]}]},
        "scrape_configs": scrape,
    }
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return readme["scrape_configs"][0]["job_name"]


@pytest.fixture
def stack(exporter_bin, start_simulator, tmp_path):
    am_bin = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
    assert am_bin, "Alertmanager is not installed (scripts/test installs Debian's prometheus-alertmanager)"
    webhook = Webhook()
    sim = start_simulator(scenario=SCENARIO)

    exp_port = free_port()
    exp_cfg = tmp_path / "exporter.yml"
    exp_cfg.write_text(exporter_config(sim.url))
    exporter = {"proc": start_exporter(exporter_bin, exp_cfg, exp_port)}

    am_port = free_port()
    am_cfg = tmp_path / "alertmanager.yml"
    alertmanager_config(am_cfg, webhook.url)
    am = Process([am_bin, f"--config.file={am_cfg}", f"--storage.path={tmp_path / 'am'}",
                  f"--web.listen-address=127.0.0.1:{am_port}", "--cluster.listen-address="], "alertmanager")
    wait_http(f"http://127.0.0.1:{am_port}/-/ready", timeout=30)

    rules = tmp_path / "alerts.yml"
    shortened_rules(rules)
    prom_cfg = tmp_path / "prometheus.yml"
    job_name = prometheus_config(prom_cfg, f"127.0.0.1:{exp_port}", rules, f"127.0.0.1:{am_port}")
    prom_port = free_port()
    prom = Process([shutil.which("prometheus"), f"--config.file={prom_cfg}",
                    f"--storage.tsdb.path={tmp_path / 'prom'}", f"--web.listen-address=127.0.0.1:{prom_port}"],
                   "prometheus")
    wait_http(f"http://127.0.0.1:{prom_port}/-/ready", timeout=60)

    def stop_exporter():
        exporter["proc"].stop()
        # Prometheus must see the exporter down (a failed scrape marks every series stale)
        # before it comes back, or the restart would test nothing.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            r = requests.get(f"http://127.0.0.1:{prom_port}/api/v1/query",
                             params={"query": f'up{{instance="127.0.0.1:{exp_port}"}} == 0'}, timeout=5).json()
            if r["data"]["result"]:
                break
            time.sleep(0.2)
        else:
            raise AssertionError("Prometheus never saw the stopped exporter down")

    def restart_exporter():
        stop_exporter()
        exporter["proc"] = start_exporter(exporter_bin, exp_cfg, exp_port)

    yield {"webhook": webhook, "job_name": job_name, "instance": f"127.0.0.1:{exp_port}",
           "restart_exporter": restart_exporter, "stop_exporter": stop_exporter, "prometheus": f"http://127.0.0.1:{prom_port}"}
    for p in (prom, am):
        p.stop()
    exporter["proc"].stop()
    webhook.stop()


def test_failed_and_stuck_jobs_page_once_through_alertmanager(stack):
    hook = stack["webhook"]
    failed, _ = hook.wait_firing("HuaweiCloudJobFailed", "evs-fail")
    labels, ann = failed["labels"], failed["annotations"]
    assert labels == {
        "alertname": "HuaweiCloudJobFailed", "severity": "warning",
        # The README's job name: the rules do not depend on it.
        "job": stack["job_name"], "instance": stack["instance"],
        "cloud_service": "evs", "cloud_region": "cn-north-4", "project_id": PROJECT,
        "job_id": "evs-fail", "job_type": "extendVolume", "status": "FAIL",
        "error_code": "EVS.2024", "fail_reason": "quota exceeded",
    }
    assert ann["summary"] == "Huawei Cloud evs job extendVolume failed (EVS.2024)"
    assert ann["entities"] == "volume_id=vol-9"
    assert ann["failed_subjobs"] == ""
    assert ann["runbook_url"] == RUNBOOK + "#huaweicloudjobfailed"

    stuck, _ = hook.wait_firing("HuaweiCloudJobStuck", "evs-init")
    assert stuck["labels"]["status"] == "INIT"
    assert stuck["labels"]["job_type"] == "createVolume"
    assert stuck["annotations"]["summary"].startswith("Huawei Cloud evs job createVolume stuck in INIT for 2h")
    assert stuck["annotations"]["runbook_url"] == RUNBOOK + "#huaweicloudjobstuck"
    # The job that succeeded pages nothing.
    assert not [a for n in hook.notifications for a in n["alerts"] if a["labels"].get("job_id") == "evs-ok"]

    # Restart the exporter: Prometheus sees it down (every series goes stale), then back.
    before = {name: len(hook.firing(name)) for name in ("HuaweiCloudJobFailed", "HuaweiCloudJobStuck")}
    stack["restart_exporter"]()
    prom = stack["prometheus"]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        r = requests.get(prom + "/api/v1/query", params={
            "query": 'huaweicloud_job_status{job_id="evs-fail",status="FAIL"} == 1'}, timeout=5).json()
        if r["data"]["result"]:
            break
        time.sleep(0.2)
    else:
        raise AssertionError("the restarted exporter's failed job never reached Prometheus")
    # Long enough for several rule evaluations (1s) and group intervals (1s): a resolved alert
    # or a new one would have been notified by now.
    time.sleep(8)
    after = {name: len(hook.firing(name)) for name in before}
    summary = [(n["status"], [(a["labels"]["alertname"], a["labels"].get("job_id"), a["status"]) for a in n["alerts"]])
               for n in hook.notifications]
    assert after == before, f"paged again after the restart: {summary}"
    assert not hook.resolved(), f"alerts resolved across the restart: {hook.resolved()}"
    # Both alerts are still firing in Prometheus.
    r = requests.get(prom + "/api/v1/query", params={"query": 'ALERTS{alertstate="firing"}'}, timeout=5).json()
    firing = {(s["metric"]["alertname"], s["metric"].get("job_id")) for s in r["data"]["result"]}
    assert {("HuaweiCloudJobFailed", "evs-fail"), ("HuaweiCloudJobStuck", "evs-init")} <= firing


def test_exporter_down_pages_as_critical_and_the_job_alerts_hold(stack):
    """The exporter goes away for good: HuaweiCloudJobExporterDown pages (the README's job name,
    the critical receiver), and the per-job alerts neither resolve nor page again."""
    hook = stack["webhook"]
    hook.wait_firing("HuaweiCloudJobFailed", "evs-fail")
    hook.wait_firing("HuaweiCloudJobStuck", "evs-init")
    before = {name: len(hook.firing(name)) for name in ("HuaweiCloudJobFailed", "HuaweiCloudJobStuck")}
    stack["stop_exporter"]()
    down, notification = hook.wait_firing("HuaweiCloudJobExporterDown")
    assert notification["receiver"] == "huaweicloud-jobs-critical"
    assert down["labels"] == {"alertname": "HuaweiCloudJobExporterDown", "severity": "critical",
                              "job": stack["job_name"], "instance": stack["instance"]}
    assert down["annotations"]["runbook_url"] == RUNBOOK + "#huaweicloudjobexporterdown"
    # Several rule evaluations and group intervals (1s each) with every job series stale.
    time.sleep(6)
    assert not hook.resolved(), f"alerts resolved while the exporter is down: {hook.resolved()}"
    assert {name: len(hook.firing(name)) for name in before} == before
