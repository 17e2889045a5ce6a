//! The job metric families, each declared once: name, type, labels, help and how its samples
//! are written. Everything else that lists families (the sections of a job's text, the order of
//! `/metrics`, the allowlist and denylist, docs/metrics.md) is derived from or checked against
//! `FAMILIES`.

use super::{aggregate, job};

/// A metric type, as `# TYPE` states it in the text format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A value that goes up and down.
    Gauge,
    /// A value that only goes up; its samples end in `_total`.
    Counter,
    /// Buckets, sum and count.
    Histogram,
}

impl Kind {
    /// The type as written after `# TYPE`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Gauge => "gauge",
            Kind::Counter => "counter",
            Kind::Histogram => "histogram",
        }
    }
}

/// How a family's samples are written.
#[derive(Clone, Copy)]
pub(crate) enum Render {
    /// One section of every job's text ([`super::JobText`]), written when the job changes.
    Job {
        /// Writes the job's lines of the family.
        write: job::Write,
        /// The lines come from the job's body alone (not from the fetch's time or outcome), so
        /// a fetch that returns the body already rendered copies them instead.
        from_body: bool,
    },
    /// Samples per target, written from [`super::Aggregates`] when a snapshot is built.
    Target(aggregate::Write),
}

/// The declaration of one family.
pub struct Spec {
    /// Metric name.
    pub name: &'static str,
    /// Metric type.
    pub kind: Kind,
    /// The labels of its samples besides the common three (`cloud_service`, `cloud_region`,
    /// `project_id`), in the order they are written; a histogram's `le` is implied.
    pub labels: &'static [&'static str],
    /// HELP text.
    pub help: &'static str,
    pub(crate) render: Render,
}

impl Spec {
    /// True for a family written per job, as a section of each job's text.
    pub(crate) fn is_per_job(&self) -> bool {
        matches!(self.render, Render::Job { .. })
    }
}

/// Declares [`Family`] and [`FAMILIES`] from one list, so that a family's identity and its
/// declaration cannot drift apart.
macro_rules! families {
    ($( $id:ident => $name:literal, $kind:ident, [$($label:literal),*], $help:literal, $render:expr; )*) => {
        /// A job metric family. The variants are in the order `/metrics` writes the families:
        /// each aggregate beside its per-job relatives.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Family {
            $(
                #[doc = concat!("`", $name, "`")]
                $id,
            )*
        }

        /// Every job family, in [`Family`] order.
        pub(crate) const FAMILIES: [Spec; [$($name),*].len()] = [
            $(
                Spec {
                    name: $name,
                    kind: Kind::$kind,
                    labels: &[$($label),*],
                    help: $help,
                    render: $render,
                },
            )*
        ];

        impl Family {
            /// Every family, in order.
            pub const ALL: [Family; FAMILIES.len()] = [$(Family::$id),*];
        }
    };
}

