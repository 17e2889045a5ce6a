//! The Prometheus text format for the job families of docs/metrics.md, written by hand.
//!
//! Why not the `prometheus` crate: rendering 10,000 jobs (60,000 series, 11 MB) takes 540 ms
//! through its GaugeVecs and 250 ms with `prometheus-client` on this project's 2-core machine,
//! against a 25 ms budget (figures in BENCHMARKS.md). So each job's lines
//! are rendered once, when the job changes, into a [`JobText`]; a scrape only concatenates them
//! (see [`crate::snapshot`]). Terminal jobs never change, so most of a large fleet is never
//! rendered again.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::sync::Arc;

use crate::cloud::Job;
use crate::families::Families;

/// The documented statuses, always present in a state set.
pub const STATUSES: [&str; 4] = ["INIT", "RUNNING", "SUCCESS", "FAIL"];

/// Longest `fail_reason` exported, in characters.
pub const FAIL_REASON_MAX: usize = 200;

/// A metric family: name, type and help.
pub struct Family {
    /// Metric name.
    pub name: &'static str,
    /// `gauge`, `counter` or `histogram`.
    pub kind: &'static str,
    /// HELP text.
    pub help: &'static str,
}

macro_rules! family {
    ($name:literal, $kind:literal, $help:literal) => {
        Family {
            name: $name,
            kind: $kind,
            help: $help,
        }
    };
}

/// Per-job families, in the order they are written within a [`JobText`].
pub const PER_JOB: [Family; 10] = [
    family!(
        "huaweicloud_job_status",
        "gauge",
        "Job status as a state set: 1 for the current status, 0 for the others."
    ),
    family!(
        "huaweicloud_job_begin_timestamp_seconds",
        "gauge",
        "When the job began (begin_time), as Unix time."
    ),
    family!(
        "huaweicloud_job_end_timestamp_seconds",
        "gauge",
        "When the job ended (end_time), as Unix time; finished jobs only."
    ),
    family!(
        "huaweicloud_job_duration_seconds",
        "gauge",
        "end_time minus begin_time for finished jobs; last observation minus begin_time while running."
    ),
    family!(
        "huaweicloud_job_failure_info",
        "gauge",
        "1 per failed job, with its error_code and fail_reason (cut to 200 characters)."
    ),
    family!(
        "huaweicloud_job_entity_info",
        "gauge",
        "1 per entity (volume, server, protection group, ...) the job or its sub-jobs act on."
    ),
    family!(
        "huaweicloud_job_subjob_status",
        "gauge",
        "Sub-job status as a state set: 1 for the current status, 0 for the others."
    ),
    family!(
        "huaweicloud_job_subjob_failure_info",
        "gauge",
        "1 per failed sub-job, with its error_code and fail_reason (cut to 200 characters)."
    ),
    family!(
        "huaweicloud_job_fetch_success",
        "gauge",
        "1 if the last fetch of this job succeeded."
    ),
    family!(
        "huaweicloud_job_last_fetch_success_timestamp_seconds",
        "gauge",
        "When this job was last fetched successfully, as Unix time."
    ),
];

/// Index of each per-job family in [`PER_JOB`].
#[derive(Clone, Copy)]
#[repr(usize)]
pub enum PerJob {
    /// huaweicloud_job_status
    Status,
    /// huaweicloud_job_begin_timestamp_seconds
    Begin,
    /// huaweicloud_job_end_timestamp_seconds
    End,
    /// huaweicloud_job_duration_seconds
    Duration,
    /// huaweicloud_job_failure_info
    FailureInfo,
    /// huaweicloud_job_entity_info
    EntityInfo,
    /// huaweicloud_job_subjob_status
    SubjobStatus,
    /// huaweicloud_job_subjob_failure_info
    SubjobFailureInfo,
    /// huaweicloud_job_fetch_success
    FetchSuccess,
    /// huaweicloud_job_last_fetch_success_timestamp_seconds
    LastFetchSuccess,
}

