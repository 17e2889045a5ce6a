"""The gzip body of /metrics, joined from deflate blocks compressed when jobs changed, read by
three decoders that are not ours: Python's gzip module (zlib), curl --compressed, and Go's
(a real Prometheus, which always asks for gzip) — each must see the plain body's text."""
import gzip
import shutil
import subprocess
import urllib.request

PER_JOB = [
    "huaweicloud_job_status", "huaweicloud_job_begin_timestamp_seconds",
    "huaweicloud_job_end_timestamp_seconds", "huaweicloud_job_duration_seconds",
    "huaweicloud_job_failure_info", "huaweicloud_job_entity_info", "huaweicloud_job_subjob_status",
    "huaweicloud_job_fetch_success", "huaweicloud_job_last_fetch_success_timestamp_seconds",
]


def raw(url, accept_encoding):
    req = urllib.request.Request(url, headers={"Accept-Encoding": accept_encoding})
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.headers.get("Content-Encoding"), r.read()


def job_lines(text):
    """The lines of the job families: the exporter's own metrics move between two scrapes."""
    return [l for l in text.splitlines()
            if (l.startswith("huaweicloud_job_") and not l.startswith("huaweicloud_job_exporter_"))
            or (l.startswith("# ") and " huaweicloud_job_" in l and "exporter" not in l)]


def stable(text):
    """The job lines a refresh does not move (fetch times and running durations do)."""
    return [l for l in job_lines(text) if "fetch" not in l and "duration" not in l]


def counts(text):
    """Samples per per-job family."""
    return {f: sum(1 for l in text.splitlines() if l.startswith(f + "{")) for f in PER_JOB}


def test_gzip_body_decodes_the_same_everywhere(demo, prometheus):
    url = demo.url + "/metrics"
    # The demo refreshes every 2 s and discovers jobs as it runs: compare a gzip body with plain
    # bodies taken just before and after it that agree with each other.
    for _ in range(20):
        enc, plain = raw(url, "identity")
        assert enc is None
        plain = plain.decode()
        enc, body = raw(url, "gzip")
        _, after = raw(url, "identity")
        if stable(plain) == stable(after.decode()):
            break
    assert enc == "gzip"
    assert body[:2] == b"\x1f\x8b"
    assert len(body) * 5 < len(plain)
    # Python's gzip (zlib).
    unzipped = gzip.decompress(body).decode()
    assert counts(unzipped) == counts(plain)
    assert stable(unzipped) == stable(plain)
    # curl's decoder.
    curl = shutil.which("curl")
    if curl:
        out = subprocess.run([curl, "-sf", "--compressed", url], capture_output=True, check=True)
        assert counts(out.stdout.decode()) == counts(plain)
    # Go's, in Prometheus: it scraped with gzip, every sample arrived and nothing failed. The
    # demo moves on (jobs finish, more are found), so Prometheus's last scrape, up to a second
    # old, is compared with a plain body taken at the same moment, until the two agree.
    for family, n in counts(plain).items():
        if n:
            def agrees(result, family=family):
                now = counts(raw(url, "identity")[1].decode())[family]
                return bool(result) and now > 0 and int(result[0]["value"][1]) == now
            prometheus.wait_for(f"count({family})", predicate=agrees)
    up = prometheus.query('up{job="huaweicloud-job-exporter"}')
    assert up and up[0]["value"][1] == "1"
    samples = prometheus.query('scrape_samples_scraped{job="huaweicloud-job-exporter"}')
    assert int(float(samples[0]["value"][1])) >= sum(counts(plain).values())
