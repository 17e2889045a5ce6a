//! The poller: tracked jobs, their last known state, and the two ways of refreshing them
//! (SPEC §5).
//!
//! - cached mode: [`Poller::run_cached`] polls the active jobs every `refresh_interval` and
//!   publishes a new [`Snapshot`]; a scrape reads the last one.
//! - on-demand mode: [`Poller::scrape`] collects within the scrape's deadline; concurrent scrapes
//!   share one collection.
//!
//! Both go through [`Poller::collect`]: at most `max_concurrency` requests in flight, at most
//! `max_requests_per_second` per endpoint, each result applied as it arrives so a slow or failing
//! job, target or account never holds up or hides the others. Terminal jobs are never fetched
//! again and are dropped `terminal_retention` after they were first seen finished. Counters and
//! the completed-duration histogram live apart from the jobs, so dropping a job keeps them
//! monotonic.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use futures_util::future::{BoxFuture, FutureExt, Shared};
use futures_util::stream::{self, StreamExt};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::cloud::{self, BodyDigest, FetchError, Fetched, Job, Reason};
use crate::config::Mode;
use crate::exposition::{self, AGGREGATE, Aggregate, JobText, JobView};
use crate::snapshot::Snapshot;
use crate::telemetry::Telemetry;

/// Buckets of `huaweicloud_job_completed_duration_seconds`: jobs take seconds to hours.
pub const DURATION_BUCKETS: [f64; 14] = [
    1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0, 21600.0,
    86400.0,
];

/// Distinct error codes kept per counter family before the rest count as `other`.
pub const MAX_ERROR_CODES: usize = 100;

/// How much of a scrape's timeout is kept back for rendering and the network, as
/// blackbox_exporter does with its timeout offset.
const SCRAPE_TIMEOUT_OFFSET: Duration = Duration::from_millis(500);

const RECENT_ERRORS: usize = 20;

/// Where jobs come from: the cloud client, or a fake in tests.
pub trait JobSource: Send + Sync + 'static {
    /// Fetches one job. `known` is the digest of the body last decoded for it: a source that
    /// keeps digests answers [`Fetched::Unchanged`] when the body is that one again.
    fn fetch<'a>(
        &'a self,
        target: &'a cloud::Target,
        job_id: &'a str,
        known: Option<BodyDigest>,
    ) -> BoxFuture<'a, cloud::Result<Fetched>>;
}

impl JobSource for cloud::Client {
    fn fetch<'a>(
        &'a self,
        target: &'a cloud::Target,
        job_id: &'a str,
        known: Option<BodyDigest>,
    ) -> BoxFuture<'a, cloud::Result<Fetched>> {
        self.get_job_since(target, job_id, known).boxed()
    }
}

/// Targets and the job ids tracked in each.
pub type TargetJobs = Vec<(Arc<cloud::Target>, Vec<String>)>;

/// Poller settings, taken from the configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Cached or on-demand.
    pub mode: Mode,
    /// Cached mode: time between refresh starts.
    pub refresh_interval: Duration,
    /// On-demand: deadline when Prometheus sends no timeout header.
    pub scrape_timeout: Duration,
    /// Requests in flight.
    pub max_concurrency: usize,
    /// Requests per second per endpoint.
    pub max_requests_per_second: f64,
    /// How long finished jobs stay exported.
    pub terminal_retention: Duration,
    /// The jobs this replica owns.
    pub shard: crate::shard::Shard,
    /// Entities and sub-jobs kept per job.
    pub job_limits: cloud::model::Limits,
}

impl From<&crate::config::Config> for Settings {
    fn from(c: &crate::config::Config) -> Self {
        Self {
            mode: c.mode,
            refresh_interval: c.refresh_interval,
            scrape_timeout: c.scrape_timeout,
            max_concurrency: c.max_concurrency,
            max_requests_per_second: c.max_requests_per_second,
            terminal_retention: c.terminal_retention,
            shard: c.shard,
            job_limits: c.job_limits,
        }
    }
}

/// A failed fetch, for the landing page.
#[derive(Debug, Clone)]
pub struct RecentError {
    /// Unix seconds.
    pub at: f64,
    /// `service/region/project`.
    pub target: String,
    /// The job.
    pub job_id: String,
    /// Bounded reason.
    pub reason: Reason,
    /// The error, without secrets.
    pub message: String,
}

