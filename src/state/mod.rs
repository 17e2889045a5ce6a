//! The state store: everything a restart must not forget (README, "State across restarts").
//!
//! - registrations made through `/api/v1/jobs`,
//! - jobs discovery found, with where and when,
//! - each discovery cursor,
//! - jobs seen finished (with when and what to show for them until `terminal_retention`), and
//!   jobs an operator acknowledged.
//!
//! One interface for all of them: reads answer from memory; every change goes through
//! `Store::commit`, which returns once the change is on disk (fsynced) when a `state_file` is
//! set. Concurrent commits share one journal append and one fsync (group commit): a dedicated
//! writer thread takes every change queued while the previous fsync ran, so the async workers
//! never block on the disk and the cost of a registration does not grow with the number of
//! jobs stored (see `journal` for the file format). Memory only ever holds what is durable: a
//! change whose write failed is answered with an error and not applied.
//!
//! A write failure is logged at error level naming the file and the OS error, and counted in
//! `huaweicloud_job_exporter_state_write_failures_total`.

mod journal;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, mpsc};

use serde::{Deserialize, Serialize};

use crate::scope::Scope;

/// One job: the target it belongs to (service, region, project) and its id.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobRef {
    /// Service, e.g. `evs`.
    pub cloud_service: String,
    /// Region.
    pub cloud_region: String,
    /// Project id.
    pub project_id: String,
    /// Job id, `[A-Za-z0-9-]{1,64}`.
    pub job_id: String,
}

impl JobRef {
    /// Job `job_id` of `scope`.
    pub fn new(scope: &Scope, job_id: &str) -> Self {
        Self {
            cloud_service: scope.cloud_service.clone(),
            cloud_region: scope.cloud_region.clone(),
            project_id: scope.project_id.clone(),
            job_id: job_id.into(),
        }
    }

    /// The scope this job is in. The fields stay flat, rather than a [`Scope`] inside, because
    /// they are the journal's and the registration API's format, whose unknown keys are errors
    /// (serde cannot flatten a struct that denies unknown fields).
    pub fn scope(&self) -> Scope {
        Scope::new(&self.cloud_service, &self.cloud_region, &self.project_id)
    }

    /// Whether this job is in `scope`.
    pub(crate) fn is_in(&self, scope: &Scope) -> bool {
        scope.is(&self.cloud_service, &self.cloud_region, &self.project_id)
    }
}

/// Which discovery found a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DiscoverySource {
    /// Cloud Trace Service traces.
    Cts,
    /// The task centre's failed jobs.
    FailureJobs,
}

impl DiscoverySource {
    /// The `source` label value, and the `source` of `GET /api/v1/jobs`.
    pub fn as_str(self) -> &'static str {
        match self {
            DiscoverySource::Cts => "cts",
            DiscoverySource::FailureJobs => "failure_jobs",
        }
    }
}

/// A job found by discovery.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Discovered {
    /// The job.
    pub job: JobRef,
    /// Which discovery found it.
    pub source: DiscoverySource,
    /// When it was found, Unix seconds.
    pub found_at: i64,
    /// When `terminal_retention` dropped it (Unix seconds): it is no longer tracked, and kept
    /// only so that a listing still showing it (the task centre lists failed jobs for weeks)
    /// does not bring it back. At most `MAX_GONE` are kept, the oldest go first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gone_at: Option<i64>,
}

/// Discovered jobs kept after `terminal_retention` dropped them, at most.
pub(crate) const MAX_GONE: usize = 100_000;

/// Where a CTS discovery task stands. Everything stamped before `until_ms` minus the overlap
/// has been read, and so has `backlog` once it is gone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cursor {
    /// The `to` of the last window read to its end (Unix ms).
    pub until_ms: i64,
    /// A window cut short by `max_pages`, still to read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backlog: Option<Backlog>,
    /// Trace ids already counted whose time is within the overlap of the next window, so that
    /// a restart does not count them again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub seen: Vec<(String, i64)>,
}

