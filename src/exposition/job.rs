//! One job's lines of the per-job families, rendered once when the job changes and held
//! compactly ([`JobText`]) until the next change; a scrape only copies them.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::sync::Arc;

use super::family::{Family, PER_JOB, Render};
use super::{FAIL_REASON_MAX, end_line, escape_into, push_labels};
use crate::cloud::{Job, Status};
use crate::families::Families;

/// The pre-rendered lines of one job, one section per family of [`PER_JOB`].
///
/// Every line of a job starts with its family's name and the same labels
/// (`cloud_service`, `cloud_region`, `project_id`, `job_id`): about 150 of the 230 bytes of a
/// line. So they are kept once: `text` holds those common labels, then only the tail of each
/// line (`,job_type="…"} 1\n`), each after its length (one byte, or 255 and four
/// bytes little-endian), so that a scrape copies lines without looking for their ends;
/// `JobText::write_section` puts name and labels back. A state set (the four or five lines of
/// a job's or sub-job's status, which differ only in `status` and the value) is held as one
/// record (length byte 254): its labels before `status` once, and which status is current. A job
/// is held in about a sixth of the bytes it exports (BENCHMARKS.md: 100,000 jobs export 320 MB
/// of text and hold 55 MB).
///
/// Cloning shares the text. The offsets sit beside the pointer rather than behind it, so a
/// snapshot's `Vec<JobText>` tells a scrape where each section is without a dependent load:
/// at 100,000 jobs (then 105 MB of held text, far beyond the caches) the scrape fill took 73 ms
/// with the offsets behind a second pointer, against 34 ms for ten times fewer jobs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobText {
    /// The common labels (`base_len` bytes), then the length-prefixed line tails of each
    /// family in turn.
    text: Arc<[u8]>,
    base_len: u32,
    /// Where each family's tails end in `text`.
    ends: [u32; PER_JOB.len()],
    /// Bytes of exposition text the job writes.
    written: u32,
}

/// A length byte of this value is followed by the length as four bytes, little-endian.
const LONG_LINE: u8 = u8::MAX;

/// A length byte of this value starts a state set rather than a line: the labels before
/// `status` (length-prefixed), then the current status's place in [`Status::DOCUMENTED`], or
/// that list's length followed by the current status (length-prefixed, escaped) when it is
/// another. Held as lines, the simulator's jobs took 1,023 bytes each, 194 of them the job's
/// state set and 392 its sub-jobs'; with state sets as records, 550 (BENCHMARKS.md, run 5).
const STATE_SET: u8 = u8::MAX - 1;

/// What the text holds after a job's common labels: the tail of one line, or a state set.
enum Record<'a> {
    Line(&'a [u8]),
    StateSet {
        /// The labels between the common ones and `status`, each `,name="value"`.
        labels: &'a [u8],
        /// The current status, escaped.
        current: &'a [u8],
    },
}

/// Appends `n` as a length prefix: one byte below [`STATE_SET`], else [`LONG_LINE`] and four
/// bytes.
fn push_len(text: &mut Vec<u8>, n: usize) {
    match u8::try_from(n) {
        Ok(short) if short < STATE_SET => text.push(short),
        _ => {
            text.push(LONG_LINE);
            text.extend_from_slice(&u32::try_from(n).unwrap_or(u32::MAX).to_le_bytes());
        }
    }
}

/// The first length-prefixed piece of `bytes` (after its length byte `n`), and what follows.
fn split_piece(n: u8, after: &[u8]) -> (&[u8], &[u8]) {
    let (n, after) = if n == LONG_LINE && after.len() >= 4 {
        let (len, after) = after.split_at(4);
        let len: [u8; 4] = len.try_into().unwrap_or_default();
        (u32::from_le_bytes(len) as usize, after)
    } else {
        (usize::from(n), after)
    };
    after.split_at(n.min(after.len()))
}

/// The first record of `tails`, and what follows it.
fn split_record(tails: &[u8]) -> Option<(Record<'_>, &[u8])> {
    let (&n, after) = tails.split_first()?;
    if n != STATE_SET {
        let (line, rest) = split_piece(n, after);
        return Some((Record::Line(line), rest));
    }
    let (&n, after) = after.split_first()?;
    let (labels, after) = split_piece(n, after);
    let (&index, after) = after.split_first()?;
    let (current, rest) = match Status::DOCUMENTED.get(usize::from(index)) {
        Some(s) => (s.as_str().as_bytes(), after),
        None => {
            let (&n, after) = after.split_first()?;
            split_piece(n, after)
        }
    };
    Some((Record::StateSet { labels, current }, rest))
}