/// Counts for the landing page and `tracked_jobs`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TargetSummary {
    /// Service.
    pub cloud_service: String,
    /// Region.
    pub cloud_region: String,
    /// Project.
    pub project_id: String,
    /// Jobs still polled.
    pub active: usize,
    /// Finished jobs kept until retention.
    pub terminal: usize,
    /// Jobs whose last fetch failed.
    pub failing: usize,
}

/// Unix time that follows tokio's clock, so paused-time tests move it too.
#[derive(Clone, Copy)]
struct Clock {
    base_unix: f64,
    base: Instant,
}

impl Clock {
    fn new() -> Self {
        let base_unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        Self {
            base_unix,
            base: Instant::now(),
        }
    }

    fn now(&self) -> f64 {
        self.base_unix + self.base.elapsed().as_secs_f64()
    }
}

/// Spaces requests to one endpoint `1/rate` apart, and adapts the rate to the cloud (AIMD):
/// a throttled answer halves it (at most once a second, API Gateway's throttling window, so a
/// burst of 429s for requests already in flight counts once), every other answer raises it by
/// a fiftieth of the configured rate, back up to the configured rate; it never drops below a
/// tenth of it. Written here rather than taken from `governor` because it must follow tokio's
/// clock (paused-time tests) and needs no burst logic.
struct RateLimiter {
    endpoint: String,
    max_rate: f64,
    floor: f64,
    state: Mutex<LimiterState>,
}

struct LimiterState {
    rate: f64,
    next: Instant,
    last_cut: Option<Instant>,
}

