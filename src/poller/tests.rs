//! The poller's behaviour end to end over a scripted job source.

use super::jobs::{Known, last_state};
use super::label_caps::MAX_LABEL_VALUES;
use super::*;
use crate::cloud::{BodyDigest, FetchContext, FetchError, Fetched, Job, Status};
use futures_util::FutureExt as _;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// A scripted source: each job returns the next status of its script, then the last one.
struct Fake {
    scripts: Mutex<HashMap<String, VecDeque<cloud::Result<Job>>>>,
    calls: Mutex<HashMap<String, usize>>,
    delay: Duration,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    /// Give each job a digest of its contents, and answer Unchanged to a matching one.
    digests: bool,
    unchanged: AtomicUsize,
}

impl Fake {
    fn new(delay: Duration) -> Arc<Self> {
        Arc::new(Self::unwrapped(delay))
    }

    fn unwrapped(delay: Duration) -> Self {
        Self {
            scripts: Mutex::default(),
            calls: Mutex::default(),
            delay,
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
            digests: false,
            unchanged: AtomicUsize::new(0),
        }
    }

    fn with_digests(delay: Duration) -> Arc<Self> {
        Arc::new(Self {
            digests: true,
            ..Self::unwrapped(delay)
        })
    }

    fn script(&self, id: &str, steps: Vec<cloud::Result<Job>>) {
        self.scripts
            .lock()
            .expect("lock")
            .insert(id.to_string(), steps.into());
    }

    fn calls(&self, id: &str) -> usize {
        self.calls
            .lock()
            .expect("lock")
            .get(id)
            .copied()
            .unwrap_or(0)
    }
}

impl JobSource for Fake {
    fn fetch<'a>(
        &'a self,
        job_id: &'a str,
        known: Option<BodyDigest>,
        _ctx: &'a FetchContext,
    ) -> Fetch<'a> {
        async move {
            *self
                .calls
                .lock()
                .expect("lock")
                .entry(job_id.to_string())
                .or_default() += 1;
            let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            self.max_in_flight.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(self.delay).await;
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            let mut scripts = self.scripts.lock().expect("lock");
            let steps = scripts.get_mut(job_id).ok_or(FetchError::Timeout)?;
            let job = if steps.len() > 1 {
                steps.pop_front().unwrap_or(Err(FetchError::Timeout))
            } else {
                steps.front().cloned().unwrap_or(Err(FetchError::Timeout))
            }?;
            if !self.digests {
                return Ok(Fetched::Job(job, None));
            }
            let digest = BodyDigest::new(std::hash::BuildHasher::hash_one(
                &std::hash::BuildHasherDefault::<std::hash::DefaultHasher>::default(),
                format!("{job:?}"),
            ));
            if known == Some(digest) {
                self.unchanged.fetch_add(1, Ordering::SeqCst);
                return Ok(Fetched::Unchanged);
            }
            Ok(Fetched::Job(job, Some(digest)))
        }
        .boxed()
    }
}

fn job(status: &str, begin: f64, end: Option<f64>) -> Job {
    Job {
        job_type: Some("createVolume".into()),
        status: Some(status.into()),
        begin: Some(begin),
        end,
        ..Job::default()
    }
}

fn failed(code: Option<&str>) -> Job {
    Job {
        error_code: code.map(str::to_string),
        fail_reason: Some("disk \"quota\" exceeded".into()),
        ..job("FAIL", 100.0, Some(130.0))
    }
}

/// A target of project `p1` whose jobs `fake` answers.
fn target(fake: &Arc<Fake>) -> Arc<Target> {
    target_in(fake, "p1")
}

fn target_in(fake: &Arc<Fake>, project: &str) -> Arc<Target> {
    Arc::new(Target {
        account: "acc".into(),
        scope: Scope::new("evs", "r1", project),
        endpoint_key: "h1".into(),
        source: Arc::clone(fake) as Arc<dyn JobSource>,
    })
}

fn settings(mode: Mode) -> Settings {
    Settings {
        mode,
        refresh_interval: Duration::from_secs(30),
        scrape_timeout: Duration::from_secs(10),
        max_concurrency: 4,
        max_requests_per_second: 1000.0,
        terminal_retention: Duration::from_secs(3600),
        shard: crate::shard::Shard::default(),
        job_limits: Default::default(),
        families: Families::ALL,
    }
}

fn poller(fake: &Arc<Fake>, jobs: &[&str], s: Settings) -> Poller {
    Poller::new(
        vec![(target(fake), jobs.iter().map(|j| j.to_string()).collect())],
        s,
        Arc::new(Telemetry::new()),
    )
}

fn text(p: &Poller) -> String {
    let mut out = Vec::new();
    p.current().write(&mut out);
    String::from_utf8(out).expect("utf8")
}

fn series<'a>(text: &'a str, prefix: &str) -> Vec<&'a str> {
    text.lines().filter(|l| l.starts_with(prefix)).collect()
}