/// Aggregate families, computed over all jobs.
pub const AGGREGATE: [Family; 5] = [
    family!(
        "huaweicloud_jobs",
        "gauge",
        "Number of tracked jobs per job_type and status."
    ),
    family!(
        "huaweicloud_job_completed_duration_seconds",
        "histogram",
        "Durations of finished jobs, each job observed once, when first seen finished."
    ),
    family!(
        "huaweicloud_job_failures_total",
        "counter",
        "Failed jobs, each counted once, by error_code (\"none\" when absent, \"other\" beyond 100 codes or job types in the target)."
    ),
    family!(
        "huaweicloud_job_subjob_failures_total",
        "counter",
        "Failed sub-jobs, each counted once, by error_code."
    ),
    family!(
        "huaweicloud_job_fetch_errors_total",
        "counter",
        "Failed job fetches by reason."
    ),
];

/// Index of each aggregate family in [`AGGREGATE`].
#[derive(Clone, Copy)]
#[repr(usize)]
pub enum Aggregate {
    /// huaweicloud_jobs
    Jobs,
    /// huaweicloud_job_completed_duration_seconds
    CompletedDuration,
    /// huaweicloud_job_failures_total
    Failures,
    /// huaweicloud_job_subjob_failures_total
    SubjobFailures,
    /// huaweicloud_job_fetch_errors_total
    FetchErrors,
}

/// Where a family goes in the exposition.
#[derive(Clone, Copy)]
pub enum Slot {
    /// A per-job family.
    PerJob(PerJob),
    /// An aggregate family.
    Aggregate(Aggregate),
}

/// The order of families in `/metrics`: each aggregate beside its per-job relatives.
pub const ORDER: [Slot; 15] = [
    Slot::PerJob(PerJob::Status),
    Slot::Aggregate(Aggregate::Jobs),
    Slot::PerJob(PerJob::Begin),
    Slot::PerJob(PerJob::End),
    Slot::PerJob(PerJob::Duration),
    Slot::Aggregate(Aggregate::CompletedDuration),
    Slot::Aggregate(Aggregate::Failures),
    Slot::PerJob(PerJob::FailureInfo),
    Slot::PerJob(PerJob::EntityInfo),
    Slot::PerJob(PerJob::SubjobStatus),
    Slot::Aggregate(Aggregate::SubjobFailures),
    Slot::PerJob(PerJob::SubjobFailureInfo),
    Slot::PerJob(PerJob::FetchSuccess),
    Slot::PerJob(PerJob::LastFetchSuccess),
    Slot::Aggregate(Aggregate::FetchErrors),
];

/// The exposition formats `/metrics` speaks.
///
/// They differ only in the `# HELP`/`# TYPE` lines of counters and info metrics and in the
/// closing `# EOF`, so each job's pre-rendered lines serve both; only the family headers are
/// written per format. Every series name is the same in both, so Prometheus ingests the same
/// series whichever it asks for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Format {
    /// The Prometheus text format 0.0.4.
    #[default]
    Text,
    /// OpenMetrics 1.0.0.
    OpenMetrics,
}

/// Content type of the text format.
pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Content type of OpenMetrics 1.0.0.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

impl Format {
    /// The format an `Accept` header asks for, as client_golang negotiates it: the acceptable
    /// media types by falling `q`, the first this exporter speaks wins; OpenMetrics 1.0.0 or
    /// 0.0.1 (both answered as 1.0.0), else the text format, which is also the default.
    pub fn negotiate(accept: Option<&str>) -> Self {
        let Some(accept) = accept else {
            return Format::Text;
        };
        let mut offers: Vec<(f64, Option<Format>)> = Vec::new();
        for media in accept.split(',') {
            let mut parts = media.split(';').map(str::trim);
            let kind = parts.next().unwrap_or("").to_ascii_lowercase();
            let (mut q, mut version) = (1.0, None);
            for p in parts {
                let Some((k, v)) = p.split_once('=') else {
                    continue;
                };
                match k.trim().to_ascii_lowercase().as_str() {
                    "q" => q = v.trim().parse().unwrap_or(0.0),
                    "version" => version = Some(v.trim().trim_matches('"').to_string()),
                    _ => {}
                }
            }
            let format = match (kind.as_str(), version.as_deref()) {
                ("application/openmetrics-text", None | Some("1.0.0" | "0.0.1")) => {
                    Some(Format::OpenMetrics)
                }
                ("text/plain", None | Some("0.0.4")) | ("*/*" | "text/*", _) => Some(Format::Text),
                _ => None,
            };
            if q > 0.0 {
                offers.push((q, format));
            }
        }
        // Stable: equal q keeps the client's order.
        offers.sort_by(|a, b| b.0.total_cmp(&a.0));
        offers
            .into_iter()
            .find_map(|(_, f)| f)
            .unwrap_or(Format::Text)
    }

