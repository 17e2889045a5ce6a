//! Jobs come and go: reloads (file watch and `POST /-/reload`), the registration API, the state
//! file, retention of registered jobs, and sharding.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use huaweicloud_job_exporter::config::Config;
use huaweicloud_job_exporter::scope::Scope;
use huaweicloud_job_exporter::shard::Shard;
use huaweicloud_job_exporter::simulator::{DEMO_ACCESS_KEY, DEMO_SECRET_KEY, Outcome};
use huaweicloud_job_exporter::state::Store;
use serde_json::{Value, json};

const TOKEN: &str = "test-api-token-0123456789";

fn jobs(ids: &[&str], run_secs: f64) -> Vec<huaweicloud_job_exporter::simulator::JobScript> {
    ids.iter()
        .map(|id| script(id, "evs", "createVolume", 0.0, run_secs, Outcome::Success))
        .collect()
}

fn write_config(dir: &Path, base: &str, extra: &str) -> std::path::PathBuf {
    std::fs::write(dir.join("token"), format!("{TOKEN}\n")).expect("token");
    let text = format!(
        r#"
mode: on_demand
max_requests_per_second: 1000
api: {{token_file: {dir}/token}}
state_file: {dir}/state.json
jobs_files: ["jobs.d/*.yml"]
accounts: [{{name: a, access_key: {DEMO_ACCESS_KEY}, secret_key: {DEMO_SECRET_KEY}}}]
targets:
  - {{account: a, cloud_service: evs, cloud_region: r, project_id: {PROJECT}, endpoint: "{base}", jobs: [c1]}}
{extra}"#,
        dir = dir.display()
    );
    std::fs::create_dir_all(dir.join("jobs.d")).expect("mkdir");
    let path = dir.join("config.yml");
    std::fs::write(&path, text).expect("config");
    path
}

/// What the state file holds, read as a new process would.
fn stored(dir: &Path) -> Store {
    Store::open(
        &dir.join("state.json"),
        prometheus::IntCounter::new("f", "f").expect("counter"),
    )
    .expect("state file")
}

fn load(path: &Path) -> Config {
    Config::load(path, &|_| None).expect("valid config")
}

/// POSTs `body` to the jobs API at `url` with the right token.
async fn post(url: &str, body: Value) -> (u16, Value) {
    api(
        reqwest::Method::POST,
        url.to_string(),
        Some(TOKEN),
        Some(body),
    )
    .await
}

/// The error message of an API answer.
fn error(body: &Value) -> &str {
    body["error"].as_str().unwrap_or_default()
}