impl RateLimiter {
    fn new(endpoint: &str, per_second: f64) -> Self {
        let max_rate = if per_second.is_finite() && per_second > 0.0 {
            per_second
        } else {
            1.0
        };
        Self {
            endpoint: endpoint.to_string(),
            max_rate,
            floor: max_rate / 10.0,
            state: Mutex::new(LimiterState {
                rate: max_rate,
                next: Instant::now(),
                last_cut: None,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LimiterState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Requests per second allowed now.
    #[cfg(test)]
    fn rate(&self) -> f64 {
        self.lock().rate
    }

    async fn acquire(&self) {
        let slot = {
            let mut st = self.lock();
            let slot = st.next.max(Instant::now());
            st.next = slot + Duration::from_secs_f64(1.0 / st.rate);
            slot
        };
        // A timer for a slot already reached would still wait for the timer wheel's next
        // millisecond and cost a wake-up: most fetches of a refresh under the limit.
        if slot > Instant::now() {
            tokio::time::sleep_until(slot).await;
        }
    }
}

impl cloud::Pacer for RateLimiter {
    fn acquire(&self) -> BoxFuture<'_, ()> {
        RateLimiter::acquire(self).boxed()
    }

    fn throttled(&self) {
        let now = Instant::now();
        let mut st = self.lock();
        if st
            .last_cut
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(1))
        {
            return;
        }
        st.last_cut = Some(now);
        let before = st.rate;
        st.rate = (st.rate / 2.0).max(self.floor);
        if st.rate < before {
            tracing::info!(
                endpoint = %self.endpoint,
                requests_per_second = st.rate,
                "the cloud is throttling; slowing down"
            );
        }
    }

    fn answered(&self) {
        let mut st = self.lock();
        st.rate = (st.rate + self.max_rate / 50.0).min(self.max_rate);
    }
}

/// A target with its pre-escaped common labels.
struct Tracked {
    target: Arc<cloud::Target>,
    labels: Arc<str>,
}

type JobKey = (Arc<str>, String);

struct Entry {
    tracked: Arc<Tracked>,
    job_id: String,
    job: Option<Job>,
    /// The digest of the body `job` was decoded from.
    digest: Option<BodyDigest>,
    fetch_ok: bool,
    last_success: Option<f64>,
    terminal_since: Option<f64>,
    counted_subjob_failures: Vec<String>,
    text: JobText,
}

impl Entry {
    fn view(&self) -> JobView<'_> {
        JobView {
            target_labels: &self.tracked.labels,
            job_id: &self.job_id,
            job: self.job.as_ref(),
            fetch_ok: self.fetch_ok,
            last_success: self.last_success,
        }
    }

    fn render(&mut self) {
        self.text = exposition::render_job(&self.view());
    }

    /// Renders again after a fetch that returned the body `text` was rendered from.
    fn rerender_fetch(&mut self) {
        self.text = exposition::rerender_fetch(&self.view(), &self.text);
    }
}

#[derive(Default)]
struct Histogram {
    buckets: [u64; DURATION_BUCKETS.len()],
    sum: f64,
    count: u64,
}

/// Error codes seen so far, capped so a misbehaving upstream cannot grow cardinality.
#[derive(Default)]
struct CodeCap(HashSet<String>);

impl CodeCap {
    fn label(&mut self, code: Option<&str>) -> String {
        let code = code.filter(|c| !c.is_empty()).unwrap_or("none");
        if self.0.contains(code) {
            return code.to_string();
        }
        if self.0.len() < MAX_ERROR_CODES {
            self.0.insert(code.to_string());
            return code.to_string();
        }
        "other".to_string()
    }
}

#[derive(Default)]
struct Aggregates {
    completed: BTreeMap<(Arc<str>, String, String), Histogram>,
    failures: BTreeMap<(Arc<str>, String, String), u64>,
    subjob_failures: BTreeMap<(Arc<str>, String, String), u64>,
    fetch_errors: BTreeMap<(Arc<str>, Reason), u64>,
    codes: CodeCap,
    subjob_codes: CodeCap,
}

#[derive(Default)]
struct State {
    jobs: BTreeMap<JobKey, Entry>,
    /// Jobs dropped by retention, remembered while still listed so they are not re-added.
    expired: HashMap<JobKey, Arc<cloud::Target>>,
    agg: Aggregates,
    recent_errors: VecDeque<RecentError>,
}

struct Inner {
    source: Arc<dyn JobSource>,
    settings: Settings,
    telemetry: Arc<Telemetry>,
    clock: Clock,
    state: Mutex<State>,
    snapshot: RwLock<Arc<Snapshot>>,
    limiters: Mutex<HashMap<String, Arc<RateLimiter>>>,
    ready: std::sync::atomic::AtomicBool,
    inflight: Mutex<Option<Shared<BoxFuture<'static, Arc<Snapshot>>>>>,
}

/// Tracks jobs and keeps their snapshot current. Cheap to clone.
#[derive(Clone)]
pub struct Poller {
    inner: Arc<Inner>,
}

impl Poller {
    /// A poller over `targets`, each with its job ids.
    pub fn new(
        source: Arc<dyn JobSource>,
        targets: TargetJobs,
        settings: Settings,
        telemetry: Arc<Telemetry>,
    ) -> Self {
        let cached = settings.mode == Mode::Cached;
        let poller = Self {
            inner: Arc::new(Inner {
                source,
                telemetry,
                clock: Clock::new(),
                state: Mutex::new(State::default()),
                snapshot: RwLock::new(Arc::new(Snapshot::empty(cached))),
                limiters: Mutex::new(HashMap::new()),
                ready: std::sync::atomic::AtomicBool::new(!cached),
                inflight: Mutex::new(None),
                settings,
            }),
        };
        poller.set_jobs(targets);
        poller
    }