/// The older part of a window that `max_pages` stopped: `[from_ms, to_ms]` is still unread
/// (CTS answers newest first, so the pages read were the newest).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Backlog {
    /// The window's start.
    pub from_ms: i64,
    /// The oldest trace time read so far.
    pub to_ms: i64,
    /// The `to` of the window the backlog belongs to: `until_ms` once it is read.
    pub then_until_ms: i64,
}

/// Names one discovery cursor: a target and a discovery kind.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CursorKey {
    /// Service.
    pub cloud_service: String,
    /// Region.
    pub cloud_region: String,
    /// Project id.
    pub project_id: String,
    /// Discovery kind.
    pub source: DiscoverySource,
}

impl CursorKey {
    /// The cursor of discovery `source` in `scope`.
    pub fn new(scope: &Scope, source: DiscoverySource) -> Self {
        Self {
            cloud_service: scope.cloud_service.clone(),
            cloud_region: scope.cloud_region.clone(),
            project_id: scope.project_id.clone(),
            source,
        }
    }
}

/// What the exporter shows for a finished job after a restart, until `terminal_retention`:
/// the fields its status, failure and timestamp series come from (entities and sub-jobs are
/// not kept).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LastState {
    /// `job_type`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_type: Option<String>,
    /// `SUCCESS` or `FAIL`, stored as the cloud spells it.
    pub status: crate::cloud::Status,
    /// `error_code`, when failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
    /// `fail_reason`, when failed (already cut to what is exported).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail_reason: Option<String>,
    /// Begin time, Unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub begin: Option<f64>,
    /// End time, Unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<f64>,
}

/// A job the exporter must neither fetch nor count again: seen finished, or acknowledged by an
/// operator (`DELETE /api/v1/jobs/…`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Finished {
    /// The job.
    pub job: JobRef,
    /// When it was first seen finished, or acknowledged: Unix seconds.
    pub at: f64,
    /// What to export for it until `terminal_retention`; `None` once acknowledged (not
    /// exported at all). Shared: the poller's memory of the job and the store's record hold
    /// the same one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<Arc<LastState>>,
}

/// One change to the store. Each is idempotent, which makes journal replay safe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub(crate) enum Op {
    /// Adds a registration.
    Register(JobRef),
    /// Removes a registration.
    Unregister(JobRef),
    /// Adds or replaces a discovered job.
    Discovered(Discovered),
    /// Removes a discovered job.
    Undiscovered(JobRef),
    /// Sets a discovery cursor.
    Cursor {
        /// Which cursor.
        key: CursorKey,
        /// Where the task stands.
        cursor: Cursor,
    },
    /// Adds or replaces a finished or acknowledged job.
    Finished(Finished),
    /// Forgets a finished or acknowledged job.
    Forget(JobRef),
}

/// State-store errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A state file exists but cannot be read or parsed.
    #[error("state file {file}: {problem} (fix or move it away; it is never taken as empty)")]
    Corrupt {
        /// The file.
        file: String,
        /// What is wrong.
        problem: String,
    },
    /// Writing failed; the change was not acknowledged.
    #[error("cannot write state file {file}: {source}")]
    Write {
        /// The file.
        file: String,
        /// Why.
        source: std::io::Error,
    },
    /// A change names an invalid job.
    #[error("{0}")]
    Invalid(String),
    /// The writer thread is gone (the process is stopping).
    #[error("the state store is closed")]
    Closed,
}

impl Error {
    /// The same error for another waiter of the same failed write (`io::Error` is not `Clone`).
    fn duplicate(&self) -> Self {
        match self {
            Error::Corrupt { file, problem } => Error::Corrupt {
                file: file.clone(),
                problem: problem.clone(),
            },
            Error::Write { file, source } => Error::Write {
                file: file.clone(),
                source: std::io::Error::new(source.kind(), source.to_string()),
            },
            Error::Invalid(m) => Error::Invalid(m.clone()),
            Error::Closed => Error::Closed,
        }
    }
}

