"""A real Prometheus scrapes the exporter, which polls the simulator serving a scenario whose
truth is known; checks go through Prometheus's HTTP API. Also: promtool's lint of the exposition,
`check-config`, and a clean stop on SIGTERM."""
import signal
import socket
import subprocess

import requests

AK = "DEMOACCESSKEY0000001"
SK = "demo-secret-key-for-the-simulator-only"
PROJECT = "0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e"
FOREVER = 1e12


def job(job_id, service, job_type, start, run, fail=None, entities=None, sub_jobs=None):
    outcome = {"result": "success"} if fail is None else {
        "result": "fail", "error_code": fail[0], "fail_reason": fail[1]}
    return {"job_id": job_id, "project_id": PROJECT, "service": service, "job_type": job_type,
            "start_secs": start, "init_secs": 0, "run_secs": run, "outcome": outcome,
            "entities": entities or {}, "sub_jobs": sub_jobs or []}


def sub(job_id, job_type, run, fail=None):
    outcome = {"result": "success"} if fail is None else {
        "result": "fail", "error_code": fail[0], "fail_reason": fail[1]}
    return {"job_id": job_id, "job_type": job_type, "delay_secs": 0, "run_secs": run, "outcome": outcome,
            "entities": {"server_id": "srv-" + job_id}}


SCENARIO = [
    job("evs-ok-1", "evs", "createVolume", -1000, 120, entities={"volume_id": "vol-1"}),
    job("evs-ok-2", "evs", "createVolume", -900, 45),
    job("evs-fail", "evs", "extendVolume", -500, 60, fail=("EVS.2024", 'disk "quota" exceeded')),
    job("evs-run", "evs", "createVolume", -100, FOREVER),
    job("sdrs-fail", "sdrs", "failoverProtectionGroupNoCG", -2000, 300, fail=("SDRS.1201", "bad state")),
    job("sdrs-fail-2", "sdrs", "failoverProtectionGroupNoCG", -1500, 200, fail=("SDRS.1201", "bad state")),
    job("sdrs-ok", "sdrs", "createReplicationPairNoCG", -300, 30,
        entities={"replication_pair_id": "rp-1", "volume_ids": "v-a,v-b"}),
    job("ecs-run", "ecs", "createServer", -60, FOREVER,
        sub_jobs=[sub("s1", "createSingleServer", 5), sub("s2", "createSingleServer", FOREVER)]),
    job("ecs-fail", "ecs", "createServer", -4000, 600, fail=("Ecs.0013", "no EIP quota"),
        sub_jobs=[sub("s3", "createSingleServer", 100, fail=("Ecs.0013", "no EIP quota"))]),
]

# What the exporter must report, derived from the scenario by hand.
JOBS_TRUTH = {
    ("evs", "createVolume", "SUCCESS"): 2,
    ("evs", "extendVolume", "FAIL"): 1,
    ("evs", "createVolume", "RUNNING"): 1,
    ("sdrs", "failoverProtectionGroupNoCG", "FAIL"): 2,
    ("sdrs", "createReplicationPairNoCG", "SUCCESS"): 1,
    ("ecs", "createServer", "RUNNING"): 1,
    ("ecs", "createServer", "FAIL"): 1,
}
FAILURES_TRUTH = {
    ("evs", "extendVolume", "EVS.2024"): 1,
    ("sdrs", "failoverProtectionGroupNoCG", "SDRS.1201"): 2,
    ("ecs", "createServer", "Ecs.0013"): 1,
}
DURATIONS_TRUTH = {"evs-ok-1": 120, "evs-ok-2": 45, "evs-fail": 60, "sdrs-fail": 300,
                   "sdrs-fail-2": 200, "sdrs-ok": 30, "ecs-fail": 600}


def config(sim_url, mode="cached"):
    targets = ""
    for service in ("evs", "sdrs", "ecs"):
        ids = [j["job_id"] for j in SCENARIO if j["service"] == service]
        targets += (f"  - account: demo\n    cloud_service: {service}\n    cloud_region: cn-north-4\n"
                    f"    project_id: {PROJECT}\n    endpoint: {sim_url}/{service}\n    jobs: {ids}\n")
    return (f"mode: {mode}\nrefresh_interval: 2s\nmax_requests_per_second: 100\n"
            f"accounts:\n  - name: demo\n    access_key: {AK}\n    secret_key: {{env: E2E_SK}}\n"
            f"targets:\n{targets}")


def by(result, *labels):
    return {tuple(r["metric"][lbl] for lbl in labels): float(r["value"][1]) for r in result}