    /// Makes the tracked set exactly `targets` (restricted to this shard): new jobs are added,
    /// jobs no longer listed are dropped, the others keep their state and counters. Jobs
    /// already dropped by `terminal_retention` are not taken back, so a finished job listed in
    /// the config is neither fetched nor counted again. Returns (added, removed).
    pub fn set_jobs(&self, targets: TargetJobs) -> (usize, usize) {
        let shard = self.inner.settings.shard;
        let (mut added, removed);
        {
            let mut guard = self.state();
            let state = &mut *guard;
            let mut desired: HashSet<JobKey> = HashSet::new();
            added = 0;
            for (target, jobs) in targets {
                self.inner
                    .limiters
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .entry(target.endpoint_key().to_string())
                    .or_insert_with(|| {
                        Arc::new(RateLimiter::new(
                            target.endpoint_key(),
                            self.inner.settings.max_requests_per_second,
                        ))
                    });
                self.inner.telemetry.register_account(&target.account);
                let labels: Arc<str> = exposition::labels(&[
                    ("cloud_service", &target.cloud_service),
                    ("cloud_region", &target.cloud_region),
                    ("project_id", &target.project_id),
                ])
                .into();
                // Every reason from the start, so rate() and alerts see the first failure.
                for reason in Reason::ALL {
                    state
                        .agg
                        .fetch_errors
                        .entry((Arc::clone(&labels), reason))
                        .or_insert(0);
                }
                let tracked = Arc::new(Tracked { target, labels });
                let t = &tracked.target;
                for job_id in jobs {
                    if !shard.owns(&t.cloud_service, &t.cloud_region, &t.project_id, &job_id) {
                        continue;
                    }
                    let key = (Arc::clone(&tracked.labels), job_id);
                    // Listed, so kept in `desired` (and its tombstone kept), but not re-added.
                    if !desired.insert(key.clone()) || state.expired.contains_key(&key) {
                        continue;
                    }
                    match state.jobs.get_mut(&key) {
                        // Credentials or endpoint may have changed; the labels have not.
                        Some(e) => e.tracked = Arc::clone(&tracked),
                        None => {
                            let mut entry = Entry {
                                tracked: Arc::clone(&tracked),
                                job_id: key.1.clone(),
                                job: None,
                                digest: None,
                                fetch_ok: false,
                                last_success: None,
                                terminal_since: None,
                                counted_subjob_failures: Vec::new(),
                                text: JobText::default(),
                            };
                            entry.render();
                            state.jobs.insert(key, entry);
                            added += 1;
                        }
                    }
                }
            }
            let before = state.jobs.len();
            state.jobs.retain(|k, _| desired.contains(k));
            removed = before - state.jobs.len();
            state.expired.retain(|k, _| desired.contains(k));
        }
        self.publish();
        (added, removed)
    }

    /// Jobs dropped by `terminal_retention` and still listed somewhere, as
    /// (cloud_service, cloud_region, project_id, job_id).
    pub fn expired(&self) -> Vec<(String, String, String, String)> {
        self.state()
            .expired
            .iter()
            .map(|((_, job), t)| {
                (
                    t.cloud_service.clone(),
                    t.cloud_region.clone(),
                    t.project_id.clone(),
                    job.clone(),
                )
            })
            .collect()
    }

    /// Number of jobs tracked by this replica.
    pub fn job_count(&self) -> usize {
        self.state().jobs.len()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave State half-updated in a way that matters
        // more than losing every metric would, so carry on with it.
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// True once the first cached-mode refresh has finished (always true on demand).
    pub fn is_ready(&self) -> bool {
        self.inner.ready.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The mode this poller runs in.
    pub fn mode(&self) -> Mode {
        self.inner.settings.mode
    }

    /// The current snapshot, without collecting.
    pub fn current(&self) -> Arc<Snapshot> {
        Arc::clone(
            &self
                .inner
                .snapshot
                .read()
                .unwrap_or_else(PoisonError::into_inner),
        )
    }

    /// What a scrape serves: the last snapshot in cached mode; a fresh collection (shared with
    /// concurrent scrapes) on demand. `scrape_timeout` is Prometheus's
    /// `X-Prometheus-Scrape-Timeout-Seconds`, when sent.
    pub async fn scrape(&self, scrape_timeout: Option<Duration>) -> Arc<Snapshot> {
        if self.inner.settings.mode == Mode::Cached {
            return self.current();
        }
        let budget = scrape_timeout
            .map(|t| {
                t.saturating_sub(SCRAPE_TIMEOUT_OFFSET)
                    .max(Duration::from_millis(100))
            })
            .map_or(self.inner.settings.scrape_timeout, |t| {
                t.min(self.inner.settings.scrape_timeout)
            });
        let shared = {
            let mut slot = self
                .inner
                .inflight
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            match slot.as_ref() {
                Some(f) => f.clone(),
                None => {
                    let this = self.clone();
                    let deadline = Instant::now() + budget;
                    // Spawned, so a scraper that disconnects does not cancel the collection the
                    // others are waiting for.
                    let task = tokio::spawn(async move {
                        let started = Instant::now();
                        this.collect(Some(deadline)).await;
                        this.inner
                            .telemetry
                            .collect_duration
                            .observe(started.elapsed().as_secs_f64());
                        *this
                            .inner
                            .inflight
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner) = None;
                        this.current()
                    });
                    let this = self.clone();
                    let fut = async move { task.await.unwrap_or_else(|_| this.current()) }
                        .boxed()
                        .shared();
                    *slot = Some(fut.clone());
                    fut
                }
            }
        };
        shared.await
    }

    /// Cached mode: refreshes every `refresh_interval` until `shutdown`.
    pub async fn run_cached(self, shutdown: CancellationToken) {
        let mut ticker = tokio::time::interval(self.inner.settings.refresh_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = ticker.tick() => {}
            }
            let started = Instant::now();
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.collect(None) => {}
            }
            let t = &self.inner.telemetry;
            t.refresh_duration.observe(started.elapsed().as_secs_f64());
            t.last_refresh.set(self.inner.clock.now());
            if !self.is_ready() {
                self.inner
                    .ready
                    .store(true, std::sync::atomic::Ordering::Release);
                tracing::info!(
                    took_ms = started.elapsed().as_millis() as u64,
                    "first refresh done, ready"
                );
            }
        }
    }