/// Result alias for this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything stored, in memory.
#[derive(Debug, Default, Clone)]
struct Records {
    registrations: BTreeSet<JobRef>,
    discovered: BTreeMap<JobRef, Discovered>,
    cursors: BTreeMap<CursorKey, Cursor>,
    finished: FinishedSet,
}

/// The finished and acknowledged jobs, grouped by scope: a scope's three strings are held once,
/// not once per job. At 100,000 tracked jobs a map keyed by [`JobRef`] spent most of its bytes
/// on those copies (BENCHMARKS.md, "Run 3").
#[derive(Debug, Default, Clone)]
struct FinishedSet {
    /// Few: one per target that ever had a job finish.
    scopes: Vec<ScopeJobs>,
}

#[derive(Debug, Clone)]
struct ScopeJobs {
    scope: Scope,
    jobs: HashMap<Box<str>, Seen>,
}

impl FinishedSet {
    fn scope(&self, job: &JobRef) -> Option<&ScopeJobs> {
        self.scopes.iter().find(|s| job.is_in(&s.scope))
    }

    fn get(&self, job: &JobRef) -> Option<&Seen> {
        self.scope(job)?.jobs.get(job.job_id.as_str())
    }

    /// Adds or replaces; returns the record replaced.
    fn insert(&mut self, job: JobRef, seen: Seen) -> Option<Seen> {
        let i = match self.scopes.iter().position(|s| job.is_in(&s.scope)) {
            Some(i) => i,
            None => {
                self.scopes.push(ScopeJobs {
                    scope: job.scope(),
                    jobs: HashMap::new(),
                });
                self.scopes.len() - 1
            }
        };
        self.scopes[i].jobs.insert(job.job_id.into(), seen)
    }

    fn remove(&mut self, job: &JobRef) -> Option<Seen> {
        let i = self.scopes.iter().position(|s| job.is_in(&s.scope))?;
        let removed = self.scopes[i].jobs.remove(job.job_id.as_str());
        if self.scopes[i].jobs.is_empty() {
            self.scopes.swap_remove(i);
        }
        removed
    }

    /// The number of records.
    fn len(&self) -> usize {
        self.scopes.iter().map(|s| s.jobs.len()).sum()
    }

    /// Every record, each with its scope's job reference built on the way.
    fn records(&self) -> impl Iterator<Item = Finished> + '_ {
        self.scopes.iter().flat_map(|s| {
            s.jobs
                .iter()
                .map(|(id, seen)| seen.record(JobRef::new(&s.scope, id)))
        })
    }

    /// The jobs of the records `wanted` selects, built only for those.
    fn select<'a>(
        &'a self,
        wanted: impl Fn(&Seen) -> bool + Copy + 'a,
    ) -> impl Iterator<Item = JobRef> + 'a {
        self.scopes.iter().flat_map(move |s| {
            s.jobs
                .iter()
                .filter(move |(_, seen)| wanted(seen))
                .map(move |(id, _)| JobRef::new(&s.scope, id))
        })
    }
}

/// A [`Finished`] record without its job, which is the key it is stored under.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Seen {
    at: f64,
    last: Option<Arc<LastState>>,
}

impl Seen {
    fn record(&self, job: JobRef) -> Finished {
        Finished {
            job,
            at: self.at,
            last: self.last.clone(),
        }
    }
}

fn check(job: &JobRef) -> Result<()> {
    for (field, value) in [("project_id", &job.project_id), ("job_id", &job.job_id)] {
        if !crate::scope::is_id(value) {
            return Err(Error::Invalid(format!(
                "{field}: {value:?} must match [A-Za-z0-9-]{{1,64}}"
            )));
        }
    }
    Ok(())
}

impl Op {
    fn job(&self) -> Option<&JobRef> {
        match self {
            Op::Register(j) | Op::Unregister(j) | Op::Undiscovered(j) | Op::Forget(j) => Some(j),
            Op::Discovered(d) => Some(&d.job),
            Op::Finished(f) => Some(&f.job),
            Op::Cursor { .. } => None,
        }
    }
}