families! {
    Status => "huaweicloud_job_status", Gauge, ["job_id", "job_type", "status"],
        "Job status as a state set: 1 for the current status, 0 for the others.",
        Render::Job { write: job::status, from_body: true };
    Jobs => "huaweicloud_jobs", Gauge, ["job_type", "status"],
        "Number of tracked jobs per job_type and status.",
        Render::Target(aggregate::jobs);
    Begin => "huaweicloud_job_begin_timestamp_seconds", Gauge, ["job_id", "job_type"],
        "When the job began (begin_time), as Unix time.",
        Render::Job { write: job::begin, from_body: true };
    End => "huaweicloud_job_end_timestamp_seconds", Gauge, ["job_id", "job_type"],
        "When the job ended (end_time), as Unix time; finished jobs only.",
        Render::Job { write: job::end, from_body: true };
    Duration => "huaweicloud_job_duration_seconds", Gauge, ["job_id", "job_type"],
        "end_time minus begin_time for finished jobs; last observation minus begin_time while running.",
        Render::Job { write: job::duration, from_body: false };
    CompletedDuration => "huaweicloud_job_completed_duration_seconds", Histogram, ["job_type", "status"],
        "Durations of finished jobs, each job observed once, when first seen finished.",
        Render::Target(aggregate::completed_duration);
    Failures => "huaweicloud_job_failures_total", Counter, ["job_type", "error_code"],
        "Failed jobs, each counted once, by error_code (\"none\" when absent, \"other\" beyond 100 codes or job types in the target).",
        Render::Target(aggregate::failures);
    FailureInfo => "huaweicloud_job_failure_info", Gauge, ["job_id", "job_type", "error_code", "fail_reason"],
        "1 per failed job, with its error_code and fail_reason (cut to 200 characters).",
        Render::Job { write: job::failure_info, from_body: true };
    EntityInfo => "huaweicloud_job_entity_info", Gauge, ["job_id", "entity_type", "entity_id"],
        "1 per entity (volume, server, protection group, ...) the job or its sub-jobs act on.",
        Render::Job { write: job::entity_info, from_body: true };
    SubjobStatus => "huaweicloud_job_subjob_status", Gauge, ["job_id", "subjob_id", "subjob_type", "status"],
        "Sub-job status as a state set: 1 for the current status, 0 for the others.",
        Render::Job { write: job::subjob_status, from_body: true };
    SubjobFailures => "huaweicloud_job_subjob_failures_total", Counter, ["subjob_type", "error_code"],
        "Failed sub-jobs, each counted once, by error_code.",
        Render::Target(aggregate::subjob_failures);
    SubjobFailureInfo => "huaweicloud_job_subjob_failure_info", Gauge, ["job_id", "subjob_id", "subjob_type", "error_code", "fail_reason"],
        "1 per failed sub-job, with its error_code and fail_reason (cut to 200 characters).",
        Render::Job { write: job::subjob_failure_info, from_body: true };
    FetchSuccess => "huaweicloud_job_fetch_success", Gauge, ["job_id"],
        "1 if the last fetch of this job succeeded.",
        Render::Job { write: job::fetch_success, from_body: false };
    LastFetchSuccess => "huaweicloud_job_last_fetch_success_timestamp_seconds", Gauge, ["job_id"],
        "When this job was last fetched successfully, as Unix time.",
        Render::Job { write: job::last_fetch_success, from_body: false };
    FetchErrors => "huaweicloud_job_fetch_errors_total", Counter, ["reason"],
        "Failed job fetches by reason.",
        Render::Target(aggregate::fetch_errors);
}

/// Number of per-job families: the sections of a job's text.
const fn count_per_job() -> usize {
    let mut n = 0;
    let mut i = 0;
    while i < FAMILIES.len() {
        if let Render::Job { .. } = FAMILIES[i].render {
            n += 1;
        }
        i += 1;
    }
    n
}

/// Where each family's section is in a job's text: its rank among the per-job families (0 for
/// the others, which have no section).
const SECTIONS: [usize; FAMILIES.len()] = {
    let mut out = [0; FAMILIES.len()];
    let mut n = 0;
    let mut i = 0;
    while i < FAMILIES.len() {
        if let Render::Job { .. } = FAMILIES[i].render {
            out[i] = n;
            n += 1;
        }
        i += 1;
    }
    out
};

/// The per-job families, in order: the sections of every job's text.
pub const PER_JOB: [Family; count_per_job()] = {
    let mut out = [Family::Status; count_per_job()];
    let mut i = 0;
    while i < FAMILIES.len() {
        if let Render::Job { .. } = FAMILIES[i].render {
            out[SECTIONS[i]] = Family::ALL[i];
        }
        i += 1;
    }
    out
};