/// The lines of a state set after its labels: `,status="…"} 0` for each documented status
/// (1 for the current one), then the current one if it is another.
fn state_lines(current: &[u8]) -> impl Iterator<Item = (&[u8], bool)> {
    let odd = (!Status::DOCUMENTED
        .iter()
        .any(|s| s.as_str().as_bytes() == current))
    .then_some(current);
    Status::DOCUMENTED
        .iter()
        .map(|s| s.as_str().as_bytes())
        .chain(odd)
        .map(move |s| (s, s == current))
}

/// `,status="`: what a state set's line has between its labels and the status.
const STATUS_OPEN: &[u8] = b",status=\"";

/// What a state set's line has after the status: the end of the labels and the value.
fn state_end(current: bool) -> &'static [u8] {
    if current { b"\"} 1\n" } else { b"\"} 0\n" }
}

/// Bytes a record writes, each of its lines starting with `head` bytes (name, brace and
/// common labels).
fn record_len(record: &Record<'_>, head: usize) -> usize {
    match record {
        Record::Line(line) => head + line.len(),
        Record::StateSet { labels, current } => state_lines(current)
            .map(|(s, on)| head + labels.len() + STATUS_OPEN.len() + s.len() + state_end(on).len())
            .sum(),
    }
}

/// Writes a [`JobText`] line by line, straight into its length-prefixed form, one family's
/// section after the other.
pub(crate) struct Builder {
    text: Vec<u8>,
    base_len: usize,
    /// The family whose lines are being written.
    family: Family,
    /// The line being written, reused for every line.
    line: String,
    ends: [u32; PER_JOB.len()],
    written: usize,
}

impl Builder {
    fn new(base: &[u8]) -> Self {
        let (mut text, mut line) = SCRATCH.with(|s| std::mem::take(&mut *s.borrow_mut()));
        text.clear();
        line.clear();
        text.extend_from_slice(base);
        Self {
            text,
            base_len: base.len(),
            family: PER_JOB[0],
            line,
            ends: [0; PER_JOB.len()],
            written: 0,
        }
    }

    /// Adds the lines of the current family as `from` holds them.
    fn copy(&mut self, from: &JobText) {
        let tails = from.tails(self.family);
        self.text.extend_from_slice(tails);
        let head = self.head();
        let mut rest = tails;
        while let Some((record, after)) = split_record(rest) {
            self.written += record_len(&record, head);
            rest = after;
        }
    }

    /// Bytes before a line's own labels: the family's name, the brace and the common labels.
    fn head(&self) -> usize {
        self.family.spec().name.len() + 1 + self.base_len
    }

    /// Adds one line: the common labels, `extra`, then `value`.
    fn sample(&mut self, extra: &[(&str, &str)], value: f64) {
        self.line.clear();
        super::tail(&mut self.line, extra, value);
        self.commit();
    }

    /// The lines of a state set: one per documented status, plus `current` if it is another;
    /// held as one [`STATE_SET`] record.
    fn state_set(&mut self, extra: &[(&str, &str)], current: &str) {
        self.line.clear();
        push_labels(&mut self.line, extra);
        let at = self.text.len();
        self.text.push(STATE_SET);
        push_len(&mut self.text, self.line.len());
        self.text.extend_from_slice(self.line.as_bytes());
        match Status::DOCUMENTED
            .iter()
            .position(|s| s.as_str() == current)
        {
            Some(i) => self.text.push(u8::try_from(i).unwrap_or(u8::MAX)),
            None => {
                self.text
                    .push(u8::try_from(Status::DOCUMENTED.len()).unwrap_or(u8::MAX));
                self.line.clear();
                escape_into(&mut self.line, current);
                push_len(&mut self.text, self.line.len());
                self.text.extend_from_slice(self.line.as_bytes());
            }
        }
        // Read back what was just written, so the count and the writer cannot disagree.
        let head = self.head();
        self.written += split_record(&self.text[at..]).map_or(0, |(r, _)| record_len(&r, head));
    }