#[tokio::test(start_paused = true)]
async fn terminal_jobs_are_fetched_once_and_counted_once() {
    let fake = Fake::new(Duration::from_millis(10));
    fake.script(
        "j1",
        vec![
            Ok(job("INIT", 100.0, None)),
            Ok(job("RUNNING", 100.0, None)),
            Ok(failed(Some("EVS.2024"))),
        ],
    );
    fake.script("j2", vec![Ok(failed(None))]);
    let p = poller(&fake, &["j1", "j2"], settings(Mode::Cached));
    for _ in 0..5 {
        p.collect(None).await;
    }
    assert_eq!(fake.calls("j1"), 3);
    assert_eq!(fake.calls("j2"), 1);
    let t = text(&p);
    assert_eq!(
        series(&t, "huaweicloud_job_failures_total{"),
        vec![
            "huaweicloud_job_failures_total{cloud_service=\"evs\",cloud_region=\"r1\",project_id=\"p1\",job_type=\"createVolume\",error_code=\"EVS.2024\"} 1",
            "huaweicloud_job_failures_total{cloud_service=\"evs\",cloud_region=\"r1\",project_id=\"p1\",job_type=\"createVolume\",error_code=\"none\"} 1",
        ]
    );
    assert!(t.contains("huaweicloud_job_completed_duration_seconds_count{cloud_service=\"evs\",cloud_region=\"r1\",project_id=\"p1\",job_type=\"createVolume\",status=\"FAIL\"} 2\n"));
    assert!(t.contains("huaweicloud_jobs{cloud_service=\"evs\",cloud_region=\"r1\",project_id=\"p1\",job_type=\"createVolume\",status=\"FAIL\"} 2\n"));
    assert!(t.contains("fail_reason=\"disk \\\"quota\\\" exceeded\"} 1"));
}

#[tokio::test(start_paused = true)]
async fn a_finished_job_that_leaves_and_comes_back_is_neither_fetched_nor_counted_again() {
    let fake = Fake::new(Duration::from_millis(10));
    let ids = ["f1", "f2", "f3", "f4", "f5"];
    for id in ids {
        fake.script(id, vec![Ok(failed(Some("EVS.1")))]);
    }
    let p = poller(&fake, &ids, settings(Mode::Cached));
    p.collect(None).await;
    let failures = "huaweicloud_job_failures_total{cloud_service=\"evs\",cloud_region=\"r1\",project_id=\"p1\",job_type=\"createVolume\",error_code=\"EVS.1\"} 5";
    let listed = || vec![(target(&fake), ids.iter().map(|j| j.to_string()).collect())];
    for _ in 0..2 {
        // The config emptied, then restored.
        p.set_jobs(vec![(target(&fake), Vec::new())]);
        p.collect(None).await;
        assert!(series(&text(&p), "huaweicloud_job_status{").is_empty());
        p.set_jobs(listed());
        p.collect(None).await;
    }
    let t = text(&p);
    assert_eq!(
        series(&t, "huaweicloud_job_failures_total{"),
        vec![failures]
    );
    assert!(t.contains("huaweicloud_job_completed_duration_seconds_count{cloud_service=\"evs\",cloud_region=\"r1\",project_id=\"p1\",job_type=\"createVolume\",status=\"FAIL\"} 5\n"));
    assert!(t.contains("huaweicloud_jobs{cloud_service=\"evs\",cloud_region=\"r1\",project_id=\"p1\",job_type=\"createVolume\",status=\"FAIL\"} 5\n"), "still exported");
    for id in ids {
        assert_eq!(fake.calls(id), 1, "{id}");
    }

    // A new process that remembers them exports them as they were, fetching nothing.
    let finished: Vec<Finished> = {
        let mut state = p.state();
        let keys = std::mem::take(&mut state.newly_finished);
        keys.iter()
            .filter_map(|k| state.memory.finished(k))
            .collect()
    };
    assert_eq!(finished.len(), 5);
    let fresh = Fake::new(Duration::from_millis(10));
    let again = poller(&fresh, &[], settings(Mode::Cached));
    again.remember(finished);
    again.set_jobs(listed());
    again.collect(None).await;
    let t2 = text(&again);
    assert!(
        series(&t2, "huaweicloud_job_failures_total{").is_empty(),
        "not counted again"
    );
    assert_eq!(
        series(&t2, "huaweicloud_job_failure_info{"),
        series(&t, "huaweicloud_job_failure_info{")
    );
    assert_eq!(
        series(&t2, "huaweicloud_job_end_timestamp_seconds{"),
        series(&t, "huaweicloud_job_end_timestamp_seconds{")
    );
    for id in ids {
        assert_eq!(fresh.calls(id), 0, "{id}");
    }
}