impl Records {
    /// Applies a change; returns whether anything changed. An invalid job is refused.
    fn apply(&mut self, op: Op) -> Result<bool> {
        if let Some(j) = op.job() {
            check(j)?;
        }
        Ok(match op {
            Op::Register(j) => self.registrations.insert(j),
            Op::Unregister(j) => self.registrations.remove(&j),
            Op::Discovered(d) => self.discovered.insert(d.job.clone(), d.clone()) != Some(d),
            Op::Undiscovered(j) => self.discovered.remove(&j).is_some(),
            Op::Cursor { key, cursor } => self.cursors.insert(key, cursor.clone()) != Some(cursor),
            Op::Finished(f) => {
                let seen = Seen {
                    at: f.at,
                    last: f.last,
                };
                self.finished.insert(f.job, seen.clone()) != Some(seen)
            }
            Op::Forget(j) => self.finished.remove(&j).is_some(),
        })
    }
}

enum Request {
    Commit {
        ops: Vec<Op>,
        reply: tokio::sync::oneshot::Sender<Result<usize>>,
    },
    Compact {
        reply: tokio::sync::oneshot::Sender<Result<()>>,
    },
}

/// The durable store. Cheap to share behind an `Arc`; reads never wait for the disk.
pub struct Store {
    records: Arc<Mutex<Records>>,
    writer: Mutex<mpsc::Sender<Request>>,
    path: Option<PathBuf>,
}

fn lock(records: &Mutex<Records>) -> MutexGuard<'_, Records> {
    records.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Largest number of queued requests one fsync covers.
const MAX_BATCH: usize = 4096;

impl Store {
    /// A store without a file (no `state_file`): it lasts until the process ends.
    pub(crate) fn in_memory() -> Self {
        Self::start(None, Records::default(), None)
    }

    /// Opens `path` (and its journal): missing files are an empty store, anything unreadable is
    /// an error naming the file. `write_failures` counts failed writes.
    pub fn open(path: &Path, write_failures: prometheus::IntCounter) -> Result<Self> {
        let (files, records) = journal::Files::open(path)?;
        Ok(Self::start(Some(files), records, Some(write_failures)))
    }

    fn start(
        files: Option<journal::Files>,
        records: Records,
        failures: Option<prometheus::IntCounter>,
    ) -> Self {
        let path = files.as_ref().map(|f| f.journal().to_path_buf());
        let records = Arc::new(Mutex::new(records));
        let (tx, rx) = mpsc::channel();
        let shared = Arc::clone(&records);
        // A thread of its own rather than spawn_blocking: it lives as long as the store and
        // would otherwise hold one of the blocking pool's threads for good.
        let spawned = std::thread::Builder::new()
            .name("state-writer".into())
            .spawn(move || writer(files, &shared, &rx, failures.as_ref()));
        if let Err(e) = spawned {
            // Without a writer every commit answers Closed: nothing is acknowledged unwritten.
            tracing::error!(error = %e, "cannot start the state writer thread");
        }
        Self {
            records,
            writer: Mutex::new(tx),
            path,
        }
    }

