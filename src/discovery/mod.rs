//! Discovery: jobs nobody had to list. Per target and source, one task asks an upstream API
//! which jobs exist ([`cts`]: the Cloud Trace Service; [`failure_jobs`]: the SDRS task
//! centre's failed jobs) and adds what it finds to the tracked set, where discovered jobs are
//! ordinary jobs: fetched through their target, sharded, dropped after `terminal_retention`.
//!
//! What the tasks remember (jobs found, cursors) lives in the state store ([`crate::state`]),
//! durable with `state_file`; [`Discovery`] starts, restarts and stops the
//! tasks as the configuration changes, and tells the tracked set's owner when jobs were added.
//!
//! Discovery requests do not take the poller's concurrency slots: each task has at most one
//! request in flight, so discovery adds at most two requests per target and can neither
//! starve nor delay the polling of known jobs, whatever the cloud does to it.

pub mod cts;
pub mod failure_jobs;

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::cloud::{self, FetchError, Reason};
use crate::config;
use crate::scope::Scope;
use crate::shard::Shard;
pub use crate::state::DiscoverySource as Source;
use crate::state::{self, CursorKey, Discovered, JobRef, Store};
pub(crate) use crate::state::{Backlog, Cursor};
use crate::telemetry::{DiscoveryMetrics, Telemetry};

/// The IAM permission a 403 from `source` means is missing.
fn permission(source: Source) -> &'static str {
    match source {
        Source::Cts => "cts:trace:list",
        Source::FailureJobs => {
            "SDRS read access (sdrs:*:get / sdrs:*:list, e.g. SDRS ReadOnlyAccess)"
        }
    }
}

/// Wall-clock time for the `from`/`to` of queries, injectable so that tests can run discovery
/// on the simulator's clock.
pub trait Clock: Send + Sync {
    /// Now, as Unix milliseconds.
    fn now_ms(&self) -> i64;
}

/// The system clock.
pub(crate) struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        chrono::Utc::now().timestamp_millis()
    }
}

impl<F: Fn() -> i64 + Send + Sync> Clock for F {
    fn now_ms(&self) -> i64 {
        self()
    }
}

/// How discovery is wired into an exporter: its clock and its store.
#[derive(Clone)]
pub struct Options {
    /// Time for query windows.
    pub clock: Arc<dyn Clock>,
    /// Where discovered jobs and cursors are kept (the exporter's state store); `None`: a
    /// store of its own in memory.
    pub store: Option<Arc<Store>>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            clock: Arc::new(SystemClock),
            store: None,
        }
    }
}

/// Where one task stands, for the landing page.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Status {
    /// Its target.
    pub scope: Scope,
    /// Its source.
    pub source: Source,
    /// When its last cycle completed (Unix seconds).
    pub last_success: Option<f64>,
    /// Jobs it added since it started.
    pub jobs_found: u64,
    /// The last error, until a cycle completes.
    pub last_error: Option<String>,
}

/// What a task needs to run; a change restarts the task.
#[derive(Clone)]
struct Spec {
    scope: Scope,
    source: Source,
    /// The upstream API, signed with the target's account.
    api: Arc<cloud::Target>,
    cts: Option<config::CtsDiscovery>,
    failure_jobs: Option<config::FailureJobsDiscovery>,
    /// The account's provider, compared by identity: new credentials restart the task.
    provider: usize,
}

impl PartialEq for Spec {
    fn eq(&self, o: &Self) -> bool {
        self.scope == o.scope
            && self.source == o.source
            && self.api.account == o.api.account
            && self.api.endpoint == o.api.endpoint
            && self.cts == o.cts
            && self.failure_jobs == o.failure_jobs
            && self.provider == o.provider
    }
}

struct Running {
    spec: Spec,
    stop: CancellationToken,
    status: Arc<Mutex<Status>>,
}

#[derive(Default)]
struct Tasks {
    /// Set by [`Discovery::start`]: tasks run under it.
    root: Option<CancellationToken>,
    desired: Vec<Spec>,
    running: BTreeMap<(Scope, Source), Running>,
}

struct Inner {
    store: Arc<Store>,
    clock: Arc<dyn Clock>,
    client: cloud::Client,
    metrics: DiscoveryMetrics,
    changed: Arc<Notify>,
    shard: Shard,
    max_jobs: usize,
    tasks: Mutex<Tasks>,
    /// Every task spawned, so that shutdown can wait for their last commit.
    tracker: tokio_util::task::TaskTracker,
}

