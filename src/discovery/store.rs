//! What discovery must remember: the jobs it found, each CTS cursor, and the jobs dropped after
//! `terminal_retention` (so that a listing that still shows them does not bring them back).
//!
//! [`Store`] is the seam: [`MemoryStore`] keeps it for the life of the process; a durable store
//! (the state file) implements the same trait so that a restart resumes where it stopped.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Mutex, PoisonError};

use serde::{Deserialize, Serialize};

use super::{Scope, Source};

/// Why the store could not record something.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Writing the durable copy failed; nothing was recorded.
    #[error("cannot save discovery state: {0}")]
    Write(String),
}

/// Result alias for the store.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Where a CTS task stands. Everything stamped before `until_ms` minus the overlap has been
/// read, and so has `backlog` once it is gone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    /// The `to` of the last window read to its end (Unix ms).
    pub until_ms: i64,
    /// A window cut short by `max_pages`, still to read.
    pub backlog: Option<Backlog>,
    /// Trace ids already counted whose time is within the overlap of the next window, so that
    /// a restart does not count them again.
    pub seen: Vec<(String, i64)>,
}

/// The older part of a window that `max_pages` stopped: `[from_ms, to_ms]` is still unread
/// (CTS answers newest first, so the pages read were the newest).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backlog {
    /// The window's start.
    pub from_ms: i64,
    /// The oldest trace time read so far.
    pub to_ms: i64,
    /// The `to` of the window the backlog belongs to: `until_ms` once it is read.
    pub then_until_ms: i64,
}

/// A job found by discovery.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Discovered {
    /// Its target.
    pub scope: Scope,
    /// The source that found it first.
    pub source: Source,
    /// The job id.
    pub job_id: String,
}

/// The discovery state. Methods are called from the discovery tasks after each page, and from
/// the tracked set's owner; implementations keep them short (a durable one writes in the
/// background or group-commits).
pub trait Store: Send + Sync {
    /// The cursor of a CTS task, if one was saved.
    fn cursor(&self, scope: &Scope, source: Source) -> Option<Cursor>;
    /// Records `new_jobs` found by `source` and, when given, its new cursor, together.
    fn save(
        &self,
        scope: &Scope,
        source: Source,
        cursor: Option<&Cursor>,
        new_jobs: &[String],
    ) -> Result<()>;
    /// Every job discovered and not forgotten.
    fn discovered(&self) -> Vec<Discovered>;
    /// Discovered jobs of a target not forgotten, all sources together.
    fn count(&self, scope: &Scope) -> usize;
    /// True if the job was discovered or forgotten: it is not to be added again.
    fn knows(&self, scope: &Scope, job_id: &str) -> bool;
    /// Drops jobs past `terminal_retention` and remembers them as gone; returns how many of
    /// them were discovered ones.
    fn forget(&self, jobs: &[(Scope, String)]) -> Result<usize>;
}

/// Forgotten jobs remembered at most: a listing that keeps showing a job (the task centre
/// lists failed jobs until someone deletes them) must not bring it back, and the oldest
/// tombstones go first when there are more.
pub const MAX_TOMBSTONES: usize = 100_000;

#[derive(Default)]
struct Memory {
    jobs: BTreeMap<Scope, HashMap<String, Source>>,
    cursors: HashMap<(Scope, Source), Cursor>,
    tombstones: HashMap<(Scope, String), ()>,
    tombstone_order: VecDeque<(Scope, String)>,
}

/// The store without a state file: discovery starts from `lookback` after a restart.
#[derive(Default)]
pub struct MemoryStore {
    inner: Mutex<Memory>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Memory> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Store for MemoryStore {
    fn cursor(&self, scope: &Scope, source: Source) -> Option<Cursor> {
        self.lock().cursors.get(&(scope.clone(), source)).cloned()
    }

    fn save(
        &self,
        scope: &Scope,
        source: Source,
        cursor: Option<&Cursor>,
        new_jobs: &[String],
    ) -> Result<()> {
        let mut m = self.lock();
        if let Some(c) = cursor {
            m.cursors.insert((scope.clone(), source), c.clone());
        }
        if !new_jobs.is_empty() {
            let jobs = m.jobs.entry(scope.clone()).or_default();
            for j in new_jobs {
                jobs.entry(j.clone()).or_insert(source);
            }
        }
        Ok(())
    }

    fn discovered(&self) -> Vec<Discovered> {
        let m = self.lock();
        let mut out: Vec<Discovered> = m
            .jobs
            .iter()
            .flat_map(|(scope, jobs)| {
                jobs.iter().map(|(job_id, source)| Discovered {
                    scope: scope.clone(),
                    source: *source,
                    job_id: job_id.clone(),
                })
            })
            .collect();
        out.sort();
        out
    }

    fn count(&self, scope: &Scope) -> usize {
        self.lock().jobs.get(scope).map_or(0, HashMap::len)
    }

    fn knows(&self, scope: &Scope, job_id: &str) -> bool {
        let m = self.lock();
        m.jobs.get(scope).is_some_and(|j| j.contains_key(job_id))
            || m.tombstones
                .contains_key(&(scope.clone(), job_id.to_string()))
    }

    fn forget(&self, jobs: &[(Scope, String)]) -> Result<usize> {
        let mut m = self.lock();
        let mut n = 0;
        for (scope, job) in jobs {
            let Some(list) = m.jobs.get_mut(scope) else {
                continue;
            };
            if list.remove(job).is_none() {
                continue;
            }
            n += 1;
            let key = (scope.clone(), job.clone());
            if m.tombstones.insert(key.clone(), ()).is_none() {
                m.tombstone_order.push_back(key);
            }
            while m.tombstone_order.len() > MAX_TOMBSTONES {
                if let Some(old) = m.tombstone_order.pop_front() {
                    m.tombstones.remove(&old);
                }
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forgotten_jobs_stay_known_and_are_not_listed() {
        let s = MemoryStore::new();
        let scope = Scope::new("evs", "r", "p");
        s.save(&scope, Source::Cts, None, &["a".into(), "b".into()])
            .expect("saved");
        s.save(&scope, Source::FailureJobs, None, &["b".into(), "c".into()])
            .expect("saved");
        assert_eq!(s.count(&scope), 3);
        // The first source that found a job keeps it.
        let b = s.discovered().into_iter().find(|d| d.job_id == "b");
        assert_eq!(b.map(|d| d.source), Some(Source::Cts));
        assert_eq!(
            s.forget(&[(scope.clone(), "a".into()), (scope.clone(), "zz".into())])
                .expect("forgotten"),
            1
        );
        assert!(s.knows(&scope, "a"));
        assert_eq!(s.count(&scope), 2);
        assert!(!s.discovered().iter().any(|d| d.job_id == "a"));
        assert!(!s.knows(&Scope::new("evs", "r", "other"), "b"));
    }
}
