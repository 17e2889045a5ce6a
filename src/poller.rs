//! The poller: tracked jobs, their last known state, and the two ways of refreshing them
//! (`mode` in docs/configuration.md).
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

use crate::cloud::{self, BodyDigest, FetchContext, FetchError, Fetched, Job, Reason, Status};
use crate::config::Mode;
use crate::exposition::{self, Aggregates, FAMILIES, JobText, JobView, Totals};
use crate::families::Families;
use crate::listing;
use crate::scope::Scope;
use crate::snapshot::Snapshot;
use crate::state::{Finished, JobRef, LastState, Store};
use crate::telemetry::Telemetry;

/// Distinct values of a label the cloud chooses (`error_code`, `job_type`, `subjob_type`) kept
/// per target and family before the rest count as `other`.
pub const MAX_LABEL_VALUES: usize = 100;

/// How much of a scrape's timeout is kept back for rendering and the network, as
/// blackbox_exporter does with its timeout offset.
const SCRAPE_TIMEOUT_OFFSET: Duration = Duration::from_millis(500);

const RECENT_ERRORS: usize = 20;

/// Where jobs come from: the cloud client, or a fake in tests.
pub trait JobSource: Send + Sync + 'static {
    /// Fetches one job. `known` is the digest of the body last decoded for it: a source that
    /// keeps digests answers [`Fetched::Unchanged`] when the body is that one again. Retries
    /// go through `ctx`'s pacer and end by its deadline.
    fn fetch<'a>(
        &'a self,
        target: &'a cloud::Target,
        job_id: &'a str,
        known: Option<BodyDigest>,
        ctx: &'a FetchContext,
    ) -> BoxFuture<'a, cloud::Result<Fetched>>;
}

impl JobSource for cloud::Client {
    fn fetch<'a>(
        &'a self,
        target: &'a cloud::Target,
        job_id: &'a str,
        known: Option<BodyDigest>,
        ctx: &'a FetchContext,
    ) -> BoxFuture<'a, cloud::Result<Fetched>> {
        self.get_job_since(target, job_id, known, ctx).boxed()
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
    /// The job families exported.
    pub families: Families,
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
            families: c.families,
        }
    }
}

/// Failed fetches with the same target, reason and message, for the landing page.
#[derive(Debug, Clone)]
pub struct RecentError {
    /// Unix seconds, of the latest.
    pub at: f64,
    /// Unix seconds, of the first.
    pub first_at: f64,
    /// How many.
    pub count: u64,
    /// `service/region/project`.
    pub target: String,
    /// The job of the latest.
    pub job_id: String,
    /// Bounded reason.
    pub reason: Reason,
    /// The error, without secrets or request id.
    pub message: String,
}

/// Adds a failed fetch to `errors`: counted with an equal one (same target, reason and message,
/// request ids aside, since each request has its own), else added, dropping the one seen longest
/// ago when [`RECENT_ERRORS`] are kept. One broken endpoint failing 10,000 jobs is one line.
fn remember_error(
    errors: &mut VecDeque<RecentError>,
    now: f64,
    target: String,
    job_id: &str,
    e: &FetchError,
) {
    let mut e = e.clone();
    if let FetchError::Api { request_id, .. } = &mut e {
        *request_id = None;
    }
    let reason = e.reason();
    let message = e.to_string();
    let same = errors
        .iter()
        .position(|r| r.reason == reason && r.target == target && r.message == message);
    let mut entry = match same.and_then(|i| errors.remove(i)) {
        Some(r) => r,
        None => RecentError {
            at: now,
            first_at: now,
            count: 0,
            target,
            job_id: String::new(),
            reason,
            message,
        },
    };
    entry.at = now;
    entry.count += 1;
    job_id.clone_into(&mut entry.job_id);
    if errors.len() >= RECENT_ERRORS {
        errors.pop_front();
    }
    errors.push_back(entry);
}