/// The discovery tasks of every target.
#[derive(Clone)]
pub struct Discovery {
    inner: Arc<Inner>,
}

impl Discovery {
    /// Discovery with no target yet; tasks start with [`Discovery::start`].
    pub fn new(
        options: Options,
        client: cloud::Client,
        telemetry: &Telemetry,
        shard: Shard,
        max_jobs: usize,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                store: options
                    .store
                    .unwrap_or_else(|| Arc::new(Store::in_memory())),
                clock: options.clock,
                client,
                metrics: telemetry.discovery.clone(),
                changed: Arc::new(Notify::new()),
                shard,
                max_jobs,
                tasks: Mutex::new(Tasks::default()),
                tracker: tokio_util::task::TaskTracker::new(),
            }),
        }
    }

    fn tasks(&self) -> std::sync::MutexGuard<'_, Tasks> {
        self.inner
            .tasks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Notified when tasks added jobs: the tracked set is then applied again.
    pub(crate) fn changed(&self) -> Arc<Notify> {
        Arc::clone(&self.inner.changed)
    }

    /// The store.
    pub fn store(&self) -> &Arc<Store> {
        &self.inner.store
    }

    /// Makes the tasks those of `targets` (each with its account's provider): new ones start,
    /// changed ones restart (their cursors, kept in the store, carry over), removed ones stop.
    pub(crate) fn set_targets(&self, targets: &[(&config::Target, Arc<cloud::auth::Provider>)]) {
        let mut desired = Vec::new();
        for (t, provider) in targets {
            let scope = t.scope.clone();
            let id = Arc::as_ptr(provider) as usize;
            let api = |service: &str, endpoint: &str| {
                let api_scope = Scope {
                    cloud_service: service.into(),
                    ..scope.clone()
                };
                Arc::new(cloud::Target::with_provider(
                    &t.account,
                    api_scope,
                    endpoint,
                    Arc::clone(provider),
                ))
            };
            if let Some(c) = &t.discover.cts {
                desired.push(Spec {
                    scope: scope.clone(),
                    source: Source::Cts,
                    api: api("cts", &c.endpoint),
                    cts: Some(c.clone()),
                    failure_jobs: None,
                    provider: id,
                });
            }
            if let Some(f) = &t.discover.failure_jobs {
                desired.push(Spec {
                    scope: scope.clone(),
                    source: Source::FailureJobs,
                    api: api(&t.scope.cloud_service, &f.endpoint),
                    cts: None,
                    failure_jobs: Some(f.clone()),
                    provider: id,
                });
            }
        }
        let mut tasks = self.tasks();
        tasks.desired = desired;
        self.reconcile(&mut tasks);
    }

    /// Starts the tasks; they stop when `shutdown` is cancelled.
    pub fn start(&self, shutdown: &CancellationToken) {
        let mut tasks = self.tasks();
        tasks.root = Some(shutdown.child_token());
        self.reconcile(&mut tasks);
    }

    fn reconcile(&self, tasks: &mut Tasks) {
        let Some(root) = tasks.root.clone() else {
            return;
        };
        let wanted: HashSet<(Scope, Source)> = tasks
            .desired
            .iter()
            .map(|s| (s.scope.clone(), s.source))
            .collect();
        let gone: Vec<(Scope, Source)> = tasks
            .running
            .keys()
            .filter(|k| !wanted.contains(*k))
            .cloned()
            .collect();
        for key in gone {
            if let Some(r) = tasks.running.remove(&key) {
                r.stop.cancel();
                self.inner
                    .metrics
                    .unregister(labels(&key.0, key.1), skip_reasons(key.1));
                tracing::info!(target = %key.0, source = key.1.as_str(), "discovery stopped");
            }
        }
        for spec in tasks.desired.clone() {
            let key = (spec.scope.clone(), spec.source);
            if let Some(r) = tasks.running.get(&key) {
                if r.spec == spec {
                    continue;
                }
                r.stop.cancel();
                tracing::info!(target = %key.0, source = key.1.as_str(), "discovery settings changed: restarting");
            }
            let stop = root.child_token();
            let status = Arc::new(Mutex::new(Status {
                scope: spec.scope.clone(),
                source: spec.source,
                last_success: None,
                jobs_found: 0,
                last_error: None,
            }));
            self.inner
                .metrics
                .register(labels(&spec.scope, spec.source), skip_reasons(spec.source));
            let ctx = Context {
                inner: Arc::clone(&self.inner),
                spec: spec.clone(),
                status: Arc::clone(&status),
                stop: stop.clone(),
                over_limit: Mutex::new(HashSet::new()),
            };
            match spec.source {
                Source::Cts => {
                    self.inner.tracker.spawn(cts::run(ctx));
                }
                Source::FailureJobs => {
                    self.inner.tracker.spawn(failure_jobs::run(ctx));
                }
            }
            tasks.running.insert(key, Running { spec, stop, status });
        }
    }

    /// Discovered jobs still tracked, for the tracked set.
    pub fn jobs(&self) -> Vec<Discovered> {
        self.inner.store.discovered()
    }

    /// Stops tracking discovered jobs that `terminal_retention` dropped, and remembers them so
    /// that they are not discovered again; returns how many were discovered ones.
    pub(crate) async fn forget(&self, expired: &[JobRef]) -> usize {
        let now = self.inner.clock.now_ms() / 1000;
        match self.inner.store.discovered_gone(expired, now).await {
            Ok(n) => n,
            Err(e) => {
                tracing::error!(error = %e, "cannot record expired discovered jobs");
                0
            }
        }
    }

    /// Waits, up to `grace`, for the tasks stopped by the shutdown token given to
    /// [`Discovery::start`] to end, so that what they found and their cursors are on disk
    /// before the process exits (a task stops at its next await point; a CTS request in flight
    /// is dropped).
    pub async fn stopped(&self, grace: Duration) {
        self.inner.tracker.close();
        if tokio::time::timeout(grace, self.inner.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                "discovery tasks did not stop within {grace:?}; the last cursor may be older"
            );
        }
    }

    /// Every task's status, by target and source.
    pub fn status(&self) -> Vec<Status> {
        self.tasks()
            .running
            .values()
            .map(|r| {
                r.status
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone()
            })
            .collect()
    }
}