    fn records(&self) -> MutexGuard<'_, Records> {
        lock(&self.records)
    }

    /// The journal file, when the store has a file.
    pub fn journal_path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Applies `ops` and returns once they are durable; returns how many changed something.
    /// Concurrent calls share one fsync.
    pub(crate) async fn commit(&self, ops: Vec<Op>) -> Result<usize> {
        for op in &ops {
            if let Some(j) = op.job() {
                check(j)?;
            }
        }
        if ops.is_empty() {
            return Ok(0);
        }
        let (reply, rx) = tokio::sync::oneshot::channel();
        self.send(Request::Commit { ops, reply })?;
        rx.await.map_err(|_| Error::Closed)?
    }

    /// Rewrites the snapshot now and empties the journal (the writer also does it on its own
    /// when the journal outgrows the snapshot).
    pub async fn compact(&self) -> Result<()> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        self.send(Request::Compact { reply })?;
        rx.await.map_err(|_| Error::Closed)?
    }

    fn send(&self, request: Request) -> Result<()> {
        self.writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .send(request)
            .map_err(|_| Error::Closed)
    }

    // Registrations.

    /// Every registration.
    pub fn registrations(&self) -> Vec<JobRef> {
        self.records().registrations.iter().cloned().collect()
    }

    /// Whether `job` is registered.
    pub(crate) fn is_registered(&self, job: &JobRef) -> bool {
        self.records().registrations.contains(job)
    }

    /// Registers a job, durably; `Ok(false)` if it was registered already.
    pub async fn register(&self, job: JobRef) -> Result<bool> {
        if self.is_registered(&job) {
            return Ok(false);
        }
        Ok(self.commit(vec![Op::Register(job)]).await? > 0)
    }

    /// Removes registrations, durably; returns how many there were.
    pub(crate) async fn unregister(&self, jobs: &[JobRef]) -> Result<usize> {
        let present: Vec<Op> = {
            let r = self.records();
            jobs.iter()
                .filter(|j| r.registrations.contains(*j))
                .map(|j| Op::Unregister(j.clone()))
                .collect()
        };
        self.commit(present).await
    }

    // Discovery.

    /// Every discovered job still tracked (not dropped by `terminal_retention`).
    pub fn discovered(&self) -> Vec<Discovered> {
        self.records()
            .discovered
            .values()
            .filter(|d| d.gone_at.is_none())
            .cloned()
            .collect()
    }

    /// Whether `job` is a discovered job still tracked.
    pub(crate) fn is_discovered(&self, job: &JobRef) -> bool {
        self.records()
            .discovered
            .get(job)
            .is_some_and(|d| d.gone_at.is_none())
    }

    /// Discovered jobs of one target still tracked.
    pub(crate) fn discovered_count(&self, scope: &Scope) -> usize {
        let from = JobRef::new(scope, "");
        self.records()
            .discovered
            .range(&from..)
            .take_while(|(j, _)| j.is_in(scope))
            .filter(|(_, d)| d.gone_at.is_none())
            .count()
    }

    /// Whether discovery must not add `job`: it was discovered already (even if since dropped),
    /// or seen finished, or acknowledged.
    pub(crate) fn knows(&self, job: &JobRef) -> bool {
        let r = self.records();
        r.discovered.contains_key(job) || r.finished.get(job).is_some()
    }

    /// Records what one discovery step found and, when given, where its task now stands,
    /// durably and together.
    pub(crate) async fn put_discovery(
        &self,
        jobs: Vec<Discovered>,
        cursor: Option<(CursorKey, Cursor)>,
    ) -> Result<()> {
        let ops = jobs
            .into_iter()
            .map(Op::Discovered)
            .chain(cursor.map(|(key, cursor)| Op::Cursor { key, cursor }))
            .collect();
        self.commit(ops).await.map(drop)
    }

    /// Marks discovered jobs that `terminal_retention` dropped as gone at `now` (Unix seconds),
    /// durably, and removes the oldest gone ones past [`MAX_GONE`]; returns how many of `jobs`
    /// were tracked discovered jobs.
    pub(crate) async fn discovered_gone(&self, jobs: &[JobRef], now: i64) -> Result<usize> {
        let ops: Vec<Op> = {
            let r = self.records();
            let mut ops: Vec<Op> = jobs
                .iter()
                .filter_map(|j| r.discovered.get(j))
                .filter(|d| d.gone_at.is_none())
                .map(|d| {
                    Op::Discovered(Discovered {
                        gone_at: Some(now),
                        ..d.clone()
                    })
                })
                .collect();
            let mut gone: Vec<(i64, &JobRef)> = r
                .discovered
                .values()
                .filter_map(|d| Some((d.gone_at?, &d.job)))
                .collect();
            let excess = (gone.len() + ops.len()).saturating_sub(MAX_GONE);
            if excess > 0 {
                gone.sort_unstable();
                ops.extend(
                    gone.into_iter()
                        .take(excess)
                        .map(|(_, j)| Op::Undiscovered(j.clone())),
                );
            }
            ops
        };
        let marked = ops
            .iter()
            .filter(|o| matches!(o, Op::Discovered(_)))
            .count();
        self.commit(ops).await?;
        Ok(marked)
    }

    /// Removes discovered jobs, durably.
    pub async fn delete_discovered(&self, jobs: &[JobRef]) -> Result<()> {
        self.commit(jobs.iter().cloned().map(Op::Undiscovered).collect())
            .await
            .map(drop)
    }

    /// A discovery cursor.
    pub fn cursor(&self, key: &CursorKey) -> Option<Cursor> {
        self.records().cursors.get(key).cloned()
    }

    // Finished and acknowledged jobs.

    /// Every job seen finished or acknowledged.
    pub fn finished(&self) -> Vec<Finished> {
        self.records().finished.records().collect()
    }

    /// The record of one finished or acknowledged job.
    pub fn finished_job(&self, job: &JobRef) -> Option<Finished> {
        self.records()
            .finished
            .get(job)
            .map(|seen| seen.record(job.clone()))
    }

    /// Adds or replaces finished or acknowledged jobs, durably.
    pub(crate) async fn put_finished(&self, jobs: &[Finished]) -> Result<()> {
        self.commit(jobs.iter().cloned().map(Op::Finished).collect())
            .await
            .map(drop)
    }

    /// Forgets finished or acknowledged jobs, durably.
    pub async fn forget_finished(&self, jobs: &[JobRef]) -> Result<()> {
        self.commit(jobs.iter().cloned().map(Op::Forget).collect())
            .await
            .map(drop)
    }

    /// Whether any finished or acknowledged job was recorded before `t` (Unix seconds).
    pub(crate) fn any_finished_before(&self, t: f64) -> bool {
        let r = self.records();
        r.finished.select(move |seen| seen.at < t).next().is_some()
    }

    /// Forgets every finished or acknowledged job recorded before `t` (Unix seconds) for which
    /// `keep` is false; returns how many.
    pub(crate) async fn forget_finished_before(
        &self,
        t: f64,
        keep: impl Fn(&JobRef) -> bool,
    ) -> Result<usize> {
        let old: Vec<Op> = self
            .records()
            .finished
            .select(move |seen| seen.at < t)
            .filter(|job| !keep(job))
            .map(Op::Forget)
            .collect();
        self.commit(old).await
    }
}

