//! The poller: tracked jobs, their last known state, and the two ways of refreshing them
//! (`mode` in docs/configuration.md).
//!
//! - cached mode: `Poller::run_cached` polls the active jobs every `refresh_interval` and
//!   publishes a new `Snapshot`; a scrape reads the last one.
//! - on-demand mode: [`Poller::scrape`] collects within the scrape's deadline; concurrent scrapes
//!   share one collection.
//!
//! Both go through [`Poller::collect`]: at most `max_concurrency` requests in flight, at most
//! `max_requests_per_second` per endpoint, each result applied as it arrives so a slow or failing
//! job, target or account never holds up or hides the others. Terminal jobs are never fetched
//! again and are dropped `terminal_retention` after they were first seen finished. Counters and
//! the completed-duration histogram live apart from the jobs, so dropping a job keeps them
//! monotonic.

mod apply;
mod archive;
mod clock;
mod collect;
mod jobs;
mod label_caps;
mod rate_limiter;
mod recent_errors;
mod source;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use futures_util::future::{BoxFuture, Shared};

use crate::cloud::{self, Reason};
use crate::config::Mode;
use crate::families::Families;
use crate::listing;
use crate::scope::Scope;
use crate::snapshot::Snapshot;
use crate::state::{Finished, JobRef, Store};
use crate::telemetry::Telemetry;

use clock::Clock;
use jobs::{
    JobKey, Remembered, State, Tracked, insert_job, job_key, render_aggregates, scope_labels,
    summarize,
};
use rate_limiter::RateLimiter;

pub(crate) use jobs::{TargetSummary, forget_after};
pub(crate) use recent_errors::RecentError;
pub use source::{Fetch, JobSource, Target};

/// Targets and the job ids tracked in each.
pub type TargetJobs = Vec<(Arc<Target>, Vec<String>)>;

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