fn labels(scope: &Scope, source: Source) -> [&str; 4] {
    [
        &scope.cloud_service,
        &scope.cloud_region,
        &scope.project_id,
        source.as_str(),
    ]
}

fn skip_reasons(source: Source) -> &'static [&'static str] {
    match source {
        Source::Cts => &cloud::cts::SKIP_REASONS,
        Source::FailureJobs => &[],
    }
}

/// What a running task shares with the rest.
struct Context {
    inner: Arc<Inner>,
    spec: Spec,
    status: Arc<Mutex<Status>>,
    stop: CancellationToken,
    /// Jobs already counted as over the bound, so that each is counted once (up to
    /// [`MAX_OVER_LIMIT_MEMORY`] of them).
    over_limit: Mutex<HashSet<String>>,
}

/// Over-the-bound jobs remembered for counting each once; past it the memory starts afresh.
const MAX_OVER_LIMIT_MEMORY: usize = 100_000;

/// What one batch of candidate jobs came to.
#[derive(Debug, Default, PartialEq, Eq)]
struct Admitted {
    added: usize,
    over_limit: usize,
}

impl Context {
    /// Where this task's cursor is stored.
    fn cursor_key(&self) -> CursorKey {
        CursorKey::new(&self.spec.scope, self.spec.source)
    }

    fn labels(&self) -> [&str; 4] {
        labels(&self.spec.scope, self.spec.source)
    }

    fn now_ms(&self) -> i64 {
        self.inner.clock.now_ms()
    }

