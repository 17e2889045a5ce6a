//! An immutable view of every tracked job, served by `/metrics`.
//!
//! The poller builds a new snapshot after each refresh or collection; a scrape takes an `Arc`
//! to the current one and only concatenates pre-rendered text, so it never waits on the cloud
//! and never holds the poller's lock. The text is written in chunks ([`Snapshot::chunks`]) as the
//! connection takes them, so a scrape holds a chunk at a time rather than a copy of the whole
//! exposition (320 MB for 100,000 jobs).
//!
//! Most jobs of a large fleet have finished, and their lines never change: whole segments of
//! them are held only compressed ([`Sealed`]), which a gzip scrape sends as they are and a plain
//! scrape inflates as it goes.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use bytes::Bytes;

use crate::exposition::{self, FAMILIES, Family, Format, JobText, PER_JOB};
use crate::families::Families;
use crate::gzip::{self, Block, Deflater, Inflater, Sum};

/// What one scrape serves.
#[derive(Debug, Default)]
pub struct Snapshot {
    cached: bool,
    /// The families exported: the others have neither header nor lines (the jobs' texts were
    /// rendered without them) nor blocks.
    families: Families,
    /// The jobs in segments: the sealed ones, then those of the finished jobs whose text is
    /// held, then the active jobs' (each part in segments of about [`SEGMENT`], see
    /// [`starts_segment`]).
    jobs: Vec<Segment>,
    job_count: usize,
    aggregates: [String; FAMILIES.len()],
    bytes: usize,
    /// The same text compressed, or `None` if the encoder failed (gzip is then done per scrape).
    gzip: Option<Compressed>,
}

/// The exposition as deflate blocks (see [`crate::gzip`]): each family's lines of each segment
/// compressed on its own, so that a snapshot compresses only the segments whose lines changed
/// since the previous one and a gzip scrape sends stored bytes.
///
/// The blocks of job lines do not depend on the format's family headers, which are blocks of
/// their own (`heads`): another text format whose job lines are the same can reuse `segments`
/// with its own headers.
#[derive(Debug, Default)]
struct Compressed {
    /// Per segment, one block per per-job family, in [`PER_JOB`] order.
    segments: Vec<[Block; PER_JOB.len()]>,
    /// Per family, in [`Family`] order: its header, followed for an aggregate by its samples.
    heads: Vec<Block>,
    /// CRC-32 and length of the whole text.
    sum: Sum,
    /// Compressed bytes.
    bytes: usize,
    /// Blocks of job lines compressed for this snapshot (the others came from the previous one).
    compressed: usize,
}

/// A segment of a snapshot's jobs.
#[derive(Debug)]
enum Segment {
    /// Jobs whose text is held.
    Text(Vec<JobText>),
    /// Finished jobs held only compressed.
    Sealed(Arc<Sealed>),
}

impl Segment {
    fn job_count(&self) -> usize {
        match self {
            Segment::Text(jobs) => jobs.len(),
            Segment::Sealed(sealed) => sealed.job_count(),
        }
    }

    fn text_len(&self) -> usize {
        match self {
            Segment::Text(jobs) => jobs.iter().map(JobText::len).sum(),
            Segment::Sealed(sealed) => sealed.blocks.iter().map(|b| b.text_len() as usize).sum(),
        }
    }
}

/// The lines of a segment of finished jobs, held only as their compressed blocks: a finished
/// job's lines never change, and the text of 90,000 finished jobs took 49 MB beside 28 MB of
/// blocks (BENCHMARKS.md, run 7). A gzip scrape sends the blocks as any others; a plain one
/// inflates them.
#[derive(Debug, Default)]
pub(crate) struct Sealed {
    /// One block per per-job family, in [`PER_JOB`] order (empty for a family left out).
    blocks: [Block; PER_JOB.len()],
    jobs: usize,
}

impl Sealed {
    /// Compresses the lines of `jobs` in `families`, one block per family.
    pub(crate) fn seal(jobs: &[JobText], families: Families) -> gzip::Result<Self> {
        let mut d = Deflater::new();
        let mut blocks: [Block; PER_JOB.len()] = Default::default();
        for f in PER_JOB.into_iter().filter(|f| families.has(*f)) {
            blocks[f.section()] = compress_section(&mut d, jobs, f)?;
        }
        Ok(Self {
            blocks,
            jobs: jobs.len(),
        })
    }

    /// Number of jobs whose lines the blocks hold.
    pub(crate) fn job_count(&self) -> usize {
        self.jobs
    }

