//! The tracked jobs and what outlives them: each job's last state and rendered text, the jobs
//! remembered as finished or acknowledged, the counters, and what is made of them (summaries,
//! the aggregate families).

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use super::archive::Archive;
use super::label_caps::{FOLDED, TargetCaps};
use super::recent_errors::RecentError;
use crate::cloud::{BodyDigest, Job, Status};
use crate::exposition::{self, Aggregates, FAMILIES, JobText, JobView, Totals};
use crate::families::Families;
use crate::scope::Scope;
use crate::state::{Finished, JobRef, LastState};

/// Counts for the landing page and `tracked_jobs`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct TargetSummary {
    /// Service, region and project.
    pub scope: Scope,
    /// Jobs still polled.
    pub active: usize,
    /// Finished jobs kept until retention.
    pub terminal: usize,
    /// Jobs whose last fetch failed.
    pub failing: usize,
}

/// A target with its pre-escaped common labels.
pub(super) struct Tracked {
    pub(super) target: Arc<super::Target>,
    pub(super) labels: Arc<str>,
}

pub(super) type JobKey = (Arc<str>, String);

/// A tracked job. Its id is the second half of its key, not repeated here.
pub(super) struct Entry {
    pub(super) tracked: Arc<Tracked>,
    pub(super) job: Option<Known>,
    /// The digest of the body `job` was decoded from.
    pub(super) digest: Option<BodyDigest>,
    pub(super) fetch_ok: bool,
    pub(super) last_success: Option<f64>,
    pub(super) terminal_since: Option<f64>,
    pub(super) counted_subjob_failures: Vec<String>,
    /// The job's lines, unless its segment is sealed (then empty).
    pub(super) text: JobText,
    /// The sealed segment that holds the job's lines (see `super::archive`).
    pub(super) sealed: Option<u32>,
}

/// What is kept of a tracked job's body once it has been fetched.
///
/// A job that finished is never fetched or rendered again, so most of the 100,000 jobs of a large
/// fleet need neither their body nor a copy of the last state the poller's memory already holds:
/// an entry with its body inline took 352 bytes, with this 168, and RSS at 100,000 jobs (90%
/// finished) fell from 341 to 318 MiB (BENCHMARKS.md, run 5).
pub(super) enum Known {
    /// The last decoded body: a job still running, or a failed one trimmed to what the jobs
    /// page shows of its failure (its entities too, which a last state does not keep).
    Body(Box<Job>),
    /// A finished job's last state, the one `Arc` the poller's memory and the state store share.
    Finished(Arc<LastState>),
}

impl Known {
    /// The job, rebuilt from its last state when that is all that is kept.
    pub(super) fn job(&self) -> Cow<'_, Job> {
        match self {
            Known::Body(job) => Cow::Borrowed(job),
            Known::Finished(last) => Cow::Owned(Job {
                job_type: last.job_type.clone(),
                status: Some(last.status.clone()),
                begin: last.begin,
                end: last.end,
                error_code: last.error_code.clone(),
                fail_reason: last.fail_reason.clone(),
                ..Job::default()
            }),
        }
    }

    /// The job_type and status labels the job is counted under, without rebuilding it.
    fn labels(&self) -> (&str, &str) {
        match self {
            Known::Body(job) => (exposition::job_type(job), exposition::status_label(job)),
            Known::Finished(last) => (
                exposition::type_label(last.job_type.as_deref()),
                last.status.as_str(),
            ),
        }
    }
}

impl Entry {
    fn view<'a>(
        &'a self,
        job: Option<&'a Job>,
        job_id: &'a str,
        families: Families,
    ) -> JobView<'a> {
        JobView {
            target_labels: &self.tracked.labels,
            job_id,
            job,
            fetch_ok: self.fetch_ok,
            last_success: self.last_success,
            families,
        }
    }

    pub(super) fn render(&mut self, job_id: &str, families: Families) {
        let job = self.job.as_ref().map(Known::job);
        self.text = exposition::render_job(&self.view(job.as_deref(), job_id, families));
    }

    /// Renders again after a fetch that returned the body `text` was rendered from.
    pub(super) fn rerender_fetch(&mut self, job_id: &str, families: Families) {
        let job = self.job.as_ref().map(Known::job);
        let view = self.view(job.as_deref(), job_id, families);
        self.text = exposition::rerender_fetch(&view, &self.text);
    }
}

/// What outlives the jobs: the counters and histogram, and the label values admitted.
#[derive(Default)]
pub(super) struct Aggregated {
    pub(super) totals: Totals,
    /// Per target (its labels).
    pub(super) caps: HashMap<Arc<str>, TargetCaps>,
}

/// A job seen finished, or acknowledged: never fetched or counted again. Exported from
/// `last` until `terminal_retention` after `at`; after that (or at once when acknowledged) it is
/// not exported and not taken back while any source lists it, and forgotten once no source
/// lists it and [`forget_after`] has passed.
pub(super) struct Remembered {
    pub(super) at: f64,
    pub(super) last: Option<Arc<LastState>>,
}

