//! An immutable view of every tracked job, served by `/metrics`.
//!
//! The poller builds a new snapshot after each refresh or collection; a scrape takes an `Arc`
//! to the current one and only concatenates pre-rendered text, so it never waits on the cloud
//! and never holds the poller's lock.

use std::sync::Arc;

use crate::exposition::{self, AGGREGATE, JobText, ORDER, PER_JOB, Slot};

/// What one scrape serves.
#[derive(Debug, Default)]
pub struct Snapshot {
    cached: bool,
    jobs: Vec<Arc<JobText>>,
    aggregates: [String; AGGREGATE.len()],
    bytes: usize,
}

impl Snapshot {
    /// A snapshot of `jobs` (in exposition order) and the rendered aggregate families.
    pub fn new(
        cached: bool,
        jobs: Vec<Arc<JobText>>,
        aggregates: [String; AGGREGATE.len()],
    ) -> Self {
        let bytes = jobs.iter().map(|j| j.len()).sum::<usize>()
            + aggregates.iter().map(String::len).sum::<usize>()
            + 4096;
        Self {
            cached,
            jobs,
            aggregates,
            bytes,
        }
    }

    /// An empty snapshot, before the first refresh.
    pub fn empty(cached: bool) -> Self {
        Self::new(cached, Vec::new(), Default::default())
    }

    /// Number of jobs exported.
    pub fn job_count(&self) -> usize {
        self.jobs.len()
    }

    /// Roughly how many bytes [`Snapshot::write`] appends.
    pub fn size_hint(&self) -> usize {
        self.bytes
    }

    /// Appends the text exposition of the job families.
    pub fn write(&self, out: &mut Vec<u8>) {
        out.reserve(self.bytes);
        for slot in ORDER {
            match slot {
                Slot::PerJob(f) => {
                    exposition::write_header(out, &PER_JOB[f as usize], self.cached);
                    for job in &self.jobs {
                        out.extend_from_slice(job.section(f).as_bytes());
                    }
                }
                Slot::Aggregate(a) => {
                    exposition::write_header(out, &AGGREGATE[a as usize], self.cached);
                    out.extend_from_slice(self.aggregates[a as usize].as_bytes());
                }
            }
        }
    }
}