    /// Fetches every active job once, applying results as they come, then publishes a snapshot.
    /// Jobs not fetched by `deadline` keep their last values with `fetch_success` 0.
    pub async fn collect(&self, deadline: Option<Instant>) {
        let now = self.inner.clock.now();
        let active: Vec<(JobKey, Arc<Tracked>, Option<BodyDigest>)> = {
            let mut state = self.state();
            let retention = self.inner.settings.terminal_retention.as_secs_f64();
            let state = &mut *state;
            let expired = &mut state.expired;
            state.jobs.retain(|k, e| {
                let keep = e.terminal_since.is_none_or(|t| now - t < retention);
                if !keep {
                    expired.insert(k.clone(), Arc::clone(&e.tracked.target));
                }
                keep
            });
            state
                .jobs
                .iter()
                .filter(|(_, e)| e.terminal_since.is_none())
                .map(|(k, e)| (k.clone(), Arc::clone(&e.tracked), e.digest))
                .collect()
        };
        let total = active.len();
        // Indexes rather than keys: hashing and cloning two strings per job per refresh showed
        // in the profile of a 10,000-job refresh.
        let mut done = vec![false; total];
        let mut failures: BTreeMap<Reason, usize> = BTreeMap::new();
        let retry_deadline =
            deadline.unwrap_or_else(|| Instant::now() + self.inner.settings.refresh_interval);
        let active = &active;
        let fetches = stream::iter(0..total)
            .map(|i| async move {
                let (key, tracked, known) = &active[i];
                let limiter = self
                    .inner
                    .limiters
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .get(tracked.target.endpoint_key())
                    .cloned();
                if let Some(l) = &limiter {
                    l.acquire().await;
                }
                // Retries inside the fetch go through the same limiter and never sleep past
                // the scrape's deadline, or in cached mode past the next refresh.
                let ctx = cloud::FetchContext {
                    deadline: Some(retry_deadline),
                    pacer: limiter.map(|l| l as Arc<dyn cloud::Pacer>),
                };
                let result = cloud::with_context(
                    ctx,
                    self.inner.source.fetch(&tracked.target, &key.1, *known),
                )
                .await;
                (i, result)
            })
            .buffer_unordered(self.inner.settings.max_concurrency);
        let apply_all = fetches.for_each(|(i, result)| {
            done[i] = true;
            if let Some(reason) = self.apply(&active[i].0, result) {
                *failures.entry(reason).or_default() += 1;
            }
            futures_util::future::ready(())
        });
        match deadline {
            Some(d) => {
                if tokio::time::timeout_at(d, apply_all).await.is_err() {
                    let left: Vec<&JobKey> = active
                        .iter()
                        .zip(&done)
                        .filter(|(_, done)| !**done)
                        .map(|((key, _, _), _)| key)
                        .collect();
                    tracing::debug!(jobs = left.len(), "scrape deadline reached");
                    for key in left {
                        self.apply(key, Err(FetchError::Timeout));
                        *failures.entry(Reason::Timeout).or_default() += 1;
                    }
                }
            }
            None => apply_all.await,
        }
        if !failures.is_empty() {
            let by_reason: Vec<String> = failures
                .iter()
                .map(|(r, n)| format!("{}={n}", r.as_str()))
                .collect();
            tracing::warn!(
                failed = failures.values().sum::<usize>(),
                active = total,
                reasons = %by_reason.join(","),
                "some job fetches failed; see the landing page or --log.level=debug"
            );
        }
        self.publish();
    }

