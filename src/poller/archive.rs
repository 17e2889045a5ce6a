//! Finished jobs whose lines are held only compressed: sealed segments, and the jobs that left
//! them since.
//!
//! A finished job is never fetched or rendered again, so its lines never change. Once a full
//! segment of finished jobs has its text held (`SEGMENT` of them), their lines are compressed
//! once more into a [`Sealed`] segment and the jobs' entries drop their text: at 100,000
//! tracked jobs, 90% finished, that text was 49 MB (BENCHMARKS.md, run 7). That happens at each
//! publish, and during a collection (or while remembered jobs come back) as soon as a segment's
//! worth has finished, so that the texts freed are reused while the round goes on. A gzip
//! scrape sends the sealed blocks as it sends any others; a plain one inflates them.
//!
//! A job that stops being tracked (retention, acknowledged, no longer listed) leaves its sealed
//! segment: the segment is written again without its lines at the next publish, or dropped
//! with its last job. The compression happens outside the state's lock, between
//! [`Archive::take_rewrites`] and [`State::install`], under the poller's one-publisher lock.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use super::jobs::{Entry, JobKey, State};
use crate::exposition::{self, JobText};
use crate::families::Families;
use crate::gzip;
use crate::snapshot::{SEGMENT, Sealed};

/// The common labels of jobs (as [`JobText::base`] holds them).
type Bases = HashSet<Box<[u8]>>;

/// The sealed segments, in the order they were sealed.
#[derive(Default)]
pub(super) struct Archive {
    sealed: BTreeMap<u32, Arc<Sealed>>,
    /// Per sealed segment, the jobs no longer tracked whose lines it still holds.
    gone: BTreeMap<u32, Bases>,
    /// The number of the next segment sealed.
    next: u32,
    /// About how many finished jobs have their text held: counted as jobs finish, set when
    /// they are counted for sealing.
    unsealed: usize,
}

/// A sealed segment to write again without some of its jobs.
pub(super) struct Rewrite {
    segment: u32,
    sealed: Arc<Sealed>,
    gone: Bases,
}

/// What [`prepare`] made outside the lock, for [`State::install`].
pub(super) struct Sealing {
    rewritten: Vec<(Rewrite, gzip::Result<Option<Sealed>>)>,
    /// New segments, with the jobs (and the texts) they were sealed from.
    sealed: Vec<(Sealed, Vec<(JobKey, JobText)>)>,
}

impl Archive {
    /// Notes that the job of `key`, sealed in `segment`, is no longer tracked.
    pub(super) fn forget(&mut self, segment: u32, key: &JobKey) {
        let base = exposition::job_base(&key.0, &key.1);
        self.forget_base(segment, base.as_bytes());
    }

    fn forget_base(&mut self, segment: u32, base: &[u8]) {
        self.gone.entry(segment).or_default().insert(base.into());
    }

    /// Notes a job that finished (or came back finished): its text is held until it is sealed.
    pub(super) fn note_finished(&mut self) {
        self.unsealed += 1;
    }

    /// Whether a whole segment's worth of finished jobs may have their text held.
    pub(super) fn due(&self) -> bool {
        self.unsealed >= SEGMENT
    }

    /// The sealed segments some of whose jobs left, to write again without them.
    pub(super) fn take_rewrites(&mut self) -> Vec<Rewrite> {
        let gone = std::mem::take(&mut self.gone);
        gone.into_iter()
            .filter_map(|(segment, gone)| {
                let sealed = Arc::clone(self.sealed.get(&segment)?);
                Some(Rewrite {
                    segment,
                    sealed,
                    gone,
                })
            })
            .collect()
    }

    /// The sealed segments, in the order they were sealed.
    pub(super) fn segments(&self) -> impl Iterator<Item = Arc<Sealed>> + '_ {
        self.sealed.values().cloned()
    }

    /// Jobs in sealed segments (those that left included, until their segment is written
    /// again).
    #[cfg(test)]
    pub(super) fn job_count(&self) -> usize {
        self.sealed.values().map(|s| s.job_count()).sum()
    }
}

