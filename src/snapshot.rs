//! An immutable view of every tracked job, served by `/metrics`.
//!
//! The poller builds a new snapshot after each refresh or collection; a scrape takes an `Arc`
//! to the current one and only concatenates pre-rendered text, so it never waits on the cloud
//! and never holds the poller's lock. The text is written in chunks ([`Snapshot::chunks`]) as the
//! connection takes them, so a scrape holds a chunk at a time rather than a copy of the whole
//! exposition (320 MB for 100,000 jobs).

use std::sync::Arc;

use bytes::Bytes;

use crate::exposition::{self, AGGREGATE, Format, JobText, ORDER, PER_JOB, Slot};

/// What one scrape serves.
#[derive(Debug, Default)]
pub struct Snapshot {
    cached: bool,
    /// The jobs in segments of [`SEGMENT`].
    jobs: Vec<Vec<JobText>>,
    job_count: usize,
    aggregates: [String; AGGREGATE.len()],
    bytes: usize,
}

/// Jobs per segment of a snapshot (64 KiB). With one vector of every job (6.4 MB at 100,000
/// jobs) allocated and freed per refresh beside long-lived job texts, RSS at 100,000 tracked
/// jobs rose from 258 to 291 MiB over an hour of refreshes; in segments, from 252 to 275 MiB.
const SEGMENT: usize = 1024;

/// Jobs whose text is touched together before it is copied. At 100,000 jobs the held text
/// (105 MB) is far beyond the caches and each job's section is a cache miss; batching lets the
/// misses overlap. Writing the 100,000-job text in 64 KiB pieces took 47 ms without it and 37 to
/// 44 ms with batches of 8, against 2.7 ms for 10,000 jobs; 4 and 16 were no better
/// (BENCHMARKS.md).
const WARM_BATCH: usize = 8;

/// Where a write stopped: the family in [`ORDER`], and the next job within a per-job family
/// (`None` before the family's header).
#[derive(Debug, Clone, Copy, Default)]
struct Cursor {
    slot: usize,
    job: Option<usize>,
}

impl Snapshot {
    /// A snapshot of `jobs` (in exposition order) and the rendered aggregate families.
    pub fn new(
        cached: bool,
        jobs: impl IntoIterator<Item = JobText>,
        aggregates: [String; AGGREGATE.len()],
    ) -> Self {
        let mut segments: Vec<Vec<JobText>> = Vec::new();
        let mut job_count = 0;
        for job in jobs {
            match segments.last_mut() {
                Some(seg) if seg.len() < SEGMENT => seg.push(job),
                _ => {
                    let mut seg = Vec::with_capacity(SEGMENT);
                    seg.push(job);
                    segments.push(seg);
                }
            }
            job_count += 1;
        }
        let jobs = segments;
        let bytes = jobs.iter().flatten().map(|j| j.len()).sum::<usize>()
            + aggregates.iter().map(String::len).sum::<usize>()
            + 4096;
        Self {
            cached,
            jobs,
            job_count,
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
        self.job_count
    }

    /// Roughly how many bytes [`Snapshot::write`] appends.
    pub fn size_hint(&self) -> usize {
        self.bytes
    }

    /// Appends the text exposition of the job families.
    pub fn write(&self, out: &mut Vec<u8>) {
        self.write_in(out, Format::Text);
    }

    /// Appends the job families in `format` (without OpenMetrics' closing `# EOF`: more
    /// families follow).
    pub fn write_in(&self, out: &mut Vec<u8>, format: Format) {
        out.reserve(self.bytes);
        let mut cursor = Cursor::default();
        self.fill(&mut cursor, out, usize::MAX, format);
    }

    /// The text of [`Snapshot::write`] in pieces of about `chunk` bytes (more when one job's
    /// family is longer), each made when asked for.
    pub fn chunks(self: Arc<Self>, chunk: usize) -> Chunks {
        self.chunks_in(chunk, Format::Text)
    }

    /// [`Snapshot::write_in`] in pieces, as [`Snapshot::chunks`].
    pub fn chunks_in(self: Arc<Self>, chunk: usize, format: Format) -> Chunks {
        Chunks {
            snapshot: self,
            cursor: Cursor::default(),
            chunk: chunk.max(1),
            format,
        }
    }

    /// Writes from `cursor` until `out` holds `limit` bytes or everything is written; returns
    /// true when everything is. Only the family headers depend on `format`.
    fn fill(&self, cursor: &mut Cursor, out: &mut Vec<u8>, limit: usize, format: Format) -> bool {
        while let Some(slot) = ORDER.get(cursor.slot) {
            if out.len() >= limit {
                return false;
            }
            match *slot {
                Slot::PerJob(f) => {
                    let next = match cursor.job {
                        Some(j) => j,
                        None => {
                            exposition::write_header(
                                out,
                                &PER_JOB[f as usize],
                                self.cached,
                                format,
                            );
                            0
                        }
                    };
                    cursor.job = Some(next);
                    let rest = self.jobs.iter().enumerate().flat_map(|(i, seg)| {
                        let skip = next.saturating_sub(i * SEGMENT).min(seg.len());
                        seg[skip..].chunks(WARM_BATCH)
                    });
                    for batch in rest {
                        if out.len() >= limit {
                            return false;
                        }
                        // Touch every job of the batch before copying any: the loads miss
                        // the cache independently, so the CPU waits for them together.
                        let warm = batch.iter().fold(0u8, |acc, job| acc ^ job.touch(f));
                        std::hint::black_box(warm);
                        for job in batch {
                            job.write_section(f, out);
                        }
                        cursor.job = cursor.job.map(|j| j + batch.len());
                    }
                }
                Slot::Aggregate(a) => {
                    exposition::write_header(out, &AGGREGATE[a as usize], self.cached, format);
                    out.extend_from_slice(self.aggregates[a as usize].as_bytes());
                }
            }
            cursor.slot += 1;
            cursor.job = None;
        }
        true
    }
}

/// The chunks of one snapshot's text; see [`Snapshot::chunks`].
#[derive(Debug)]
pub struct Chunks {
    snapshot: Arc<Snapshot>,
    cursor: Cursor,
    chunk: usize,
    format: Format,
}

impl Iterator for Chunks {
    type Item = Bytes;