    /// Adds the jobs of `candidates` this shard owns and nobody knows yet, within the target's
    /// bound, and records them with `cursor`.
    async fn admit(
        &self,
        candidates: &[String],
        cursor: Option<&Cursor>,
    ) -> state::Result<Admitted> {
        let scope = &self.spec.scope;
        let store = &self.inner.store;
        let mut fresh: Vec<String> = Vec::new();
        let mut fresh_set: HashSet<&str> = HashSet::new();
        let mut over_limit = 0;
        let room = self
            .inner
            .max_jobs
            .saturating_sub(store.discovered_count(scope));
        for id in candidates {
            if !self.inner.shard.owns(scope, id)
                || store.knows(&JobRef::new(scope, id))
                || fresh_set.contains(id.as_str())
            {
                continue;
            }
            if fresh.len() >= room {
                let mut over = self
                    .over_limit
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                if over.len() >= MAX_OVER_LIMIT_MEMORY {
                    over.clear();
                }
                if over.insert(id.clone()) {
                    over_limit += 1;
                }
                continue;
            }
            fresh_set.insert(id);
            fresh.push(id.clone());
        }
        let found_at = self.now_ms() / 1000;
        let jobs = fresh
            .iter()
            .map(|id| Discovered {
                job: JobRef::new(scope, id),
                source: self.spec.source,
                found_at,
                gone_at: None,
            })
            .collect();
        store
            .put_discovery(jobs, cursor.map(|c| (self.cursor_key(), c.clone())))
            .await?;
        let m = &self.inner.metrics;
        if !fresh.is_empty() {
            m.discovered(self.labels(), fresh.len() as u64);
            self.status().jobs_found += fresh.len() as u64;
            tracing::info!(
                target = %scope,
                source = self.spec.source.as_str(),
                "discovered {} jobs",
                fresh.len()
            );
            self.inner.changed.notify_one();
        }
        if over_limit > 0 {
            m.over_limit(self.labels(), over_limit as u64);
        }
        Ok(Admitted {
            added: fresh.len(),
            over_limit,
        })
    }

    fn status(&self) -> std::sync::MutexGuard<'_, Status> {
        self.status.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A cycle completed.
    fn succeeded(&self, over_limit: usize) {
        let now = self.now_ms() as f64 / 1000.0;
        self.inner.metrics.success(self.labels(), now);
        let mut s = self.status();
        s.last_success = Some(now);
        s.last_error = None;
        drop(s);
        if over_limit > 0 {
            tracing::warn!(
                target = %self.spec.scope,
                source = self.spec.source.as_str(),
                not_added = over_limit,
                max_discovered_jobs = self.inner.max_jobs,
                "the target tracks max_discovered_jobs discovered jobs; newer ones are not tracked"
            );
        }
    }

    /// A request failed: counted, logged (a 403 names the missing permission).
    fn failed(&self, err: &Failure) {
        let (reason, msg) = match err {
            Failure::Fetch(e) => (e.reason(), e.to_string()),
            Failure::Store(e) => (Reason::Decode, e.to_string()),
        };
        if let Failure::Fetch(_) = err {
            self.inner.metrics.error(self.labels(), reason);
        }
        let source = self.spec.source;
        if reason == Reason::Forbidden {
            tracing::warn!(
                target = %self.spec.scope,
                source = source.as_str(),
                account = %self.spec.api.account,
                error = %msg,
                "discovery forbidden: the account lacks {}",
                permission(source)
            );
        } else {
            tracing::warn!(
                target = %self.spec.scope,
                source = source.as_str(),
                endpoint = %self.spec.api.endpoint,
                reason = reason.as_str(),
                error = %msg,
                "discovery request failed; retrying with backoff"
            );
        }
        self.status().last_error = Some(format!("{}: {msg}", reason.as_str()));
    }

    /// Sleeps `d` or until the task is stopped; false when stopped.
    async fn sleep(&self, d: Duration) -> bool {
        tokio::select! {
            _ = self.stop.cancelled() => false,
            _ = tokio::time::sleep(d) => true,
        }
    }
}

/// Why a cycle stopped early.
#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error(transparent)]
    Store(#[from] state::Error),
}

/// The wait after `errors` consecutive failed cycles: the interval doubled per failure, capped
/// at five intervals (at least the interval, at most ten minutes unless the interval is longer),
/// drawn between half and all of it so that targets failing together do not retry together.
fn backoff(interval: Duration, errors: u32) -> Duration {
    if errors == 0 {
        return interval;
    }
    let cap = (interval * 5).min(Duration::from_secs(600)).max(interval);
    let d = interval.saturating_mul(1 << errors.min(16)).min(cap);
    d.mul_f64(0.5 + fastrand::f64() * 0.5).max(interval / 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_stays_capped() {
        let i = Duration::from_secs(60);
        assert_eq!(backoff(i, 0), i);
        for _ in 0..100 {
            let first = backoff(i, 1);
            assert!(first >= i && first <= 2 * i, "{first:?}");
            let late = backoff(i, 20);
            assert!(late >= Duration::from_secs(150) && late <= Duration::from_secs(300));
            // Long intervals are never shortened below half of themselves.
            let long = backoff(Duration::from_secs(3600), 3);
            assert!(long >= Duration::from_secs(1800) && long <= Duration::from_secs(3600));
        }
    }
}