    /// The same without the lines of the jobs whose common labels ([`JobText::base`]) are in
    /// `gone`, each of which has lines here; `None` when no job is left.
    pub(crate) fn without(&self, gone: &HashSet<Box<[u8]>>) -> gzip::Result<Option<Self>> {
        let jobs = self.jobs.saturating_sub(gone.len());
        if jobs == 0 {
            return Ok(None);
        }
        let mut d = Deflater::new();
        let mut blocks: [Block; PER_JOB.len()] = Default::default();
        for (block, old) in blocks.iter_mut().zip(&self.blocks) {
            if old.text_len() == 0 {
                continue;
            }
            let text = old.inflate()?;
            let buf = d.buffer();
            for line in text.split_inclusive(|b| *b == b'\n') {
                let labels = line.splitn(2, |b| *b == b'{').nth(1).unwrap_or_default();
                let dropped = exposition::line_base(labels).is_some_and(|base| gone.contains(base));
                if !dropped {
                    buf.extend_from_slice(line);
                }
            }
            *block = d.finish()?;
        }
        Ok(Some(Self { blocks, jobs }))
    }
}

/// Jobs per segment of a snapshot, on average. With one vector of every job (6.4 MB at 100,000
/// jobs) allocated and freed per refresh beside long-lived job texts, RSS at 100,000 tracked
/// jobs rose from 258 to 291 MiB over an hour of refreshes; in segments, from 252 to 275 MiB.
/// A segment is also the unit of compression: one changed job compresses its segment's lines
/// again, and a block per job would cost a sync flush and a fresh dictionary each.
pub(crate) const SEGMENT: usize = 1024;

/// Longest segment, should the job names happen not to start one for a long run.
const MAX_SEGMENT: usize = 4 * SEGMENT;

/// Whether `job` starts a new segment. Decided by the job's own labels rather than its position,
/// so that adding or dropping a job changes only its own segment's boundaries, and the other
/// segments keep their compressed blocks.
fn starts_segment(job: &JobText) -> bool {
    // FNV-1a: stable across runs and processes, and enough to spread job ids.
    let h = job.base().iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    });
    h % SEGMENT as u64 == 0
}

/// Appends `part` to `segments` in segments of its own (see [`starts_segment`]); returns how
/// many jobs it had.
fn segment(segments: &mut Vec<Segment>, part: impl IntoIterator<Item = JobText>) -> usize {
    let mut count = 0;
    let mut current: Vec<JobText> = Vec::new();
    for job in part {
        if !current.is_empty() && (current.len() >= MAX_SEGMENT || starts_segment(&job)) {
            segments.push(Segment::Text(done(&mut current)));
        }
        current.push(job);
        count += 1;
    }
    if !current.is_empty() {
        segments.push(Segment::Text(done(&mut current)));
    }
    count
}

/// A finished segment, held until the next snapshot: without its spare capacity (segments end
/// where a job's labels say, so most vectors had grown past their length), the segments of
/// 100,000 jobs took 6.4 MB rather than 10.5 (64 bytes a job; counted in a throwaway test).
fn done(current: &mut Vec<JobText>) -> Vec<JobText> {
    let mut seg = std::mem::replace(current, Vec::with_capacity(SEGMENT));
    seg.shrink_to_fit();
    seg
}

/// Jobs whose text is touched together before it is copied. At 100,000 jobs the held text
/// (55 MB; 105 MB when this was measured) is far beyond the caches and each job's section is a
/// cache miss; batching lets the misses overlap. Writing the 100,000-job text in 64 KiB pieces
/// took 47 ms without it and 37 to 44 ms with batches of 8, against 2.7 ms for 10,000 jobs; 4
/// and 16 were no better (BENCHMARKS.md).
const WARM_BATCH: usize = 8;

/// Room left in a chunk's buffer past its limit for the job that crosses it, so the buffer
/// rarely grows.
const HEAD_ROOM: usize = 7 * 1024;

/// Where a write stopped: the family (its place in [`Family`] order), and the next segment and
/// job within a per-job family (`None` before the family's header), or the sealed block being
/// inflated.
#[derive(Debug, Default)]
struct Cursor {
    slot: usize,
    job: Option<(usize, usize)>,
    /// The sealed block being written, while it has text left.
    inflater: Inflater,
}

impl Snapshot {
    /// A snapshot of `jobs` (in exposition order, none of them finished) and the rendered
    /// aggregate families, every block compressed.
    pub fn new(
        cached: bool,
        jobs: impl IntoIterator<Item = JobText>,
        aggregates: [String; FAMILIES.len()],
    ) -> Self {
        let mut snap = Self::uncompressed(cached, Families::ALL, [], [], jobs, aggregates);
        snap.compress_after(None);
        snap
    }