    /// Applies one fetch result; returns the failure reason, if any.
    fn apply(&self, key: &JobKey, result: cloud::Result<Fetched>) -> Option<Reason> {
        let now = self.inner.clock.now();
        let mut guard = self.state();
        let state = &mut *guard;
        let entry = state.jobs.get_mut(key)?;
        let mut failed = None;
        let labels = Arc::clone(&entry.tracked.labels);
        let unchanged = matches!(result, Ok(Fetched::Unchanged)) && entry.job.is_some();
        match result {
            // The body last decoded, again: only the fetch time and the running duration move.
            Ok(Fetched::Unchanged) if entry.job.is_some() => {
                entry.fetch_ok = true;
                entry.last_success = Some(now);
            }
            Ok(Fetched::Unchanged) => {
                // A source answers Unchanged only to a digest, and a digest comes with a job;
                // should one not, fetch it whole next time.
                entry.digest = None;
            }
            Ok(Fetched::Job(mut job, digest)) => {
                let cut = job.cap(self.inner.settings.job_limits);
                self.inner.telemetry.truncated(cut);
                entry.fetch_ok = true;
                entry.last_success = Some(now);
                entry.digest = digest;
                let agg = &mut state.agg;
                let failed_subs = job
                    .sub_jobs
                    .iter()
                    .enumerate()
                    .filter(|(_, s)| s.status.as_deref() == Some("FAIL"));
                for (i, sub) in failed_subs {
                    // Same fallback id as the subjob_id label, so id-less sub-jobs count once each.
                    let id = sub.job_id.clone().unwrap_or_else(|| format!("#{i}"));
                    if entry.counted_subjob_failures.contains(&id) {
                        continue;
                    }
                    entry.counted_subjob_failures.push(id);
                    let code = agg.subjob_codes.label(sub.error_code.as_deref());
                    *agg.subjob_failures
                        .entry((
                            Arc::clone(&labels),
                            exposition::job_type(sub).to_string(),
                            code,
                        ))
                        .or_default() += 1;
                }
                if job.is_terminal() && entry.terminal_since.is_none() {
                    entry.terminal_since = Some(now);
                    let jt = exposition::job_type(&job).to_string();
                    let status = job.status.clone().unwrap_or_default();
                    if let (Some(b), Some(e)) = (job.begin, job.end) {
                        let h = agg
                            .completed
                            .entry((Arc::clone(&labels), jt.clone(), status.clone()))
                            .or_default();
                        let d = (e - b).max(0.0);
                        for (i, le) in DURATION_BUCKETS.iter().enumerate() {
                            if d <= *le {
                                h.buckets[i] += 1;
                            }
                        }
                        h.sum += d;
                        h.count += 1;
                    }
                    if status == "FAIL" {
                        let code = agg.codes.label(job.error_code.as_deref());
                        *agg.failures
                            .entry((Arc::clone(&labels), jt, code))
                            .or_default() += 1;
                    }
                }
                entry.job = Some(job);
            }
            Err(e) => {
                let reason = e.reason();
                failed = Some(reason);
                entry.fetch_ok = false;
                *state
                    .agg
                    .fetch_errors
                    .entry((Arc::clone(&labels), reason))
                    .or_default() += 1;
                let t = &entry.tracked.target;
                if reason == Reason::Unauthorized {
                    self.inner.telemetry.auth_failure(&t.account);
                }
                let target = format!("{}/{}/{}", t.cloud_service, t.cloud_region, t.project_id);
                // Per job at debug: a broken endpoint fails thousands of jobs at once, and
                // collect() logs one summary per round at warn.
                tracing::debug!(target_id = %target, job_id = %key.1, reason = reason.as_str(), error = %e, "fetch failed");
                if state.recent_errors.len() == RECENT_ERRORS {
                    state.recent_errors.pop_front();
                }
                state.recent_errors.push_back(RecentError {
                    at: now,
                    target,
                    job_id: key.1.clone(),
                    reason,
                    message: e.to_string(),
                });
            }
        }
        if unchanged {
            entry.rerender_fetch();
        } else {
            entry.render();
        }
        if entry.terminal_since.is_some()
            && let Some(job) = &mut entry.job
        {
            // A finished job is never fetched or rendered again: its text is final, and the
            // aggregates need only its type and status. Dropping the rest took RSS at 100,000
            // tracked jobs from 346 MiB towards 250 (issue 7: the decoded job was ~1 KB a job).
            *job = Job {
                job_type: job.job_type.take(),
                status: job.status.take(),
                ..Job::default()
            };
        }
        failed
    }