#[tokio::test(start_paused = true)]
async fn an_acknowledged_job_is_not_exported_nor_taken_back() {
    let fake = Fake::new(Duration::from_millis(10));
    fake.script("f1", vec![Ok(failed(Some("EVS.1")))]);
    fake.script("r1", vec![Ok(job("RUNNING", 100.0, None))]);
    let p = poller(&fake, &["f1", "r1"], settings(Mode::Cached));
    p.collect(None).await;
    let job = |id: &str| JobRef {
        cloud_service: "evs".into(),
        cloud_region: "r1".into(),
        project_id: "p1".into(),
        job_id: id.into(),
    };
    assert!(p.is_tracked(&job("f1")));
    let record = p.acknowledge(&job("f1"));
    assert_eq!(record.last, None);
    p.set_jobs(vec![(target(&fake), vec!["f1".into(), "r1".into()])]);
    p.collect(None).await;
    let t = text(&p);
    assert!(!t.contains("job_id=\"f1\""), "{t}");
    assert!(t.contains("job_id=\"r1\""));
    assert!(!p.is_tracked(&job("f1")));
    assert_eq!(
        p.remembered(&job("f1")).map(|r| (r.1, r.2)),
        Some((false, true))
    );
    assert_eq!(p.expired(|_| true), vec![job("f1")]);
    assert!(p.expired(|_| false).is_empty());
}

#[tokio::test(start_paused = true)]
async fn jobs_seen_finished_in_one_collection_are_all_made_durable_past_one_batch() {
    let fake = Fake::new(Duration::from_millis(1));
    let ids: Vec<String> = (0..super::collect::PERSIST_BATCH + 3)
        .map(|i| format!("f{i}"))
        .collect();
    for id in &ids {
        fake.script(id, vec![Ok(failed(Some("EVS.1")))]);
    }
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let p = poller(&fake, &refs, settings(Mode::Cached));
    let store = Arc::new(Store::in_memory());
    p.persist_to(Arc::clone(&store));
    p.collect(None).await;
    let mut stored: Vec<String> = store.finished().into_iter().map(|f| f.job.job_id).collect();
    stored.sort();
    let mut want = ids.clone();
    want.sort();
    assert_eq!(stored, want);
    assert!(p.state().newly_finished.is_empty());
}

#[tokio::test(start_paused = true)]
async fn remembered_jobs_of_several_scopes_come_back_with_their_own_scope() {
    let fake = Fake::new(Duration::from_millis(10));
    let p = poller(&fake, &[], settings(Mode::Cached));
    let job = |project: &str, region: &str, id: &str| JobRef {
        cloud_service: "evs".into(),
        cloud_region: region.into(),
        project_id: project.into(),
        job_id: id.into(),
    };
    let acknowledged = [
        job("p1", "r1", "a"),
        job("p2", "r1", "a"),
        job("p1", "r2", "a"),
        job("p1", "r1", "b"),
    ];
    p.remember(
        acknowledged
            .iter()
            .map(|j| Finished {
                job: j.clone(),
                at: 1.0,
                last: None,
            })
            .collect(),
    );
    let mut expired = p.expired(|_| true);
    expired.sort();
    let mut want = acknowledged.to_vec();
    want.sort();
    assert_eq!(expired, want);
    assert_eq!(
        p.expired(|j| j.project_id == "p2"),
        vec![job("p2", "r1", "a")]
    );
    for j in &acknowledged {
        assert_eq!(p.remembered(j).map(|r| r.2), Some(true), "{j:?}");
    }
    assert_eq!(p.remembered(&job("p2", "r2", "a")), None);
}

#[tokio::test(start_paused = true)]
async fn an_unchanged_body_moves_only_the_fetch_time_and_the_running_duration() {
    let fake = Fake::with_digests(Duration::from_millis(10));
    let running = job("RUNNING", 100.0, None);
    fake.script(
        "j1",
        vec![
            Ok(running.clone()),
            Ok(running.clone()),
            Err(FetchError::Timeout),
            Ok(running.clone()),
            Ok(failed(Some("EVS.1"))),
        ],
    );
    let p = poller(&fake, &["j1"], settings(Mode::Cached));
    let line = |t: &str, prefix: &str| series(t, prefix).concat();
    p.collect(None).await;
    let first = text(&p);
    tokio::time::advance(Duration::from_secs(30)).await;
    p.collect(None).await;
    assert_eq!(fake.unchanged.load(Ordering::SeqCst), 1);
    let second = text(&p);
    // Same job, later: everything but the fetch time and the duration is as it was.
    for f in [
        "huaweicloud_job_status{",
        "huaweicloud_job_begin_",
        "huaweicloud_jobs{",
    ] {
        assert_eq!(line(&first, f), line(&second, f), "{f}");
    }
    let secs = |t: &str, prefix: &str| -> f64 {
        let l = line(t, prefix);
        l.rsplit(' ')
            .next()
            .and_then(|v| v.parse().ok())
            .expect("a value")
    };
    let moved = secs(
        &second,
        "huaweicloud_job_last_fetch_success_timestamp_seconds{",
    ) - secs(
        &first,
        "huaweicloud_job_last_fetch_success_timestamp_seconds{",
    );
    assert!((30.0..31.0).contains(&moved), "{moved}");
    let grew = secs(&second, "huaweicloud_job_duration_seconds{")
        - secs(&first, "huaweicloud_job_duration_seconds{");
    assert!((grew - moved).abs() < 1e-6, "{grew} vs {moved}");
    // A failed fetch keeps the digest: the next identical body is still recognised.
    p.collect(None).await;
    assert!(line(&text(&p), "huaweicloud_job_fetch_success{").ends_with("} 0"));
    p.collect(None).await;
    assert_eq!(fake.unchanged.load(Ordering::SeqCst), 2);
    assert!(line(&text(&p), "huaweicloud_job_fetch_success{").ends_with("} 1"));
    // A changed body is decoded and applied as ever.
    p.collect(None).await;
    let t = text(&p);
    assert!(t.contains("status=\"FAIL\"} 1\n"));
    assert!(t.contains("error_code=\"EVS.1\"} 1\n"));
    assert_eq!(fake.calls("j1"), 5);
}

