"""Nothing acknowledged is lost: jobs registered through the API survive SIGKILL, and the curl
example of the README works as written."""
import signal
import threading
import time
import subprocess

import requests

AK = "DEMOACCESSKEY0000001"
SK = "demo-secret-key-for-the-simulator-only"
PROJECT = "0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e"
TOKEN = "e2e-registration-token"


def scenario(n):
    return [{"job_id": f"reg-{i}", "project_id": PROJECT, "service": "evs", "job_type": "createVolume",
             "start_secs": -10, "init_secs": 0, "run_secs": 1e9, "outcome": {"result": "success"}}
            for i in range(n)]


def test_acknowledged_registrations_survive_sigkill(start_simulator, start_exporter, tmp_path):
    sim = start_simulator(scenario=scenario(30))
    (tmp_path / "token").write_text(TOKEN + "\n")
    config = (f"mode: on_demand\nmax_requests_per_second: 1000\n"
              f"api: {{token_file: {tmp_path}/token}}\nstate_file: {tmp_path}/state.json\n"
              f"accounts: [{{name: a, access_key: {AK}, secret_key: {SK}}}]\n"
              f"targets: [{{account: a, cloud_service: evs, cloud_region: cn-north-4, project_id: {PROJECT}, "
              f"endpoint: \"{sim.url}\", jobs: []}}]\n")
    exp = start_exporter(config)
    acked = []
    for i in range(30):
        # The README's curl example, as a CI pipeline would run it.
        body = ('{"cloud_service":"evs","cloud_region":"cn-north-4",'
                f'"project_id":"{PROJECT}","job_id":"reg-{i}"}}')
        res = subprocess.run(["curl", "-sS", "--fail-with-body", "-X", "POST", f"{exp.url}/api/v1/jobs",
                              "-H", f"Authorization: Bearer {TOKEN}", "-H", "Content-Type: application/json",
                              "-d", body], capture_output=True, text=True, timeout=10)
        assert res.returncode == 0, res.stdout + res.stderr
        acked.append(f"reg-{i}")
    exp.process.proc.send_signal(signal.SIGKILL)
    exp.process.proc.wait(10)

    again = start_exporter(config)
    listed = requests.get(f"{again.url}/api/v1/jobs", headers={"Authorization": f"Bearer {TOKEN}"},
                          timeout=10).json()["jobs"]
    assert sorted(j["job_id"] for j in listed) == sorted(acked)
    metrics = requests.get(f"{again.url}/metrics", timeout=10).text
    for job in acked:
        assert f'job_id="{job}"}} 1' in metrics, job


def test_concurrent_registrations_acknowledged_before_sigkill_are_all_kept(start_simulator, start_exporter,
                                                                          tmp_path):
    sim = start_simulator(scenario=scenario(1))
    (tmp_path / "token").write_text(TOKEN + "\n")
    config = (f"mode: on_demand\nmax_requests_per_second: 1000\n"
              f"api: {{token_file: {tmp_path}/token}}\nstate_file: {tmp_path}/state.json\n"
              f"accounts: [{{name: a, access_key: {AK}, secret_key: {SK}}}]\n"
              f"targets: [{{account: a, cloud_service: evs, cloud_region: cn-north-4, project_id: {PROJECT}, "
              f"endpoint: \"{sim.url}\", jobs: []}}]\n")
    exp = start_exporter(config)
    acked, lock, stop = [], threading.Lock(), threading.Event()

    def client(c):
        session = requests.Session()
        i = 0
        while not stop.is_set():
            job = f"kill-{c}-{i}"
            i += 1
            try:
                r = session.post(f"{exp.url}/api/v1/jobs", headers={"Authorization": f"Bearer {TOKEN}"},
                                 json={"cloud_service": "evs", "cloud_region": "cn-north-4",
                                       "project_id": PROJECT, "job_id": job}, timeout=10)
            except requests.RequestException:
                return
            if r.status_code == 201:
                with lock:
                    acked.append(job)

    threads = [threading.Thread(target=client, args=(c,)) for c in range(16)]
    for t in threads:
        t.start()
    deadline = time.time() + 30
    while time.time() < deadline and len(acked) < 500:
        time.sleep(0.01)
    # Killed while registrations are in flight.
    exp.process.proc.send_signal(signal.SIGKILL)
    exp.process.proc.wait(10)
    stop.set()
    for t in threads:
        t.join(15)
    assert len(acked) >= 500

    again = start_exporter(config)
    listed = requests.get(f"{again.url}/api/v1/jobs", headers={"Authorization": f"Bearer {TOKEN}"},
                          timeout=10).json()["jobs"]
    missing = set(acked) - {j["job_id"] for j in listed}
    assert not missing, sorted(missing)[:10]


def test_sighup_reloads_the_jobs_files(start_simulator, start_exporter, tmp_path):
    sim = start_simulator(scenario=scenario(3))
    jobs_d = tmp_path / "jobs.d"
    jobs_d.mkdir()
    target = (f"{{account: a, cloud_service: evs, cloud_region: cn-north-4, project_id: {PROJECT}, "
              f"endpoint: \"{sim.url}\", jobs: [JOBS]}}")
    config = (f"mode: on_demand\nmax_requests_per_second: 1000\njobs_files: [\"jobs.d/*.yml\"]\n"
              f"accounts: [{{name: a, access_key: {AK}, secret_key: {SK}}}]\n"
              f"targets: [{target.replace('JOBS', 'reg-0')}]\n")
    exp = start_exporter(config)
    assert 'job_id="reg-1"' not in requests.get(f"{exp.url}/metrics", timeout=10).text
    (jobs_d / "more.yml").write_text(f"targets: [{target.replace('JOBS', 'reg-1, reg-2')}]\n")
    exp.process.proc.send_signal(signal.SIGHUP)
    deadline = time.time() + 20
    while time.time() < deadline and "SIGHUP: reloading" not in exp.process.output():
        time.sleep(0.1)
    assert "SIGHUP: reloading" in exp.process.output()
    metrics = requests.get(f"{exp.url}/metrics", timeout=10).text
    for job in ("reg-0", "reg-1", "reg-2"):
        assert f'job_id="{job}"}} 1' in metrics, job
    assert "huaweicloud_job_exporter_config_last_reload_successful 1" in metrics