/// The [`Remembered`] jobs, keyed like the tracked ones. A record holds no scope strings of its
/// own: each key's labels stand for a scope kept once in `scopes` (at 100,000 jobs a scope
/// per record was tens of MB; BENCHMARKS.md, "Run 3" and "Run 4").
#[derive(Default)]
pub(super) struct Memory {
    records: HashMap<JobKey, Remembered>,
    /// Each scope of the keys, under its labels: the one `Arc` of those labels the keys share.
    scopes: HashMap<Arc<str>, Scope>,
}

impl Memory {
    /// What is remembered of `key`.
    pub(super) fn get(&self, key: &JobKey) -> Option<&Remembered> {
        self.records.get(key)
    }

    /// Remembers the job of `key`, whose labels are those of `scope`, replacing what was.
    pub(super) fn insert(
        &mut self,
        (labels, job_id): JobKey,
        scope: &Scope,
        remembered: Remembered,
    ) {
        let labels = match self.scopes.get_key_value(&labels) {
            Some((shared, _)) => Arc::clone(shared),
            None => {
                self.scopes.insert(Arc::clone(&labels), scope.clone());
                labels
            }
        };
        self.records.insert((labels, job_id), remembered);
    }

    /// The record of `key` as the store keeps it.
    pub(super) fn finished(&self, key: &JobKey) -> Option<Finished> {
        let remembered = self.records.get(key)?;
        let scope = self.scopes.get(&key.0)?;
        Some(Finished {
            job: JobRef::new(scope, &key.1),
            at: remembered.at,
            last: remembered.last.clone(),
        })
    }

    /// Keeps the records `keep` is true for.
    pub(super) fn retain(&mut self, keep: impl FnMut(&JobKey, &mut Remembered) -> bool) {
        self.records.retain(keep);
    }

    /// The jobs of the records `wanted` selects.
    pub(super) fn jobs<'a>(
        &'a self,
        wanted: impl Fn(&Remembered) -> bool + 'a,
    ) -> impl Iterator<Item = JobRef> + 'a {
        self.records
            .iter()
            .filter(move |(_, m)| wanted(m))
            .filter_map(|(key, _)| Some(JobRef::new(self.scopes.get(&key.0)?, &key.1)))
    }
}

#[derive(Default)]
pub(super) struct State {
    pub(super) jobs: BTreeMap<JobKey, Entry>,
    /// Jobs seen finished or acknowledged, listed or not.
    pub(super) memory: Memory,
    /// Jobs seen finished since the store last took them; what the store keeps of each is
    /// made from `memory` when it takes them, a batch at a time (a record per job, four strings
    /// each, held until the end of the round, left holes all over the heap; BENCHMARKS.md,
    /// run 7).
    pub(super) newly_finished: Vec<JobKey>,
    pub(super) agg: Aggregated,
    pub(super) recent_errors: VecDeque<RecentError>,
    /// Finished jobs' lines held only compressed.
    pub(super) archive: Archive,
}

/// Seconds after which a finished or acknowledged job no source lists is forgotten: retention,
/// then as long again (at least an hour), so that registering it again in between is refused
/// rather than fetched and counted again.
pub(crate) fn forget_after(retention: f64) -> f64 {
    retention + retention.max(3600.0)
}

/// The common labels of a scope, escaped, as every series of its jobs carries them.
pub(super) fn scope_labels(scope: &Scope) -> String {
    exposition::labels(&scope.labels())
}

pub(super) fn job_key(job: &JobRef) -> JobKey {
    (scope_labels(&job.scope()).into(), job.job_id.clone())
}

/// What is kept of a finished job to export it after a restart.
pub(super) fn last_state(job: &Job) -> LastState {
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
pub(super) fn insert_job(
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
        job: None,
        digest: None,
        fetch_ok: false,
        last_success: None,
        terminal_since: None,
        counted_subjob_failures: Vec::new(),
        text: JobText::default(),
        sealed: None,
    };
    if let Some((at, last)) = restored {
        entry.job = Some(Known::Finished(Arc::clone(last)));
        entry.fetch_ok = true;
        entry.last_success = Some(at);
        entry.terminal_since = Some(at);
        state.archive.note_finished();
    }
    entry.render(&key.1, families);
    state.jobs.insert(key, entry);
    true
}

pub(super) fn summarize(state: &State) -> Vec<TargetSummary> {
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

pub(super) fn render_aggregates(state: &State) -> [String; FAMILIES.len()] {
    let mut jobs: BTreeMap<(&str, &str, &str), u64> = BTreeMap::new();
    for e in state.jobs.values() {
        if let Some(known) = &e.job {
            let (jt, status) = known.labels();
            let jt = state
                .agg
                .caps
                .get(&e.tracked.labels)
                .map_or(FOLDED, |c| c.job_types.get(jt));
            *jobs.entry((&e.tracked.labels, jt, status)).or_default() += 1;
        }
    }
    Aggregates {
        jobs,
        totals: &state.agg.totals,
    }
    .render()
}