    /// A snapshot whose text is not compressed yet: [`Snapshot::compress_after`] does it, so
    /// that the caller can gather the jobs under its lock and compress outside it.
    ///
    /// Each family lists the `sealed` finished jobs, then the `finished` ones whose text is
    /// held, whose lines never change again either, before the `active` ones, each in the
    /// order given: so that no segment mixes them, and a refresh, which renders every active
    /// job anew, compresses again only the active jobs' segments rather than every segment
    /// that happens to hold one. At 100,000 jobs, 10% active, that is 10 segments of 98 per
    /// refresh (BENCHMARKS.md, run 6).
    pub(crate) fn uncompressed(
        cached: bool,
        families: Families,
        sealed: impl IntoIterator<Item = Arc<Sealed>>,
        finished: impl IntoIterator<Item = JobText>,
        active: impl IntoIterator<Item = JobText>,
        aggregates: [String; FAMILIES.len()],
    ) -> Self {
        let mut jobs: Vec<Segment> = sealed.into_iter().map(Segment::Sealed).collect();
        let job_count = jobs.iter().map(Segment::job_count).sum::<usize>()
            + segment(&mut jobs, finished)
            + segment(&mut jobs, active);
        let bytes = jobs.iter().map(Segment::text_len).sum::<usize>()
            + aggregates.iter().map(String::len).sum::<usize>()
            + 4096;
        Self {
            cached,
            families,
            jobs,
            job_count,
            aggregates,
            bytes,
            gzip: None,
        }
    }