struct Inner {
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
    pub fn new(targets: TargetJobs, settings: Settings, telemetry: Arc<Telemetry>) -> Self {
        let cached = settings.mode == Mode::Cached;
        let poller = Self {
            inner: Arc::new(Inner {
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
    pub(crate) fn set_jobs(&self, targets: TargetJobs) -> (usize, usize) {
        let shard = self.inner.settings.shard;
        let (mut added, removed);
        {
            let mut state = self.state();
            let mut desired: HashSet<JobKey> = HashSet::new();
            added = 0;
            let now = self.inner.clock.now();
            let retention = self.inner.settings.terminal_retention.as_secs_f64();
            for (target, jobs) in targets {
                let tracked = self.track(&mut state, target);
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
                        &mut state,
                        &tracked,
                        key,
                        now,
                        retention,
                        self.inner.settings.families,
                    ) {
                        added += 1;
                    }
                    // Jobs the store remembers as finished come back rendered: at startup, a
                    // segment of them is sealed as soon as it is whole (see `seal_if_due`).
                    if state.archive.due() {
                        drop(state);
                        self.seal_if_due();
                        state = self.state();
                    }
                }
            }
            removed = state.drop_jobs(|k, _| desired.contains(k));
            state
                .memory
                .retain(|k, m| desired.contains(k) || now - m.at < forget_after(retention));
        }
        self.publish();
        (added, removed)
    }

    /// The shared per-target parts of a target (labels, rate limiter, zeroed error series).
    fn track(&self, state: &mut State, target: Arc<Target>) -> Arc<Tracked> {
        self.inner
            .limiters
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(target.endpoint_key.clone())
            .or_insert_with(|| {
                Arc::new(RateLimiter::new(
                    &target.endpoint_key,
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
    pub(crate) fn add_job(&self, target: Arc<Target>, job_id: String) -> bool {
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
    pub(crate) fn is_tracked(&self, job: &JobRef) -> bool {
        self.state().jobs.contains_key(&job_key(job))
    }

    /// Takes back what the store remembers (at startup): finished jobs are exported from their
    /// last state until retention, without being fetched or counted again.
    pub(crate) fn remember(&self, finished: Vec<Finished>) {
        let mut state = self.state();
        for f in finished {
            let remembered = Remembered {
                at: f.at,
                last: f.last,
            };
            state
                .memory
                .insert(job_key(&f.job), &f.job.scope(), remembered);
        }
    }

    /// Stops exporting a job and remembers it as acknowledged; returns the record to persist.
    pub(crate) fn acknowledge(&self, job: &JobRef) -> Finished {
        let now = self.inner.clock.now();
        let key = job_key(job);
        {
            let mut state = self.state();
            state.drop_job(&key);
            let remembered = Remembered {
                at: now,
                last: None,
            };
            state.memory.insert(key, &job.scope(), remembered);
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
    pub(crate) fn persist_to(&self, store: Arc<Store>) {
        let _ = self.inner.store.set(store);
    }

    /// Remembered jobs dropped by `terminal_retention` or acknowledged for which `wanted` is
    /// true, as job references.
    pub fn expired(&self, wanted: impl Fn(&JobRef) -> bool) -> Vec<JobRef> {
        let retention = self.inner.settings.terminal_retention.as_secs_f64();
        let now = self.inner.clock.now();
        self.state()
            .memory
            .jobs(|m| m.last.is_none() || now - m.at >= retention)
            .filter(|job| wanted(job))
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
    pub(crate) fn is_ready(&self) -> bool {
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
        let families = self.inner.settings.families;
        self.seal_finished();
        let (sealed, open, active, aggregates, summary) = {
            let state = self.state();
            // Finished jobs whose text is held, then active ones; sealed ones hold none.
            let (mut open, mut active) = (Vec::new(), Vec::new());
            for e in state.jobs.values() {
                match (e.terminal_since, e.sealed) {
                    (None, _) => active.push(e.text.clone()),
                    (Some(_), None) => open.push(e.text.clone()),
                    (Some(_), Some(_)) => {}
                }
            }
            (
                state.archive.segments().collect::<Vec<_>>(),
                open,
                active,
                render_aggregates(&state),
                summarize(&state),
            )
        };
        let mut snap = Snapshot::uncompressed(cached, families, sealed, open, active, aggregates);
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

    /// Seals whole segments of finished jobs whose text is held, and writes again the sealed
    /// segments that jobs left (see `archive`), compressing outside the state's lock. The caller
    /// holds `publishing`.
    fn seal_finished(&self) {
        let (rewrites, unsealed) = {
            let mut state = self.state();
            (state.archive.take_rewrites(), state.unsealed())
        };
        if rewrites.is_empty() && unsealed.is_empty() {
            return;
        }
        let sealing = archive::prepare(rewrites, unsealed, self.inner.settings.families);
        self.state().install(sealing);
    }

    /// [`Poller::seal_finished`] during a collection (or while jobs the store remembers come
    /// back), once a segment's worth of jobs finished since the last time: so that their texts
    /// are freed while the round goes on and the next ones reuse that memory. Sealed only at
    /// the end of the first round of 100,000 jobs, the 90,000 texts had left holes all over the
    /// heap, and RSS stayed at 245 MiB (BENCHMARKS.md, run 7).
    pub(super) fn seal_if_due(&self) {
        if !self.state().archive.due() {
            return;
        }
        let _publishing = self
            .inner
            .publishing
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        self.seal_finished();
    }

    /// Tracked jobs per target, for the landing page.
    pub(crate) fn summary(&self) -> Vec<TargetSummary> {
        summarize(&self.state())
    }

    /// The last failed fetches, alike ones counted together, latest last.
    pub(crate) fn recent_errors(&self) -> Vec<RecentError> {
        self.state().recent_errors.iter().cloned().collect()
    }

    /// The tracked jobs that match `query`, failed ones first; see [`crate::listing`].
    pub(crate) fn list_jobs(&self, query: &listing::Query) -> listing::Listing {
        let now = self.inner.clock.now();
        let state = self.state();
        let items = state.jobs.iter().map(|((_, job_id), e)| listing::Item {
            scope: &e.tracked.target.scope,
            job_id,
            job: e.job.as_ref().map(jobs::Known::job),
            fetch_ok: e.fetch_ok,
        });
        listing::select(items, query, now)
    }
}
