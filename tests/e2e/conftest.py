"""Shared fixtures of the end-to-end suite: the exporter binary, the simulator, the demo and a
real Prometheus (Debian's `prometheus` package) scraping them and evaluating
deploy/prometheus/alerts.yml. Everything listens on 127.0.0.1.
"""
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parents[2]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url, timeout=30, ok=(200,)):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        try:
            r = requests.get(url, timeout=2)
            if r.status_code in ok:
                return r
            last = r.status_code
        except requests.RequestException as e:
            last = e
        time.sleep(0.2)
    raise AssertionError(f"{url} not ready after {timeout}s: {last}")


# The folders of the processes' logs: removed when the session passes, kept for reading when
# it fails (each run otherwise left one folder per process in the temporary directory).
LOG_DIRS = []


@pytest.fixture(scope="session", autouse=True)
def _remove_logs_of_a_passing_session(request):
    yield
    if request.session.testsfailed == 0:
        for d in LOG_DIRS:
            shutil.rmtree(d, ignore_errors=True)


class Process:
    """A child process whose output goes to a log file, stopped with SIGTERM."""

    def __init__(self, args, name, **kw):
        log_dir = tempfile.mkdtemp(prefix=f"hwje-{name}-")
        LOG_DIRS.append(log_dir)
        self.log_path = Path(log_dir) / "out.log"
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT, **kw)

    def output(self):
        if not self.log.closed:
            self.log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout=10):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return self.proc.returncode


@pytest.fixture(scope="session")
def exporter_bin():
    path = Path(os.environ.get("HWJE_BIN", ROOT / "target" / "debug" / "huaweicloud-job-exporter"))
    assert path.exists(), f"{path} missing: run cargo build first"
    return str(path)


class Endpoint:
    def __init__(self, url, process):
        self.url = url
        self.process = process


@pytest.fixture(scope="session")
def demo(exporter_bin):
    port = free_port()
    p = Process([exporter_bin, "demo", "--web.listen-address", f"127.0.0.1:{port}",
                 "--demo.refresh-interval", "2s"], "demo")
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + "/-/ready")
    except AssertionError:
        p.stop()
        raise AssertionError(p.output())
    yield Endpoint(url, p)
    p.stop()


class Simulator(Endpoint):
    def jobs(self):
        return requests.get(self.url + "/_sim/jobs", timeout=5).json()["jobs"]

    def body(self, job_id):
        return requests.get(f"{self.url}/_sim/jobs/{job_id}", timeout=5).json()

    def fault(self, job_id, fault):
        r = requests.put(f"{self.url}/_sim/jobs/{job_id}/fault", json=fault, timeout=5)
        assert r.status_code == 204, r.text


@pytest.fixture
def start_simulator(exporter_bin, tmp_path):
    """start_simulator(scenario=None, fleet=9, seed=1, extra_args=()) -> Simulator; a scenario is
    a list of job scripts (see src/simulator/fleet.rs)."""
    started = []

    def start(scenario=None, fleet=9, seed=1, extra_args=()):
        port = free_port()
        args = [exporter_bin, "simulate", "--listen-address", f"127.0.0.1:{port}", *extra_args]
        if scenario is not None:
            f = tmp_path / f"scenario-{port}.json"
            f.write_text(json.dumps(scenario))
            args += ["--scenario", str(f)]
        else:
            args += ["--fleet", str(fleet), "--seed", str(seed)]
        p = Process(args, "sim")
        started.append(p)
        url = f"http://127.0.0.1:{port}"
        wait_http(url + "/_sim/jobs")
        return Simulator(url, p)

    yield start
    for p in started:
        p.stop()


@pytest.fixture
def start_exporter(exporter_bin, tmp_path):
    """start_exporter(config_text, env=None, ready=True) -> Endpoint running the exporter."""
    started = []

    def start(config_text, env=None, ready=True):
        port = free_port()
        cfg = tmp_path / f"config-{port}.yml"
        cfg.write_text(config_text)
        p = Process([exporter_bin, f"--config.file={cfg}", f"--web.listen-address=127.0.0.1:{port}",
                     "--log.level=debug"], "exporter", env={**os.environ, **(env or {})})
        started.append(p)
        url = f"http://127.0.0.1:{port}"
        try:
            wait_http(url + ("/-/ready" if ready else "/-/healthy"))
        except AssertionError:
            p.stop()
            raise AssertionError(p.output())
        return Endpoint(url, p)

    yield start
    for p in started:
        p.stop()


class Prometheus:
    def __init__(self, url, process):
        self.url = url
        self.process = process

    def api(self, path, **params):
        r = requests.get(self.url + "/api/v1/" + path, params=params, timeout=10)
        body = r.json()
        assert body.get("status") == "success", body
        return body["data"]

    def query(self, expr):
        return self.api("query", query=expr)["result"]

    def query_range(self, expr, seconds=60, step="1s"):
        end = time.time()
        return self.api("query_range", query=expr, start=end - seconds, end=end, step=step)["result"]

    def wait_for(self, expr, timeout=30, predicate=bool):
        deadline = time.time() + timeout
        result = []
        while time.time() < deadline:
            result = self.query(expr)
            if predicate(result):
                return result
            time.sleep(0.5)
        raise AssertionError(f"{expr!r} gave {result!r} after {timeout}s")


def start_prometheus_process(targets, workdir):
    binary = shutil.which("prometheus")
    assert binary, "prometheus is not installed (scripts/test installs Debian's package)"
    port = free_port()
    cfg = Path(workdir) / "prometheus.yml"
    # The shipped rules are loaded too: dashboards show their ALERTS and recording rules.
    cfg.write_text(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n"
        f"rule_files: [{json.dumps(str(ROOT / 'deploy/prometheus/alerts.yml'))}]\n"
        "scrape_configs:\n  - job_name: huaweicloud-job-exporter\n    static_configs:\n"
        f"      - targets: {json.dumps(targets)}\n")
    p = Process([binary, f"--config.file={cfg}", f"--storage.tsdb.path={Path(workdir) / 'data'}",
                 f"--web.listen-address=127.0.0.1:{port}"], "prometheus")
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + "/-/ready", timeout=60)
    except AssertionError:
        p.stop()
        raise AssertionError(p.output())
    return Prometheus(url, p)


@pytest.fixture(scope="session")
def prometheus(demo, tmp_path_factory):
    """A real Prometheus scraping the demo every second."""
    prom = start_prometheus_process([demo.url.removeprefix("http://")], tmp_path_factory.mktemp("prom"))
    prom.wait_for('up{job="huaweicloud-job-exporter"} == 1')
    yield prom
    prom.process.stop()


@pytest.fixture
def start_prometheus(tmp_path):
    started = []

    def start(targets):
        prom = start_prometheus_process(targets, tmp_path)
        started.append(prom)
        return prom

    yield start
    for p in started:
        p.process.stop()