/// Counts for the landing page and `tracked_jobs`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TargetSummary {
    /// Service, region and project.
    pub scope: Scope,
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
    fn view(&self, families: Families) -> JobView<'_> {
        JobView {
            target_labels: &self.tracked.labels,
            job_id: &self.job_id,
            job: self.job.as_ref(),
            fetch_ok: self.fetch_ok,
            last_success: self.last_success,
            families,
        }
    }

    fn render(&mut self, families: Families) {
        self.text = exposition::render_job(&self.view(families));
    }

    /// Renders again after a fetch that returned the body `text` was rendered from.
    fn rerender_fetch(&mut self, families: Families) {
        self.text = exposition::rerender_fetch(&self.view(families), &self.text);
    }
}

/// Values of one label seen so far for one target, capped so that a misbehaving upstream
/// cannot grow cardinality, nor one noisy target turn another's values into `other`.
#[derive(Default)]
struct LabelCap(HashSet<String>);

/// What a label value is exported as.
const FOLDED: &str = "other";

impl LabelCap {
    /// The value itself if it is known or there is room for it, else `other`; the second
    /// item says whether it was folded.
    fn label(&mut self, value: &str) -> (String, bool) {
        if self.0.contains(value) {
            return (value.to_string(), false);
        }
        if self.0.len() < MAX_LABEL_VALUES {
            self.0.insert(value.to_string());
            return (value.to_string(), false);
        }
        (FOLDED.to_string(), true)
    }

    /// The value as already admitted, without admitting it.
    fn get<'a>(&self, value: &'a str) -> &'a str {
        if self.0.contains(value) {
            value
        } else {
            FOLDED
        }
    }
}

/// An error code's label: `none` when the cloud sent none.
fn code_label(code: Option<&str>) -> &str {
    code.filter(|c| !c.is_empty()).unwrap_or("none")
}

/// The label caps of one target.
#[derive(Default)]
struct TargetCaps {
    codes: LabelCap,
    subjob_codes: LabelCap,
    job_types: LabelCap,
    subjob_types: LabelCap,
}

/// What outlives the jobs: the counters and histogram, and the label values admitted.
#[derive(Default)]
struct Aggregated {
    totals: Totals,
    /// Per target (its labels).
    caps: HashMap<Arc<str>, TargetCaps>,
}

/// A job seen finished, or acknowledged: never fetched or counted again. Exported from
/// `last` until `terminal_retention` after `at`; after that (or at once when acknowledged) it is
/// not exported and not taken back while any source lists it, and forgotten once no source
/// lists it and [`forget_after`] has passed.
struct Remembered {
    job: JobRef,
    at: f64,
    last: Option<LastState>,
}