def test_prometheus_sees_the_scenario_truth(start_simulator, start_exporter, start_prometheus):
    sim = start_simulator(scenario=SCENARIO)
    exp = start_exporter(config(sim.url), env={"E2E_SK": SK})
    prom = start_prometheus([exp.url.removeprefix("http://")])
    prom.wait_for('up{job="huaweicloud-job-exporter"} == 1')
    prom.wait_for("huaweicloud_jobs")

    assert by(prom.query("huaweicloud_jobs"), "cloud_service", "job_type", "status") == JOBS_TRUTH
    assert by(prom.query("huaweicloud_job_failures_total"), "cloud_service", "job_type", "error_code") \
        == FAILURES_TRUTH

    status = by(prom.query("huaweicloud_job_status == 1"), "job_id", "status")
    expected_status = {}
    for j in SCENARIO:
        s = "RUNNING" if j["run_secs"] == FOREVER else ("FAIL" if j["outcome"]["result"] == "fail" else "SUCCESS")
        expected_status[(j["job_id"], s)] = 1.0
    assert status == expected_status
    # A state set: exactly four series per job, one of them 1.
    per_job = by(prom.query("count by (job_id) (huaweicloud_job_status)"), "job_id")
    assert set(per_job.values()) == {4.0}

    durations = by(prom.query("huaweicloud_job_duration_seconds"), "job_id")
    for job_id, want in DURATIONS_TRUTH.items():
        assert abs(durations[(job_id,)] - want) < 1e-6, job_id
    # Running jobs: last observation minus begin, so at least their age at the start of the test.
    assert durations[("evs-run",)] >= 100
    assert durations[("ecs-run",)] >= 60

    sub = by(prom.query("huaweicloud_job_subjob_status == 1"), "subjob_id", "status")
    assert sub == {("s1", "SUCCESS"): 1.0, ("s2", "RUNNING"): 1.0, ("s3", "FAIL"): 1.0}
    entities = by(prom.query('huaweicloud_job_entity_info{job_id="sdrs-ok"}'), "entity_type", "entity_id")
    assert set(entities) == {("replication_pair_id", "rp-1"), ("volume_id", "v-a"), ("volume_id", "v-b")}
    info = prom.query('huaweicloud_job_failure_info{job_id="evs-fail"}')
    assert info[0]["metric"]["fail_reason"] == 'disk "quota" exceeded'
    assert by(prom.query("up"), "job") == {("huaweicloud-job-exporter",): 1.0}
    assert by(prom.query("min(huaweicloud_job_fetch_success)"), ) == {(): 1.0}

    # Counters stay put across refreshes: terminal jobs are never fetched or counted again.
    before = {j["job_id"]: j["requests"] for j in sim.jobs()}
    refreshes = float(prom.query("huaweicloud_job_exporter_refresh_duration_seconds_count")[0]["value"][1])
    prom.wait_for(f"huaweicloud_job_exporter_refresh_duration_seconds_count > {refreshes + 1}", timeout=30)
    after = {j["job_id"]: j["requests"] for j in sim.jobs()}
    for j in SCENARIO:
        if j["run_secs"] != FOREVER:
            assert after[j["job_id"]] == before[j["job_id"]] == 1, j["job_id"]
    assert after["evs-run"] > before["evs-run"]
    assert by(prom.query("huaweicloud_job_failures_total"), "cloud_service", "job_type", "error_code") \
        == FAILURES_TRUTH


def test_exposition_passes_promtool(start_simulator, start_exporter):
    sim = start_simulator(scenario=SCENARIO)
    for mode in ("cached", "on_demand"):
        exp = start_exporter(config(sim.url, mode), env={"E2E_SK": SK})
        body = requests.get(exp.url + "/metrics", timeout=10).text
        assert "huaweicloud_job_status{" in body
        lint = subprocess.run(["promtool", "check", "metrics"], input=body, capture_output=True, text=True)
        assert lint.returncode == 0, lint.stdout + lint.stderr


def test_check_config_and_bad_config_never_binds(exporter_bin, tmp_path):
    good = tmp_path / "good.yml"
    good.write_text(config("http://127.0.0.1:1"))
    ok = subprocess.run([exporter_bin, "check-config", f"--config.file={good}"], capture_output=True, text=True,
                        env={"E2E_SK": "x", "PATH": "/usr/bin:/bin"})
    assert ok.returncode == 0, ok.stderr
    assert "valid" in ok.stdout

    bad = tmp_path / "bad.yml"
    bad.write_text("refresh_interval: soon\naccounts: [{name: a, access_key: x, secret_key: {file: /nope}}]\n"
                   "targets: [{account: b, cloud_service: evs, cloud_region: r, project_id: p, jobs: ['x/y']}]\n")
    res = subprocess.run([exporter_bin, "check-config", f"--config.file={bad}"], capture_output=True, text=True)
    assert res.returncode == 1
    for needle in (f"{bad}: refresh_interval:", "accounts[0].secret_key", "/nope", "targets[0].account",
                   '"b"', "targets[0].jobs[0]", '"x/y"'):
        assert needle in res.stderr, (needle, res.stderr)

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    res = subprocess.run([exporter_bin, f"--config.file={bad}", f"--web.listen-address=127.0.0.1:{port}"],
                         capture_output=True, text=True, timeout=20)
    assert res.returncode != 0
    assert "targets[0].jobs[0]" in res.stderr
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))  # still free: nothing was bound


def test_sigterm_stops_cleanly(start_simulator, start_exporter):
    sim = start_simulator(scenario=SCENARIO)
    exp = start_exporter(config(sim.url), env={"E2E_SK": SK})
    exp.process.proc.send_signal(signal.SIGTERM)
    assert exp.process.proc.wait(timeout=10) == 0
    assert "shutting down" in exp.process.output()