    /// The failure-info line of a failed job or sub-job: `extra`, then its `error_code`
    /// ("none" when absent) and its `fail_reason` cut to [`FAIL_REASON_MAX`] characters.
    fn failure_info(&mut self, extra: &[(&str, &str)], failed: &Job) {
        let code = failed.error_code.as_deref().unwrap_or("none");
        self.line.clear();
        push_labels(&mut self.line, extra);
        push_labels(
            &mut self.line,
            &[
                ("error_code", code),
                (
                    "fail_reason",
                    cut_reason(failed.fail_reason.as_deref().unwrap_or("")),
                ),
            ],
        );
        end_line(&mut self.line, 1.0);
        self.commit();
    }

    fn commit(&mut self) {
        push_len(&mut self.text, self.line.len());
        self.text.extend_from_slice(self.line.as_bytes());
        self.written += self.head() + self.line.len();
    }

    /// Ends the current family's section: every later line belongs to the families after it.
    fn close(&mut self) {
        // A job's text is a few KiB; u32 offsets are ample and halve the index.
        self.ends[self.family.section()] = u32::try_from(self.text.len()).unwrap_or(u32::MAX);
    }

    fn finish(self) -> JobText {
        let done = JobText {
            text: Arc::from(&self.text[..]),
            base_len: u32::try_from(self.base_len).unwrap_or(u32::MAX),
            ends: self.ends,
            written: u32::try_from(self.written).unwrap_or(u32::MAX),
        };
        SCRATCH.with(|s| *s.borrow_mut() = (self.text, self.line));
        done
    }
}

/// `reason` cut to [`FAIL_REASON_MAX`] characters, as `fail_reason` labels carry it.
pub(crate) fn cut_reason(reason: &str) -> &str {
    reason
        .char_indices()
        .nth(FAIL_REASON_MAX)
        .map_or(reason, |(i, _)| &reason[..i])
}

thread_local! {
    /// The buffers a [`Builder`] writes into, kept for the next job rendered on this thread,
    /// so that a render allocates only its finished text.
    static SCRATCH: std::cell::RefCell<(Vec<u8>, String)> = const {
        std::cell::RefCell::new((Vec::new(), String::new()))
    };
}

impl JobText {
    fn tails(&self, family: Family) -> &[u8] {
        let i = family.section();
        let start = if i == 0 {
            self.base_len
        } else {
            self.ends[i - 1]
        };
        &self.text[start as usize..self.ends[i] as usize]
    }

    /// Reads the first byte of the common labels and of `family`'s section, so that they are
    /// in the cache when [`JobText::write_section`] copies them.
    pub(crate) fn touch(&self, family: Family) -> u8 {
        let first = |at: usize| self.text.get(at).copied().unwrap_or_default();
        let i = family.section();
        let start = if i == 0 {
            self.base_len
        } else {
            self.ends[i - 1]
        };
        first(0) ^ first(start as usize)
    }

    /// The job's common labels, which name it: no two tracked jobs share them.
    pub fn base(&self) -> &[u8] {
        &self.text[..self.base_len as usize]
    }

    /// True when `other` writes the same lines of `family` (the same text shared, or equal
    /// labels and line tails).
    pub(crate) fn same_section(&self, other: &JobText, family: Family) -> bool {
        self.shares_text(other)
            || (self.base() == other.base() && self.tails(family) == other.tails(family))
    }

    /// True when `other` is a clone of this text (not merely equal to it).
    pub(crate) fn shares_text(&self, other: &JobText) -> bool {
        Arc::ptr_eq(&self.text, &other.text)
    }

    /// Appends the lines of one family.
    pub(crate) fn write_section(&self, family: Family, out: &mut Vec<u8>) {
        let name = family.spec().name.as_bytes();
        let base = &self.text[..self.base_len as usize];
        let mut rest = self.tails(family);
        while let Some((record, after)) = split_record(rest) {
            match record {
                Record::Line(line) => {
                    out.extend_from_slice(name);
                    out.push(b'{');
                    out.extend_from_slice(base);
                    out.extend_from_slice(line);
                }
                Record::StateSet { labels, current } => {
                    // Every line starts the same up to the status: written once, then copied
                    // from the first line, so that each later line is three copies, not seven.
                    let start = out.len();
                    out.extend_from_slice(name);
                    out.push(b'{');
                    out.extend_from_slice(base);
                    out.extend_from_slice(labels);
                    out.extend_from_slice(STATUS_OPEN);
                    let head = start..out.len();
                    for (i, (status, on)) in state_lines(current).enumerate() {
                        if i > 0 {
                            out.extend_from_within(head.clone());
                        }
                        out.extend_from_slice(status);
                        out.extend_from_slice(state_end(on));
                    }
                }
            }
            rest = after;
        }
    }