    /// Builds and installs a snapshot of the current state.
    fn publish(&self) {
        let cached = self.inner.settings.mode == Mode::Cached;
        let (snap, summary) = {
            let state = self.state();
            let jobs = state.jobs.values().map(|e| e.text.clone());
            let snap = Snapshot::new(cached, jobs, render_aggregates(&state));
            (snap, summarize(&state))
        };
        let counts: Vec<((&str, &str, &str), i64, i64)> = summary
            .iter()
            .map(|s| {
                (
                    (
                        s.cloud_service.as_str(),
                        s.cloud_region.as_str(),
                        s.project_id.as_str(),
                    ),
                    s.active as i64,
                    s.terminal as i64,
                )
            })
            .collect();
        self.inner.telemetry.set_tracked(&counts);
        let snap = Arc::new(snap);
        *self
            .inner
            .snapshot
            .write()
            .unwrap_or_else(PoisonError::into_inner) = snap;
    }

    /// Tracked jobs per target, for the landing page.
    pub fn summary(&self) -> Vec<TargetSummary> {
        summarize(&self.state())
    }

    /// The last failed fetches, newest last.
    pub fn recent_errors(&self) -> Vec<RecentError> {
        self.state().recent_errors.iter().cloned().collect()
    }
}

fn summarize(state: &State) -> Vec<TargetSummary> {
    let mut out: Vec<TargetSummary> = Vec::new();
    for e in state.jobs.values() {
        let t = &e.tracked.target;
        let idx = match out.iter().position(|s| {
            s.cloud_service == t.cloud_service
                && s.cloud_region == t.cloud_region
                && s.project_id == t.project_id
        }) {
            Some(i) => i,
            None => {
                out.push(TargetSummary {
                    cloud_service: t.cloud_service.clone(),
                    cloud_region: t.cloud_region.clone(),
                    project_id: t.project_id.clone(),
                    ..TargetSummary::default()
                });
                out.len() - 1
            }
        };
        let s = &mut out[idx];
        if e.terminal_since.is_some() {
            s.terminal += 1;
        } else {
            s.active += 1;
        }
        if !e.fetch_ok {
            s.failing += 1;
        }
    }
    out
}