#[derive(Default)]
struct State {
    jobs: BTreeMap<JobKey, Entry>,
    /// Jobs seen finished or acknowledged, listed or not.
    memory: HashMap<JobKey, Remembered>,
    /// Jobs seen finished since the store last took them.
    newly_finished: Vec<Finished>,
    agg: Aggregated,
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
    /// Held while a snapshot is built and installed.
    publishing: Mutex<()>,
    /// Where jobs seen finished are made durable, once the exporter has a store.
    store: std::sync::OnceLock<Arc<Store>>,
    /// The tracked set changed without a new snapshot (a registration): the next scrape
    /// publishes one, so a burst of registrations costs one snapshot, not one each.
    dirty: std::sync::atomic::AtomicBool,
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
                snapshot: RwLock::new(Arc::new(Snapshot::empty_of(cached, settings.families))),
                limiters: Mutex::new(HashMap::new()),
                ready: std::sync::atomic::AtomicBool::new(!cached),
                inflight: Mutex::new(None),
                publishing: Mutex::new(()),
                store: std::sync::OnceLock::new(),
                dirty: std::sync::atomic::AtomicBool::new(false),
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
            let now = self.inner.clock.now();
            let retention = self.inner.settings.terminal_retention.as_secs_f64();
            for (target, jobs) in targets {
                let tracked = self.track(state, target);
                let t = &tracked.target;
                for job_id in jobs {
                    if !shard.owns(&t.scope, &job_id) {
                        continue;
                    }
                    let key = (Arc::clone(&tracked.labels), job_id);
                    if !desired.insert(key.clone()) {
                        continue;
                    }
                    if insert_job(
                        state,
                        &tracked,
                        key,
                        now,
                        retention,
                        self.inner.settings.families,
                    ) {
                        added += 1;
                    }
                }
            }
            let before = state.jobs.len();
            state.jobs.retain(|k, _| desired.contains(k));
            removed = before - state.jobs.len();
            state
                .memory
                .retain(|k, m| desired.contains(k) || now - m.at < forget_after(retention));
        }
        self.publish();
        (added, removed)
    }

    /// The shared per-target parts of a target (labels, rate limiter, zeroed error series).
    fn track(&self, state: &mut State, target: Arc<cloud::Target>) -> Arc<Tracked> {
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
        self.inner.telemetry.register_label_caps(&target.scope);
        let labels: Arc<str> = scope_labels(&target.scope).into();
        // Every reason from the start, so rate() and alerts see the first failure.
        for reason in Reason::ALL {
            state
                .agg
                .totals
                .fetch_errors
                .entry((Arc::clone(&labels), reason))
                .or_insert(0);
        }
        Arc::new(Tracked { target, labels })
    }

    /// Adds one job to the tracked set without rebuilding it (a registration), unless this
    /// replica does not own it or it is remembered as dropped or acknowledged. The next scrape
    /// publishes it. Returns whether it was added.
    pub fn add_job(&self, target: Arc<cloud::Target>, job_id: String) -> bool {
        let t = &target;
        if !self.inner.settings.shard.owns(&t.scope, &job_id) {
            return false;
        }
        let now = self.inner.clock.now();
        let retention = self.inner.settings.terminal_retention.as_secs_f64();
        let mut guard = self.state();
        let state = &mut *guard;
        let labels = scope_labels(&t.scope);
        // Reuse the labels (and target) of a job of the same scope when there is one.
        let tracked = match state
            .jobs
            .range((Arc::from(labels.as_str()), String::new())..)
            .next()
            .filter(|(k, _)| *k.0 == *labels)
        {
            Some((_, e)) => Arc::clone(&e.tracked),
            None => self.track(state, target),
        };
        let key = (Arc::clone(&tracked.labels), job_id);
        let added = insert_job(
            state,
            &tracked,
            key,
            now,
            retention,
            self.inner.settings.families,
        );
        if added {
            self.inner
                .dirty
                .store(true, std::sync::atomic::Ordering::Release);
        }
        added
    }

    /// What is remembered of a job seen finished or acknowledged: (when, still exported,
    /// acknowledged).
    pub fn remembered(&self, job: &JobRef) -> Option<(f64, bool, bool)> {
        let key = job_key(job);
        let retention = self.inner.settings.terminal_retention.as_secs_f64();
        let now = self.inner.clock.now();
        self.state().memory.get(&key).map(|m| {
            (
                m.at,
                m.last.is_some() && now - m.at < retention,
                m.last.is_none(),
            )
        })
    }

    /// Whether the job is in the tracked set.
    pub fn is_tracked(&self, job: &JobRef) -> bool {
        self.state().jobs.contains_key(&job_key(job))
    }

    /// Takes back what the store remembers (at startup): finished jobs are exported from their
    /// last state until retention, without being fetched or counted again.
    pub fn remember(&self, finished: Vec<Finished>) {
        let mut state = self.state();
        for f in finished {
            state.memory.insert(
                job_key(&f.job),
                Remembered {
                    job: f.job,
                    at: f.at,
                    last: f.last,
                },
            );
        }
    }

    /// Stops exporting a job and remembers it as acknowledged; returns the record to persist.
    pub fn acknowledge(&self, job: &JobRef) -> Finished {
        let now = self.inner.clock.now();
        let key = job_key(job);
        {
            let mut state = self.state();
            state.jobs.remove(&key);
            state.memory.insert(
                key,
                Remembered {
                    job: job.clone(),
                    at: now,
                    last: None,
                },
            );
        }
        self.publish();
        Finished {
            job: job.clone(),
            at: now,
            last: None,
        }
    }

    /// Makes jobs seen finished durable in `store` from now on (after each collection, before
    /// the snapshot that shows them is published).
    pub fn persist_to(&self, store: Arc<Store>) {
        let _ = self.inner.store.set(store);
    }

    /// Remembered jobs dropped by `terminal_retention` or acknowledged for which `wanted` is
    /// true, as job references.
    pub fn expired(&self, wanted: impl Fn(&JobRef) -> bool) -> Vec<JobRef> {
        let retention = self.inner.settings.terminal_retention.as_secs_f64();
        let now = self.inner.clock.now();
        self.state()
            .memory
            .values()
            .filter(|m| (m.last.is_none() || now - m.at >= retention) && wanted(&m.job))
            .map(|m| m.job.clone())
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
            if self
                .inner
                .dirty
                .swap(false, std::sync::atomic::Ordering::AcqRel)
            {
                self.publish();
            }
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
            // Remembered since they finished, so they are not taken back.
            state
                .jobs
                .retain(|_, e| e.terminal_since.is_none_or(|t| now - t < retention));
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
                let ctx = FetchContext {
                    deadline: Some(retry_deadline),
                    pacer: limiter.map(|l| l as Arc<dyn cloud::Pacer>),
                };
                let result = self
                    .inner
                    .source
                    .fetch(&tracked.target, &key.1, *known, &ctx)
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
        self.persist_finished().await;
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

    /// Makes the jobs seen finished since the last call durable; on failure they are kept for
    /// the next collection (the store has logged and counted the failure).
    async fn persist_finished(&self) {
        let Some(store) = self.inner.store.get() else {
            return;
        };
        let fresh = std::mem::take(&mut self.state().newly_finished);
        if fresh.is_empty() {
            return;
        }
        if store.put_finished(&fresh).await.is_err() {
            let mut state = self.state();
            let mut again = fresh;
            again.append(&mut state.newly_finished);
            state.newly_finished = again;
        }
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
                let caps = agg.caps.entry(Arc::clone(&labels)).or_default();
                let t = &entry.tracked.target;
                let folded = |label: &str| {
                    self.inner.telemetry.count_folded(&t.scope, label);
                };
                // Admitted when first seen, not when first finished, so `huaweicloud_jobs` shows
                // the types of running jobs too.
                let (jt, jt_folded) = caps.job_types.label(exposition::job_type(&job));
                let failed_subs = job
                    .sub_jobs
                    .iter()
                    .enumerate()
                    .filter(|(_, s)| s.status.as_ref().is_some_and(Status::is_failed));
                for (i, sub) in failed_subs {
                    // Same fallback id as the subjob_id label, so id-less sub-jobs count once each.
                    let id = sub.job_id.clone().unwrap_or_else(|| format!("#{i}"));
                    if entry.counted_subjob_failures.contains(&id) {
                        continue;
                    }
                    entry.counted_subjob_failures.push(id);
                    let (code, code_folded) = caps
                        .subjob_codes
                        .label(code_label(sub.error_code.as_deref()));
                    let (st, st_folded) = caps.subjob_types.label(exposition::job_type(sub));
                    if code_folded {
                        folded("error_code");
                    }
                    if st_folded {
                        folded("subjob_type");
                    }
                    *agg.totals
                        .subjob_failures
                        .entry((Arc::clone(&labels), st, code))
                        .or_default() += 1;
                }
                if job.is_terminal() && entry.terminal_since.is_none() {
                    entry.terminal_since = Some(now);
                    if jt_folded {
                        folded("job_type");
                    }
                    let status = exposition::status_label(&job);
                    if let (Some(b), Some(e)) = (job.begin, job.end) {
                        agg.totals
                            .completed
                            .entry((Arc::clone(&labels), jt.clone(), status.to_string()))
                            .or_default()
                            .observe((e - b).max(0.0));
                    }
                    if job.status == Some(Status::Fail) {
                        let (code, code_folded) =
                            caps.codes.label(code_label(job.error_code.as_deref()));
                        if code_folded {
                            folded("error_code");
                        }
                        *agg.totals
                            .failures
                            .entry((Arc::clone(&labels), jt, code))
                            .or_default() += 1;
                    }
                    let t = &entry.tracked.target;
                    let remembered = Finished {
                        job: JobRef::new(&t.scope, &key.1),
                        at: now,
                        last: Some(last_state(&job)),
                    };
                    state.memory.insert(
                        key.clone(),
                        Remembered {
                            job: remembered.job.clone(),
                            at: now,
                            last: remembered.last.clone(),
                        },
                    );
                    state.newly_finished.push(remembered);
                }
                entry.job = Some(job);
            }
            Err(e) => {
                let reason = e.reason();
                failed = Some(reason);
                entry.fetch_ok = false;
                *state
                    .agg
                    .totals
                    .fetch_errors
                    .entry((Arc::clone(&labels), reason))
                    .or_default() += 1;
                let t = &entry.tracked.target;
                if reason == Reason::Unauthorized {
                    self.inner
                        .telemetry
                        .auth_failure(&t.account, &e.to_string());
                }
                let target = t.scope.to_string();
                // Per job at debug: a broken endpoint fails thousands of jobs at once, and
                // collect() logs one summary per round at warn.
                tracing::debug!(target_id = %target, job_id = %key.1, reason = reason.as_str(), error = %e, "fetch failed");
                remember_error(&mut state.recent_errors, now, target, &key.1, &e);
            }
        }
        if unchanged {
            entry.rerender_fetch(self.inner.settings.families);
        } else {
            entry.render(self.inner.settings.families);
        }
        if entry.terminal_since.is_some()
            && let Some(job) = &mut entry.job
        {
            // A finished job is never fetched or rendered again: its text is final, and the
            // aggregates need only its type and status. Dropping the rest took RSS at 100,000
            // tracked jobs from 346 MiB towards 250 (BENCHMARKS.md: the decoded job was ~1 KB a job).
            // The times sit inline, so keeping them for the jobs page costs nothing; a failed
            // job also keeps what the page shows of its failure (a few hundred bytes, and
            // failed jobs are few).
            let failed = job.status == Some(Status::Fail);
            *job = Job {
                job_type: job.job_type.take(),
                status: job.status.take(),
                begin: job.begin,
                end: job.end,
                error_code: job.error_code.take().filter(|_| failed),
                fail_reason: job
                    .fail_reason
                    .take()
                    .filter(|_| failed)
                    .map(|r| exposition::cut_reason(&r).to_string()),
                entities: if failed {
                    std::mem::take(&mut job.entities)
                } else {
                    Vec::new()
                },
                ..Job::default()
            };
        }
        failed
    }

    /// Builds and installs a snapshot of the current state.
    fn publish(&self) {
        self.inner
            .dirty
            .store(false, std::sync::atomic::Ordering::Release);
        let cached = self.inner.settings.mode == Mode::Cached;
        // One publisher at a time, so that snapshots are installed in the order they were
        // taken; the compression of changed segments happens outside the state's lock.
        let _publishing = self
            .inner
            .publishing
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let (mut snap, summary) = {
            let state = self.state();
            let jobs = state.jobs.values().map(|e| e.text.clone());
            let snap = Snapshot::uncompressed(
                cached,
                self.inner.settings.families,
                jobs,
                render_aggregates(&state),
            );
            (snap, summarize(&state))
        };
        snap.compress_after(Some(&self.current()));
        let counts: Vec<(&Scope, i64, i64)> = summary
            .iter()
            .map(|s| (&s.scope, s.active as i64, s.terminal as i64))
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

    /// The last failed fetches, alike ones counted together, latest last.
    pub fn recent_errors(&self) -> Vec<RecentError> {
        self.state().recent_errors.iter().cloned().collect()
    }

    /// The tracked jobs that match `query`, failed ones first; see [`crate::listing`].
    pub fn list_jobs(&self, query: &listing::Query) -> listing::Listing {
        let now = self.inner.clock.now();
        let state = self.state();
        let items = state.jobs.values().map(|e| listing::Item {
            target: &e.tracked.target,
            job_id: &e.job_id,
            job: e.job.as_ref(),
            fetch_ok: e.fetch_ok,
        });
        listing::select(items, query, now)
    }
}