/// The writer thread: one journal append and fsync per batch of queued requests.
fn writer(
    mut files: Option<journal::Files>,
    records: &Mutex<Records>,
    rx: &mpsc::Receiver<Request>,
    failures: Option<&prometheus::IntCounter>,
) {
    let failed = |e: &Error| {
        tracing::error!(error = %e, "state file write failed");
        if let Some(c) = failures {
            c.inc();
        }
    };
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        let mut commits = Vec::new();
        let mut compacts = Vec::new();
        for r in batch {
            match r {
                Request::Commit { ops, reply } => commits.push((ops, reply)),
                Request::Compact { reply } => compacts.push(reply),
            }
        }
        let mut lines = Vec::new();
        let mut count = 0;
        // Without a file there is nothing to write: encoding anyway took 34 MB for the first
        // refresh of 100,000 jobs (BENCHMARKS.md).
        if files.is_some() {
            for (ops, _) in &commits {
                for op in ops {
                    journal::encode(op, &mut lines);
                    count += 1;
                }
            }
        }
        let written = match &mut files {
            Some(f) if count > 0 => f.append(&lines, count),
            _ => Ok(()),
        };
        match written {
            Ok(()) => {
                let mut r = lock(records);
                for (ops, reply) in commits {
                    // Checked before queueing, so apply cannot refuse them.
                    let changed = ops
                        .into_iter()
                        .filter(|op| r.apply(op.clone()).unwrap_or(false))
                        .count();
                    let _ = reply.send(Ok(changed));
                }
            }
            Err(e) => {
                failed(&e);
                for (_, reply) in commits {
                    let _ = reply.send(Err(e.duplicate()));
                }
            }
        }
        let Some(f) = &mut files else {
            for reply in compacts {
                let _ = reply.send(Ok(()));
            }
            continue;
        };
        if compacts.is_empty() && !f.wants_compaction() {
            continue;
        }
        // A copy, so reads are not held up while the snapshot is written.
        let copy = lock(records).clone();
        let result = f.compact(&copy);
        if let Err(e) = &result {
            failed(e);
        }
        for reply in compacts {
            let _ = reply.send(result.as_ref().map_err(Error::duplicate).copied());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(id: &str) -> JobRef {
        JobRef {
            cloud_service: "evs".into(),
            cloud_region: "r".into(),
            project_id: "p".into(),
            job_id: id.into(),
        }
    }

    fn counter() -> prometheus::IntCounter {
        prometheus::IntCounter::new("f", "f").expect("counter")
    }

    #[tokio::test]
    async fn finished_records_of_several_scopes_are_kept_apart_and_given_back_whole() {
        let s = Store::in_memory();
        let in_scope = |project: &str, region: &str, id: &str| JobRef {
            project_id: project.into(),
            cloud_region: region.into(),
            ..job(id)
        };
        let at = |job: JobRef, at: f64| Finished {
            job,
            at,
            last: None,
        };
        // The same job id in three scopes, and a second job in one of them.
        let records = vec![
            at(in_scope("p1", "r1", "j"), 10.0),
            at(in_scope("p2", "r1", "j"), 20.0),
            at(in_scope("p1", "r2", "j"), 30.0),
            at(in_scope("p1", "r1", "k"), 40.0),
        ];
        s.put_finished(&records).await.expect("put");
        let mut all = s.finished();
        all.sort_by(|a, b| a.at.total_cmp(&b.at));
        assert_eq!(all, records);
        for r in &records {
            assert!(s.knows(&r.job));
            assert_eq!(s.finished_job(&r.job).as_ref(), Some(r));
        }
        assert!(!s.knows(&in_scope("p2", "r2", "j")));
        assert!(!s.knows(&job("j")), "another service is another scope");

        // Only the old records `keep` does not hold are forgotten, each in its own scope.
        let forgotten = s
            .forget_finished_before(35.0, |j| j.project_id == "p2")
            .await
            .expect("forget");
        assert_eq!(forgotten, 2);
        let mut left: Vec<JobRef> = s.finished().into_iter().map(|f| f.job).collect();
        left.sort();
        assert_eq!(
            left,
            vec![in_scope("p1", "r1", "k"), in_scope("p2", "r1", "j")]
        );
        assert!(s.any_finished_before(35.0));
        s.forget_finished(&[in_scope("p2", "r1", "j")])
            .await
            .expect("forget");
        assert!(!s.any_finished_before(35.0));
        // A scope emptied and filled again holds its jobs as before.
        s.put_finished(&records[1..2]).await.expect("put again");
        assert_eq!(s.finished_job(&records[1].job).as_ref(), Some(&records[1]));
    }

    #[tokio::test]
    async fn every_kind_of_record_survives_reopening() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.json");
        let s = Store::open(&path, counter()).expect("missing file is empty");
        assert!(s.register(job("a")).await.expect("register"));
        assert!(!s.register(job("a")).await.expect("again"));
        assert!(s.register(job("b")).await.expect("register"));
        assert_eq!(s.unregister(&[job("a"), job("zzz")]).await.expect("rm"), 1);
        let found = Discovered {
            job: job("d"),
            source: DiscoverySource::FailureJobs,
            found_at: 1_700_000_000,
            gone_at: None,
        };
        let key = CursorKey {
            cloud_service: "evs".into(),
            cloud_region: "r".into(),
            project_id: "p".into(),
            source: DiscoverySource::Cts,
        };
        let cursor = Cursor {
            until_ms: 1_700_000_000_123,
            backlog: Some(Backlog {
                from_ms: 1,
                to_ms: 2,
                then_until_ms: 3,
            }),
            seen: vec![("t".into(), 4)],
        };
        s.put_discovery(vec![found.clone()], Some((key.clone(), cursor.clone())))
            .await
            .expect("discovered");
        let done = Finished {
            job: job("f"),
            at: 1_700_000_100.5,
            last: Some(Arc::new(LastState {
                job_type: Some("createVolume".into()),
                status: crate::cloud::Status::Fail,
                error_code: Some("EVS.1".into()),
                fail_reason: Some("no".into()),
                begin: Some(1.0),
                end: Some(2.0),
            })),
        };
        s.put_finished(std::slice::from_ref(&done))
            .await
            .expect("finished");
        let acked = Finished {
            job: job("g"),
            at: 10.0,
            last: None,
        };
        s.put_finished(std::slice::from_ref(&acked))
            .await
            .expect("acked");
        assert_eq!(
            s.forget_finished_before(100.0, |_| false)
                .await
                .expect("forget"),
            1
        );
        drop(s);
        for compacted in [false, true] {
            let again = Store::open(&path, counter()).expect("reopen");
            assert_eq!(again.registrations(), vec![job("b")]);
            assert_eq!(again.discovered(), vec![found.clone()]);
            assert_eq!(again.cursor(&key), Some(cursor.clone()));
            assert_eq!(again.finished(), vec![done.clone()]);
            if !compacted {
                again.compact().await.expect("compact");
            }
        }
    }

    #[tokio::test]
    async fn concurrent_commits_are_all_durable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.json");
        let s = Arc::new(Store::open(&path, counter()).expect("open"));
        let tasks: Vec<_> = (0..200)
            .map(|i| {
                let s = Arc::clone(&s);
                tokio::spawn(async move { s.register(job(&format!("j{i}"))).await })
            })
            .collect();
        for t in tasks {
            assert!(t.await.expect("task").expect("register"));
        }
        let again = Store::open(&path, counter()).expect("reopen");
        assert_eq!(again.registrations().len(), 200);
    }

    #[test]
    fn a_corrupt_state_file_is_an_error_never_empty() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.json");
        for bad in [
            "{",
            "[]",
            "{\"version\":3,\"jobs\":[]}",
            "{\"version\":1,\"jobs\":[{\"cloud_service\":\"evs\",\"cloud_region\":\"r\",\"project_id\":\"p\",\"job_id\":\"a/b\"}]}",
        ] {
            std::fs::write(&path, bad).expect("write");
            let e = Store::open(&path, counter()).err().expect("error");
            assert!(e.to_string().contains("state.json"), "{e}");
        }
    }

    #[tokio::test]
    async fn a_write_failure_is_logged_counted_not_acknowledged_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.json");
        let failures = counter();
        let s = Store::open(&path, failures.clone()).expect("open");
        assert!(s.register(job("a")).await.expect("register"));
        // Every write to the journal now fails with ENOSPC, halfway or not.
        let journal = s.journal_path().expect("journal").to_path_buf();
        drop(s);
        std::fs::remove_file(&journal).expect("rm");
        // Opened at the first append, so this store writes to the device.
        let s = Store::open(&path, failures.clone()).expect("reopen");
        std::os::unix::fs::symlink("/dev/full", &journal).expect("symlink");
        let e = s.register(job("b")).await.expect_err("refused");
        assert!(e.to_string().contains("state.json.journal"), "{e}");
        assert_eq!(failures.get(), 1);
        assert!(
            !s.is_registered(&job("b")),
            "nothing kept that was not written"
        );

        // A snapshot that cannot be written: the temporary file is removed.
        std::fs::remove_file(&journal).expect("rm");
        let tmp = journal::temporary_path(&path);
        std::os::unix::fs::symlink("/dev/full", &tmp).expect("symlink");
        assert!(s.compact().await.is_err());
        assert_eq!(failures.get(), 2);
        assert!(
            std::fs::symlink_metadata(&tmp).is_err(),
            "temporary file left"
        );
        assert_eq!(
            std::fs::read_to_string(&path).ok(),
            None,
            "no snapshot half written"
        );
    }
}