/// Writes the segments of `rewrites` again without the jobs that left them, and seals the
/// first whole segments of `open` (finished jobs whose text is held, in exposition order); the
/// rest of `open` stays as it is. Compresses, so it runs outside the state's lock.
pub(super) fn prepare(
    rewrites: Vec<Rewrite>,
    open: Vec<(JobKey, JobText)>,
    families: Families,
) -> Sealing {
    let rewritten = rewrites
        .into_iter()
        .map(|r| {
            let done = r.sealed.without(&r.gone);
            (r, done)
        })
        .collect();
    let mut sealed = Vec::new();
    let mut open = open.into_iter();
    loop {
        let jobs: Vec<(JobKey, JobText)> = open.by_ref().take(SEGMENT).collect();
        if jobs.len() < SEGMENT {
            break;
        }
        let texts: Vec<JobText> = jobs.iter().map(|(_, t)| t.clone()).collect();
        match Sealed::seal(&texts, families) {
            Ok(s) => sealed.push((s, jobs)),
            Err(e) => {
                tracing::warn!(error = %e, "cannot seal finished jobs; their text stays held");
            }
        }
    }
    Sealing { rewritten, sealed }
}

impl State {
    /// The finished jobs whose text is held, in exposition order, if they make at least a whole
    /// segment (none otherwise).
    pub(super) fn unsealed(&mut self) -> Vec<(JobKey, JobText)> {
        let held = |e: &Entry| e.terminal_since.is_some() && e.sealed.is_none();
        self.archive.unsealed = self.jobs.values().filter(|e| held(e)).count();
        if self.archive.unsealed < SEGMENT {
            return Vec::new();
        }
        self.jobs
            .iter()
            .filter(|(_, e)| held(e))
            .map(|(k, e)| (k.clone(), e.text.clone()))
            .collect()
    }

    /// Installs what [`prepare`] made: rewritten segments replace theirs, new ones are added,
    /// and the entries of the jobs sealed drop their text. A job that left (or came back with
    /// a text of its own) while its segment was being sealed leaves that segment at the next
    /// publish.
    pub(super) fn install(&mut self, sealing: Sealing) {
        let archive = &mut self.archive;
        for (r, done) in sealing.rewritten {
            match done {
                Ok(Some(s)) => {
                    archive.sealed.insert(r.segment, Arc::new(s));
                }
                Ok(None) => {
                    archive.sealed.remove(&r.segment);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot write a sealed segment again; trying at the next publish");
                    archive.gone.entry(r.segment).or_default().extend(r.gone);
                }
            }
        }
        for (sealed, jobs) in sealing.sealed {
            let segment = archive.next;
            archive.next = archive.next.wrapping_add(1);
            archive.sealed.insert(segment, Arc::new(sealed));
            for (key, text) in jobs {
                match self.jobs.get_mut(&key) {
                    Some(e) if e.sealed.is_none() && e.text.shares_text(&text) => {
                        e.sealed = Some(segment);
                        e.text = JobText::default();
                        archive.unsealed = archive.unsealed.saturating_sub(1);
                    }
                    _ => archive.forget_base(segment, text.base()),
                }
            }
        }
    }

    /// Stops tracking the jobs `keep` is false for; returns how many.
    pub(super) fn drop_jobs(&mut self, mut keep: impl FnMut(&JobKey, &Entry) -> bool) -> usize {
        let before = self.jobs.len();
        let archive = &mut self.archive;
        self.jobs.retain(|key, e| {
            let kept = keep(key, e);
            if !kept && let Some(segment) = e.sealed {
                archive.forget(segment, key);
            }
            kept
        });
        before - self.jobs.len()
    }

    /// Stops tracking the job of `key`.
    pub(super) fn drop_job(&mut self, key: &JobKey) {
        if let Some(e) = self.jobs.remove(key)
            && let Some(segment) = e.sealed
        {
            self.archive.forget(segment, key);
        }
    }
}
