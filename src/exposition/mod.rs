//! The Prometheus text format for the job families of docs/metrics.md, written by hand.
//!
//! Why not the `prometheus` crate: rendering 10,000 jobs (60,000 series, 11 MB) takes 540 ms
//! through its GaugeVecs and 250 ms with `prometheus-client` on this project's 2-core machine,
//! against a 25 ms budget (figures in BENCHMARKS.md). So each job's lines
//! are rendered once, when the job changes, into a [`JobText`]; a scrape only concatenates them
//! (see `crate::snapshot`). Terminal jobs never change, so most of a large fleet is never
//! rendered again.
//!
//! - [`family`]: every job family declared once: name, type, labels, help, how it is written.
//! - [`job`]: the per-job families, one job's lines held as a [`JobText`].
//! - `aggregate`: the families over all the jobs of a target (counts, counters, histogram).
//! - this module: the formats (text, OpenMetrics), headers, escaping and sample lines.

pub(crate) mod aggregate;
pub mod family;
pub mod job;

use std::fmt::Write as _;

pub(crate) use aggregate::{Aggregates, Totals};
pub(crate) use family::{FAMILIES, Spec};
pub use family::{Family, PER_JOB};
pub(crate) use job::{JobText, cut_reason, job_base, line_base, rerender_fetch};
pub use job::{JobView, job_type, render_job, status_label, type_label};

/// Longest `fail_reason` exported, in characters.
pub const FAIL_REASON_MAX: usize = 200;

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
pub(crate) const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Content type of OpenMetrics 1.0.0.
pub(crate) const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

impl Format {
    /// The format an `Accept` header asks for, as client_golang negotiates it: the acceptable
    /// media types by falling `q`, the first this exporter speaks wins; OpenMetrics 1.0.0 or
    /// 0.0.1 (both answered as 1.0.0), else the text format, which is also the default.
    pub(crate) fn negotiate(accept: Option<&str>) -> Self {
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
    pub(crate) fn content_type(self) -> &'static str {
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
pub(crate) fn family_name<'a>(name: &'a str, kind: &'a str, format: Format) -> (&'a str, &'a str) {
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
pub(crate) fn escape_help(out: &mut Vec<u8>, help: &str, format: Format) {
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
pub(crate) fn write_header(out: &mut Vec<u8>, f: &Spec, cached: bool, format: Format) {
    let (name, kind) = family_name(f.name, f.kind.as_str(), format);
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
pub(crate) fn escape_into(out: &mut String, value: &str) {
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
pub(crate) fn write_value(out: &mut String, v: f64) {
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
        for f in FAMILIES.iter().filter(|f| !f.is_per_job()) {
            write_header(&mut out, f, false, Format::OpenMetrics);
        }
        write_header(
            &mut out,
            Family::FailureInfo.spec(),
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
        write_header(&mut plain, Family::Failures.spec(), false, Format::Text);
        assert_eq!(
            String::from_utf8(plain).expect("utf8"),
            format!(
                "# HELP huaweicloud_job_failures_total {}\n# TYPE huaweicloud_job_failures_total counter\n",
                Family::Failures.spec().help
            )
        );
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
}