    /// The `Content-Type` of a body in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Text => TEXT_CONTENT_TYPE,
            Format::OpenMetrics => OPENMETRICS_CONTENT_TYPE,
        }
    }

    /// What ends a body: `# EOF` in OpenMetrics, nothing in the text format.
    pub fn trailer(self) -> &'static str {
        match self {
            Format::Text => "",
            Format::OpenMetrics => "# EOF\n",
        }
    }
}

/// A family's name and type as the `# HELP`/`# TYPE` lines of `format` state them. In
/// OpenMetrics a counter family is named without the `_total` its samples carry, and a gauge
/// named `…_info` whose samples are all 1 is an info family named without `_info`: the sample
/// lines, and so the series Prometheus stores, stay exactly those of the text format.
pub fn family_name<'a>(name: &'a str, kind: &'a str, format: Format) -> (&'a str, &'a str) {
    if format == Format::OpenMetrics {
        if kind == "counter"
            && let Some(base) = name.strip_suffix("_total")
        {
            return (base, kind);
        }
        if kind == "gauge"
            && let Some(base) = name.strip_suffix("_info")
        {
            return (base, "info");
        }
    }
    (name, kind)
}

/// Appends HELP text escaped for `format`: backslash and newline, and in OpenMetrics also the
/// double quote.
pub fn escape_help(out: &mut Vec<u8>, help: &str, format: Format) {
    for c in help.chars() {
        match c {
            '\\' => out.extend_from_slice(b"\\\\"),
            '\n' => out.extend_from_slice(b"\\n"),
            '"' if format == Format::OpenMetrics => out.extend_from_slice(b"\\\""),
            c => {
                let mut buf = [0; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
}

/// Writes a `# HELP` and `# TYPE` header. In cached mode the help says the values are as of the
/// last refresh (docs/metrics.md).
pub fn write_header(out: &mut Vec<u8>, f: &Family, cached: bool, format: Format) {
    let (name, kind) = family_name(f.name, f.kind, format);
    out.extend_from_slice(b"# HELP ");
    out.extend_from_slice(name.as_bytes());
    out.push(b' ');
    escape_help(out, f.help, format);
    if cached {
        out.extend_from_slice(b" Values are as of the last refresh.");
    }
    out.extend_from_slice(b"\n# TYPE ");
    out.extend_from_slice(name.as_bytes());
    out.push(b' ');
    out.extend_from_slice(kind.as_bytes());
    out.push(b'\n');
}

/// Appends `value` escaped as a label value: backslash, double quote and newline.
pub fn escape_into(out: &mut String, value: &str) {
    if !value.bytes().any(|b| matches!(b, b'\\' | b'"' | b'\n')) {
        out.push_str(value);
        return;
    }
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// `name="value"` pairs joined by commas, escaped.
pub fn labels(pairs: &[(&str, &str)]) -> String {
    let mut out = String::new();
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(k);
        out.push_str("=\"");
        escape_into(&mut out, v);
        out.push('"');
    }
    out
}

/// Appends a sample value as Prometheus writes it.
pub fn write_value(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v.is_infinite() {
        out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
    } else {
        // Display gives the shortest text that reads back to the same f64.
        let _ = write!(out, "{v}");
    }
}

/// One sample line: `name{labels,extra} value\n`.
fn sample(out: &mut String, name: &str, base: &str, extra: &[(&str, &str)], value: f64) {
    out.push_str(name);
    out.push('{');
    out.push_str(base);
    tail(out, extra, value);
}

/// The end of a sample line after its common labels: `,extra="…"} value\n`.
fn tail(out: &mut String, extra: &[(&str, &str)], value: f64) {
    push_labels(out, extra);
    end_line(out, value);
}

/// `,name="value"` for each pair, escaped.
fn push_labels(out: &mut String, extra: &[(&str, &str)]) {
    for (k, v) in extra {
        out.push(',');
        out.push_str(k);
        out.push_str("=\"");
        escape_into(out, v);
        out.push('"');
    }
}

/// `} value\n`.
fn end_line(out: &mut String, value: f64) {
    out.push_str("} ");
    write_value(out, value);
    out.push('\n');
}

/// The pre-rendered lines of one job, one section per [`PER_JOB`] family.
///
/// Every line of a job starts with its family's name and the same labels
/// (`cloud_service`, `cloud_region`, `project_id`, `job_id`): about 150 of the 230 bytes of a
/// line. So they are kept once: `text` holds those common labels, then only the tail of each
/// line (`,job_type="…",status="…"} 0\n`), each after its length (one byte, or 255 and four
/// bytes little-endian), so that a scrape copies lines without looking for their ends;
/// [`JobText::write_section`] puts name and labels back. A job is held in about a quarter of
/// the bytes it exports (BENCHMARKS.md: 100,000 jobs export 320 MB of text).
///
/// Cloning shares the text. The offsets sit beside the pointer rather than behind it, so a
/// snapshot's `Vec<JobText>` tells a scrape where each section is without a dependent load:
/// at 100,000 jobs (105 MB of held text, far beyond the caches) the scrape fill took 73 ms with
/// the offsets behind a second pointer, against 34 ms for ten times fewer jobs.
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

/// The first length-prefixed line tail of `tails`, and what follows it.
fn split_line(tails: &[u8]) -> Option<(&[u8], &[u8])> {
    let (&n, after) = tails.split_first()?;
    let (n, after) = if n == LONG_LINE && after.len() >= 4 {
        let (len, after) = after.split_at(4);
        let len: [u8; 4] = len.try_into().unwrap_or_default();
        (u32::from_le_bytes(len) as usize, after)
    } else {
        (usize::from(n), after)
    };
    Some(after.split_at(n.min(after.len())))
}

/// Each per-job family's name followed by `{`, as a line starts.
const OPEN: [&str; PER_JOB.len()] = [
    "huaweicloud_job_status{",
    "huaweicloud_job_begin_timestamp_seconds{",
    "huaweicloud_job_end_timestamp_seconds{",
    "huaweicloud_job_duration_seconds{",
    "huaweicloud_job_failure_info{",
    "huaweicloud_job_entity_info{",
    "huaweicloud_job_subjob_status{",
    "huaweicloud_job_subjob_failure_info{",
    "huaweicloud_job_fetch_success{",
    "huaweicloud_job_last_fetch_success_timestamp_seconds{",
];

/// Writes a [`JobText`] line by line, straight into its length-prefixed form.
struct Builder {
    /// The families written; the lines of the others are dropped here, so that they are
    /// neither held nor compressed nor served.
    keep: Families,
    text: Vec<u8>,
    base_len: usize,
    /// The line being written, reused for every line.
    line: String,
    ends: [u32; PER_JOB.len()],
    written: usize,
}

impl Builder {
    fn new(base: &[u8], keep: Families) -> Self {
        let (mut text, mut line) = SCRATCH.with(|s| std::mem::take(&mut *s.borrow_mut()));
        text.clear();
        line.clear();
        text.extend_from_slice(base);
        Self {
            keep,
            text,
            base_len: base.len(),
            line,
            ends: [0; PER_JOB.len()],
            written: 0,
        }
    }

    /// Adds the lines of `family` as `from` holds them.
    fn copy(&mut self, from: &JobText, family: PerJob) {
        if !self.keep.per_job(family) {
            return;
        }
        let tails = from.tails(family);
        self.text.extend_from_slice(tails);
        let mut rest = tails;
        while let Some((line, after)) = split_line(rest) {
            self.written += OPEN[family as usize].len() + self.base_len + line.len();
            rest = after;
        }
    }

    /// Adds one line of `family`: the common labels, `extra`, then `value`.
    fn sample(&mut self, family: PerJob, extra: &[(&str, &str)], value: f64) {
        self.line.clear();
        tail(&mut self.line, extra, value);
        self.commit(family);
    }

    /// The lines of a state set: one per documented status, plus `current` if it is another.
    fn state_set(&mut self, family: PerJob, extra: &[(&str, &str)], current: &str) {
        let odd = (!STATUSES.contains(&current)).then_some(current);
        for s in STATUSES.iter().copied().chain(odd) {
            self.line.clear();
            push_labels(&mut self.line, extra);
            push_labels(&mut self.line, &[("status", s)]);
            end_line(&mut self.line, f64::from(u8::from(s == current)));
            self.commit(family);
        }
    }

    /// The failure-info line of a failed job or sub-job: `extra`, then its `error_code`
    /// ("none" when absent) and its `fail_reason` cut to [`FAIL_REASON_MAX`] characters.
    fn failure_info(&mut self, family: PerJob, extra: &[(&str, &str)], failed: &Job) {
        let reason = failed.fail_reason.as_deref().unwrap_or("");
        let cut = reason
            .char_indices()
            .nth(FAIL_REASON_MAX)
            .map_or(reason, |(i, _)| &reason[..i]);
        let code = failed.error_code.as_deref().unwrap_or("none");
        self.line.clear();
        push_labels(&mut self.line, extra);
        push_labels(
            &mut self.line,
            &[("error_code", code), ("fail_reason", cut)],
        );
        end_line(&mut self.line, 1.0);
        self.commit(family);
    }

    fn commit(&mut self, family: PerJob) {
        if !self.keep.per_job(family) {
            return;
        }
        let line = self.line.as_bytes();
        match u8::try_from(line.len()) {
            Ok(n) if n < LONG_LINE => self.text.push(n),
            _ => {
                self.text.push(LONG_LINE);
                let n = u32::try_from(line.len()).unwrap_or(u32::MAX);
                self.text.extend_from_slice(&n.to_le_bytes());
            }
        }
        self.text.extend_from_slice(line);
        self.written += OPEN[family as usize].len() + self.base_len + line.len();
    }

    /// Ends `family`'s section: every later line belongs to the families after it.
    fn close(&mut self, family: PerJob) {
        // A job's text is a few KiB; u32 offsets are ample and halve the index.
        self.ends[family as usize] = u32::try_from(self.text.len()).unwrap_or(u32::MAX);
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

thread_local! {
    /// The buffers a [`Builder`] writes into, kept for the next job rendered on this thread,
    /// so that a render allocates only its finished text.
    static SCRATCH: std::cell::RefCell<(Vec<u8>, String)> = const {
        std::cell::RefCell::new((Vec::new(), String::new()))
    };
}

impl JobText {
    fn tails(&self, family: PerJob) -> &[u8] {
        let i = family as usize;
        let start = if i == 0 {
            self.base_len
        } else {
            self.ends[i - 1]
        };
        &self.text[start as usize..self.ends[i] as usize]
    }

    /// Reads the first byte of the common labels and of `family`'s section, so that they are
    /// in the cache when [`JobText::write_section`] copies them.
    pub fn touch(&self, family: PerJob) -> u8 {
        let first = |at: usize| self.text.get(at).copied().unwrap_or_default();
        let i = family as usize;
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
    pub fn same_section(&self, other: &JobText, family: PerJob) -> bool {
        Arc::ptr_eq(&self.text, &other.text)
            || (self.base() == other.base() && self.tails(family) == other.tails(family))
    }

    /// Appends the lines of one family.
    pub fn write_section(&self, family: PerJob, out: &mut Vec<u8>) {
        let open = OPEN[family as usize].as_bytes();
        let base = &self.text[..self.base_len as usize];
        let mut rest = self.tails(family);
        while let Some((line, after)) = split_line(rest) {
            out.extend_from_slice(open);
            out.extend_from_slice(base);
            out.extend_from_slice(line);
            rest = after;
        }
    }

    /// The lines of one family, as text.
    pub fn section(&self, family: PerJob) -> String {
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

/// Every per-job family, in [`PER_JOB`] order.
pub const ALL_PER_JOB: [PerJob; PER_JOB.len()] = [
    PerJob::Status,
    PerJob::Begin,
    PerJob::End,
    PerJob::Duration,
    PerJob::FailureInfo,
    PerJob::EntityInfo,
    PerJob::SubjobStatus,
    PerJob::SubjobFailureInfo,
    PerJob::FetchSuccess,
    PerJob::LastFetchSuccess,
];

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
    job.job_type
        .as_deref()
        .filter(|t| !t.is_empty())
        .unwrap_or("unknown")
}

/// The status label of a job whose status field was missing.
pub const UNKNOWN_STATUS: &str = "UNKNOWN";

/// Renders every per-job line of one job.
pub fn render_job(v: &JobView<'_>) -> JobText {
    let mut base = String::with_capacity(v.target_labels.len() + v.job_id.len() + 10);
    base.push_str(v.target_labels);
    base.push_str(",job_id=\"");
    escape_into(&mut base, v.job_id);
    base.push('"');
    render(v, Builder::new(base.as_bytes(), v.families), None)
}

/// [`render_job`] for a job whose body is the one `previous` was rendered from: the sections
/// that come from the body alone are copied, and only those that move with each fetch (the
/// running duration and the fetch families) are written again. Most fetches of a running job
/// return the same body, and rendering it whole was about 7% of a refresh's CPU.
pub fn rerender_fetch(v: &JobView<'_>, previous: &JobText) -> JobText {
    let base = &previous.text[..previous.base_len as usize];
    render(v, Builder::new(base, v.families), Some(previous))
}

fn render(v: &JobView<'_>, mut b: Builder, previous: Option<&JobText>) -> JobText {
    if let Some(job) = v.job {
        let reuse = |b: &mut Builder, p: &JobText, families: &[PerJob]| {
            for f in families {
                b.copy(p, *f);
                b.close(*f);
            }
        };
        let before = [PerJob::Status, PerJob::Begin, PerJob::End];
        match previous {
            Some(p) => reuse(&mut b, p, &before),
            None => state_and_times(&mut b, job),
        }
        let until = if job.is_terminal() {
            job.end
        } else {
            v.last_success
        };
        if let (Some(begin), Some(u)) = (job.begin, until) {
            b.sample(
                PerJob::Duration,
                &[("job_type", job_type(job))],
                (u - begin).max(0.0),
            );
        }
        b.close(PerJob::Duration);
        let after = [
            PerJob::FailureInfo,
            PerJob::EntityInfo,
            PerJob::SubjobStatus,
            PerJob::SubjobFailureInfo,
        ];
        match previous {
            Some(p) => reuse(&mut b, p, &after),
            None => failure_entities_subjobs(&mut b, job),
        }
    } else {
        // Never fetched: every job-detail section is empty (all but the two fetch families).
        for f in &ALL_PER_JOB[..PerJob::FetchSuccess as usize] {
            b.close(*f);
        }
    }
    b.sample(PerJob::FetchSuccess, &[], f64::from(u8::from(v.fetch_ok)));
    b.close(PerJob::FetchSuccess);
    if let Some(t) = v.last_success {
        b.sample(PerJob::LastFetchSuccess, &[], t);
    }
    b.close(PerJob::LastFetchSuccess);
    b.finish()
}

/// The status state set, begin and end time.
fn state_and_times(b: &mut Builder, job: &Job) {
    let typed = [("job_type", job_type(job))];
    let status = job.status.as_deref().unwrap_or(UNKNOWN_STATUS);
    b.state_set(PerJob::Status, &typed, status);
    b.close(PerJob::Status);
    if let Some(begin) = job.begin {
        b.sample(PerJob::Begin, &typed, begin);
    }
    b.close(PerJob::Begin);
    if let Some(e) = job.end.filter(|_| job.is_terminal()) {
        b.sample(PerJob::End, &typed, e);
    }
    b.close(PerJob::End);
}

/// True when the cloud reports the job (or sub-job) failed.
fn failed(job: &Job) -> bool {
    job.status.as_deref() == Some("FAIL")
}

/// Failure info, entities, and the sub-jobs' state sets and failure info.
fn failure_entities_subjobs(b: &mut Builder, job: &Job) {
    if failed(job) {
        b.failure_info(PerJob::FailureInfo, &[("job_type", job_type(job))], job);
    }
    b.close(PerJob::FailureInfo);
    // A set, not a list: the entities of a job and its sub-jobs are checked in one pass.
    let mut seen: HashSet<(&str, &str)> = HashSet::new();
    let all = job
        .entities
        .iter()
        .chain(job.sub_jobs.iter().flat_map(|s| s.entities.iter()));
    for (kind, id) in all {
        if !seen.insert((kind, id)) {
            continue;
        }
        b.sample(
            PerJob::EntityInfo,
            &[("entity_type", kind), ("entity_id", id)],
            1.0,
        );
    }
    b.close(PerJob::EntityInfo);
    let mut fallback_id = String::new();
    for (i, sub) in job.sub_jobs.iter().enumerate() {
        b.state_set(
            PerJob::SubjobStatus,
            &[
                ("subjob_id", subjob_id(sub, i, &mut fallback_id)),
                ("subjob_type", job_type(sub)),
            ],
            sub.status.as_deref().unwrap_or(UNKNOWN_STATUS),
        );
    }
    b.close(PerJob::SubjobStatus);
    for (i, sub) in job.sub_jobs.iter().enumerate().filter(|(_, s)| failed(s)) {
        b.failure_info(
            PerJob::SubjobFailureInfo,
            &[
                ("subjob_id", subjob_id(sub, i, &mut fallback_id)),
                ("subjob_type", job_type(sub)),
            ],
            sub,
        );
    }
    b.close(PerJob::SubjobFailureInfo);
}

/// The subjob_id label of the `i`th sub-job: its job_id, or `#i` when it has none (written
/// into `fallback`).
fn subjob_id<'a>(sub: &'a Job, i: usize, fallback: &'a mut String) -> &'a str {
    match sub.job_id.as_deref() {
        Some(id) => id,
        None => {
            fallback.clear();
            let _ = write!(fallback, "#{i}");
            fallback
        }
    }
}

/// Appends one aggregate sample: `name{target_labels,extra} value`.
pub fn aggregate_sample(
    out: &mut String,
    family: Aggregate,
    suffix: &str,
    target_labels: &str,
    extra: &[(&str, &str)],
    value: f64,
) {
    let f = &AGGREGATE[family as usize];
    let mut name = String::with_capacity(f.name.len() + suffix.len());
    name.push_str(f.name);
    name.push_str(suffix);
    sample(out, &name, target_labels, extra, value);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_is_negotiated_like_client_golang() {
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        for (accept, want) in [
            (Some(prometheus), Format::OpenMetrics),
            (None, Format::Text),
            (Some("*/*"), Format::Text),
            (Some("text/plain;version=0.0.4"), Format::Text),
            (Some("application/openmetrics-text"), Format::OpenMetrics),
            (
                Some("application/openmetrics-text; version=0.0.1"),
                Format::OpenMetrics,
            ),
            (
                Some("application/openmetrics-text; version=2.0.0"),
                Format::Text,
            ),
            (
                Some("text/plain;q=0.5, application/openmetrics-text;q=0.9"),
                Format::OpenMetrics,
            ),
            (
                Some("application/openmetrics-text;q=0, text/plain"),
                Format::Text,
            ),
            (
                Some("application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily"),
                Format::Text,
            ),
        ] {
            assert_eq!(Format::negotiate(accept), want, "{accept:?}");
        }
    }

    #[test]
    fn openmetrics_headers_name_counter_and_info_families_without_their_suffix() {
        let mut out = Vec::new();
        for f in &AGGREGATE {
            write_header(&mut out, f, false, Format::OpenMetrics);
        }
        write_header(
            &mut out,
            &PER_JOB[PerJob::FailureInfo as usize],
            true,
            Format::OpenMetrics,
        );
        let text = String::from_utf8(out).expect("utf8");
        assert!(text.contains("# TYPE huaweicloud_job_failures counter\n"));
        assert!(text.contains("# HELP huaweicloud_job_failures Failed jobs, each counted once, by error_code (\\\"none\\\" when absent"));
        assert!(text.contains("# TYPE huaweicloud_job_fetch_errors counter\n"));
        assert!(text.contains("# TYPE huaweicloud_jobs gauge\n"));
        assert!(text.contains("# TYPE huaweicloud_job_completed_duration_seconds histogram\n"));
        assert!(text.contains("# TYPE huaweicloud_job_failure info\n"));
        assert!(
            text.contains(
                "Values are as of the last refresh.\n# TYPE huaweicloud_job_failure info"
            )
        );
        let mut plain = Vec::new();
        write_header(
            &mut plain,
            &AGGREGATE[Aggregate::Failures as usize],
            false,
            Format::Text,
        );
        assert_eq!(
            String::from_utf8(plain).expect("utf8"),
            format!(
                "# HELP huaweicloud_job_failures_total {}\n# TYPE huaweicloud_job_failures_total counter\n",
                AGGREGATE[Aggregate::Failures as usize].help
            )
        );
    }

    #[test]
    fn line_openings_match_family_names() {
        for (open, f) in OPEN.iter().zip(&PER_JOB) {
            assert_eq!(*open, format!("{}{{", f.name));
        }
    }

    #[test]
    fn long_lines_round_trip() {
        let job = Job {
            status: Some("FAIL".into()),
            fail_reason: Some("\\\"".repeat(150)),
            ..Job::default()
        };
        let t = render_job(&JobView {
            target_labels: "a=\"b\"",
            job_id: "j",
            job: Some(&job),
            fetch_ok: true,
            last_success: None,
            families: crate::families::Families::ALL,
        });
        let info = t.section(PerJob::FailureInfo);
        assert!(info.len() > 300, "{info}");
        assert!(
            info.starts_with(
                "huaweicloud_job_failure_info{a=\"b\",job_id=\"j\",job_type=\"unknown\""
            )
        );
        assert!(info.ends_with("\"} 1\n"));
        let all: usize = ALL_PER_JOB.iter().map(|f| t.section(*f).len()).sum();
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
    fn escapes_label_values() {
        let mut s = String::new();
        escape_into(&mut s, "a\"b\\c\nd é");
        assert_eq!(s, "a\\\"b\\\\c\\nd é");
    }

    #[test]
    fn writes_values_as_prometheus_does() {
        let mut s = String::new();
        for v in [1.0, 0.0, 1_457_422_813.219, f64::INFINITY, f64::NAN, 0.25] {
            write_value(&mut s, v);
            s.push(' ');
        }
        assert_eq!(s, "1 0 1457422813.219 +Inf NaN 0.25 ");
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
        let all: String = ALL_PER_JOB.iter().map(|f| t.section(*f)).collect();
        assert_eq!(
            all,
            "huaweicloud_job_fetch_success{cloud_service=\"evs\",job_id=\"j1\"} 0\n"
        );
        assert_eq!(t.section(PerJob::Status), "");
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
        let t = render_job(&JobView {
            target_labels: "p=\"1\"",
            job_id: "j",
            job: Some(&job),
            fetch_ok: true,
            last_success: Some(200.0),
            families: crate::families::Families::ALL,
        });
        assert_eq!(
            t.section(PerJob::Status),
            "huaweicloud_job_status{p=\"1\",job_id=\"j\",job_type=\"unknown\",status=\"INIT\"} 0\n\
             huaweicloud_job_status{p=\"1\",job_id=\"j\",job_type=\"unknown\",status=\"RUNNING\"} 0\n\
             huaweicloud_job_status{p=\"1\",job_id=\"j\",job_type=\"unknown\",status=\"SUCCESS\"} 0\n\
             huaweicloud_job_status{p=\"1\",job_id=\"j\",job_type=\"unknown\",status=\"FAIL\"} 1\n"
        );
        assert_eq!(
            t.section(PerJob::Duration),
            "huaweicloud_job_duration_seconds{p=\"1\",job_id=\"j\",job_type=\"unknown\"} 60.5\n"
        );
        let info = t.section(PerJob::FailureInfo);
        assert!(info.contains("error_code=\"none\""));
        assert!(info.contains(&format!("fail_reason=\"{}\"}}", "x".repeat(200))));
        assert_eq!(t.section(PerJob::EntityInfo).lines().count(), 1);
        assert!(
            t.section(PerJob::EntityInfo)
                .contains("entity_id=\"v\\\"1\"")
        );
        let sub = t.section(PerJob::SubjobStatus);
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
        let t = render_job(&JobView {
            target_labels: "p=\"1\"",
            job_id: "j",
            job: Some(&job),
            fetch_ok: true,
            last_success: Some(200.0),
            families: crate::families::Families::ALL,
        });
        // A running job with failed sub-jobs: no job failure info, one line per failed sub-job.
        assert_eq!(t.section(PerJob::FailureInfo), "");
        assert_eq!(
            t.section(PerJob::SubjobFailureInfo),
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
        let all: usize = ALL_PER_JOB.iter().map(|f| t.section(*f).len()).sum();
        assert_eq!(all, t.len());
    }

    #[test]
    fn running_job_duration_runs_to_last_observation() {
        let job = Job {
            status: Some("RUNNING".into()),
            begin: Some(100.0),
            end: Some(50.0),
            ..Job::default()
        };
        let t = render_job(&JobView {
            target_labels: "a=\"b\"",
            job_id: "j",
            job: Some(&job),
            fetch_ok: true,
            last_success: Some(130.0),
            families: crate::families::Families::ALL,
        });
        assert_eq!(t.section(PerJob::End), "");
        assert!(t.section(PerJob::Duration).ends_with("} 30\n"));
    }
}
