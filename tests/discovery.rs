//! Discovery against the simulator's CTS and task centre, through the real exporter: pages to
//! the last marker, the overlap that finds late traces, duplicates, skipped traces, backoff
//! with the cursor kept, the page cap, the per-target bound, sharding, restarts on a kept
//! store, expired jobs that stay gone, and the exact discovery families on /metrics.
//!
//! Discovery runs on the simulator's clock (moved by `Simulator::advance`); intervals are set
//! below the configuration's floor so that cycles follow each other quickly, and the tests wait
//! for outcomes, never for durations.

mod common;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use common::{PROJECT, Running, fail, script};
use huaweicloud_job_exporter::config::Config;
use huaweicloud_job_exporter::discovery;
use huaweicloud_job_exporter::scope::Scope;
use huaweicloud_job_exporter::shard::Shard;
use huaweicloud_job_exporter::simulator::{
    Api, DEMO_ACCESS_KEY, DEMO_SECRET_KEY, Fault, JobScript, Outcome, Simulator,
};
use huaweicloud_job_exporter::state;
use huaweicloud_job_exporter::{Exporter, WebOptions};
use serde_json::json;
use tokio_util::sync::CancellationToken;

const CYCLE: Duration = Duration::from_millis(100);

/// The simulator, with its clock's "now" as seconds since its start.
async fn simulator() -> (Simulator, String, CancellationToken, f64) {
    let (sim, base, stop) = common::simulator(vec![]).await;
    let now = sim.now_secs();
    (sim, base, stop, now)
}

/// `n` EVS jobs begun `ago` seconds before `now` and over after `run` seconds.
fn evs_jobs(prefix: &str, n: usize, now: f64, ago: f64, run: f64) -> Vec<JobScript> {
    (0..n)
        .map(|i| {
            let outcome = if i % 5 == 0 {
                fail("EVS.2024", "quota")
            } else {
                Outcome::Success
            };
            script(
                &format!("{prefix}{i:04}"),
                "evs",
                "createVolume",
                now - ago + i as f64 * 0.01,
                run,
                outcome,
            )
        })
        .collect()
}

/// A config with one EVS target discovering through CTS and one SDRS target through the task
/// centre, with quick cycles.
const TOKEN: &str = "discovery-test-token";

/// The API token file: written once per process into cargo's folder for integration tests'
/// files (under `target/`, so runs leave nothing in /tmp), and put in place by a rename, so
/// that an exporter of a test running beside never reads it half written.
fn token_file() -> &'static Path {
    static FILE: OnceLock<PathBuf> = OnceLock::new();
    FILE.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"));
        let path = dir.join("discovery-api-token");
        let mut file = tempfile::NamedTempFile::new_in(dir).expect("temp file");
        file.write_all(TOKEN.as_bytes()).expect("token written");
        file.persist(&path).expect("token file in place");
        path
    })
}

fn config(base: &str, extra: &str, cts: &str) -> Config {
    let token = token_file().display();
    let mut cfg = common::config(&format!(
        r#"
api: {{token_file: "{token}"}}
refresh_interval: 1s
max_requests_per_second: 1000
{extra}
accounts: [{{name: a, access_key: {DEMO_ACCESS_KEY}, secret_key: {DEMO_SECRET_KEY}}}]
targets:
  - account: a
    cloud_service: evs
    cloud_region: cn-north-4
    project_id: {PROJECT}
    endpoint: "{base}"
    discover:
      cts: {{endpoint: "{base}", lookback: 1h {cts}}}
  - account: a
    cloud_service: sdrs
    cloud_region: cn-north-4
    project_id: {PROJECT}
    endpoint: "{base}"
    discover:
      failure_jobs: {{}}
"#
    ));
    for t in &mut cfg.targets {
        if let Some(c) = &mut t.discover.cts {
            c.interval = CYCLE;
        }
        if let Some(f) = &mut t.discover.failure_jobs {
            f.interval = CYCLE;
        }
    }
    cfg
}