    /// Compresses the text: the blocks of segments whose lines are the same as in `previous`
    /// are taken from it, the others compressed.
    pub fn compress_after(&mut self, previous: Option<&Snapshot>) {
        self.gzip = match self.compress(previous) {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!(error = %e, "cannot compress the exposition; gzip scrapes compress it each time");
                None
            }
        };
    }

    /// Whether the help text says values are as of the last refresh (cached mode).
    pub fn is_cached(&self) -> bool {
        self.cached
    }

    /// Compresses every block, or takes it from `previous` when its text is the same.
    fn compress(&self, previous: Option<&Snapshot>) -> gzip::Result<Compressed> {
        let mut d = Deflater::new();
        let mut out = Compressed::default();
        let previous = previous.and_then(|p| Some((p, p.gzip.as_ref()?)));
        // Segments of text are matched by their first job, which names them.
        let index: HashMap<&[u8], usize> = previous
            .map(|(p, _)| {
                p.jobs
                    .iter()
                    .enumerate()
                    .filter_map(|(i, seg)| match seg {
                        Segment::Text(jobs) => Some((jobs.first()?.base(), i)),
                        Segment::Sealed(_) => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        for seg in &self.jobs {
            let seg = match seg {
                Segment::Sealed(sealed) => {
                    out.segments.push(sealed.blocks.clone());
                    continue;
                }
                Segment::Text(jobs) => jobs,
            };
            let old = previous.and_then(|(p, gz)| {
                let i = *index.get(seg.first()?.base())?;
                let jobs = match p.jobs.get(i)? {
                    Segment::Text(jobs) if jobs.len() == seg.len() => jobs,
                    _ => return None,
                };
                Some((jobs, gz.segments.get(i)?))
            });
            let mut blocks: [Block; PER_JOB.len()] = Default::default();
            for f in PER_JOB.into_iter().filter(|f| self.families.has(*f)) {
                let same =
                    old.filter(|(jobs, _)| jobs.iter().zip(seg).all(|(a, b)| a.same_section(b, f)));
                blocks[f.section()] = match same {
                    Some((_, b)) => b[f.section()].clone(),
                    None => {
                        out.compressed += 1;
                        compress_section(&mut d, seg, f)?
                    }
                };
            }
            out.segments.push(blocks);
        }
        for f in Family::ALL {
            if !self.families.has(f) {
                out.heads.push(Block::default());
                continue;
            }
            let buf = d.buffer();
            exposition::write_header(buf, f.spec(), self.cached, Format::Text);
            // Empty for a per-job family.
            buf.extend_from_slice(self.aggregates[f as usize].as_bytes());
            out.heads.push(d.finish()?);
        }
        for f in Family::ALL {
            if !self.families.has(f) {
                continue;
            }
            let head = &out.heads[f as usize];
            out.sum.add(head);
            out.bytes += head.data().len();
            if f.spec().is_per_job() {
                for seg in &out.segments {
                    out.sum.add(&seg[f.section()]);
                    out.bytes += seg[f.section()].data().len();
                }
            }
        }
        Ok(out)
    }

    /// An empty snapshot, before the first refresh.
    pub fn empty(cached: bool) -> Self {
        Self::empty_of(cached, Families::ALL)
    }

    /// An empty snapshot of `families`.
    pub fn empty_of(cached: bool, families: Families) -> Self {
        let mut snap = Self::uncompressed(cached, families, [], [], [], Default::default());
        snap.compress_after(None);
        snap
    }

    /// Number of jobs exported.
    pub fn job_count(&self) -> usize {
        self.job_count
    }

    /// Roughly how many bytes [`Snapshot::write`] appends.
    pub fn size_hint(&self) -> usize {
        self.bytes
    }

    /// Bytes of the compressed text held, if it is.
    pub fn compressed_size(&self) -> Option<usize> {
        self.gzip.as_ref().map(|c| c.bytes)
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

    /// One gzip member of the text of [`Snapshot::write`] followed by `tail`'s, in pieces of at
    /// least `chunk` bytes (stored blocks larger than that are sent as they are). No text is
    /// compressed here; `None` when the snapshot holds no compressed text.
    pub fn gzip_chunks(self: Arc<Self>, tail: Block, chunk: usize) -> Option<GzipChunks> {
        let gz = self.gzip.as_ref()?;
        let mut sum = gz.sum.clone();
        sum.add(&tail);
        let trailer = Bytes::copy_from_slice(&sum.trailer());
        Some(GzipChunks {
            snapshot: self,
            next: Piece::Header,
            tail: Some(tail),
            trailer: Some(trailer),
            held: None,
            chunk: chunk.max(1),
        })
    }

    /// Writes from `cursor` until `out` holds `limit` bytes or everything is written; returns
    /// true when everything is. Only the family headers depend on `format`.
    fn fill(&self, cursor: &mut Cursor, out: &mut Vec<u8>, limit: usize, format: Format) -> bool {
        while let Some(&f) = Family::ALL.get(cursor.slot) {
            if out.len() >= limit {
                return false;
            }
            if !self.families.has(f) {
                cursor.slot += 1;
                continue;
            }
            if f.spec().is_per_job() {
                if cursor.job.is_none() {
                    exposition::write_header(out, f.spec(), self.cached, format);
                    cursor.job = Some((0, 0));
                }
                while let Some((s, j)) = cursor.job
                    && let Some(seg) = self.jobs.get(s)
                {
                    let seg = match seg {
                        Segment::Text(jobs) => jobs,
                        Segment::Sealed(sealed) => {
                            if !inflate(cursor, &sealed.blocks[f.section()], out, limit) {
                                return false;
                            }
                            cursor.job = Some((s + 1, 0));
                            continue;
                        }
                    };
                    let mut j = j.min(seg.len());
                    for batch in seg[j..].chunks(WARM_BATCH) {
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
                        j += batch.len();
                        cursor.job = Some((s, j));
                    }
                    cursor.job = Some((s + 1, 0));
                }
            } else {
                exposition::write_header(out, f.spec(), self.cached, format);
                out.extend_from_slice(self.aggregates[f as usize].as_bytes());
            }
            cursor.slot += 1;
            cursor.job = None;
        }
        true
    }
}

/// Inflates `block` into `out` from where `cursor` stopped, until `out` holds `limit` bytes;
/// true once the block is done.
fn inflate(cursor: &mut Cursor, block: &Block, out: &mut Vec<u8>, limit: usize) -> bool {
    if !cursor.inflater.has_rest()
        && let Err(e) = cursor.inflater.start(block)
    {
        // This process compressed the block, so this is a bug: the plain body then lacks these
        // lines rather than the scrape failing.
        tracing::error!(error = %e, "cannot inflate a sealed segment; its lines are left out");
        return true;
    }
    cursor.inflater.inflate_into(out, limit)
}

/// Compresses the lines of `family` of every job of `jobs` as one block.
fn compress_section(d: &mut Deflater, jobs: &[JobText], family: Family) -> gzip::Result<Block> {
    for job in jobs {
        job.write_section(family, d.buffer());
        d.flush_if_full()?;
    }
    d.finish()
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
        if self.cursor.slot >= FAMILIES.len() {
            return None;
        }
        let mut out = Vec::with_capacity(self.chunk + HEAD_ROOM);
        self.snapshot
            .fill(&mut self.cursor, &mut out, self.chunk, self.format);
        (!out.is_empty()).then(|| Bytes::from(out))
    }
}

/// The next stored piece of a gzip body.
#[derive(Debug, Clone, Copy)]
enum Piece {
    Header,
    /// The head block of a family, by its place in [`Family`] order.
    Head(usize),
    /// A segment's block of the per-job family of a slot.
    Segment(usize, usize),
    Tail,
    Done,
}

/// The pieces of one gzip body; see [`Snapshot::gzip_chunks`].
#[derive(Debug)]
pub struct GzipChunks {
    snapshot: Arc<Snapshot>,
    next: Piece,
    tail: Option<Block>,
    trailer: Option<Bytes>,
    /// A large block met while small ones were being gathered, sent next.
    held: Option<Bytes>,
    chunk: usize,
}

impl GzipChunks {
    fn piece(&mut self) -> Option<Bytes> {
        let gz = self.snapshot.gzip.as_ref()?;
        loop {
            let (piece, next) = match self.next {
                Piece::Header => (Some(Bytes::from_static(&gzip::HEADER)), Piece::Head(0)),
                Piece::Head(slot) if slot >= FAMILIES.len() => (None, Piece::Tail),
                Piece::Head(slot) => (
                    gz.heads.get(slot).map(|b| b.data().clone()),
                    if FAMILIES[slot].is_per_job() {
                        Piece::Segment(slot, 0)
                    } else {
                        Piece::Head(slot + 1)
                    },
                ),
                Piece::Segment(slot, s) => match gz.segments.get(s) {
                    Some(seg) => (
                        Some(seg[Family::ALL[slot].section()].data().clone()),
                        Piece::Segment(slot, s + 1),
                    ),
                    None => (None, Piece::Head(slot + 1)),
                },
                Piece::Tail => (self.tail.take().map(|b| b.data().clone()), Piece::Done),
                Piece::Done => return self.trailer.take(),
            };
            self.next = next;
            if let Some(p) = piece.filter(|p| !p.is_empty()) {
                return Some(p);
            }
        }
    }
}

impl Iterator for GzipChunks {
    type Item = Bytes;

    fn next(&mut self) -> Option<Bytes> {
        let mut out: Vec<u8> = Vec::new();
        loop {
            let Some(piece) = self.held.take().or_else(|| self.piece()) else {
                break;
            };
            if piece.len() >= self.chunk {
                if out.is_empty() {
                    return Some(piece);
                }
                self.held = Some(piece);
                break;
            }
            out.extend_from_slice(&piece);
            if out.len() >= self.chunk {
                break;
            }
        }
        (!out.is_empty()).then(|| Bytes::from(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloud::Job;
    use crate::exposition::{JobView, render_job};
    use crate::gzip;

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
            families: crate::families::Families::ALL,
        })
    }

    #[test]
    fn chunks_concatenate_to_the_whole_text() {
        let jobs: Vec<_> = (0..50).map(job).collect();
        let mut aggregates: [String; FAMILIES.len()] = Default::default();
        aggregates[Family::Jobs as usize] = "huaweicloud_jobs{cloud_service=\"evs\"} 50\n".into();
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
        assert_eq!(text.matches("# TYPE ").count(), FAMILIES.len());
        assert_eq!(
            text.matches("huaweicloud_job_status{cloud_service=\"evs\",job_id=\"j3\",job_type=\"createVolume\",status=")
                .count(),
            4
        );
    }

    /// The job ids of the lines of `family` in `text`, in order.
    fn job_ids(text: &str, family: Family) -> Vec<&str> {
        let start = format!("{}{{", family.spec().name);
        text.lines()
            .filter(|l| l.starts_with(&start))
            .filter_map(|l| l.split("job_id=\"").nth(1)?.split('"').next())
            .collect()
    }

    #[test]
    fn chunks_cross_segments_in_order() {
        let n = SEGMENT * 2 + 5;
        let snap = Arc::new(Snapshot::new(true, (0..n).map(job), Default::default()));
        assert_eq!(snap.job_count(), n);
        let mut whole = Vec::new();
        snap.write(&mut whole);
        let text = String::from_utf8(whole.clone()).expect("utf8");
        let ids = job_ids(&text, Family::FetchSuccess);
        let expected: Vec<String> = (0..n).map(|i| format!("j{i}")).collect();
        assert_eq!(ids, expected);
        for size in [1, 5000, 64 * 1024] {
            let pieces: Vec<Bytes> = Arc::clone(&snap).chunks(size).collect();
            assert_eq!(pieces.concat(), whole, "chunk size {size}");
        }
    }

    impl Snapshot {
        fn following(
            previous: &Snapshot,
            jobs: Vec<JobText>,
            agg: [String; FAMILIES.len()],
        ) -> Snapshot {
            let mut s =
                Snapshot::uncompressed(previous.cached, previous.families, [], [], jobs, agg);
            s.compress_after(Some(previous));
            s
        }
    }

    fn gunzip(pieces: &[Bytes]) -> Vec<u8> {
        let mut text = Vec::new();
        std::io::Read::read_to_end(
            &mut flate2::read::GzDecoder::new(&pieces.concat()[..]),
            &mut text,
        )
        .expect("valid gzip");
        text
    }

    fn gzip_pieces(snap: &Arc<Snapshot>, tail: &[u8], chunk: usize) -> Vec<Bytes> {
        let tail = gzip::compress(tail).expect("deflate");
        Arc::clone(snap)
            .gzip_chunks(tail, chunk)
            .expect("compressed")
            .collect()
    }

    #[test]
    fn the_stored_gzip_body_decodes_to_the_plain_text() {
        let n = SEGMENT * 3 + 17;
        let mut aggregates: [String; FAMILIES.len()] = Default::default();
        aggregates[Family::CompletedDuration as usize] =
            "huaweicloud_job_completed_duration_seconds_count{a=\"b\"} 3\n".into();
        let snap = Arc::new(Snapshot::new(true, (0..n).map(job), aggregates));
        let mut plain = Vec::new();
        snap.write(&mut plain);
        let tail = b"process_cpu_seconds_total 1.5\n";
        for chunk in [1, 1000, 64 * 1024, 1 << 30] {
            let pieces = gzip_pieces(&snap, tail, chunk);
            assert!(pieces.iter().all(|p| !p.is_empty()));
            let mut expected = plain.clone();
            expected.extend_from_slice(tail);
            assert_eq!(gunzip(&pieces), expected, "chunk {chunk}");
        }
        let size = snap.compressed_size().expect("compressed");
        assert!(size * 5 < plain.len(), "{size} of {}", plain.len());
        let empty = Arc::new(Snapshot::empty(false));
        assert_eq!(gunzip(&gzip_pieces(&empty, b"", 10)).len(), {
            let mut t = Vec::new();
            empty.write(&mut t);
            t.len()
        });
    }

    /// The block of `family` of every segment, by address.
    fn block_addresses(snap: &Snapshot, family: Family) -> Vec<*const u8> {
        let gz = snap.gzip.as_ref().expect("compressed");
        gz.segments
            .iter()
            .map(|s| s[family.section()].data().as_ptr())
            .collect()
    }

    #[test]
    fn only_segments_whose_lines_changed_are_compressed_again() {
        let n = SEGMENT * 6;
        let jobs: Vec<JobText> = (0..n).map(job).collect();
        let first = Snapshot::new(true, jobs.clone(), Default::default());
        let segments = first.jobs.len();
        assert!(segments > 2, "{segments} segments");
        assert_eq!(
            first.gzip.as_ref().map(|g| g.compressed),
            Some(segments * PER_JOB.len())
        );

        // The same jobs again, one rendered anew with the same text: nothing is compressed.
        let mut same = jobs.clone();
        same[5] = job(5);
        let again = Snapshot::following(&first, same, Default::default());
        assert_eq!(again.gzip.as_ref().map(|g| g.compressed), Some(0));
        assert_eq!(
            block_addresses(&again, Family::Status),
            block_addresses(&first, Family::Status)
        );

        // One job's entity changes: one block, the rest shared.
        let mut changed = jobs.clone();
        let mut j = Job {
            job_type: Some("createVolume".into()),
            status: Some("RUNNING".into()),
            begin: Some(100.0),
            end: Some(150.0),
            entities: vec![("volume_id".into(), "other".into())],
            ..Job::default()
        };
        changed[n / 2] = render_job(&JobView {
            target_labels: "cloud_service=\"evs\"",
            job_id: &format!("j{}", n / 2),
            job: Some(&j),
            fetch_ok: true,
            last_success: Some(200.0),
            families: crate::families::Families::ALL,
        });
        let next = Arc::new(Snapshot::following(
            &again,
            changed.clone(),
            Default::default(),
        ));
        assert_eq!(next.gzip.as_ref().map(|g| g.compressed), Some(1));
        let before = block_addresses(&again, Family::EntityInfo);
        let after = block_addresses(&next, Family::EntityInfo);
        assert_eq!(before.iter().zip(&after).filter(|(a, b)| a != b).count(), 1);
        let mut plain = Vec::new();
        next.write(&mut plain);
        assert_eq!(gunzip(&gzip_pieces(&next, b"", 4096)), plain);

        // A job dropped from the middle: its own segment is compressed again, not the ones
        // after it, whose boundaries do not move.
        j.entities.clear();
        changed.remove(n / 3);
        let dropped = Snapshot::following(&next, changed, Default::default());
        let compressed = dropped.gzip.as_ref().map_or(0, |g| g.compressed);
        assert!(
            (1..=2 * PER_JOB.len()).contains(&compressed),
            "{compressed} blocks compressed"
        );
        let mut plain = Vec::new();
        dropped.write(&mut plain);
        assert_eq!(
            gunzip(&gzip_pieces(&Arc::new(dropped), b"x 1\n", 70_000)),
            [&plain[..], b"x 1\n"].concat()
        );
    }

    /// A job `id`, finished or running, last fetched at `fetched`.
    fn job_fetched(id: &str, finished: bool, fetched: f64) -> JobText {
        let j = Job {
            job_type: Some("createVolume".into()),
            status: Some(if finished { "SUCCESS" } else { "RUNNING" }.into()),
            begin: Some(100.0),
            end: finished.then_some(150.0),
            ..Job::default()
        };
        render_job(&JobView {
            target_labels: "cloud_service=\"evs\"",
            job_id: id,
            job: Some(&j),
            fetch_ok: true,
            last_success: Some(fetched),
            families: crate::families::Families::ALL,
        })
    }

    #[test]
    fn a_refresh_compresses_the_active_jobs_segments_only() {
        let finished: Vec<JobText> = (0..SEGMENT * 4)
            .map(|i| job_fetched(&format!("f{i}"), true, 200.0))
            .collect();
        let active = |fetched| (0..300).map(move |i| job_fetched(&format!("a{i}"), false, fetched));
        let mut first = Snapshot::uncompressed(
            true,
            Families::ALL,
            [],
            finished.clone(),
            active(200.0),
            Default::default(),
        );
        first.compress_after(None);
        let finished_segments = first
            .jobs
            .iter()
            .take_while(|seg| {
                matches!(seg, Segment::Text(jobs) if jobs.iter()
                    .all(|j| j.base().starts_with(b"cloud_service=\"evs\",job_id=\"f")))
            })
            .count();
        assert!(finished_segments > 1, "{finished_segments} segments");
        let active_segments = first.jobs.len() - finished_segments;
        assert!(active_segments >= 1);
        assert_eq!(
            first.jobs[finished_segments..]
                .iter()
                .map(Segment::job_count)
                .sum::<usize>(),
            300,
            "no segment mixes finished and active jobs"
        );

        // Every active job fetched again: its duration and fetch families change.
        let mut next = Snapshot::uncompressed(
            true,
            Families::ALL,
            [],
            finished,
            active(230.0),
            Default::default(),
        );
        next.compress_after(Some(&first));
        let compressed = next.gzip.as_ref().map_or(0, |g| g.compressed);
        assert!(
            (1..=active_segments * PER_JOB.len()).contains(&compressed),
            "{compressed} blocks compressed, {active_segments} active segments"
        );
        for f in PER_JOB {
            assert_eq!(
                block_addresses(&next, f)[..finished_segments],
                block_addresses(&first, f)[..finished_segments],
                "{f:?}"
            );
        }

        // In each family, the finished jobs' lines come first, and the gzip body is the text.
        let mut plain = Vec::new();
        next.write(&mut plain);
        let text = String::from_utf8(plain.clone()).expect("utf8");
        let ids = job_ids(&text, Family::Duration);
        assert_eq!(ids.len(), SEGMENT * 4 + 300);
        assert!(ids[..SEGMENT * 4].iter().all(|id| id.starts_with('f')));
        assert!(ids[SEGMENT * 4..].iter().all(|id| id.starts_with('a')));
        assert_eq!(gunzip(&gzip_pieces(&Arc::new(next), b"", 4096)), plain);
    }

    /// The lines of `text`, sorted: what a scrape exports, whatever the order of its jobs.
    fn sorted_lines(text: &[u8]) -> Vec<&[u8]> {
        let mut lines: Vec<&[u8]> = text.split(|b| *b == b'\n').collect();
        lines.sort_unstable();
        lines
    }

    #[test]
    fn sealed_jobs_write_the_lines_their_text_did() {
        let finished: Vec<JobText> = (0..SEGMENT * 2)
            .map(|i| job_fetched(&format!("f{i}"), true, 200.0))
            .collect();
        let active: Vec<JobText> = (0..50)
            .map(|i| job_fetched(&format!("a{i}"), false, 230.0))
            .collect();
        let sealed: Vec<Arc<Sealed>> = finished
            .chunks(SEGMENT)
            .map(|c| Arc::new(Sealed::seal(c, Families::ALL).expect("seal")))
            .collect();
        let held = {
            let mut s = Snapshot::uncompressed(
                true,
                Families::ALL,
                [],
                finished.clone(),
                active.clone(),
                Default::default(),
            );
            s.compress_after(None);
            Arc::new(s)
        };
        let mut snap = Snapshot::uncompressed(
            true,
            Families::ALL,
            sealed.clone(),
            finished[..10].to_vec(),
            active,
            Default::default(),
        );
        snap.compress_after(Some(&held));
        let snap = Arc::new(snap);
        assert_eq!(snap.job_count(), SEGMENT * 2 + 10 + 50);

        let mut whole = Vec::new();
        snap.write(&mut whole);
        let mut expected = Vec::new();
        held.write(&mut expected);
        // The first ten finished jobs are there twice: sealed, and held as text.
        let text = String::from_utf8(whole.clone()).expect("utf8");
        let ids = job_ids(&text, Family::Status);
        assert_eq!(ids.iter().filter(|id| **id == "f3").count(), 8);
        assert_eq!(ids.iter().filter(|id| **id == "f30").count(), 4);
        let once: Vec<&[u8]> = {
            let mut seen = HashSet::new();
            sorted_lines(&whole)
                .into_iter()
                .filter(|l| seen.insert(*l))
                .collect()
        };
        assert_eq!(once, sorted_lines(&expected));
        assert!(whole.len() <= snap.size_hint());
        // Sealed lines come first, in the order sealed.
        assert_eq!(ids[..4], ["f0"; 4]);

        for size in [1, 1000, 56 * 1024, 1 << 24] {
            let pieces: Vec<Bytes> = Arc::clone(&snap).chunks(size).collect();
            assert!(pieces.iter().all(|p| !p.is_empty()));
            assert_eq!(pieces.concat(), whole, "chunk size {size}");
        }
        assert_eq!(gunzip(&gzip_pieces(&snap, b"", 4096)), whole);
        // A sealed segment's blocks are sent as they are, never compressed again.
        for f in PER_JOB {
            assert_eq!(
                block_addresses(&snap, f)[0],
                sealed[0].blocks[f.section()].data().as_ptr()
            );
        }
    }

    #[test]
    fn a_sealed_segment_written_again_loses_exactly_the_jobs_that_left() {
        let jobs: Vec<JobText> = (0..300)
            .map(|i| job_fetched(&format!("j{i}"), i % 3 == 0, 200.0))
            .collect();
        let sealed = Sealed::seal(&jobs, Families::ALL).expect("seal");
        let gone: HashSet<Box<[u8]>> = [7, 8, 150, 299]
            .into_iter()
            .map(|i| jobs[i].base().into())
            .collect();
        let left = sealed.without(&gone).expect("rewrite").expect("jobs left");
        assert_eq!(left.job_count(), 296);
        let kept: Vec<JobText> = jobs
            .iter()
            .filter(|j| !gone.contains(j.base()))
            .cloned()
            .collect();
        let want = Sealed::seal(&kept, Families::ALL).expect("seal");
        for (a, b) in left.blocks.iter().zip(&want.blocks) {
            assert_eq!(a.inflate().expect("inflate"), b.inflate().expect("inflate"));
            assert_eq!(a.text_len(), b.text_len());
        }
        let all: HashSet<Box<[u8]>> = jobs.iter().map(|j| j.base().into()).collect();
        assert!(sealed.without(&all).expect("rewrite").is_none());
    }

    #[test]
    fn a_sealed_segment_keeps_only_the_families_exported() {
        let deny = ["huaweicloud_job_entity_info".to_string()];
        let families = Families::select(("allow", &[]), ("deny", &deny)).expect("known");
        let jobs: Vec<JobText> = (0..20).map(job).collect();
        let sealed = Sealed::seal(&jobs, families).expect("seal");
        assert_eq!(sealed.blocks[Family::EntityInfo.section()].text_len(), 0);
        assert!(sealed.blocks[Family::Status.section()].text_len() > 0);
    }

    #[test]
    fn empty_snapshot_writes_headers_only() {
        let snap = Arc::new(Snapshot::empty(false));
        let pieces: Vec<Bytes> = snap.chunks(64).collect();
        let text = String::from_utf8(pieces.concat()).expect("utf8");
        assert_eq!(text.lines().count(), 2 * FAMILIES.len());
        assert!(!text.contains("last refresh"));
    }
}