impl Family {
    /// The family's declaration.
    pub fn spec(self) -> &'static Spec {
        &FAMILIES[self as usize]
    }

    /// Where a per-job family's lines are in a job's text.
    pub(crate) fn section(self) -> usize {
        SECTIONS[self as usize]
    }

    /// The family named `name`, if it is one of the job families.
    pub fn named(name: &str) -> Option<Family> {
        FAMILIES
            .iter()
            .position(|f| f.name == name)
            .map(|i| Family::ALL[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_job_families_are_the_sections_in_order() {
        assert_eq!(PER_JOB.len(), 10);
        for (i, f) in PER_JOB.iter().enumerate() {
            assert!(f.spec().is_per_job(), "{}", f.spec().name);
            assert_eq!(f.section(), i);
        }
        for (i, f) in Family::ALL.iter().enumerate() {
            assert_eq!(*f as usize, i);
            assert_eq!(Family::named(f.spec().name), Some(*f));
        }
        assert_eq!(Family::named("huaweicloud_job_exporter_build_info"), None);
    }

    /// The label names of a sample line, and the family it belongs to.
    fn label_names(line: &str) -> (Family, Vec<&str>) {
        let (name, rest) = line.split_once('{').expect("labels");
        let family = FAMILIES
            .iter()
            .position(|f| {
                name == f.name
                    || (f.kind == Kind::Histogram
                        && ["_bucket", "_sum", "_count"]
                            .iter()
                            .any(|s| name.strip_suffix(s) == Some(f.name)))
            })
            .map(|i| Family::ALL[i])
            .unwrap_or_else(|| panic!("{name} is not a job family"));
        let labels = rest
            .split("\",")
            .map(|pair| pair.split_once('=').expect("name=value").0)
            .collect();
        (family, labels)
    }

    #[test]
    fn every_family_writes_the_labels_it_declares() {
        use crate::cloud::{Job, Reason};
        use crate::exposition::{Aggregates, JobView, Totals, render_job};
        use std::sync::Arc;

        let common = "cloud_service=\"evs\",cloud_region=\"r\",project_id=\"p\"";
        let failed = |id: Option<&str>| Job {
            job_id: id.map(Into::into),
            job_type: Some("createVolume".into()),
            status: Some("FAIL".into()),
            begin: Some(1.0),
            end: Some(2.0),
            error_code: Some("EVS.1".into()),
            fail_reason: Some("no".into()),
            entities: vec![("volume_id".into(), "v".into())],
            sub_jobs: Vec::new(),
        };
        let job = Job {
            sub_jobs: vec![failed(Some("s1")), failed(None)],
            ..failed(Some("j"))
        };
        let text = render_job(&JobView {
            target_labels: common,
            job_id: "j",
            job: Some(&job),
            fetch_ok: true,
            last_success: Some(3.0),
            families: crate::families::Families::ALL,
        });
        let mut lines = String::new();
        for f in PER_JOB {
            lines.push_str(&text.section(f));
        }
        let labels: Arc<str> = common.into();
        let key = (
            Arc::clone(&labels),
            "createVolume".to_string(),
            "FAIL".to_string(),
        );
        let mut totals = Totals::default();
        totals
            .completed
            .entry(key.clone())
            .or_default()
            .observe(1.0);
        totals.failures.insert(key.clone(), 1);
        totals.subjob_failures.insert(key, 2);
        totals.fetch_errors.insert((labels, Reason::Timeout), 0);
        let aggregates = Aggregates {
            jobs: [((common, "createVolume", "FAIL"), 1)].into(),
            totals: &totals,
        };
        for s in aggregates.render() {
            lines.push_str(&s);
        }
        let mut seen = Vec::new();
        for line in lines.lines() {
            let (family, names) = label_names(line);
            let spec = family.spec();
            let mut want = vec!["cloud_service", "cloud_region", "project_id"];
            want.extend(spec.labels);
            if line.starts_with(&format!("{}_bucket", spec.name)) {
                want.push("le");
            }
            assert_eq!(names, want, "{line}");
            seen.push(family);
        }
        for f in Family::ALL {
            assert!(seen.contains(&f), "{} wrote no line", f.spec().name);
        }
    }

    /// docs/metrics.md is the metric contract: each job family is a row of its table, with the
    /// type and the labels declared here.
    #[test]
    fn docs_metrics_md_documents_every_family_as_declared() {
        let docs = include_str!("../../docs/metrics.md");
        let rows: Vec<Vec<&str>> = docs
            .lines()
            .filter_map(|l| l.strip_prefix("| `")?.strip_suffix(" |"))
            .map(|l| l.split(" | ").collect())
            .collect();
        for f in &FAMILIES {
            let row = rows
                .iter()
                .find(|r| r[0].strip_suffix('`') == Some(f.name))
                .unwrap_or_else(|| panic!("{} is not in docs/metrics.md", f.name));
            assert_eq!(
                row[1],
                f.kind.as_str(),
                "{}: type in docs/metrics.md",
                f.name
            );
            let labels: Vec<&str> = row[2]
                .split(',')
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect();
            assert_eq!(labels, f.labels, "{}: labels in docs/metrics.md", f.name);
        }
        let documented = rows
            .iter()
            .filter(|r| {
                r[0].starts_with("huaweicloud_job")
                    && !r[0].starts_with("huaweicloud_job_exporter_")
            })
            .count();
        assert_eq!(
            documented,
            FAMILIES.len(),
            "docs/metrics.md lists a job family not declared here"
        );
    }
}