    /// The lines of one family, as text.
    pub fn section(&self, family: Family) -> String {
        let mut out = Vec::new();
        self.write_section(family, &mut out);
        // Built from whole &str lines split at ASCII newlines.
        String::from_utf8(out).unwrap_or_default()
    }

    /// Bytes of exposition text this job writes.
    pub fn len(&self) -> usize {
        self.written as usize
    }

    /// Bytes of text held in memory (common labels once, then the line tails).
    pub fn held_bytes(&self) -> usize {
        self.text.len()
    }

    /// True when the job exports nothing.
    pub fn is_empty(&self) -> bool {
        self.written == 0
    }
}

/// What a job's lines are rendered from.
pub struct JobView<'a> {
    /// Pre-escaped `cloud_service="…",cloud_region="…",project_id="…"`.
    pub target_labels: &'a str,
    /// The tracked job id.
    pub job_id: &'a str,
    /// The last decoded job, if a fetch ever succeeded.
    pub job: Option<&'a Job>,
    /// Whether the last fetch succeeded.
    pub fetch_ok: bool,
    /// When a fetch last succeeded (Unix seconds).
    pub last_success: Option<f64>,
    /// The families rendered; the others get no lines.
    pub families: Families,
}

/// The job_type label of a job.
pub fn job_type(job: &Job) -> &str {
    type_label(job.job_type.as_deref())
}

/// The job_type label of a job whose type is `job_type`: `unknown` when absent or empty.
pub fn type_label(job_type: Option<&str>) -> &str {
    job_type.filter(|t| !t.is_empty()).unwrap_or("unknown")
}

/// The status label of a job (or sub-job): its status, or `UNKNOWN` when the cloud sent none.
pub fn status_label(job: &Job) -> &str {
    job.status.as_ref().map_or(UNKNOWN_STATUS, Status::as_str)
}

/// The status label of a job whose status field was missing.
pub(crate) const UNKNOWN_STATUS: &str = "UNKNOWN";

/// Renders every per-job line of one job.
pub fn render_job(v: &JobView<'_>) -> JobText {
    let base = job_base(v.target_labels, v.job_id);
    render(v, Builder::new(base.as_bytes()), None)
}

/// The labels every line of a job starts with (what [`JobText::base`] holds): its target's,
/// then `job_id`.
pub(crate) fn job_base(target_labels: &str, job_id: &str) -> String {
    let mut base = String::with_capacity(target_labels.len() + job_id.len() + 10);
    base.push_str(target_labels);
    base.push_str(",job_id=\"");
    escape_into(&mut base, job_id);
    base.push('"');
    base
}

/// The [`job_base`] a line of a per-job family starts with, given the line after its `{`: up
/// to the quote that closes the `job_id` value. Label values are escaped, so `,job_id="` does
/// not occur inside one, and a quote inside the id is preceded by a backslash.
pub(crate) fn line_base(labels: &[u8]) -> Option<&[u8]> {
    const JOB_ID: &[u8] = b",job_id=\"";
    let at = labels.windows(JOB_ID.len()).position(|w| w == JOB_ID)? + JOB_ID.len();
    let mut i = at;
    while let Some(&b) = labels.get(i) {
        match b {
            b'\\' => i += 2,
            b'"' => return labels.get(..=i),
            _ => i += 1,
        }
    }
    None
}

/// [`render_job`] for a job whose body is the one `previous` was rendered from: the sections
/// that come from the body alone are copied, and only those that move with each fetch (the
/// running duration and the fetch families) are written again. Most fetches of a running job
/// return the same body, and rendering it whole was about 7% of a refresh's CPU.
pub(crate) fn rerender_fetch(v: &JobView<'_>, previous: &JobText) -> JobText {
    let base = &previous.text[..previous.base_len as usize];
    render(v, Builder::new(base), Some(previous))
}