    fn next(&mut self) -> Option<Bytes> {
        if self.cursor.slot >= ORDER.len() {
            return None;
        }
        // Head room for the job that crosses the limit, so the buffer rarely grows.
        let mut out = Vec::with_capacity(self.chunk + 8 * 1024);
        self.snapshot
            .fill(&mut self.cursor, &mut out, self.chunk, self.format);
        (!out.is_empty()).then(|| Bytes::from(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloud::Job;
    use crate::exposition::{JobView, render_job};

    fn job(i: usize) -> JobText {
        let j = Job {
            job_type: Some("createVolume".into()),
            status: Some(
                if i.is_multiple_of(2) {
                    "RUNNING"
                } else {
                    "SUCCESS"
                }
                .into(),
            ),
            begin: Some(100.0),
            end: Some(150.0),
            entities: vec![("volume_id".into(), format!("v{i}"))],
            ..Job::default()
        };
        render_job(&JobView {
            target_labels: "cloud_service=\"evs\"",
            job_id: &format!("j{i}"),
            job: Some(&j),
            fetch_ok: true,
            last_success: Some(200.0),
        })
    }

    #[test]
    fn chunks_concatenate_to_the_whole_text() {
        let jobs: Vec<_> = (0..50).map(job).collect();
        let mut aggregates: [String; AGGREGATE.len()] = Default::default();
        aggregates[0] = "huaweicloud_jobs{cloud_service=\"evs\"} 50\n".into();
        let snap = Arc::new(Snapshot::new(true, jobs, aggregates));
        let mut whole = Vec::new();
        snap.write(&mut whole);
        assert!(whole.len() <= snap.size_hint());
        for size in [1, 100, 4096, 1 << 20] {
            let pieces: Vec<Bytes> = Arc::clone(&snap).chunks(size).collect();
            assert!(pieces.iter().all(|p| !p.is_empty()));
            if size == 1 << 20 {
                assert_eq!(pieces.len(), 1);
            }
            assert_eq!(pieces.concat(), whole, "chunk size {size}");
        }
        let text = String::from_utf8(whole).expect("utf8");
        assert_eq!(text.matches("# TYPE ").count(), ORDER.len());
        assert_eq!(
            text.matches("huaweicloud_job_status{cloud_service=\"evs\",job_id=\"j3\",job_type=\"createVolume\",status=")
                .count(),
            4
        );
    }

    #[test]
    fn chunks_cross_segments_in_order() {
        let n = SEGMENT * 2 + 5;
        let snap = Arc::new(Snapshot::new(true, (0..n).map(job), Default::default()));
        assert_eq!(snap.job_count(), n);
        let mut whole = Vec::new();
        snap.write(&mut whole);
        let text = String::from_utf8(whole.clone()).expect("utf8");
        let ids: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("huaweicloud_job_fetch_success{"))
            .filter_map(|l| l.split("job_id=\"").nth(1)?.split('"').next())
            .collect();
        let expected: Vec<String> = (0..n).map(|i| format!("j{i}")).collect();
        assert_eq!(ids, expected);
        for size in [1, 5000, 64 * 1024] {
            let pieces: Vec<Bytes> = Arc::clone(&snap).chunks(size).collect();
            assert_eq!(pieces.concat(), whole, "chunk size {size}");
        }
    }

    #[test]
    fn empty_snapshot_writes_headers_only() {
        let snap = Arc::new(Snapshot::empty(false));
        let pieces: Vec<Bytes> = snap.chunks(64).collect();
        let text = String::from_utf8(pieces.concat()).expect("utf8");
        assert_eq!(text.lines().count(), 2 * ORDER.len());
        assert!(!text.contains("last refresh"));
    }
}