/// Seconds after which a finished or acknowledged job no source lists is forgotten: retention,
/// then as long again (at least an hour), so that registering it again in between is refused
/// rather than fetched and counted again.
pub fn forget_after(retention: f64) -> f64 {
    retention + retention.max(3600.0)
}

/// The common labels of a scope, escaped, as every series of its jobs carries them.
fn scope_labels(scope: &Scope) -> String {
    exposition::labels(&scope.labels())
}

fn job_key(job: &JobRef) -> JobKey {
    (scope_labels(&job.scope()).into(), job.job_id.clone())
}

/// What is kept of a finished job to export it after a restart.
fn last_state(job: &Job) -> LastState {
    let reason = job
        .fail_reason
        .as_deref()
        .map(|r| exposition::cut_reason(r).to_string());
    LastState {
        job_type: job.job_type.clone(),
        // Called for finished jobs only, which have a status.
        status: job.status.clone().unwrap_or(Status::Other("".into())),
        error_code: job.error_code.clone(),
        fail_reason: reason,
        begin: job.begin,
        end: job.end,
    }
}

/// Adds a job to `state.jobs` unless it is there already or remembered as dropped or
/// acknowledged; a job remembered as finished comes back from its last state, neither fetched
/// nor counted again. Returns whether it was added.
fn insert_job(
    state: &mut State,
    tracked: &Arc<Tracked>,
    key: JobKey,
    now: f64,
    retention: f64,
    families: Families,
) -> bool {
    if let Some(e) = state.jobs.get_mut(&key) {
        // Credentials or endpoint may have changed; the labels have not.
        e.tracked = Arc::clone(tracked);
        return false;
    }
    let restored = match state.memory.get(&key) {
        None => None,
        Some(m) => match &m.last {
            Some(last) if now - m.at < retention => Some((m.at, last)),
            _ => return false,
        },
    };
    let mut entry = Entry {
        tracked: Arc::clone(tracked),
        job_id: key.1.clone(),
        job: None,
        digest: None,
        fetch_ok: false,
        last_success: None,
        terminal_since: None,
        counted_subjob_failures: Vec::new(),
        text: JobText::default(),
    };
    if let Some((at, last)) = restored {
        entry.job = Some(Job {
            job_id: Some(key.1.clone()),
            job_type: last.job_type.clone(),
            status: Some(last.status.clone()),
            begin: last.begin,
            end: last.end,
            error_code: last.error_code.clone(),
            fail_reason: last.fail_reason.clone(),
            ..Job::default()
        });
        entry.fetch_ok = true;
        entry.last_success = Some(at);
        entry.terminal_since = Some(at);
    }
    entry.render(families);
    if entry.terminal_since.is_some()
        && let Some(job) = &mut entry.job
    {
        *job = Job {
            job_type: job.job_type.take(),
            status: job.status.take(),
            ..Job::default()
        };
    }
    state.jobs.insert(key, entry);
    true
}

