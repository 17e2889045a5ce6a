"""The landing page and /jobs as a real browser renders them: headless Chromium loads the pages
of an exporter polling the simulator, and the DOM it builds is checked (failed jobs first, then
stuck ones, the filters, escaping). A screenshot of /jobs is saved (HWJE_SCREENSHOT_DIR, else
pytest's tmp_path): docs/jobs-page.png is one of them."""
import html
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import requests

from test_end_to_end import AK, FOREVER, PROJECT, SK, job

SCENARIO = [
    job("evs-ok", "evs", "createVolume", -900, 45, entities={"volume_id": "vol-1"}),
    job("evs-fail", "evs", "extendVolume", -500, 60, fail=("EVS.2024", 'disk "quota" <exceeded>')),
    job("evs-run", "evs", "createVolume", -100, FOREVER),
    job("evs-stuck", "evs", "deleteVolume", -7200, FOREVER, entities={"volume_id": "vol-9"}),
    job("ecs-fail", "ecs", "createServer", -4000, 600, fail=("Ecs.0013", "no EIP quota")),
    job("ecs-run", "ecs", "createServer", -60, FOREVER),
]


def browser():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    pytest.fail("no chromium installed: scripts/test installs it (apt-get install chromium)")


def chromium(*args):
    out = subprocess.run([browser(), "--headless", "--no-sandbox", "--disable-gpu",
                          "--hide-scrollbars", *args], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout


def rows(dom):
    """(group class, status, job_id) of each row of the jobs table, in page order."""
    table = dom.split('<table class="jobs">', 1)[1].split("</table>", 1)[0]
    found = re.findall(r'<tr class="(\w+)"><td><span class="st st-\w+">([^<]*)</span>.*?'
                       r'<td class="id">([^<]*)</td>', table)
    return [(g, s, html.unescape(j)) for g, s, j in found]


@pytest.fixture
def exporter(start_simulator, start_exporter):
    sim = start_simulator(scenario=SCENARIO)
    targets = ""
    for service in ("evs", "ecs"):
        ids = [j["job_id"] for j in SCENARIO if j["service"] == service]
        targets += (f"  - account: demo\n    cloud_service: {service}\n    cloud_region: cn-north-4\n"
                    f"    project_id: {PROJECT}\n    endpoint: {sim.url}/{service}\n    jobs: {ids}\n")
    cfg = (f"refresh_interval: 2s\naccounts:\n  - name: demo\n    access_key: {AK}\n"
           f"    secret_key: {{env: E2E_SK}}\ntargets:\n{targets}")
    return start_exporter(cfg, env={"E2E_SK": SK})


def test_jobs_page_lists_failed_then_stuck_first_and_filters(exporter, tmp_path):
    dom = chromium("--dump-dom", exporter.url + "/jobs")
    listed = rows(dom)
    assert [j for _, _, j in listed] == [
        "evs-fail", "ecs-fail",   # failed, latest end first
        "evs-stuck",              # running for two hours
        "evs-run", "ecs-run",     # running, oldest first
        "evs-ok",                 # succeeded
    ], listed
    assert listed[0][:2] == ("failed", "FAIL")
    assert listed[2][:2] == ("stuck", "RUNNING")
    # The fail reason came from the cloud: shown as text, not markup.
    assert "disk \"quota\" &lt;exceeded&gt;" in dom
    assert "<exceeded>" not in dom
    assert "EVS.2024" in dom and "vol-9" in dom

    failed = rows(chromium("--dump-dom", exporter.url + "/jobs?status=FAIL"))
    assert [j for _, _, j in failed] == ["evs-fail", "ecs-fail"]
    ecs = rows(chromium("--dump-dom", exporter.url + "/jobs?cloud_service=ecs&status=RUNNING,stuck"))
    assert [j for _, _, j in ecs] == ["ecs-run"]

    # The JSON twin lists the same jobs in the same order, with where they come from.
    j = requests.get(exporter.url + "/jobs", headers={"Accept": "application/json"}, timeout=5).json()
    assert [r["job_id"] for r in j["jobs"]] == [jid for _, _, jid in listed]
    assert j["matched"] == 6 and j["more"] == 0
    assert {r["source"] for r in j["jobs"]} == {"config"}
    fail = j["jobs"][0]
    assert (fail["error_code"], fail["fail_reason"], fail["end"] - fail["begin"]) == \
        ("EVS.2024", 'disk "quota" <exceeded>', 60)

    shots = Path(os.environ.get("HWJE_SCREENSHOT_DIR", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    shot = shots / "jobs-page.png"
    chromium("--window-size=1220,330", f"--screenshot={shot}", exporter.url + "/jobs")
    assert shot.stat().st_size > 10_000


def test_landing_page_shows_credentials_and_links_to_the_jobs(exporter):
    dom = chromium("--dump-dom", exporter.url + "/")
    assert "<h2>Credentials</h2>" in dom
    assert re.search(r"<td>demo</td><td>config</td>", dom), dom
    assert "Last refresh: 20" in dom
    assert 'href="/jobs?cloud_service=evs&amp;cloud_region=cn-north-4&amp;project_id=' in dom