#[tokio::test(start_paused = true)]
async fn retention_drops_jobs_but_counters_stay() {
    let fake = Fake::new(Duration::ZERO);
    fake.script("j1", vec![Ok(failed(Some("X")))]);
    let p = poller(&fake, &["j1"], settings(Mode::Cached));
    p.collect(None).await;
    assert!(text(&p).contains("job_id=\"j1\""));
    tokio::time::advance(Duration::from_secs(3601)).await;
    p.collect(None).await;
    let t = text(&p);
    assert!(!t.contains("job_id=\"j1\""), "{t}");
    assert_eq!(series(&t, "huaweicloud_job_failures_total{").len(), 1);
    assert_eq!(fake.calls("j1"), 1);
}

#[tokio::test(start_paused = true)]
async fn a_failing_job_keeps_last_values_and_does_not_hide_others() {
    let fake = Fake::new(Duration::ZERO);
    fake.script(
        "bad",
        vec![
            Ok(job("RUNNING", 100.0, None)),
            Err(FetchError::Api {
                status: 503,
                code: None,
                message: None,
                request_id: None,
                retry_after: None,
            }),
        ],
    );
    fake.script("good", vec![Ok(job("RUNNING", 100.0, None))]);
    let p = poller(&fake, &["bad", "good"], settings(Mode::Cached));
    p.collect(None).await;
    p.collect(None).await;
    let t = text(&p);
    assert!(t.contains("huaweicloud_job_fetch_success{cloud_service=\"evs\",cloud_region=\"r1\",project_id=\"p1\",job_id=\"bad\"} 0\n"));
    assert!(t.contains("huaweicloud_job_fetch_success{cloud_service=\"evs\",cloud_region=\"r1\",project_id=\"p1\",job_id=\"good\"} 1\n"));
    assert!(t.contains("job_id=\"bad\",job_type=\"createVolume\",status=\"RUNNING\"} 1"));
    assert!(t.contains("huaweicloud_job_fetch_errors_total{cloud_service=\"evs\",cloud_region=\"r1\",project_id=\"p1\",reason=\"server_error\"} 1\n"));
    assert_eq!(p.recent_errors().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn concurrency_is_bounded_and_rate_is_limited() {
    let fake = Fake::new(Duration::from_millis(100));
    let ids: Vec<String> = (0..20).map(|i| format!("j{i}")).collect();
    for id in &ids {
        fake.script(id, vec![Ok(job("RUNNING", 1.0, None))]);
    }
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let p = poller(
        &fake,
        &refs,
        Settings {
            max_requests_per_second: 10.0,
            ..settings(Mode::Cached)
        },
    );
    let start = Instant::now();
    p.collect(None).await;
    assert!(fake.max_in_flight.load(Ordering::SeqCst) <= 4);
    // 20 requests at 10/s: the last may start only 1.9 s after the first.
    assert!(
        start.elapsed() >= Duration::from_millis(1900),
        "{:?}",
        start.elapsed()
    );
}

#[tokio::test(start_paused = true)]
async fn cached_mode_refreshes_on_the_interval_and_becomes_ready() {
    let fake = Fake::new(Duration::ZERO);
    fake.script("j1", vec![Ok(job("RUNNING", 1.0, None))]);
    let p = poller(&fake, &["j1"], settings(Mode::Cached));
    assert!(!p.is_ready());
    let stop = CancellationToken::new();
    let task = tokio::spawn(p.clone().run_cached(stop.clone()));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(p.is_ready());
    assert_eq!(fake.calls("j1"), 1);
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(fake.calls("j1"), 3);
    // A scrape in cached mode never fetches.
    let _ = p.scrape(None).await;
    assert_eq!(fake.calls("j1"), 3);
    stop.cancel();
    task.await.expect("stops");
}

#[tokio::test(start_paused = true)]
async fn on_demand_scrapes_share_one_collection_and_respect_the_deadline() {
    let fake = Fake::new(Duration::from_secs(2));
    fake.script("slow", vec![Ok(job("RUNNING", 1.0, None))]);
    let p = poller(&fake, &["slow"], settings(Mode::OnDemand));
    assert!(p.is_ready());
    let (a, b) = tokio::join!(p.scrape(None), p.scrape(None));
    assert!(Arc::ptr_eq(&a, &b));
    assert_eq!(fake.calls("slow"), 1);
    // Prometheus says 1 s: 0.5 s budget, the 2 s fetch misses it.
    let snap = p.scrape(Some(Duration::from_secs(1))).await;
    let mut out = Vec::new();
    snap.write(&mut out);
    let t = String::from_utf8(out).expect("utf8");
    assert!(t.contains("job_id=\"slow\"} 0\n"), "{t}");
    assert!(t.contains("status=\"RUNNING\"} 1"), "last value kept: {t}");
    assert!(t.contains("reason=\"timeout\"} 1"));
}

#[tokio::test(start_paused = true)]
async fn a_job_with_too_many_entities_and_sub_jobs_is_capped_and_counted() {
    let fake = Fake::new(Duration::from_millis(1));
    let mut big = job("RUNNING", 1.0, None);
    big.entities = (0..150)
        .map(|i| ("volume_id".into(), format!("v{i}")))
        .collect();
    big.sub_jobs = (0..7)
        .map(|i| Job {
            job_id: Some(format!("s{i}")),
            status: Some("RUNNING".into()),
            ..Job::default()
        })
        .collect();
    fake.script("j1", vec![Ok(big)]);
    let telemetry = Arc::new(Telemetry::new());
    let p = Poller::new(
        vec![(target(&fake), vec!["j1".into()])],
        Settings {
            job_limits: cloud::model::Limits {
                max_entities: 100,
                max_subjobs: 5,
            },
            ..settings(Mode::Cached)
        },
        Arc::clone(&telemetry),
    );
    let mut own = Vec::new();
    telemetry.encode(&mut own);
    let own = String::from_utf8(own).expect("utf8");
    assert!(own.contains("huaweicloud_job_exporter_truncated_total{kind=\"entities\"} 0\n"));
    assert!(own.contains("huaweicloud_job_exporter_truncated_total{kind=\"subjobs\"} 0\n"));
    p.collect(None).await;
    let t = text(&p);
    assert_eq!(series(&t, "huaweicloud_job_entity_info{").len(), 100);
    assert_eq!(
        series(&t, "huaweicloud_job_subjob_status{").len(),
        5 * Status::DOCUMENTED.len()
    );
    let mut own = Vec::new();
    telemetry.encode(&mut own);
    let own = String::from_utf8(own).expect("utf8");
    assert!(own.contains("huaweicloud_job_exporter_truncated_total{kind=\"entities\"} 50\n"));
    assert!(own.contains("huaweicloud_job_exporter_truncated_total{kind=\"subjobs\"} 2\n"));
}

#[tokio::test(start_paused = true)]
async fn a_failed_job_keeps_what_the_jobs_page_shows_and_a_succeeded_one_only_times() {
    let fake = Fake::new(Duration::ZERO);
    let mut f = failed(Some("EVS.1"));
    f.entities = vec![("volume_id".into(), "v1".into())];
    f.sub_jobs = vec![job("SUCCESS", 1.0, Some(2.0))];
    fake.script("f", vec![Ok(f)]);
    let mut ok = job("SUCCESS", 10.0, Some(20.0));
    ok.entities = vec![("volume_id".into(), "v2".into())];
    fake.script("ok", vec![Ok(ok)]);
    fake.script("run", vec![Ok(job("RUNNING", 1.0, None))]);
    let p = poller(&fake, &["f", "ok", "run"], settings(Mode::Cached));
    p.collect(None).await;
    let all = listing::Query {
        limit: 10,
        ..listing::Query::default()
    };
    let l = p.list_jobs(&all);
    let ids: Vec<&str> = l.rows.iter().map(|r| r.job_id.as_str()).collect();
    assert_eq!(ids, ["f", "run", "ok"]);
    let f = &l.rows[0];
    assert_eq!(f.error_code.as_deref(), Some("EVS.1"));
    assert!(f.fail_reason.is_some());
    assert_eq!(f.entities, [("volume_id".to_string(), "v1".to_string())]);
    let ok = &l.rows[2];
    assert_eq!((ok.begin, ok.end), (Some(10.0), Some(20.0)));
    assert!(ok.entities.is_empty());
    let state = p.state();
    let held = |want: &str| {
        state
            .jobs
            .iter()
            .find(|((_, id), _)| id == want)
            .map(|(key, e)| (key, e.job.as_ref().expect("known")))
            .expect("tracked")
    };
    let (_, Known::Body(failed)) = held("f") else {
        panic!("a failed job keeps its trimmed body");
    };
    assert!(failed.sub_jobs.is_empty());
    // A succeeded job is held as the last state the poller's memory holds, not a copy of it.
    let (key, Known::Finished(last)) = held("ok") else {
        panic!("a succeeded job is held as its last state");
    };
    let remembered = state.memory.get(key).and_then(|m| m.last.as_ref());
    assert!(remembered.is_some_and(|r| Arc::ptr_eq(r, last)));
    assert!(matches!(held("run"), (_, Known::Body(_))));
}

#[tokio::test(start_paused = true)]
async fn label_caps_are_per_target_and_count_what_they_fold() {
    let fake = Fake::new(Duration::from_millis(1));
    let in_project = |project: &str| target_in(&fake, project);
    // The noisy target fails 110 jobs with 110 codes and 110 types.
    let noisy: Vec<String> = (0..110).map(|i| format!("n{i}")).collect();
    for (i, id) in noisy.iter().enumerate() {
        let mut j = failed(Some(&format!("NOISY.{i}")));
        j.job_type = Some(format!("type{i}"));
        fake.script(id, vec![Ok(j)]);
    }
    fake.script("q1", vec![Ok(failed(Some("QUIET.1")))]);
    let telemetry = Arc::new(Telemetry::new());
    let p = Poller::new(
        vec![
            (in_project("noisy"), noisy.clone()),
            (in_project("quiet"), vec!["q1".to_string()]),
        ],
        settings(Mode::Cached),
        Arc::clone(&telemetry),
    );
    p.collect(None).await;
    let t = text(&p);
    // The quiet target keeps its own code and type, whatever the noisy one did.
    assert_eq!(
        series(
            &t,
            "huaweicloud_job_failures_total{cloud_service=\"evs\",cloud_region=\"r1\",project_id=\"quiet\""
        ),
        vec![
            "huaweicloud_job_failures_total{cloud_service=\"evs\",cloud_region=\"r1\",project_id=\"quiet\",job_type=\"createVolume\",error_code=\"QUIET.1\"} 1"
        ]
    );
    // The noisy one: 100 codes and types of its own at most, the rest under `other`.
    let noisy_failures = series(
        &t,
        "huaweicloud_job_failures_total{cloud_service=\"evs\",cloud_region=\"r1\",project_id=\"noisy\"",
    );
    assert_eq!(
        noisy_failures.len(),
        MAX_LABEL_VALUES + 1,
        "{noisy_failures:?}"
    );
    assert!(noisy_failures.contains(
            &"huaweicloud_job_failures_total{cloud_service=\"evs\",cloud_region=\"r1\",project_id=\"noisy\",job_type=\"other\",error_code=\"other\"} 10"
        ));
    let histograms = series(
        &t,
        "huaweicloud_job_completed_duration_seconds_count{cloud_service=\"evs\",cloud_region=\"r1\",project_id=\"noisy\"",
    );
    assert_eq!(histograms.len(), MAX_LABEL_VALUES + 1);
    assert!(t.contains("huaweicloud_jobs{cloud_service=\"evs\",cloud_region=\"r1\",project_id=\"noisy\",job_type=\"other\",status=\"FAIL\"} 10\n"));
    // What was folded is counted, per target and label, from 0 (the crate sorts labels).
    let mut own = Vec::new();
    telemetry.encode_in(&mut own, crate::exposition::Format::Text);
    let own = String::from_utf8(own).expect("utf8");
    for (project, label, n) in [
        ("noisy", "error_code", 10),
        ("noisy", "job_type", 10),
        ("noisy", "subjob_type", 0),
        ("quiet", "error_code", 0),
    ] {
        let line = format!(
            "huaweicloud_job_exporter_label_values_folded_total{{cloud_region=\"r1\",cloud_service=\"evs\",label=\"{label}\",project_id=\"{project}\"}} {n}\n"
        );
        assert!(own.contains(&line), "{line}{own}");
    }
}

/// The job ids of the lines of `family`, sorted, each as often as it has lines.
fn ids_of(text: &str, family: &str) -> Vec<String> {
    let mut ids: Vec<String> = series(text, &format!("{family}{{"))
        .iter()
        .filter_map(|l| Some(l.split("job_id=\"").nth(1)?.split('"').next()?.to_string()))
        .collect();
    ids.sort();
    ids
}

/// `ids` each `times` times, sorted.
fn each(ids: impl IntoIterator<Item = String>, times: usize) -> Vec<String> {
    let mut out: Vec<String> = ids
        .into_iter()
        .flat_map(|id| std::iter::repeat_n(id, times))
        .collect();
    out.sort();
    out
}

#[tokio::test(start_paused = true)]
async fn whole_segments_of_finished_jobs_are_sealed_and_leave_them_when_dropped() {
    use crate::snapshot::SEGMENT;
    let fake = Fake::new(Duration::ZERO);
    let n = SEGMENT * 2 + 100;
    let finished: Vec<String> = (0..n).map(|i| format!("f{i:05}")).collect();
    for id in &finished {
        fake.script(id, vec![Ok(job("SUCCESS", 100.0, Some(160.0)))]);
    }
    fake.script("r1", vec![Ok(job("RUNNING", 100.0, None))]);
    let all: Vec<&str> = finished.iter().map(String::as_str).chain(["r1"]).collect();
    let p = poller(&fake, &all, settings(Mode::Cached));
    p.collect(None).await;
    {
        let state = p.state();
        assert_eq!(state.archive.job_count(), SEGMENT * 2);
        let sealed = state.jobs.values().filter(|e| e.sealed.is_some()).count();
        assert_eq!(sealed, SEGMENT * 2);
        assert!(
            state
                .jobs
                .values()
                .filter(|e| e.sealed.is_some())
                .all(|e| e.text.held_bytes() == 0)
        );
    }
    let t = text(&p);
    let every: Vec<String> = finished.iter().cloned().chain(["r1".into()]).collect();
    assert_eq!(ids_of(&t, "huaweicloud_job_status"), each(every.clone(), 4));
    assert_eq!(
        ids_of(&t, "huaweicloud_job_duration_seconds"),
        each(every, 1)
    );
    assert_eq!(p.current().job_count(), n + 1);

    // Acknowledged, no longer listed, and listed again (back from its last state): each
    // sealed job leaves its segment's lines, and one listed again is there once.
    let job_ref = |id: &str| JobRef::new(&Scope::new("evs", "r1", "p1"), id);
    p.acknowledge(&job_ref("f00003"));
    let listed: Vec<String> = finished
        .iter()
        .filter(|id| !["f00003", "f00010", "f01500"].contains(&id.as_str()))
        .cloned()
        .chain(["r1".to_string()])
        .collect();
    p.set_jobs(vec![(target(&fake), listed.clone())]);
    let mut again = listed.clone();
    again.push("f00010".into());
    p.set_jobs(vec![(target(&fake), again)]);
    p.collect(None).await;
    let t = text(&p);
    let mut want: Vec<String> = listed.clone();
    want.push("f00010".into());
    assert_eq!(ids_of(&t, "huaweicloud_job_status"), each(want.clone(), 4));
    assert_eq!(
        ids_of(&t, "huaweicloud_job_end_timestamp_seconds").len(),
        n - 2
    );
    assert_eq!(p.current().job_count(), n - 1);
    assert_eq!(
        fake.calls("f00010"),
        1,
        "taken back from its last state, not fetched"
    );

    // Past retention every finished job goes, and its segments with it.
    tokio::time::advance(Duration::from_secs(3601)).await;
    p.collect(None).await;
    let t = text(&p);
    assert_eq!(
        ids_of(&t, "huaweicloud_job_status"),
        each(["r1".to_string()], 4)
    );
    assert_eq!(p.state().archive.job_count(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_job_dropped_while_its_segment_is_sealed_leaves_it_at_the_next_publish() {
    use crate::snapshot::SEGMENT;
    let fake = Fake::new(Duration::ZERO);
    let ids: Vec<String> = (0..SEGMENT).map(|i| format!("f{i:05}")).collect();
    for id in &ids {
        fake.script(id, vec![Ok(job("SUCCESS", 100.0, Some(160.0)))]);
    }
    // One short of a whole segment: nothing is sealed.
    let listed: Vec<&str> = ids[1..].iter().map(String::as_str).collect();
    let p = poller(&fake, &listed, settings(Mode::Cached));
    p.collect(None).await;
    assert_eq!(p.state().archive.job_count(), 0);

    let labels: Arc<str> = scope_labels(&Scope::new("evs", "r1", "p1")).into();
    let key = |i: usize| (Arc::clone(&labels), ids[i].clone());
    let now = p.inner.clock.now();
    // A publish by hand: the last job comes back from its last state, the whole segment is
    // gathered, and while it is compressed one job is dropped and another dropped and taken
    // back (with a text of its own).
    let (rewrites, open) = {
        let mut guard = p.state();
        let state = &mut *guard;
        let tracked = Arc::clone(&state.jobs[&key(1)].tracked);
        let last = Arc::new(last_state(&job("SUCCESS", 100.0, Some(160.0))));
        let remembered = Remembered {
            at: now,
            last: Some(last),
        };
        state
            .memory
            .insert(key(0), &tracked.target.scope, remembered);
        assert!(insert_job(
            state,
            &tracked,
            key(0),
            now,
            3600.0,
            Families::ALL
        ));
        let open: Vec<(JobKey, crate::exposition::JobText)> = state
            .jobs
            .iter()
            .map(|(k, e)| (k.clone(), e.text.clone()))
            .collect();
        (state.archive.take_rewrites(), open)
    };
    assert_eq!(open.len(), SEGMENT);
    let sealing = archive::prepare(rewrites, open, Families::ALL);
    {
        let mut guard = p.state();
        let state = &mut *guard;
        let tracked = Arc::clone(&state.jobs[&key(1)].tracked);
        state.drop_jobs(|k, _| *k != key(5) && *k != key(6));
        assert!(insert_job(
            state,
            &tracked,
            key(6),
            now,
            3600.0,
            Families::ALL
        ));
        state.install(sealing);
        assert_eq!(state.archive.job_count(), SEGMENT);
        assert!(state.jobs[&key(6)].sealed.is_none());
        assert!(state.jobs[&key(7)].sealed.is_some());
    }
    p.publish();
    let t = text(&p);
    let mut want: Vec<String> = ids.clone();
    want.retain(|id| id != &ids[5]);
    assert_eq!(ids_of(&t, "huaweicloud_job_status"), each(want, 4));
    assert_eq!(p.state().archive.job_count(), SEGMENT - 2);
}

#[tokio::test]
async fn the_simulator_fleet_sealed_reads_the_same_plain_and_gzipped() {
    use crate::simulator::{self, FleetShape};
    let fake = Fake::new(Duration::ZERO);
    // The benchmarks' fleet, where one block of the first inflater lost its last 469 bytes.
    let project = simulator::DEMO_PROJECT_ID;
    let scripts = simulator::fleet::generate(10_000, 7, project, &FleetShape::default());
    let mut by_service: HashMap<String, Vec<String>> = HashMap::new();
    for s in &scripts {
        let body = s.render(0.0, 1_700_000_000.0).to_string();
        let job = cloud::model::decode_job(body.as_bytes()).expect("simulator bodies decode");
        fake.script(&s.job_id, vec![Ok(job)]);
        by_service
            .entry(s.service.clone())
            .or_default()
            .push(s.job_id.clone());
    }
    let targets: TargetJobs = by_service
        .into_iter()
        .map(|(service, ids)| {
            let t = Target {
                account: "acc".into(),
                scope: Scope::new(&service, "cn-north-4", project),
                endpoint_key: "h1".into(),
                source: Arc::clone(&fake) as Arc<dyn JobSource>,
            };
            (Arc::new(t), ids)
        })
        .collect();
    let p = Poller::new(targets, settings(Mode::Cached), Arc::new(Telemetry::new()));
    p.collect(None).await;
    let sealed = p.state().archive.job_count();
    assert!(
        sealed >= 2 * crate::snapshot::SEGMENT,
        "{sealed} jobs sealed"
    );
    let snap = p.current();
    let plain: Vec<u8> = Arc::clone(&snap)
        .chunks(56 * 1024)
        .collect::<Vec<_>>()
        .concat();
    let tail = crate::gzip::compress(b"").expect("deflate");
    let body = Arc::clone(&snap)
        .gzip_chunks(tail, 56 * 1024)
        .expect("compressed")
        .collect::<Vec<_>>()
        .concat();
    let mut gunzipped = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&body[..]), &mut gunzipped)
        .expect("valid gzip");
    assert_eq!(plain.len(), gunzipped.len());
    assert!(plain == gunzipped);
    assert_eq!(
        series(
            &String::from_utf8(plain).expect("utf8"),
            "huaweicloud_job_fetch_success{"
        )
        .len(),
        10_000
    );
}

#[tokio::test(start_paused = true)]
async fn jobs_the_store_remembers_come_back_sealed_without_being_fetched() {
    use crate::snapshot::SEGMENT;
    let fake = Fake::new(Duration::ZERO);
    let p = poller(&fake, &[], settings(Mode::Cached));
    let scope = Scope::new("evs", "r1", "p1");
    let now = p.inner.clock.now();
    let ids: Vec<String> = (0..SEGMENT * 2 + 5).map(|i| format!("f{i:05}")).collect();
    let last = Arc::new(last_state(&job("SUCCESS", 100.0, Some(160.0))));
    p.remember(
        ids.iter()
            .map(|id| Finished {
                job: JobRef::new(&scope, id),
                at: now,
                last: Some(Arc::clone(&last)),
            })
            .collect(),
    );
    let (added, _) = p.set_jobs(vec![(target(&fake), ids.clone())]);
    assert_eq!(added, ids.len());
    assert_eq!(p.state().archive.job_count(), SEGMENT * 2);
    let t = text(&p);
    assert_eq!(ids_of(&t, "huaweicloud_job_status"), each(ids.clone(), 4));
    p.collect(None).await;
    assert_eq!(ids.iter().map(|id| fake.calls(id)).sum::<usize>(), 0);
    assert_eq!(ids_of(&text(&p), "huaweicloud_job_status"), each(ids, 4));
}