fn summarize(state: &State) -> Vec<TargetSummary> {
    let mut out: Vec<TargetSummary> = Vec::new();
    for e in state.jobs.values() {
        let t = &e.tracked.target;
        let idx = match out.iter().position(|s| s.scope == t.scope) {
            Some(i) => i,
            None => {
                out.push(TargetSummary {
                    scope: t.scope.clone(),
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

fn render_aggregates(state: &State) -> [String; FAMILIES.len()] {
    let mut jobs: BTreeMap<(&str, &str, &str), u64> = BTreeMap::new();
    for e in state.jobs.values() {
        if let Some(job) = &e.job {
            let jt = exposition::job_type(job);
            let jt = state
                .agg
                .caps
                .get(&e.tracked.labels)
                .map_or(FOLDED, |c| c.job_types.get(jt));
            let status = exposition::status_label(job);
            *jobs.entry((&e.tracked.labels, jt, status)).or_default() += 1;
        }
    }
    Aggregates {
        jobs,
        totals: &state.agg.totals,
    }
    .render()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::{Credentials, Secret};
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
            _ctx: &'a FetchContext,
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
        target_in(host, "p1")
    }

    fn target_in(host: &str, project: &str) -> Arc<cloud::Target> {
        Arc::new(cloud::Target::new(
            "acc",
            Scope::new("evs", "r1", project),
            &format!("http://{host}"),
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
            families: Families::ALL,
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
    async fn a_finished_job_that_leaves_and_comes_back_is_neither_fetched_nor_counted_again() {
        let fake = Fake::new(Duration::from_millis(10));
        let ids = ["f1", "f2", "f3", "f4", "f5"];
        for id in ids {
            fake.script(id, vec![Ok(failed(Some("EVS.1")))]);
        }
        let p = poller(&fake, &ids, settings(Mode::Cached));
        p.collect(None).await;
        let failures = "huaweicloud_job_failures_total{cloud_service=\"evs\",cloud_region=\"r1\",project_id=\"p1\",job_type=\"createVolume\",error_code=\"EVS.1\"} 5";
        let listed = || vec![(target("h1"), ids.iter().map(|j| j.to_string()).collect())];
        for _ in 0..2 {
            // The config emptied, then restored.
            p.set_jobs(vec![(target("h1"), Vec::new())]);
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
        let finished = std::mem::take(&mut p.state().newly_finished);
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
        p.set_jobs(vec![(target("h1"), vec!["f1".into(), "r1".into()])]);
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
            5 * Status::DOCUMENTED.len()
        );
        let mut own = Vec::new();
        telemetry.encode(&mut own);
        let own = String::from_utf8(own).expect("utf8");
        assert!(own.contains("huaweicloud_job_exporter_truncated_total{kind=\"entities\"} 50\n"));
        assert!(own.contains("huaweicloud_job_exporter_truncated_total{kind=\"subjobs\"} 2\n"));
    }

    #[test]
    fn alike_errors_are_counted_together_and_the_list_stays_bounded() {
        let mut errors = VecDeque::new();
        let api = |rid: &str| FetchError::Api {
            status: 500,
            code: Some("EVS.5000".into()),
            message: Some("boom".into()),
            request_id: Some(rid.into()),
            retry_after: None,
        };
        for (i, rid) in ["r1", "r2", "r3"].into_iter().enumerate() {
            remember_error(
                &mut errors,
                i as f64,
                "evs/r/p".into(),
                &format!("j{i}"),
                &api(rid),
            );
        }
        remember_error(
            &mut errors,
            5.0,
            "evs/r/p".into(),
            "j9",
            &FetchError::Timeout,
        );
        assert_eq!(errors.len(), 2);
        let e = &errors[0];
        assert_eq!(
            (e.count, e.first_at, e.at, e.job_id.as_str()),
            (3, 0.0, 2.0, "j2")
        );
        assert!(!e.message.contains("request id"), "{}", e.message);
        assert_eq!((errors[1].reason, errors[1].count), (Reason::Timeout, 1));
        // The alike one seen again moves to the end.
        remember_error(&mut errors, 6.0, "evs/r/p".into(), "j3", &api("r4"));
        assert_eq!((errors[1].count, errors[1].at), (4, 6.0));
        for i in 0..RECENT_ERRORS + 5 {
            remember_error(
                &mut errors,
                10.0,
                format!("t{i}"),
                "j",
                &FetchError::Timeout,
            );
        }
        assert_eq!(errors.len(), RECENT_ERRORS);
        assert_eq!(errors[0].target, "t5");
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
        let held = state
            .jobs
            .values()
            .find(|e| e.job_id == "f")
            .and_then(|e| e.job.as_ref())
            .expect("job");
        assert!(held.sub_jobs.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn label_caps_are_per_target_and_count_what_they_fold() {
        let fake = Fake::new(Duration::from_millis(1));
        let in_project = |project: &str| target_in("h1", project);
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
            Arc::clone(&fake) as Arc<dyn JobSource>,
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

    #[test]
    fn label_values_are_capped() {
        let mut cap = LabelCap::default();
        for i in 0..MAX_LABEL_VALUES {
            assert_eq!(cap.label(&format!("C{i}")), (format!("C{i}"), false));
        }
        assert_eq!(cap.label("C0"), ("C0".to_string(), false));
        assert_eq!(cap.label("NEW"), ("other".to_string(), true));
        assert_eq!(cap.get("NEW"), "other");
        assert_eq!(cap.get("C7"), "C7");
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