fn render_aggregates(state: &State) -> [String; AGGREGATE.len()] {
    use exposition::aggregate_sample as put;
    let mut out: [String; AGGREGATE.len()] = Default::default();

    let mut counts: BTreeMap<(&str, &str, &str), u64> = BTreeMap::new();
    for e in state.jobs.values() {
        if let Some(job) = &e.job {
            let status = job.status.as_deref().unwrap_or(exposition::UNKNOWN_STATUS);
            *counts
                .entry((&e.tracked.labels, exposition::job_type(job), status))
                .or_default() += 1;
        }
    }
    let s = &mut out[Aggregate::Jobs as usize];
    for ((labels, jt, status), n) in counts {
        put(
            s,
            Aggregate::Jobs,
            "",
            labels,
            &[("job_type", jt), ("status", status)],
            n as f64,
        );
    }

    let s = &mut out[Aggregate::CompletedDuration as usize];
    for ((labels, jt, status), h) in &state.agg.completed {
        let base = [("job_type", jt.as_str()), ("status", status.as_str())];
        let mut le_buf = String::new();
        for (i, le) in DURATION_BUCKETS.iter().enumerate() {
            le_buf.clear();
            exposition::write_value(&mut le_buf, *le);
            let with_le = [base[0], base[1], ("le", le_buf.as_str())];
            put(
                s,
                Aggregate::CompletedDuration,
                "_bucket",
                labels,
                &with_le,
                h.buckets[i] as f64,
            );
        }
        let inf = [base[0], base[1], ("le", "+Inf")];
        put(
            s,
            Aggregate::CompletedDuration,
            "_bucket",
            labels,
            &inf,
            h.count as f64,
        );
        put(
            s,
            Aggregate::CompletedDuration,
            "_sum",
            labels,
            &base,
            h.sum,
        );
        put(
            s,
            Aggregate::CompletedDuration,
            "_count",
            labels,
            &base,
            h.count as f64,
        );
    }

    for (family, map) in [
        (Aggregate::Failures, &state.agg.failures),
        (Aggregate::SubjobFailures, &state.agg.subjob_failures),
    ] {
        let type_label = match family {
            Aggregate::SubjobFailures => "subjob_type",
            _ => "job_type",
        };
        let s = &mut out[family as usize];
        for ((labels, jt, code), n) in map {
            put(
                s,
                family,
                "",
                labels,
                &[(type_label, jt), ("error_code", code)],
                *n as f64,
            );
        }
    }

    let s = &mut out[Aggregate::FetchErrors as usize];
    for ((labels, reason), n) in &state.agg.fetch_errors {
        put(
            s,
            Aggregate::FetchErrors,
            "",
            labels,
            &[("reason", reason.as_str())],
            *n as f64,
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{self, Credentials, Secret};
    use std::sync::atomic::{AtomicUsize, Ordering};

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
            _target: &'a cloud::Target,
            job_id: &'a str,
            known: Option<BodyDigest>,
        ) -> BoxFuture<'a, cloud::Result<Fetched>> {
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

    fn target(host: &str) -> Arc<cloud::Target> {
        Arc::new(cloud::Target::new(
            &config::Target {
                account: "acc".into(),
                cloud_service: "evs".into(),
                cloud_region: "r1".into(),
                project_id: "p1".into(),
                endpoint: format!("http://{host}"),
                jobs: vec![],
            },
            Credentials {
                access_key: Secret::new("a"),
                secret_key: Secret::new("b"),
                security_token: None,
            },
        ))
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
        }
    }

    fn poller(fake: &Arc<Fake>, jobs: &[&str], s: Settings) -> Poller {
        Poller::new(
            Arc::clone(fake) as Arc<dyn JobSource>,
            vec![(target("h1"), jobs.iter().map(|j| j.to_string()).collect())],
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
            Arc::clone(&fake) as Arc<dyn JobSource>,
            vec![(target("h1"), vec!["j1".into()])],
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
            5 * exposition::STATUSES.len()
        );
        let mut own = Vec::new();
        telemetry.encode(&mut own);
        let own = String::from_utf8(own).expect("utf8");
        assert!(own.contains("huaweicloud_job_exporter_truncated_total{kind=\"entities\"} 50\n"));
        assert!(own.contains("huaweicloud_job_exporter_truncated_total{kind=\"subjobs\"} 2\n"));
    }

    #[test]
    fn error_codes_are_capped() {
        let mut cap = CodeCap::default();
        for i in 0..MAX_ERROR_CODES {
            assert_eq!(cap.label(Some(&format!("C{i}"))), format!("C{i}"));
        }
        assert_eq!(cap.label(Some("C0")), "C0");
        assert_eq!(cap.label(Some("NEW")), "other");
    }
}

#[cfg(test)]
mod rate_limiter_tests {
    use super::*;
    use crate::cloud::Pacer as _;

    #[tokio::test(start_paused = true)]
    async fn throttling_halves_the_rate_once_a_second_down_to_a_floor_and_answers_restore_it() {
        let l = RateLimiter::new("h", 100.0);
        l.throttled();
        assert_eq!(l.rate(), 50.0);
        // A burst of 429s for requests already in flight counts once.
        l.throttled();
        l.throttled();
        assert_eq!(l.rate(), 50.0);
        for _ in 0..5 {
            tokio::time::advance(Duration::from_secs(1)).await;
            l.throttled();
        }
        assert_eq!(l.rate(), 10.0, "never below a tenth");
        for _ in 0..10 {
            l.answered();
        }
        assert!((l.rate() - 30.0).abs() < 1e-9, "{}", l.rate());
        for _ in 0..100 {
            l.answered();
        }
        assert_eq!(l.rate(), 100.0, "never above the configured rate");
    }

    #[tokio::test(start_paused = true)]
    async fn a_slowed_limiter_spaces_requests_further_apart() {
        let l = RateLimiter::new("h", 10.0);
        let start = Instant::now();
        for _ in 0..5 {
            l.acquire().await;
        }
        let fast = start.elapsed();
        l.throttled();
        let start = Instant::now();
        for _ in 0..5 {
            l.acquire().await;
        }
        let slow = start.elapsed();
        // Paused clock: exact. 5 slots at 10/s span 0.4 s; at 5/s, 5 slots after the last
        // 10/s one span 0.1 + 4 x 0.2 s.
        assert_eq!(fast, Duration::from_millis(400));
        assert_eq!(slow, Duration::from_millis(900));
    }
}