fn render(v: &JobView<'_>, mut b: Builder, previous: Option<&JobText>) -> JobText {
    // Copying needs the body the previous text was rendered from.
    let previous = previous.filter(|_| v.job.is_some());
    for family in PER_JOB {
        b.family = family;
        // A family left out gets no lines, so it is neither held nor compressed nor served.
        if v.families.has(family) {
            let Render::Job { write, from_body } = family.spec().render else {
                continue;
            };
            match previous {
                Some(p) if from_body => b.copy(p),
                _ => write(&mut b, v),
            }
        }
        b.close();
    }
    b.finish()
}

/// Writes one job's lines of one per-job family.
pub(crate) type Write = fn(&mut Builder, &JobView<'_>);

/// `huaweicloud_job_status`.
pub(super) fn status(b: &mut Builder, v: &JobView<'_>) {
    if let Some(job) = v.job {
        b.state_set(&[("job_type", job_type(job))], status_label(job));
    }
}

/// `huaweicloud_job_begin_timestamp_seconds`.
pub(super) fn begin(b: &mut Builder, v: &JobView<'_>) {
    job_sample(b, v, |job| job.begin);
}

/// `huaweicloud_job_end_timestamp_seconds`: finished jobs only.
pub(super) fn end(b: &mut Builder, v: &JobView<'_>) {
    job_sample(b, v, |job| job.end.filter(|_| job.is_terminal()));
}

/// `huaweicloud_job_duration_seconds`: until the end when finished, else until the last
/// successful fetch.
pub(super) fn duration(b: &mut Builder, v: &JobView<'_>) {
    job_sample(b, v, |job| {
        let until = if job.is_terminal() {
            job.end
        } else {
            v.last_success
        };
        Some((until? - job.begin?).max(0.0))
    });
}

/// One sample labelled with the job's type, when the job is known and `value` has one for it.
fn job_sample(b: &mut Builder, v: &JobView<'_>, value: impl FnOnce(&Job) -> Option<f64>) {
    if let Some(job) = v.job
        && let Some(value) = value(job)
    {
        b.sample(&[("job_type", job_type(job))], value);
    }
}

/// True when the cloud reports the job (or sub-job) failed.
fn failed(job: &Job) -> bool {
    job.status.as_ref().is_some_and(Status::is_failed)
}

/// `huaweicloud_job_failure_info`: failed jobs only.
pub(super) fn failure_info(b: &mut Builder, v: &JobView<'_>) {
    if let Some(job) = v.job.filter(|j| failed(j)) {
        b.failure_info(&[("job_type", job_type(job))], job);
    }
}

/// `huaweicloud_job_entity_info`: the entities of the job and its sub-jobs, each once.
pub(super) fn entity_info(b: &mut Builder, v: &JobView<'_>) {
    let Some(job) = v.job else {
        return;
    };
    // A set, not a list: the entities of a job and its sub-jobs are checked in one pass.
    let mut seen: HashSet<(&str, &str)> = HashSet::new();
    let all = job
        .entities
        .iter()
        .chain(job.sub_jobs.iter().flat_map(|s| s.entities.iter()));
    for (kind, id) in all {
        if seen.insert((kind, id)) {
            b.sample(&[("entity_type", kind), ("entity_id", id)], 1.0);
        }
    }
}

/// `huaweicloud_job_subjob_status`: a state set per sub-job.
pub(super) fn subjob_status(b: &mut Builder, v: &JobView<'_>) {
    each_subjob(b, v, |b, labels, sub| {
        b.state_set(labels, status_label(sub));
    });
}

/// `huaweicloud_job_subjob_failure_info`: failed sub-jobs only.
pub(super) fn subjob_failure_info(b: &mut Builder, v: &JobView<'_>) {
    each_subjob(b, v, |b, labels, sub| {
        if failed(sub) {
            b.failure_info(labels, sub);
        }
    });
}

/// Calls `write` for each sub-job of the job, with its `subjob_id` and `subjob_type` labels.
fn each_subjob(
    b: &mut Builder,
    v: &JobView<'_>,
    mut write: impl FnMut(&mut Builder, &[(&str, &str)], &Job),
) {
    let Some(job) = v.job else {
        return;
    };
    let mut fallback_id = String::new();
    for (i, sub) in job.sub_jobs.iter().enumerate() {
        let labels = [
            ("subjob_id", subjob_id(sub, i, &mut fallback_id)),
            ("subjob_type", job_type(sub)),
        ];
        write(b, &labels, sub);
    }
}

/// `huaweicloud_job_fetch_success`: every tracked job, fetched or not.
pub(super) fn fetch_success(b: &mut Builder, v: &JobView<'_>) {
    b.sample(&[], f64::from(u8::from(v.fetch_ok)));
}

/// `huaweicloud_job_last_fetch_success_timestamp_seconds`.
pub(super) fn last_fetch_success(b: &mut Builder, v: &JobView<'_>) {
    if let Some(t) = v.last_success {
        b.sample(&[], t);
    }
}

/// The subjob_id label of the `i`th sub-job: its job_id, or `#i` when it has none (written
/// into `fallback`).
pub(crate) fn subjob_id<'a>(sub: &'a Job, i: usize, fallback: &'a mut String) -> &'a str {
    match sub.job_id.as_deref() {
        Some(id) => id,
        None => {
            fallback.clear();
            let _ = write!(fallback, "#{i}");
            fallback
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exposition::FAIL_REASON_MAX;

    /// Job `j`'s text after a successful fetch, every family exported.
    fn fetched(target_labels: &str, job: &Job, last_success: Option<f64>) -> JobText {
        render_job(&JobView {
            target_labels,
            job_id: "j",
            job: Some(job),
            fetch_ok: true,
            last_success,
            families: crate::families::Families::ALL,
        })
    }

    #[test]
    fn every_line_gives_back_its_jobs_common_labels() {
        let job = Job {
            job_type: Some("a\",job_id=\"x".into()),
            status: Some("FAIL".into()),
            error_code: Some("E".into()),
            sub_jobs: vec![Job {
                job_id: Some("s\"1".into()),
                status: Some("FAIL".into()),
                ..Job::default()
            }],
            entities: vec![("volume_id".into(), "v,job_id=\"1".into())],
            ..Job::default()
        };
        let target = "cloud_service=\"e\\\\vs\",project_id=\"p\\\"q\"";
        for id in ["j", "a\"b\\", "x,job_id=\"y", "\\"] {
            let base = job_base(target, id);
            let t = render_job(&JobView {
                target_labels: target,
                job_id: id,
                job: Some(&job),
                fetch_ok: true,
                last_success: Some(1.0),
                families: crate::families::Families::ALL,
            });
            assert_eq!(t.base(), base.as_bytes());
            let mut lines = 0;
            for f in PER_JOB {
                for line in t.section(f).lines() {
                    let labels = line.split_once('{').map_or("", |(_, l)| l);
                    assert_eq!(
                        line_base(labels.as_bytes()),
                        Some(base.as_bytes()),
                        "{line}"
                    );
                    lines += 1;
                }
            }
            assert!(lines > 10, "{lines} lines");
        }
        assert_eq!(line_base(b"a=\"1\"} 1"), None);
        assert_eq!(line_base(b"a=\"1\",job_id=\"unclosed\\\""), None);
    }

    #[test]
    fn long_lines_round_trip() {
        let job = Job {
            status: Some("FAIL".into()),
            fail_reason: Some("\\\"".repeat(150)),
            ..Job::default()
        };
        let t = fetched("a=\"b\"", &job, None);
        let info = t.section(Family::FailureInfo);
        assert!(info.len() > 300, "{info}");
        assert!(
            info.starts_with(
                "huaweicloud_job_failure_info{a=\"b\",job_id=\"j\",job_type=\"unknown\""
            )
        );
        assert!(info.ends_with("\"} 1\n"));
        let all: usize = PER_JOB.iter().map(|f| t.section(*f).len()).sum();
        assert_eq!(all, t.len());
        assert!(t.held_bytes() < t.len());
    }

    #[test]
    fn rendering_again_after_a_fetch_equals_rendering_whole() {
        let failed = Job {
            status: Some("FAIL".into()),
            begin: Some(10.0),
            end: Some(70.25),
            error_code: Some("EVS.1".into()),
            fail_reason: Some("\"x\"\n".repeat(90)),
            entities: vec![("volume_id".into(), "v1".into())],
            sub_jobs: vec![
                Job {
                    status: Some("ODD".into()),
                    entities: vec![("server_id".into(), "s1".into())],
                    ..Job::default()
                },
                Job {
                    status: Some("FAIL".into()),
                    error_code: Some("Ecs.0013".into()),
                    ..Job::default()
                },
            ],
            ..Job::default()
        };
        let running = Job {
            status: Some("RUNNING".into()),
            job_type: Some("createVolume".into()),
            begin: Some(10.0),
            ..Job::default()
        };
        let no_begin = Job {
            status: Some("RUNNING".into()),
            ..Job::default()
        };
        for job in [&failed, &running, &no_begin] {
            let view = |fetch_ok, last_success| JobView {
                target_labels: "cloud_service=\"evs\"",
                job_id: "j\"1",
                job: Some(job),
                fetch_ok,
                last_success,
                families: crate::families::Families::ALL,
            };
            let before = render_job(&view(false, Some(40.0)));
            let after = view(true, Some(95.5));
            let again = rerender_fetch(&after, &before);
            assert_eq!(again, render_job(&after), "{job:?}");
            assert_eq!(again.len(), render_job(&after).len());
        }
    }

    #[test]
    fn never_fetched_job_has_only_fetch_success() {
        let t = render_job(&JobView {
            target_labels: "cloud_service=\"evs\"",
            job_id: "j1",
            job: None,
            fetch_ok: false,
            last_success: None,
            families: crate::families::Families::ALL,
        });
        let all: String = PER_JOB.iter().map(|f| t.section(*f)).collect();
        assert_eq!(
            all,
            "huaweicloud_job_fetch_success{cloud_service=\"evs\",job_id=\"j1\"} 0\n"
        );
        assert_eq!(t.section(Family::Status), "");
        assert_eq!(t.len(), all.len());
        assert!(!t.is_empty());
    }

    #[test]
    fn failed_job_with_odd_status_subjobs_and_long_reason() {
        let job = Job {
            job_id: Some("j".into()),
            job_type: None,
            status: Some("FAIL".into()),
            begin: Some(100.0),
            end: Some(160.5),
            error_code: None,
            fail_reason: Some("x".repeat(250)),
            entities: vec![("volume_id".into(), "v\"1".into())],
            sub_jobs: vec![Job {
                status: Some("LISTENING".into()),
                job_type: Some("sub".into()),
                entities: vec![("volume_id".into(), "v\"1".into())],
                ..Job::default()
            }],
        };
        let t = fetched("p=\"1\"", &job, Some(200.0));
        assert_eq!(
            t.section(Family::Status),
            "huaweicloud_job_status{p=\"1\",job_id=\"j\",job_type=\"unknown\",status=\"INIT\"} 0\n\
             huaweicloud_job_status{p=\"1\",job_id=\"j\",job_type=\"unknown\",status=\"RUNNING\"} 0\n\
             huaweicloud_job_status{p=\"1\",job_id=\"j\",job_type=\"unknown\",status=\"SUCCESS\"} 0\n\
             huaweicloud_job_status{p=\"1\",job_id=\"j\",job_type=\"unknown\",status=\"FAIL\"} 1\n"
        );
        assert_eq!(
            t.section(Family::Duration),
            "huaweicloud_job_duration_seconds{p=\"1\",job_id=\"j\",job_type=\"unknown\"} 60.5\n"
        );
        let info = t.section(Family::FailureInfo);
        assert!(info.contains("error_code=\"none\""));
        assert!(info.contains(&format!("fail_reason=\"{}\"}}", "x".repeat(200))));
        assert_eq!(t.section(Family::EntityInfo).lines().count(), 1);
        assert!(
            t.section(Family::EntityInfo)
                .contains("entity_id=\"v\\\"1\"")
        );
        let sub = t.section(Family::SubjobStatus);
        assert_eq!(sub.lines().count(), 5);
        assert!(sub.contains("subjob_id=\"#0\",subjob_type=\"sub\",status=\"LISTENING\"} 1"));
    }

    #[test]
    fn failed_subjobs_carry_their_error_code_and_cut_reason() {
        let sub =
            |id: Option<&str>, status: &str, code: Option<&str>, reason: Option<String>| Job {
                job_id: id.map(Into::into),
                job_type: Some("createSingleServer".into()),
                status: Some(status.into()),
                error_code: code.map(Into::into),
                fail_reason: reason,
                ..Job::default()
            };
        let job = Job {
            status: Some("RUNNING".into()),
            sub_jobs: vec![
                sub(Some("s1"), "SUCCESS", None, None),
                sub(
                    Some("s2"),
                    "FAIL",
                    Some("Ecs.0013"),
                    Some("no \"EIP\"".into()),
                ),
                sub(None, "FAIL", None, Some("é".repeat(250))),
            ],
            ..Job::default()
        };
        let t = fetched("p=\"1\"", &job, Some(200.0));
        // A running job with failed sub-jobs: no job failure info, one line per failed sub-job.
        assert_eq!(t.section(Family::FailureInfo), "");
        assert_eq!(
            t.section(Family::SubjobFailureInfo),
            format!(
                "huaweicloud_job_subjob_failure_info{{p=\"1\",job_id=\"j\",subjob_id=\"s2\",\
                 subjob_type=\"createSingleServer\",error_code=\"Ecs.0013\",\
                 fail_reason=\"no \\\"EIP\\\"\"}} 1\n\
                 huaweicloud_job_subjob_failure_info{{p=\"1\",job_id=\"j\",subjob_id=\"#2\",\
                 subjob_type=\"createSingleServer\",error_code=\"none\",\
                 fail_reason=\"{}\"}} 1\n",
                "é".repeat(FAIL_REASON_MAX)
            )
        );
        let all: usize = PER_JOB.iter().map(|f| t.section(*f).len()).sum();
        assert_eq!(all, t.len());
    }

    #[test]
    fn length_prefixes_round_trip_around_the_markers() {
        for n in [0, 1, 200, 253, 254, 255, 256, 70_000] {
            let line = vec![b'x'; n];
            let mut text = Vec::new();
            push_len(&mut text, n);
            text.extend_from_slice(&line);
            text.extend_from_slice(b"rest");
            let Some((Record::Line(got), rest)) = split_record(&text) else {
                panic!("{n} bytes read back as a state set");
            };
            assert_eq!((got, rest), (&line[..], &b"rest"[..]), "{n} bytes");
        }
    }

    #[test]
    fn state_sets_are_held_once_and_written_whole() {
        // Labels longer than a one-byte length, and an undocumented status needing escapes.
        let long_type = "t".repeat(300);
        let sub = |status: &str| Job {
            job_id: Some("s1".into()),
            job_type: Some(long_type.clone()),
            status: Some(status.into()),
            ..Job::default()
        };
        let job = Job {
            status: Some("WAIT\"ING".into()),
            job_type: Some("createVolume".into()),
            sub_jobs: vec![sub("SUCCESS"), sub("ODD")],
            ..Job::default()
        };
        let t = fetched("p=\"1\"", &job, None);
        let line = |labels: &str, status: &str, v: u8| {
            format!(
                "huaweicloud_job_status{{p=\"1\",job_id=\"j\",{labels},status=\"{status}\"}} {v}\n"
            )
        };
        let want: String = ["INIT", "RUNNING", "SUCCESS", "FAIL"]
            .iter()
            .map(|s| line("job_type=\"createVolume\"", s, 0))
            .chain([line("job_type=\"createVolume\"", "WAIT\\\"ING", 1)])
            .collect();
        assert_eq!(t.section(Family::Status), want);
        let sub_labels = format!("subjob_id=\"s1\",subjob_type=\"{long_type}\"");
        let subs = t.section(Family::SubjobStatus);
        assert_eq!(subs.lines().count(), 4 + 5);
        assert!(subs.contains(&format!("{sub_labels},status=\"SUCCESS\"}} 1\n")));
        assert!(subs.ends_with(&format!("{sub_labels},status=\"ODD\"}} 1\n")));
        let all: usize = PER_JOB.iter().map(|f| t.section(*f).len()).sum();
        assert_eq!(all, t.len());
        // Each state set is held once, not line by line.
        assert!(
            t.held_bytes() < 2 * long_type.len() + 200,
            "{}",
            t.held_bytes()
        );
        // Copying the body's sections on a later fetch counts the same bytes.
        let view = JobView {
            target_labels: "p=\"1\"",
            job_id: "j",
            job: Some(&job),
            fetch_ok: true,
            last_success: Some(5.0),
            families: crate::families::Families::ALL,
        };
        let again = rerender_fetch(&view, &t);
        assert_eq!(again, render_job(&view));
        assert_eq!(again.len(), render_job(&view).len());
    }

    #[test]
    fn running_job_duration_runs_to_last_observation() {
        let job = Job {
            status: Some("RUNNING".into()),
            begin: Some(100.0),
            end: Some(50.0),
            ..Job::default()
        };
        let t = fetched("a=\"b\"", &job, Some(130.0));
        assert_eq!(t.section(Family::End), "");
        assert!(t.section(Family::Duration).ends_with("} 30\n"));
    }
}
