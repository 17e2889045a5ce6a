"""/metrics in both exposition formats: the text format passes `promtool check metrics`,
OpenMetrics 1.0.0 passes prometheus_client's OpenMetrics parser, both survive gzip, and a real
Prometheus 2.42 stores exactly the same series from either (one target scraped directly, which
negotiates OpenMetrics, and one through a proxy that asks for the text format only)."""
import gzip
import http.server
import subprocess
import threading
import time

import requests
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_om
from prometheus_client.parser import text_string_to_metric_families as parse_text

from test_end_to_end import SCENARIO, SK, config

# What Prometheus 2.42 sends.
PROMETHEUS_ACCEPT = ("application/openmetrics-text;version=1.0.0,application/openmetrics-text;"
                     "version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1")
OM_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8"
TEXT = "text/plain;version=0.0.4"


def series(families):
    return {(s.name, tuple(sorted(s.labels.items()))) for f in families for s in f.samples}


def get(url, accept, gz=False):
    headers = {"Accept": accept, "Accept-Encoding": "gzip" if gz else "identity"}
    r = requests.get(url + "/metrics", headers=headers, timeout=10, stream=True)
    raw = r.raw.read()
    assert r.status_code == 200
    if gz:
        assert r.headers.get("Content-Encoding") == "gzip"
        raw = gzip.decompress(raw)
    else:
        assert "Content-Encoding" not in r.headers
    return r.headers["Content-Type"], raw.decode()


def text_only_proxy(upstream):
    """An HTTP server on 127.0.0.1 that forwards GET /metrics asking for the text format only."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            r = requests.get(upstream + self.path, headers={"Accept": TEXT}, timeout=10)
            body = r.content
            self.send_response(r.status_code)
            self.send_header("Content-Type", r.headers["Content-Type"])
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_both_formats_parse_and_prometheus_stores_the_same_series(start_simulator, start_exporter,
                                                                  start_prometheus):
    sim = start_simulator(scenario=SCENARIO)
    exp = start_exporter(config(sim.url), env={"E2E_SK": SK})

    for gz in (False, True):
        ctype, om = get(exp.url, PROMETHEUS_ACCEPT, gz)
        assert ctype == OM_TYPE
        assert om.endswith("# EOF\n") and om.count("# EOF") == 1
        families = {f.name: f for f in parse_om(om)}
        assert families["huaweicloud_job_failures"].type == "counter"
        assert families["huaweicloud_job_failure"].type == "info"
        assert families["huaweicloud_job_exporter_build"].type == "info"
        assert families["huaweicloud_job_status"].type == "gauge"
        assert families["huaweicloud_job_completed_duration_seconds"].type == "histogram"
        assert "# TYPE huaweicloud_job_failures counter\n" in om
        assert "\nhuaweicloud_job_failures_total{" in om

        ctype, text = get(exp.url, TEXT, gz)
        assert ctype == "text/plain; version=0.0.4; charset=utf-8"
        assert "# EOF" not in text
        lint = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True,
                              text=True, timeout=60)
        assert lint.returncode == 0, lint.stdout + lint.stderr
        # The same series in both, up to what moved between the two requests.
        om_series, text_series = series(parse_om(om)), series(parse_text(text))
        assert {s for s in om_series if s[0].startswith("huaweicloud_job_")} - text_series == set()
    # No Accept header, or one naming neither format: text.
    assert requests.get(exp.url + "/metrics", timeout=10).headers["Content-Type"].startswith("text/plain")

    proxy = text_only_proxy(exp.url)
    try:
        direct = exp.url.removeprefix("http://")
        via_text = f"127.0.0.1:{proxy.server_address[1]}"
        prom = start_prometheus([direct, via_text])
        prom.wait_for('count(up{job="huaweicloud-job-exporter"} == 1) == 2')
        prom.wait_for("huaweicloud_job_failure_info")

        def stored(instance):
            result = prom.query(f'{{job="huaweicloud-job-exporter",instance="{instance}",'
                                f'__name__=~"huaweicloud_job_.+"}}')
            return {(r["metric"]["__name__"],
                     tuple(sorted((k, v) for k, v in r["metric"].items() if k not in ("instance", "__name__"))))
                    for r in result}

        deadline = time.time() + 30
        while True:
            a, b = stored(direct), stored(via_text)
            if a == b and a or time.time() > deadline:
                break
            time.sleep(1)
        assert a == b, (sorted(a - b)[:10], sorted(b - a)[:10])
        names = {n for n, _ in a}
        for name in ("huaweicloud_job_failure_info", "huaweicloud_job_failures_total",
                     "huaweicloud_job_exporter_build_info", "huaweicloud_job_status",
                     "huaweicloud_job_completed_duration_seconds_bucket"):
            assert name in names, name
        # Prometheus recorded the OpenMetrics types for the direct target.
        meta = prom.api("targets/metadata", match_target=f'{{instance="{direct}"}}')
        kinds = {m["metric"]: m["type"] for m in meta}
        assert kinds.get("huaweicloud_job_failures") == "counter", kinds
        assert kinds.get("huaweicloud_job_failure") == "info", kinds
    finally:
        proxy.shutdown()
