//! The aggregate families: samples per target over all its jobs, written when a snapshot is
//! built from the totals the poller keeps ([`Totals`]) and the current count of jobs.
//!
//! Counters and the completed-duration histogram live apart from the jobs, so dropping a job
//! keeps them monotonic.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::family::{FAMILIES, Family, Render};
use super::{sample, write_value};
use crate::cloud::Reason;

/// Buckets of `huaweicloud_job_completed_duration_seconds`: jobs take seconds to hours.
pub(crate) const DURATION_BUCKETS: [f64; 14] = [
    1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0, 21600.0,
    86400.0,
];

/// Observations of one series of `huaweicloud_job_completed_duration_seconds`.
#[derive(Debug, Default)]
pub(crate) struct Histogram {
    buckets: [u64; DURATION_BUCKETS.len()],
    sum: f64,
    count: u64,
}

impl Histogram {
    /// Observes one duration, in seconds.
    pub(crate) fn observe(&mut self, seconds: f64) {
        for (i, le) in DURATION_BUCKETS.iter().enumerate() {
            if seconds <= *le {
                self.buckets[i] += 1;
            }
        }
        self.sum += seconds;
        self.count += 1;
    }
}

/// A series key: a target's pre-escaped common labels, then a type (`job_type` or
/// `subjob_type`) and a status or error code.
pub(crate) type Key = (Arc<str>, String, String);

/// What the counters and the histogram count, per target; kept by the poller across jobs.
#[derive(Debug, Default)]
pub(crate) struct Totals {
    /// `huaweicloud_job_completed_duration_seconds`, by job type and status.
    pub completed: BTreeMap<Key, Histogram>,
    /// `huaweicloud_job_failures_total`, by job type and error code.
    pub failures: BTreeMap<Key, u64>,
    /// `huaweicloud_job_subjob_failures_total`, by sub-job type and error code.
    pub subjob_failures: BTreeMap<Key, u64>,
    /// `huaweicloud_job_fetch_errors_total`, by reason.
    pub fetch_errors: BTreeMap<(Arc<str>, Reason), u64>,
}

/// What the aggregate families are written from.
pub(crate) struct Aggregates<'a> {
    /// Tracked jobs by target labels, job type (as the label caps admit it) and status.
    pub jobs: BTreeMap<(&'a str, &'a str, &'a str), u64>,
    /// The counters and the histogram.
    pub totals: &'a Totals,
}

/// Writes one aggregate family's samples.
pub(crate) type Write = fn(&mut String, &Aggregates<'_>);

impl Aggregates<'_> {
    /// The samples of every aggregate family, by [`Family`] (the per-job ones stay empty).
    pub fn render(&self) -> [String; FAMILIES.len()] {
        let mut out: [String; FAMILIES.len()] = Default::default();
        for (f, s) in FAMILIES.iter().zip(&mut out) {
            if let Render::Target(write) = f.render {
                write(s, self);
            }
        }
        out
    }
}

/// One sample of `family` (its name followed by `suffix`) for the target of `labels`.
fn put(
    out: &mut String,
    family: Family,
    suffix: &str,
    labels: &str,
    extra: &[(&str, &str)],
    value: f64,
) {
    let name = family.spec().name;
    let mut full = String::with_capacity(name.len() + suffix.len());
    full.push_str(name);
    full.push_str(suffix);
    sample(out, &full, labels, extra, value);
}

/// `huaweicloud_jobs`.
pub(super) fn jobs(out: &mut String, a: &Aggregates<'_>) {
    for ((labels, jt, status), n) in &a.jobs {
        put(
            out,
            Family::Jobs,
            "",
            labels,
            &[("job_type", jt), ("status", status)],
            *n as f64,
        );
    }
}

/// `huaweicloud_job_completed_duration_seconds`.
pub(super) fn completed_duration(out: &mut String, a: &Aggregates<'_>) {
    let family = Family::CompletedDuration;
    for ((labels, jt, status), h) in &a.totals.completed {
        let base = [("job_type", jt.as_str()), ("status", status.as_str())];
        let mut le_buf = String::new();
        for (i, le) in DURATION_BUCKETS.iter().enumerate() {
            le_buf.clear();
            write_value(&mut le_buf, *le);
            let with_le = [base[0], base[1], ("le", le_buf.as_str())];
            put(
                out,
                family,
                "_bucket",
                labels,
                &with_le,
                h.buckets[i] as f64,
            );
        }
        let inf = [base[0], base[1], ("le", "+Inf")];
        put(out, family, "_bucket", labels, &inf, h.count as f64);
        put(out, family, "_sum", labels, &base, h.sum);
        put(out, family, "_count", labels, &base, h.count as f64);
    }
}

/// A failure counter by type (`type_label`) and error code.
fn failure_counter(
    out: &mut String,
    family: Family,
    type_label: &str,
    counts: &BTreeMap<Key, u64>,
) {
    for ((labels, t, code), n) in counts {
        put(
            out,
            family,
            "",
            labels,
            &[(type_label, t), ("error_code", code)],
            *n as f64,
        );
    }
}

/// `huaweicloud_job_failures_total`.
pub(super) fn failures(out: &mut String, a: &Aggregates<'_>) {
    failure_counter(out, Family::Failures, "job_type", &a.totals.failures);
}

/// `huaweicloud_job_subjob_failures_total`.
pub(super) fn subjob_failures(out: &mut String, a: &Aggregates<'_>) {
    failure_counter(
        out,
        Family::SubjobFailures,
        "subjob_type",
        &a.totals.subjob_failures,
    );
}

/// `huaweicloud_job_fetch_errors_total`.
pub(super) fn fetch_errors(out: &mut String, a: &Aggregates<'_>) {
    for ((labels, reason), n) in &a.totals.fetch_errors {
        put(
            out,
            Family::FetchErrors,
            "",
            labels,
            &[("reason", reason.as_str())],
            *n as f64,
        );
    }
}
