"""No secret ever shows: distinctive secret values in every credential source, every path driven
(success, wrong key, revoked token, wrong password, bad config, check-config (with --connect), --help, the landing
page, debug logs), and none of the values in any output."""
import subprocess

import requests

PROJECT = "0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e"
SECRETS = {
    "inline_sk": "SKINLINECANARY-4f1d9a",
    "inline_token": "STSTOKENCANARY-77c2e1",
    "file_sk": "SKFILECANARY-64b0aa",
    "iam_password": "PWIAMCANARY-55e9d3",
    "iam_wrong_password": "PWWRONGCANARY-0a8f7c",
    "env_sk": "SKENVCANARY-48d21b",
    "profile_sk": "SKPROFILECANARY-31f6c4",
}
KEYS = {"inline": "AKINLINE000000000001", "file": "AKFILE00000000000002", "env": "AKENV000000000000003",
        "profile": "AKPROFILE00000000004"}


def jobs(service, n=2):
    return [{"job_id": f"{service}-{i}", "project_id": PROJECT, "service": "evs", "job_type": "createVolume",
             "start_secs": -10, "init_secs": 0, "run_secs": 1e9, "outcome": {"result": "success"}}
            for i in range(n)]


def target(account, region, base, ids):
    return (f"  - {{account: {account}, cloud_service: evs, cloud_region: {region}, project_id: {PROJECT}, "
            f"endpoint: \"{base}\", jobs: {ids}}}\n")


def test_no_secret_in_any_output(exporter_bin, start_simulator, start_exporter, tmp_path):
    regions = ["inline", "file", "iam", "env", "profile", "iam-wrong"]
    scenario = [j for r in regions for j in jobs(r)]
    sim = start_simulator(scenario=scenario, extra_args=[
        "--credential", f"{KEYS['inline']}:{SECRETS['inline_sk']}",
        "--credential", f"{KEYS['file']}:{SECRETS['file_sk']}",
        "--credential", f"{KEYS['env']}:{SECRETS['env_sk']}",
        "--iam-user", f"d:u:{SECRETS['iam_password']}",
    ])
    base = sim.url
    sk_file = tmp_path / "sk"
    sk_file.write_text(SECRETS["file_sk"] + "\n")
    profile = tmp_path / "credentials"
    profile.write_text(f"[basic]\nak = {KEYS['profile']}\nsk = {SECRETS['profile_sk']}\n")
    config = (
        "mode: on_demand\nmax_requests_per_second: 1000\naccounts:\n"
        f"  - {{name: inline, access_key: {KEYS['inline']}, secret_key: {SECRETS['inline_sk']}, "
        f"security_token: {SECRETS['inline_token']}}}\n"
        f"  - {{name: file, access_key: {KEYS['file']}, secret_key: {{file: {sk_file}}}}}\n"
        f"  - {{name: iam, iam: {{endpoint: \"{base}\", domain: d, user: u, password: {SECRETS['iam_password']}}}}}\n"
        "  - {name: env, source: env}\n"
        f"  - {{name: profile, source: profile, profile_file: {profile}}}\n"
        f"  - {{name: iam-wrong, iam: {{endpoint: \"{base}\", domain: d, user: u, "
        f"password: {SECRETS['iam_wrong_password']}}}}}\n"
        "targets:\n" + "".join(target(r, r, base, [j["job_id"] for j in jobs(r)]) for r in regions)
    )
    env = {"HUAWEICLOUD_SDK_AK": KEYS["env"], "HUAWEICLOUD_SDK_SK": SECRETS["env_sk"]}
    exp = start_exporter(config, env=env)
    outputs = {}
    outputs["metrics-1"] = requests.get(exp.url + "/metrics", timeout=10).text
    # Success for the good accounts, 401 for the profile's unknown key, auth for the wrong password.
    for region, want in [("inline", "1"), ("file", "1"), ("iam", "1"), ("env", "1"), ("profile", "0"),
                         ("iam-wrong", "0")]:
        line = next(l for l in outputs["metrics-1"].splitlines()
                    if l.startswith("huaweicloud_job_fetch_success{") and f'cloud_region="{region}"' in l)
        assert line.endswith(" " + want), line
    # A revoked token: 401, refresh, retry.
    requests.post(base + "/_sim/iam/revoke", timeout=5)
    outputs["metrics-2"] = requests.get(exp.url + "/metrics", timeout=10).text
    outputs["landing"] = requests.get(exp.url + "/", timeout=10).text
    assert "unauthorized" in outputs["landing"] and "The username or password is wrong." in outputs["landing"]

    cfg_file = tmp_path / "bad.yml"
    cfg_file.write_text(config.replace("mode: on_demand", "mode: on_demand\ncolour: red"))
    outputs["check-bad"] = subprocess.run([exporter_bin, "check-config", f"--config.file={cfg_file}"],
                                          capture_output=True, text=True, env=env)
    good_file = tmp_path / "good.yml"
    good_file.write_text(config)
    outputs["check-good"] = subprocess.run([exporter_bin, "check-config", f"--config.file={good_file}"],
                                           capture_output=True, text=True, env=env)
    outputs["check-connect"] = subprocess.run([exporter_bin, "check-config", f"--config.file={good_file}", "--connect"],
                                              capture_output=True, text=True, env=env, timeout=60)
    assert "FAILED account" in outputs["check-connect"].stdout, outputs["check-connect"].stdout
    assert outputs["check-good"].returncode == 0, outputs["check-good"].stderr
    assert outputs["check-bad"].returncode == 1
    outputs["help"] = subprocess.run([exporter_bin, "--help"], capture_output=True, text=True, env=env)
    outputs["run-bad"] = subprocess.run([exporter_bin, f"--config.file={cfg_file}",
                                         "--web.listen-address=127.0.0.1:0", "--log.level=debug"],
                                        capture_output=True, text=True, env=env, timeout=20)
    exp.process.stop()
    outputs["exporter-log"] = exp.process.output()
    assert "fetch failed" in outputs["exporter-log"], "debug logs were driven"

    for name, out in outputs.items():
        text = out if isinstance(out, str) else out.stdout + out.stderr
        for label, value in SECRETS.items():
            assert value not in text, f"{label} leaked in {name}"