async fn api(
    method: reqwest::Method,
    url: String,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let mut req = client.request(method, url);
    if let Some(t) = token {
        req = req.header("Authorization", format!("Bearer {t}"));
    }
    if let Some(b) = body {
        req = req
            .header("Content-Type", "application/json")
            .body(b.to_string());
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("body");
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn job(id: &str) -> Value {
    json!({"cloud_service": "evs", "cloud_region": "r", "project_id": PROJECT, "job_id": id})
}

#[tokio::test]
async fn jobs_files_reload_on_change_and_on_request_and_bad_reloads_keep_running() {
    let (_sim, base, stop) = simulator(jobs(&["c1", "f1", "f2"], 1e12)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_config(dir.path(), &base, "");
    let exp = exporter(load(&path)).await;
    assert_eq!(common::tracked_ids(&exp.metrics().await), vec!["c1"]);

    // A new jobs file: picked up by the watcher.
    std::fs::write(
        dir.path().join("jobs.d/team.yml"),
        format!("targets:\n  - {{account: a, cloud_service: evs, cloud_region: r, project_id: {PROJECT}, endpoint: \"{base}\", jobs: [f1]}}\n"),
    )
    .expect("jobs file");
    let mut seen = Vec::new();
    for _ in 0..40 {
        seen = common::tracked_ids(&exp.metrics().await);
        if seen.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(seen, vec!["c1", "f1"]);

    // An edit applied at once by POST /-/reload; f1 removed, f2 added.
    std::fs::write(
        dir.path().join("jobs.d/team.yml"),
        format!("targets:\n  - {{account: a, cloud_service: evs, cloud_region: r, project_id: {PROJECT}, endpoint: \"{base}\", jobs: [f2]}}\n"),
    )
    .expect("jobs file");
    let (status, _) = api(reqwest::Method::POST, exp.url("/-/reload"), None, None).await;
    assert_eq!(status, 200);
    let text = exp.metrics().await;
    assert_eq!(common::tracked_ids(&text), vec!["c1", "f2"]);
    assert_eq!(
        value(
            &text,
            "huaweicloud_job_exporter_config_last_reload_successful"
        ),
        Some(1.0)
    );

    // A broken file: the reload fails, everything keeps running, the gauge says so.
    std::fs::write(
        dir.path().join("jobs.d/team.yml"),
        "targets: [{jobs: [\"bad id\"]}]\n",
    )
    .expect("write");
    let (status, body) = api(reqwest::Method::POST, exp.url("/-/reload"), None, None).await;
    assert_eq!(status, 500);
    assert!(
        body.as_str().unwrap_or_default().contains("team.yml"),
        "{body}"
    );
    let text = exp.metrics().await;
    assert_eq!(common::tracked_ids(&text), vec!["c1", "f2"]);
    assert_eq!(
        value(
            &text,
            "huaweicloud_job_exporter_config_last_reload_successful"
        ),
        Some(0.0)
    );
    exp.shutdown().await;
    stop.cancel();
}

#[tokio::test]
async fn registration_api_validates_persists_and_lists() {
    let (_sim, base, stop) = simulator(jobs(&["c1", "r1", "r2"], 1e12)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_config(dir.path(), &base, "");
    let exp = exporter(load(&path)).await;
    let url = exp.url("/api/v1/jobs");
    use reqwest::Method;

    assert_eq!(
        api(Method::POST, url.clone(), None, Some(job("r1")))
            .await
            .0,
        401
    );
    assert_eq!(
        api(Method::POST, url.clone(), Some("wrong"), Some(job("r1")))
            .await
            .0,
        401
    );
    let (status, body) = post(&url, job("bad/id")).await;
    assert_eq!(status, 400);
    assert!(error(&body).contains("job_id"), "{body}");
    let mut other = job("r1");
    other["cloud_region"] = json!("elsewhere");
    let (status, body) = post(&url, other).await;
    assert_eq!(status, 404);
    assert!(error(&body).contains("evs/elsewhere"), "{body}");
    // The API never takes a URL or host: unknown fields are refused.
    let mut with_url = job("r1");
    with_url["endpoint"] = json!("https://attacker.example");
    assert_eq!(post(&url, with_url).await.0, 400);
    let huge = json!({"cloud_service": "x".repeat(20_000)});
    assert_eq!(post(&url, huge).await.0, 413);

    let (status, body) = post(&url, job("r1")).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(post(&url, job("r1")).await.0, 200);
    assert_eq!(post(&url, job("r2")).await.0, 201);
    // Persisted before the answer.
    assert_eq!(stored(dir.path()).registrations().len(), 2);
    assert_eq!(
        common::tracked_ids(&exp.metrics().await),
        vec!["c1", "r1", "r2"]
    );
    let (_, list) = api(Method::GET, url.clone(), Some(TOKEN), None).await;
    let sources: Vec<(String, String)> = list["jobs"]
        .as_array()
        .expect("jobs")
        .iter()
        .map(|j| {
            (
                j["job_id"].as_str().unwrap_or_default().into(),
                j["source"].as_str().unwrap_or_default().into(),
            )
        })
        .collect();
    assert_eq!(
        sources,
        vec![
            ("c1".into(), "config".into()),
            ("r1".into(), "api".into()),
            ("r2".into(), "api".into())
        ]
    );

    let del = exp.url(&format!("/api/v1/jobs/evs/r/{PROJECT}/r1"));
    assert_eq!(
        api(Method::DELETE, del.clone(), Some(TOKEN), None).await.0,
        204
    );
    assert_eq!(api(Method::DELETE, del, Some(TOKEN), None).await.0, 404);
    assert_eq!(common::tracked_ids(&exp.metrics().await), vec!["c1", "r2"]);
    exp.shutdown().await;

    // A new process from the same state file tracks what was acknowledged.
    let again = exporter(load(&path)).await;
    assert_eq!(
        common::tracked_ids(&again.metrics().await),
        vec!["c1", "r2"]
    );
    again.shutdown().await;

    // A corrupt state file stops startup with a clear message.
    std::fs::write(
        dir.path().join("state.json"),
        "{\"version\": 1, \"jobs\": [",
    )
    .expect("write");
    let err = huaweicloud_job_exporter::Exporter::bind(
        load(&path),
        huaweicloud_job_exporter::WebOptions {
            listen_address: "127.0.0.1:0".into(),
            ..Default::default()
        },
    )
    .await
    .err()
    .expect("refuses to start");
    assert!(err.to_string().contains("state.json"), "{err}");
    stop.cancel();
}

#[tokio::test]
async fn registered_jobs_leave_metrics_and_state_after_retention() {
    let (_sim, base, stop) = simulator(jobs(&["c1", "done"], 10.0)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_config(dir.path(), &base, "terminal_retention: 1s\n");
    let exp = exporter(load(&path)).await;
    let url = exp.url("/api/v1/jobs");
    assert_eq!(
        api(reqwest::Method::POST, url, Some(TOKEN), Some(job("done")))
            .await
            .0,
        201
    );
    let first = exp.metrics().await;
    assert_eq!(common::tracked_ids(&first), vec!["c1", "done"]);
    let counted = format!(
        "huaweicloud_jobs{{cloud_service=\"evs\",cloud_region=\"r\",project_id=\"{PROJECT}\",job_type=\"createVolume\",status=\"SUCCESS\"}}"
    );
    assert_eq!(value(&first, &counted), Some(2.0));
    let histogram = format!(
        "huaweicloud_job_completed_duration_seconds_count{{cloud_service=\"evs\",cloud_region=\"r\",project_id=\"{PROJECT}\",job_type=\"createVolume\",status=\"SUCCESS\"}}"
    );
    assert_eq!(value(&first, &histogram), Some(2.0));
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let after = exp.metrics().await;
    assert!(
        common::tracked_ids(&after).is_empty(),
        "{:?}",
        common::tracked_ids(&after)
    );
    assert_eq!(
        value(&after, &histogram),
        Some(2.0),
        "counters stay monotonic"
    );
    // The watcher drops the expired registration from the state file.
    let mut left = usize::MAX;
    for _ in 0..40 {
        left = stored(dir.path()).registrations().len();
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(left, 0);
    // Registering it again is refused, not silently ignored.
    let (status, body) = post(&exp.url("/api/v1/jobs"), job("done")).await;
    assert_eq!(status, 409, "{body}");
    assert!(
        error(&body).contains(&format!("job evs/r/{PROJECT}/done finished at"))
            && error(&body).contains("dropped after terminal_retention"),
        "{body}"
    );
    // A reload does not bring the finished config job back, nor count it again.
    let (status, _) = api(reqwest::Method::POST, exp.url("/-/reload"), None, None).await;
    assert_eq!(status, 200);
    let reloaded = exp.metrics().await;
    assert!(common::tracked_ids(&reloaded).is_empty());
    assert_eq!(value(&reloaded, &histogram), Some(2.0));
    exp.shutdown().await;
    stop.cancel();
}

#[tokio::test]
async fn shards_split_the_jobs_and_redirect_registrations() {
    let ids: Vec<String> = (0..40).map(|i| format!("job-{i}")).collect();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let (_sim, base, stop) = simulator(jobs(&refs, 1e12)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("token"), TOKEN).expect("token");
    let text = format!(
        "mode: on_demand\nmax_requests_per_second: 1000\napi: {{token_file: {}/token}}\naccounts: [{{name: a, access_key: {DEMO_ACCESS_KEY}, secret_key: {DEMO_SECRET_KEY}}}]\ntargets: [{{account: a, cloud_service: evs, cloud_region: r, project_id: {PROJECT}, endpoint: \"{base}\", jobs: {ids:?}}}]\n",
        dir.path().display()
    );
    let mut all = Vec::new();
    let mut exporters = Vec::new();
    for index in 0..3 {
        let mut cfg = config(&text);
        cfg.shard = Shard { index, total: 3 };
        cfg.shard_url_template = Some("http://shard-{shard}.example:10037".into());
        let exp = exporter(cfg).await;
        let mine = common::tracked_ids(&exp.metrics().await);
        assert!(!mine.is_empty());
        all.extend(mine);
        exporters.push(exp);
    }
    all.sort();
    let mut expected = ids.clone();
    expected.sort();
    assert_eq!(all, expected, "every job exactly once across the shards");

    // Registering on the wrong replica says where the job belongs.
    let owner = Shard::owner(3, &Scope::new("evs", "r", PROJECT), "new-job");
    let wrong = (owner + 1) % 3;
    let (status, body) = api(
        reqwest::Method::POST,
        exporters[wrong as usize].url("/api/v1/jobs"),
        Some(TOKEN),
        Some(job("new-job")),
    )
    .await;
    assert_eq!(status, 307);
    assert_eq!(body["shard"], owner);
    assert_eq!(
        body["location"],
        format!("http://shard-{owner}.example:10037/api/v1/jobs")
    );
    let (status, _) = api(
        reqwest::Method::POST,
        exporters[owner as usize].url("/api/v1/jobs"),
        Some(TOKEN),
        Some(job("new-job")),
    )
    .await;
    assert_eq!(status, 201);
    // Deleting is not refused for ownership, so a leftover of a resharding can be removed.
    let del = format!("/api/v1/jobs/evs/r/{PROJECT}/new-job");
    let (status, _) = api(
        reqwest::Method::DELETE,
        exporters[wrong as usize].url(&del),
        Some(TOKEN),
        None,
    )
    .await;
    assert_eq!(status, 404, "not registered there, and not 421");
    for exp in exporters {
        exp.shutdown().await;
    }
    stop.cancel();
}

#[tokio::test]
async fn a_finished_job_is_counted_once_across_delete_post_reload_and_restart() {
    let scripts = vec![
        script("c1", "evs", "createVolume", 0.0, 1e12, Outcome::Success),
        script(
            "f1",
            "evs",
            "createVolume",
            0.0,
            10.0,
            fail("EVS.1", "no space"),
        ),
    ];
    let (sim, base, stop) = simulator(scripts).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_config(dir.path(), &base, "");
    let exp = exporter(load(&path)).await;
    let url = exp.url("/api/v1/jobs");
    let failures = format!(
        "huaweicloud_job_failures_total{{cloud_service=\"evs\",cloud_region=\"r\",project_id=\"{PROJECT}\",job_type=\"createVolume\",error_code=\"EVS.1\"}}"
    );
    let info = format!(
        "huaweicloud_job_failure_info{{cloud_service=\"evs\",cloud_region=\"r\",project_id=\"{PROJECT}\",job_id=\"f1\",job_type=\"createVolume\",error_code=\"EVS.1\",fail_reason=\"no space\"}}"
    );
    assert_eq!(post(&url, job("f1")).await.0, 201);
    let first = exp.metrics().await;
    assert_eq!(value(&first, &failures), Some(1.0));
    for _ in 0..2 {
        let del = exp.url(&format!("/api/v1/jobs/evs/r/{PROJECT}/f1"));
        assert_eq!(
            api(reqwest::Method::DELETE, del, Some(TOKEN), None).await.0,
            204
        );
        assert_eq!(post(&url, job("f1")).await.0, 201);
        let (status, _) = api(reqwest::Method::POST, exp.url("/-/reload"), None, None).await;
        assert_eq!(status, 200);
        let text = exp.metrics().await;
        assert_eq!(value(&text, &failures), Some(1.0), "counted once");
        assert_eq!(value(&text, &info), Some(1.0), "still exported");
    }
    exp.shutdown().await;

    // A new process exports it from what the state file remembers, without fetching it.
    let again = exporter(load(&path)).await;
    let text = again.metrics().await;
    assert_eq!(value(&text, &info), Some(1.0), "exported after a restart");
    assert_eq!(value(&text, &failures), None, "not counted again");
    assert_eq!(
        sim.requests_for("f1"),
        1,
        "fetched once, by the first process"
    );
    again.shutdown().await;
    stop.cancel();
}

#[tokio::test]
async fn deleting_a_configured_job_acknowledges_it_across_reloads_and_restarts() {
    let scripts = vec![script(
        "c1",
        "evs",
        "createVolume",
        0.0,
        10.0,
        fail("EVS.9", "boom"),
    )];
    let (_sim, base, stop) = simulator(scripts).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_config(dir.path(), &base, "");
    let exp = exporter(load(&path)).await;
    assert_eq!(common::tracked_ids(&exp.metrics().await), vec!["c1"]);
    let del = |id: &str| exp.url(&format!("/api/v1/jobs/evs/r/{PROJECT}/{id}"));
    assert_eq!(
        api(reqwest::Method::DELETE, del("c1"), Some(TOKEN), None)
            .await
            .0,
        204
    );
    let (status, body) = api(reqwest::Method::DELETE, del("unknown"), Some(TOKEN), None).await;
    assert_eq!(status, 404, "{body}");
    assert!(common::tracked_ids(&exp.metrics().await).is_empty());
    let (status, _) = api(reqwest::Method::POST, exp.url("/-/reload"), None, None).await;
    assert_eq!(status, 200);
    assert!(
        common::tracked_ids(&exp.metrics().await).is_empty(),
        "not re-added by the config"
    );
    let (status, body) = post(&exp.url("/api/v1/jobs"), job("c1")).await;
    assert_eq!(status, 409, "{body}");
    assert!(error(&body).contains("acknowledged"), "{body}");
    exp.shutdown().await;
    let again = exporter(load(&path)).await;
    assert!(
        common::tracked_ids(&again.metrics().await).is_empty(),
        "nor by a restart"
    );
    again.shutdown().await;
    stop.cancel();
}

/// Opens the FIFO for writing when dropped, so a reader stuck in `open` (the exporter before
/// files were read non-blocking) is let go even when the test fails.
#[cfg(unix)]
struct FifoRelease(std::path::PathBuf);

#[cfg(unix)]
impl Drop for FifoRelease {
    fn drop(&mut self) {
        use std::os::unix::fs::OpenOptionsExt as _;
        for _ in 0..5 {
            let _ = std::fs::OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(&self.0);
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fifo_in_jobs_files_fails_the_reload_and_never_stalls_serving_or_shutdown() {
    let (_sim, base, stop) = simulator(jobs(&["c1"], 1e12)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_config(dir.path(), &base, "");
    let exp = exporter(load(&path)).await;
    let fifo = dir.path().join("jobs.d/fifo.yml");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo runs");
    assert!(made.success());
    let _release = FifoRelease(fifo.clone());

    // Two reloads at once (as many as the runtime has workers): each would hold a worker in
    // open(2) if files were read there, blocking on the FIFO.
    let post = || api(reqwest::Method::POST, exp.url("/-/reload"), None, None);
    fn bounded<T>(what: &str, r: Result<T, tokio::time::error::Elapsed>) -> T {
        r.unwrap_or_else(|_| panic!("{what} hung"))
    }
    let (a, b) = tokio::join!(
        tokio::time::timeout(Duration::from_secs(20), post()),
        tokio::time::timeout(Duration::from_secs(20), post()),
    );
    for (status, body) in [bounded("reload", a), bounded("reload", b)] {
        // Refused at once with the file named; or, for the second, the first one's answer or
        // "in progress" while the first is still running.
        assert!(status == 500 || status == 503, "{status} {body}");
        if status == 500 {
            let msg = body.as_str().unwrap_or_default();
            assert!(msg.contains(&fifo.display().to_string()), "{msg}");
            assert!(msg.contains("not a regular file but a FIFO"), "{msg}");
        }
    }
    for path in ["/-/healthy", "/metrics"] {
        let answer = tokio::time::timeout(Duration::from_secs(10), exp.get(path)).await;
        let (status, _) = bounded(path, answer);
        assert_eq!(status, 200, "{path}");
    }
    let text = exp.metrics().await;
    assert_eq!(common::tracked_ids(&text), vec!["c1"]);
    assert_eq!(
        value(
            &text,
            "huaweicloud_job_exporter_config_last_reload_successful"
        ),
        Some(0.0)
    );
    // Within the helper's 10 s: the exporter stops whatever a reload is doing.
    exp.shutdown().await;
    stop.cancel();
}

/// Sends a raw request and returns the status, the headers and the body.
async fn raw(
    method: reqwest::Method,
    url: String,
    headers: &[(&str, &str)],
    body: Option<Vec<u8>>,
) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
    // No automatic decompression: what the server sent is what is checked.
    let client = reqwest::Client::builder().build().expect("client");
    let mut req = client.request(method, url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    if let Some(b) = body {
        req = req.body(b);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    (status, headers, resp.bytes().await.expect("body").to_vec())
}

/// An API error: the status, and the body as JSON with an `error` string.
fn json_error(status: u16, headers: &reqwest::header::HeaderMap, body: &[u8]) -> (u16, String) {
    assert_eq!(
        headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default(),
        "application/json",
        "{status}: {}",
        String::from_utf8_lossy(body)
    );
    let v: Value = serde_json::from_slice(body).expect("a JSON body");
    (status, v["error"].as_str().expect("error text").to_string())
}

#[tokio::test]
async fn api_edges_answer_json_accept_any_bearer_case_and_406_without_a_body() {
    let (_sim, base, stop) = simulator(jobs(&["c1", "b1"], 1e12)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_config(dir.path(), &base, "");
    let exp = exporter(load(&path)).await;
    let auth = format!("Bearer {TOKEN}");
    let json_type = ("content-type", "application/json");

    // A body over the API's 16 KiB: 413, as JSON.
    let big = format!(
        "{{\"cloud_service\":\"evs\",\"pad\":\"{}\"}}",
        "x".repeat(17 * 1024)
    );
    let (s, h, b) = raw(
        reqwest::Method::POST,
        exp.url("/api/v1/jobs"),
        &[("authorization", &auth), json_type],
        Some(big.into_bytes()),
    )
    .await;
    let (s, e) = json_error(s, &h, &b);
    assert_eq!(s, 413, "{e}");
    // Over the server's 1 MiB limit, stopped before any handler: still JSON.
    let (s, h, b) = raw(
        reqwest::Method::POST,
        exp.url("/api/v1/jobs"),
        &[("authorization", &auth), json_type],
        Some(vec![b'x'; (1 << 20) + 1]),
    )
    .await;
    assert_eq!(json_error(s, &h, &b).0, 413);
    // A path segment that is not UTF-8: 400, as JSON (after the token was checked).
    let bad_path = exp.url(&format!("/api/v1/jobs/evs/r/{PROJECT}/%ff"));
    let (s, h, b) = raw(
        reqwest::Method::DELETE,
        bad_path.clone(),
        &[("authorization", &auth)],
        None,
    )
    .await;
    assert_eq!(json_error(s, &h, &b).0, 400);
    let (s, h, b) = raw(reqwest::Method::DELETE, bad_path, &[], None).await;
    assert_eq!(json_error(s, &h, &b).0, 401);
    // A method the API does not have, and a path it does not have.
    let (s, h, b) = raw(
        reqwest::Method::PATCH,
        exp.url("/api/v1/jobs"),
        &[("authorization", &auth)],
        None,
    )
    .await;
    assert_eq!(json_error(s, &h, &b).0, 405);
    let (s, h, b) = raw(reqwest::Method::GET, exp.url("/api/v2/nothing"), &[], None).await;
    assert_eq!(json_error(s, &h, &b).0, 404);

    // The scheme name is case-insensitive.
    for scheme in ["bearer", "BEARER", "BeArEr"] {
        let (s, _, b) = raw(
            reqwest::Method::POST,
            exp.url("/api/v1/jobs"),
            &[("authorization", &format!("{scheme} {TOKEN}")), json_type],
            Some(job("b1").to_string().into_bytes()),
        )
        .await;
        assert!(
            s == 200 || s == 201,
            "{scheme}: {s} {}",
            String::from_utf8_lossy(&b)
        );
    }
    let (s, h, b) = raw(
        reqwest::Method::GET,
        exp.url("/api/v1/jobs"),
        &[("authorization", &format!("Basic {TOKEN}"))],
        None,
    )
    .await;
    assert_eq!(json_error(s, &h, &b).0, 401);

    // Neither identity nor gzip acceptable: 406, and no exposition in it.
    for refused in ["identity;q=0", "*;q=0", "gzip;q=0, identity;q=0"] {
        let (s, _, b) = raw(
            reqwest::Method::GET,
            exp.url("/metrics"),
            &[("accept-encoding", refused)],
            None,
        )
        .await;
        assert_eq!(s, 406, "{refused}");
        assert!(b.is_empty(), "{refused}: {}", String::from_utf8_lossy(&b));
    }
    // Identity refused but gzip offered: gzip.
    let (s, h, b) = raw(
        reqwest::Method::GET,
        exp.url("/metrics"),
        &[("accept-encoding", "identity;q=0, gzip")],
        None,
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(h.get("content-encoding").expect("encoded"), "gzip");
    assert_eq!(&b[..2], &[0x1f, 0x8b]);
    exp.shutdown().await;
    stop.cancel();
}