fn sim_clock(sim: &Simulator) -> Arc<dyn discovery::Clock> {
    let sim = sim.clone();
    Arc::new(move || ((sim.start_unix() + sim.now_secs()) * 1000.0).round() as i64)
}

async fn exporter(sim: &Simulator, cfg: Config) -> Running {
    let exporter = Exporter::bind_with(
        cfg,
        WebOptions {
            listen_address: "127.0.0.1:0".into(),
            ..WebOptions::default()
        },
        discovery::Options {
            clock: sim_clock(sim),
            ..discovery::Options::default()
        },
    )
    .await
    .expect("binds");
    let addr = exporter.local_addr();
    let stop = CancellationToken::new();
    let s = stop.clone();
    let task = tokio::spawn(exporter.run(async move { s.cancelled().await }));
    Running { addr, stop, task }
}

/// Waits until `check` holds on /metrics (up to 20 s), and returns that text.
async fn until(r: &Running, what: &str, check: impl Fn(&str) -> bool) -> String {
    for _ in 0..400 {
        let text = r.metrics().await;
        if check(&text) {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("never: {what}\n{}", discovery_lines(&r.metrics().await));
}

fn discovery_lines(text: &str) -> String {
    text.lines()
        .filter(|l| l.contains("discover"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn labels(service: &str, source: &str) -> String {
    format!(
        "cloud_region=\"cn-north-4\",cloud_service=\"{service}\",project_id=\"{PROJECT}\",source=\"{source}\""
    )
}

/// A series of a discovery family; `extra` (the reason) sorts before `source`, as the
/// exposition orders labels.
fn series(name: &str, service: &str, source: &str, extra: &str) -> String {
    let extra = if extra.is_empty() {
        String::new()
    } else {
        format!("{extra},")
    };
    format!(
        "{name}{{cloud_region=\"cn-north-4\",cloud_service=\"{service}\",project_id=\"{PROJECT}\",{extra}source=\"{source}\"}}"
    )
}

fn counter(text: &str, name: &str, service: &str, source: &str, extra: &str) -> f64 {
    let series = series(name, service, source, extra);
    common::value(text, &series).unwrap_or_else(|| panic!("no series {series}"))
}

/// True once a cycle of this target and source completed.
fn succeeded(text: &str, service: &str, source: &str) -> bool {
    let name = "huaweicloud_job_exporter_discovery_last_success_timestamp_seconds";
    common::value(text, &series(name, service, source, "")).is_some_and(|v| v > 0.0)
}

/// `huaweicloud_job_failures_total`, all series together.
fn failures(text: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with("huaweicloud_job_failures_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn discovered(text: &str, service: &str, source: &str) -> f64 {
    counter(
        text,
        "huaweicloud_job_exporter_discovered_jobs_total",
        service,
        source,
        "",
    )
}

async fn api_jobs(r: &Running) -> Vec<serde_json::Value> {
    let resp = reqwest::Client::new()
        .get(r.url("/api/v1/jobs"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("request");
    let status = resp.status().as_u16();
    let body = resp.text().await.expect("body");
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    v.get("jobs")
        .and_then(|j| j.as_array())
        .cloned()
        .or_else(|| v.as_array().cloned())
        .expect("a job list")
}

#[tokio::test]
async fn follows_markers_to_the_last_page_and_counts_each_job_once() {
    let (sim, base, stop, now) = simulator().await;
    // 450 finished jobs: each leaves a request and a result trace, 900 traces, five pages.
    sim.add_jobs(evs_jobs("e", 450, now, 1200.0, 60.0));
    let r = exporter(&sim, config(&base, "", "")).await;
    let text = until(&r, "450 jobs discovered", |t| {
        discovered(t, "evs", "cts") >= 450.0
    })
    .await;
    assert_eq!(discovered(&text, "evs", "cts"), 450.0);
    // The first chain: five pages, each after the first asking for the previous marker.
    let q = sim.cts_requests();
    assert!(q.len() >= 5, "{q:?}");
    assert_eq!(q[0].next, None);
    assert!(q[1..5].iter().all(|p| p.next.is_some()));
    assert_eq!(q[0].limit.as_deref(), Some("200"));
    // All of them tracked, fetched through the EVS target, listed with their source.
    let text = until(&r, "450 tracked", |t| common::tracked_ids(t).len() == 450).await;
    assert!(
        common::tracked_ids(&text)
            .iter()
            .all(|id| id.starts_with('e'))
    );
    let listed = api_jobs(&r).await;
    assert_eq!(
        listed
            .iter()
            .filter(|j| j["source"] == "cts" && j["cloud_service"] == "evs")
            .count(),
        450
    );
    // Further cycles re-read the overlap and find nothing new.
    let before = sim.cts_requests().len();
    until(&r, "more cycles", |_| sim.cts_requests().len() > before + 3).await;
    assert_eq!(discovered(&r.metrics().await, "evs", "cts"), 450.0);
    let (_, landing) = r.get("/").await;
    assert!(landing.contains("<h2>Discovery</h2>"));
    assert!(landing.contains("<td>cts</td>"), "{landing}");
    r.shutdown().await;
    stop.cancel();
}

#[tokio::test]
async fn a_late_trace_is_found_thanks_to_the_overlap() {
    let (sim, base, stop, now) = simulator().await;
    // Begun 30 s ago: its trace is recorded 60 s after that, after the first window was read.
    sim.add_jobs(vec![script(
        "late1",
        "evs",
        "createVolume",
        now - 30.0,
        1e9,
        Outcome::Success,
    )]);
    let r = exporter(&sim, config(&base, "", "")).await;
    until(&r, "a first cycle", |t| succeeded(t, "evs", "cts")).await;
    assert_eq!(discovered(&r.metrics().await, "evs", "cts"), 0.0);
    let first_to: i64 = sim.cts_requests()[0]
        .to
        .as_deref()
        .and_then(|t| t.parse().ok())
        .expect("to");
    let begin_ms = ((sim.start_unix() + now - 30.0) * 1000.0).round() as i64;
    assert!(
        begin_ms < first_to,
        "the trace is stamped inside the first window"
    );
    sim.advance(Duration::from_secs(120));
    let text = until(&r, "the late job", |t| discovered(t, "evs", "cts") == 1.0).await;
    assert_eq!(common::tracked_ids(&text), vec!["late1"]);
    // Found by a window that began before the first one ended.
    let q = sim.cts_requests();
    let later = q
        .iter()
        .filter_map(|p| Some((p.from.as_deref()?.parse::<i64>().ok()?, p)))
        .find(|(_, p)| p.to.as_deref().and_then(|t| t.parse::<i64>().ok()) > Some(first_to));
    let (from, _) = later.expect("a later window");
    assert!(
        from < begin_ms,
        "the later window reaches back over the trace"
    );
    r.shutdown().await;
    stop.cancel();
}

#[tokio::test]
async fn orders_failed_calls_and_unreadable_traces_are_skipped_and_counted() {
    let (sim, base, stop, now) = simulator().await;
    let t = ((sim.start_unix() + now - 600.0) * 1000.0) as i64;
    let trace = |id: &str, code: serde_json::Value, response: serde_json::Value| {
        json!({"trace_id": id, "trace_name": "createVolume", "trace_type": "ApiCall",
               "service_type": "EVS", "time": t, "code": code, "response": response})
    };
    sim.add_traces(
        PROJECT,
        vec![
            trace("o1", json!("200"), json!({"order_id": "CS1"})),
            trace("o2", json!(200), json!("{\"order_id\":\"CS2\"}")),
            trace("f1", json!("400"), json!({"error": {"code": "EVS.2024"}})),
            trace("f2", json!(403), json!("{\"job_id\":\"nope\"}")),
            trace("u1", json!("202"), json!("<html>")),
            trace("u2", serde_json::Value::Null, serde_json::Value::Null),
            trace("n1", json!(200), json!({})),
            trace("j1", json!("202"), json!("{\"job_id\":\"found1\"}")),
            trace("j2", json!(202), json!({"job_id": "found2"})),
            // Another service's trace is not asked for.
            json!({"trace_id": "x1", "service_type": "ECS", "time": t, "code": 202,
                   "response": {"job_id": "ecsjob"}}),
        ],
    );
    let r = exporter(&sim, config(&base, "", "")).await;
    let text = until(&r, "two jobs", |t| discovered(t, "evs", "cts") == 2.0).await;
    let skipped = |reason: &str| {
        counter(
            &text,
            "huaweicloud_job_exporter_discovery_skipped_traces_total",
            "evs",
            "cts",
            &format!("reason=\"{reason}\""),
        )
    };
    assert_eq!(skipped("order"), 2.0);
    assert_eq!(skipped("failed_call"), 2.0);
    assert_eq!(skipped("unparsable"), 2.0);
    assert_eq!(skipped("no_job"), 1.0);
    // Later cycles re-read these traces in their overlap without counting them again.
    let before = sim.cts_requests().len();
    until(&r, "more cycles", |_| sim.cts_requests().len() > before + 3).await;
    let again = r.metrics().await;
    assert_eq!(
        discovery_lines(&again).matches("skipped").count(),
        discovery_lines(&text).matches("skipped").count()
    );
    assert_eq!(
        counter(
            &again,
            "huaweicloud_job_exporter_discovery_skipped_traces_total",
            "evs",
            "cts",
            "reason=\"order\""
        ),
        2.0
    );
    r.shutdown().await;
    stop.cancel();
}

#[tokio::test]
async fn throttling_and_server_errors_back_off_and_keep_the_cursor() {
    let (sim, base, stop, now) = simulator().await;
    sim.add_jobs(evs_jobs("b", 3, now, 600.0, 60.0));
    // Three answers: the request and the client's two retries, one failed cycle.
    sim.set_api_fault(
        Api::Cts,
        Some(Fault::Throttle { retry_after: None }),
        Some(3),
    );
    let r = exporter(&sim, config(&base, "", "")).await;
    let text = until(&r, "jobs after the fault", |t| {
        discovered(t, "evs", "cts") == 3.0
    })
    .await;
    let errors = |text: &str, reason: &str| {
        counter(
            text,
            "huaweicloud_job_exporter_discovery_errors_total",
            "evs",
            "cts",
            &format!("reason=\"{reason}\""),
        )
    };
    assert_eq!(errors(&text, "throttled"), 1.0);
    assert_eq!(errors(&text, "server_error"), 0.0);
    // The failed cycle's window was asked again, from the same start (nothing was skipped).
    let q = sim.cts_requests();
    assert_eq!(q[0].from, q[3].from, "{q:?}");
    // A 503 later: counted, the window kept, nothing lost.
    let n = sim.cts_requests().len();
    sim.set_api_fault(Api::Cts, Some(Fault::Status { status: 503 }), Some(3));
    let text = until(&r, "a server error", |t| errors(t, "server_error") == 1.0).await;
    assert_eq!(errors(&text, "throttled"), 1.0);
    until(&r, "cycles after it", |_| sim.cts_requests().len() > n + 6).await;
    // The failed window is the one asked three times in a row (request and two retries);
    // the cycle after it starts where that window started.
    let q = sim.cts_requests();
    let failed = (n.saturating_sub(1)..q.len() - 3)
        .find(|&i| q[i].to == q[i + 2].to && q[i + 3].to != q[i].to)
        .expect("a window asked three times");
    assert_eq!(q[failed + 3].from, q[failed].from, "{:?}", &q[n - 1..]);
    r.shutdown().await;
    stop.cancel();
}

#[tokio::test]
async fn the_page_cap_stops_a_cycle_and_the_next_ones_read_the_rest() {
    let (sim, base, stop, now) = simulator().await;
    sim.add_jobs(evs_jobs("p", 450, now, 1200.0, 60.0));
    let r = exporter(&sim, config(&base, "", ", max_pages: 2")).await;
    let capped = |t: &str| {
        counter(
            t,
            "huaweicloud_job_exporter_discovery_page_limit_reached_total",
            "evs",
            "cts",
            "",
        )
    };
    // 900 traces, 400 a cycle: two cycles stop at the cap, the third reads the rest.
    let text = until(&r, "all jobs over several cycles", |t| {
        discovered(t, "evs", "cts") == 450.0 && capped(t) >= 2.0
    })
    .await;
    assert_eq!(discovered(&text, "evs", "cts"), 450.0);
    // No chain was longer than two pages.
    let q = sim.cts_requests();
    let mut run = 0;
    for p in &q {
        run = if p.next.is_some() { run + 1 } else { 1 };
        assert!(run <= 2, "{q:?}");
    }
    r.shutdown().await;
    stop.cancel();
}

#[tokio::test]
async fn the_per_target_bound_is_kept_and_what_is_left_out_counted_once() {
    let (sim, base, stop, now) = simulator().await;
    sim.add_jobs(evs_jobs("m", 150, now, 1200.0, 60.0));
    let r = exporter(&sim, config(&base, "max_discovered_jobs: 100", "")).await;
    let text = until(&r, "the bound", |t| discovered(t, "evs", "cts") == 100.0).await;
    let before = sim.cts_requests().len();
    until(&r, "more cycles", |_| sim.cts_requests().len() > before + 3).await;
    let text2 = r.metrics().await;
    assert_eq!(discovered(&text2, "evs", "cts"), 100.0);
    let over = |t: &str| {
        counter(
            t,
            "huaweicloud_job_exporter_discovery_jobs_over_limit_total",
            "evs",
            "cts",
            "",
        )
    };
    assert_eq!(over(&text2), 50.0, "{}", discovery_lines(&text));
    let text = until(&r, "100 tracked", |t| common::tracked_ids(t).len() == 100).await;
    assert_eq!(common::tracked_ids(&text).len(), 100);
    r.shutdown().await;
    stop.cancel();
}

#[tokio::test]
async fn each_shard_adds_only_the_jobs_it_owns() {
    let (sim, base, stop, now) = simulator().await;
    let jobs = evs_jobs("s", 60, now, 1200.0, 60.0);
    let ids: Vec<String> = jobs.iter().map(|j| j.job_id.clone()).collect();
    sim.add_jobs(jobs);
    let mut owned_total = 0;
    let scope = Scope::new("evs", "cn-north-4", PROJECT);
    for index in 0..2 {
        let mut cfg = config(&base, "", "");
        cfg.shard = Shard::parse(&index.to_string(), 2, None).expect("shard");
        let mut owned: Vec<String> = ids
            .iter()
            .filter(|id| cfg.shard.owns(&scope, id))
            .cloned()
            .collect();
        owned.sort();
        owned_total += owned.len();
        let r = exporter(&sim, cfg).await;
        let n = owned.len() as f64;
        until(&r, "owned jobs", |t| discovered(t, "evs", "cts") == n).await;
        let text = until(&r, "owned jobs tracked", |t| {
            common::tracked_ids(t) == owned
        })
        .await;
        assert_eq!(common::tracked_ids(&text), owned);
        r.shutdown().await;
    }
    assert_eq!(owned_total, 60);
    assert!(owned_total > 0);
    stop.cancel();
}

#[tokio::test]
async fn a_restart_resumes_from_the_cursor_without_counting_again() {
    // The state file outlives the exporter.
    let dir = tempfile::tempdir().expect("temp dir");
    let state_file = dir.path().join("state.json");
    let with_state = |base: &str| {
        let mut cfg = config(base, "", "");
        cfg.state_file = Some(state_file.clone());
        cfg
    };
    let (sim, base, stop, now) = simulator().await;
    sim.add_jobs(evs_jobs("r", 20, now, 1200.0, 60.0));
    let t = ((sim.start_unix() + now - 100.0) * 1000.0) as i64;
    sim.add_traces(
        PROJECT,
        vec![
            json!({"trace_id": "bad1", "service_type": "EVS", "time": t, "code": "409",
                     "response": {"error": {"code": "EVS.1"}}}),
        ],
    );
    let r = exporter(&sim, with_state(&base)).await;
    until(&r, "20 jobs", |t| discovered(t, "evs", "cts") == 20.0).await;
    // Every fifth job failed: four failures, each counted once.
    until(&r, "4 failures", |t| failures(t) == 4.0).await;
    r.shutdown().await;
    let cursor = {
        let stored = state::Store::open(
            &state_file,
            prometheus::IntCounter::new("w", "w").expect("counter"),
        )
        .expect("the state file reads back");
        assert_eq!(
            stored.discovered().len(),
            20,
            "every discovered job is on disk"
        );
        stored
            .cursor(&state::CursorKey {
                cloud_service: "evs".into(),
                cloud_region: "cn-north-4".into(),
                project_id: PROJECT.into(),
                source: state::DiscoverySource::Cts,
            })
            .expect("a saved cursor")
    };

    // Ten minutes later, five more jobs; the new exporter starts where the first stopped.
    sim.advance(Duration::from_secs(600));
    let later = sim.now_secs();
    sim.add_jobs(evs_jobs("n", 5, later, 200.0, 60.0));
    let asked = sim.cts_requests().len();
    let r = exporter(&sim, with_state(&base)).await;
    let text = until(&r, "the new jobs", |t| discovered(t, "evs", "cts") == 5.0).await;
    let first = &sim.cts_requests()[asked];
    assert_eq!(
        first.from.as_deref(),
        Some((cursor.until_ms - 300_000).to_string().as_str()),
        "resumed from the cursor minus the overlap, not from lookback"
    );
    // Neither the old jobs nor the failed call in the overlap are counted again, and every
    // job is tracked.
    let skipped = counter(
        &text,
        "huaweicloud_job_exporter_discovery_skipped_traces_total",
        "evs",
        "cts",
        "reason=\"failed_call\"",
    );
    assert_eq!(skipped, 0.0);
    let text = until(&r, "25 tracked", |t| common::tracked_ids(t).len() == 25).await;
    assert_eq!(common::tracked_ids(&text).len(), 25);
    // The new process counts the one new failure (n0000), not the four the first one counted:
    // it remembers those jobs finished and exports them without fetching them again.
    let text = until(&r, "the new failure", |t| failures(t) >= 1.0).await;
    assert_eq!(failures(&text), 1.0, "old failures are not counted again");
    assert!(
        text.contains("huaweicloud_job_failure_info{") && text.contains("job_id=\"r0000\""),
        "the remembered failed job is still exported"
    );
    r.shutdown().await;
    stop.cancel();
}

#[tokio::test]
async fn the_task_centre_adds_failed_sdrs_jobs() {
    let (sim, base, stop, now) = simulator().await;
    let mut jobs: Vec<JobScript> = (0..130)
        .map(|i| {
            script(
                &format!("sd{i:03}"),
                "sdrs",
                "failoverProtectionGroup",
                now - 9.0 * 86400.0 + f64::from(i),
                30.0,
                fail("SDRS.1201", "not allowed"),
            )
        })
        .collect();
    jobs.push(script(
        "sdok",
        "sdrs",
        "createServerGroup",
        now - 3600.0,
        30.0,
        Outcome::Success,
    ));
    sim.add_jobs(jobs);
    let r = exporter(&sim, config(&base, "", "")).await;
    until(&r, "130 failed jobs", |t| {
        discovered(t, "sdrs", "failure_jobs") == 130.0
    })
    .await;
    // Two pages of 100.
    let q = sim.task_center_requests();
    assert_eq!(q[0].offset.as_deref(), Some("0"));
    assert_eq!(q[1].offset.as_deref(), Some("100"));
    let text = until(&r, "tracked", |t| common::tracked_ids(t).len() == 130).await;
    assert!(!common::tracked_ids(&text).contains(&"sdok".to_string()));
    let listed = api_jobs(&r).await;
    assert!(
        listed
            .iter()
            .any(|j| j["source"] == "failure_jobs" && j["job_id"] == "sd000")
    );
    r.shutdown().await;
    stop.cancel();
}

#[tokio::test]
async fn an_expired_discovered_job_is_not_brought_back() {
    let (sim, base, stop, now) = simulator().await;
    sim.add_jobs(vec![script(
        "gone1",
        "sdrs",
        "failoverProtectionGroup",
        now - 600.0,
        30.0,
        fail("SDRS.1201", "not allowed"),
    )]);
    let r = exporter(&sim, config(&base, "terminal_retention: 1s", "")).await;
    until(&r, "found", |t| {
        discovered(t, "sdrs", "failure_jobs") == 1.0
    })
    .await;
    // Fetched, seen failed, dropped after the retention; still listed by the task centre.
    until(&r, "tracked", |t| common::tracked_ids(t) == ["gone1"]).await;
    until(&r, "dropped", |t| {
        t.lines()
            .any(|l| l.starts_with("huaweicloud_job_failures_total{") && l.contains("SDRS.1201"))
            && common::tracked_ids(t).is_empty()
    })
    .await;
    // Forgotten by discovery too (the tracked set's owner prunes every few seconds).
    let mut listed = api_jobs(&r).await;
    for _ in 0..200 {
        if listed.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        listed = api_jobs(&r).await;
    }
    assert!(listed.is_empty(), "{listed:?}");
    let n = sim.task_center_requests().len();
    until(&r, "more cycles", |_| {
        sim.task_center_requests().len() > n + 3
    })
    .await;
    let text = r.metrics().await;
    assert!(common::tracked_ids(&text).is_empty());
    assert_eq!(discovered(&text, "sdrs", "failure_jobs"), 1.0);
    assert!(api_jobs(&r).await.is_empty());
    r.shutdown().await;
    stop.cancel();
}

#[tokio::test]
async fn discovery_families_on_metrics() {
    let (sim, base, stop, _) = simulator().await;
    let r = exporter(&sim, config(&base, "", "")).await;
    let text = until(&r, "both sources ran", |t| {
        succeeded(t, "sdrs", "failure_jobs") && succeeded(t, "evs", "cts")
    })
    .await;
    let evs = labels("evs", "cts");
    let sdrs = labels("sdrs", "failure_jobs");
    let errors = "huaweicloud_job_exporter_discovery_errors_total";
    for line in [
        "# TYPE huaweicloud_job_exporter_discovered_jobs_total counter".to_string(),
        format!("huaweicloud_job_exporter_discovered_jobs_total{{{evs}}} 0"),
        format!("huaweicloud_job_exporter_discovered_jobs_total{{{sdrs}}} 0"),
        "# TYPE huaweicloud_job_exporter_discovery_errors_total counter".to_string(),
        format!("{} 0", series(errors, "evs", "cts", "reason=\"throttled\"")),
        format!(
            "{} 0",
            series(errors, "sdrs", "failure_jobs", "reason=\"forbidden\"")
        ),
        format!("{} 0", series(errors, "evs", "cts", "reason=\"auth\"")),
        format!(
            "{} 0",
            series(
                "huaweicloud_job_exporter_discovery_skipped_traces_total",
                "evs",
                "cts",
                "reason=\"failed_call\""
            )
        ),
        format!("huaweicloud_job_exporter_discovery_jobs_over_limit_total{{{evs}}} 0"),
        format!("huaweicloud_job_exporter_discovery_page_limit_reached_total{{{sdrs}}} 0"),
        format!("huaweicloud_job_exporter_discovery_gap_seconds_total{{{evs}}} 0"),
        "# TYPE huaweicloud_job_exporter_discovery_last_success_timestamp_seconds gauge"
            .to_string(),
        "# TYPE huaweicloud_job_exporter_discovery_cursor_lag_seconds gauge".to_string(),
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line}\n{}",
            discovery_lines(&text)
        );
    }
    // Ten reasons per task, four skip reasons for CTS only.
    assert_eq!(
        text.lines()
            .filter(|l| l.starts_with("huaweicloud_job_exporter_discovery_errors_total{"))
            .count(),
        20
    );
    assert_eq!(
        text.lines()
            .filter(|l| l.starts_with("huaweicloud_job_exporter_discovery_skipped_traces_total{"))
            .count(),
        4
    );
    r.shutdown().await;
    stop.cancel();
}

#[tokio::test]
async fn a_reload_that_adds_or_removes_discover_applies_at_once() {
    let (sim, base, stop, now) = simulator().await;
    sim.add_jobs(evs_jobs("e", 12, now, 1200.0, 60.0));
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("config.yml");
    let write = |discover: &str| {
        let yaml = format!(
            r#"
refresh_interval: 1s
max_requests_per_second: 1000
accounts: [{{name: a, access_key: {DEMO_ACCESS_KEY}, secret_key: {DEMO_SECRET_KEY}}}]
targets:
  - account: a
    cloud_service: evs
    cloud_region: cn-north-4
    project_id: {PROJECT}
    endpoint: "{base}"
    jobs: [e0000]
{discover}
"#
        );
        std::fs::write(&path, yaml).expect("config written");
    };
    write("");
    let cfg = Config::load(&path, &|_| None).expect("valid config");
    let r = exporter(&sim, cfg).await;
    let text = until(&r, "the listed job", |t| {
        common::tracked_ids(t) == ["e0000"]
    })
    .await;
    assert!(!text.contains("huaweicloud_job_exporter_discovered_jobs_total{"));
    assert!(
        sim.cts_requests().is_empty(),
        "no discovery without discover"
    );

    // Adding `discover` takes effect with the reload, not at the next restart.
    write(&format!(
        "    discover:\n      cts: {{endpoint: \"{base}\", interval: 10s, lookback: 1h}}"
    ));
    let reload = reqwest::Client::new()
        .post(r.url("/-/reload"))
        .send()
        .await
        .expect("reload");
    assert_eq!(reload.status().as_u16(), 200);
    let text = until(&r, "12 jobs discovered", |t| {
        t.contains("huaweicloud_job_exporter_discovered_jobs_total{")
            && discovered(t, "evs", "cts") == 11.0
    })
    .await;
    assert_eq!(
        discovered(&text, "evs", "cts"),
        11.0,
        "e0000 was listed already"
    );
    until(&r, "12 tracked", |t| common::tracked_ids(t).len() == 12).await;

    // Removing it stops the task and its series at once; the jobs it found stay tracked.
    write("");
    let reload = reqwest::Client::new()
        .post(r.url("/-/reload"))
        .send()
        .await
        .expect("reload");
    assert_eq!(reload.status().as_u16(), 200);
    let text = until(&r, "discovery series gone", |t| {
        !t.contains("huaweicloud_job_exporter_discovered_jobs_total{")
    })
    .await;
    let asked = sim.cts_requests().len();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(sim.cts_requests().len(), asked, "the task stopped");
    assert!(common::tracked_ids(&text).contains(&"e0000".to_string()));
    r.shutdown().await;
    stop.cancel();
}
