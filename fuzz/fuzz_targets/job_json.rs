//! Decodes a job body and renders it through the text writer, checking the output's shape.
#![no_main]

use huaweicloud_job_exporter::cloud::Status;
use huaweicloud_job_exporter::cloud::model::{Job, Limits, decode_job, decode_job_capped};
use huaweicloud_job_exporter::exposition::{
    FAIL_REASON_MAX, Family, JobView, PER_JOB, render_job,
};
use libfuzzer_sys::fuzz_target;

const TARGET_LABELS: &str = r#"cloud_service="evs",cloud_region="cn-north-4",project_id="p1""#;

fuzz_target!(|data: &[u8]| {
    let limits = Limits {
        max_entities: 3,
        max_subjobs: 2,
    };
    let capped = decode_job_capped(data, limits);
    let Ok(job) = decode_job(data) else {
        assert!(capped.is_err(), "only the capping decoder accepted the body");
        return;
    };
    let mut cut_job = job.clone();
    let cut = cut_job.cap(limits);
    assert_eq!(
        capped.ok(),
        Some((cut_job, cut)),
        "capping while decoding differs"
    );
    check_job(&job, true);
    // The tracked id is the configured one; use the decoded id when there is one so that
    // hostile text reaches the base labels too.
    let job_id = job.job_id.as_deref().unwrap_or("fuzz-job");
    for (fetch_ok, last_success) in [(true, Some(1_700_000_000.5)), (false, None)] {
        let view = JobView {
            target_labels: TARGET_LABELS,
            job_id,
            job: Some(&job),
            fetch_ok,
            last_success,
            families: huaweicloud_job_exporter::families::Families::ALL,
        };
        check_text(&job, &view);
    }
});

/// What the lenient decoder promises about a decoded job.
fn check_job(job: &Job, top: bool) {
    assert_ne!(
        job.status.as_ref().map(Status::as_str),
        Some(""),
        "empty status kept"
    );
    assert_ne!(job.error_code.as_deref(), Some(""), "empty error_code kept");
    assert_ne!(
        job.fail_reason.as_deref(),
        Some(""),
        "empty fail_reason kept"
    );
    for t in [job.begin, job.end].into_iter().flatten() {
        assert!(t.is_finite(), "time {t} not finite");
    }
    for (i, (kind, id)) in job.entities.iter().enumerate() {
        assert!(
            !kind.is_empty() && !id.is_empty(),
            "empty entity {kind:?}={id:?}"
        );
        assert!(
            !job.entities[..i].contains(&job.entities[i]),
            "entity {kind:?}={id:?} listed twice"
        );
    }
    if top {
        for sub in &job.sub_jobs {
            check_job(sub, false);
        }
    } else {
        assert!(
            job.sub_jobs.is_empty(),
            "sub-jobs nested deeper than one level"
        );
    }
}

fn check_text(job: &Job, view: &JobView<'_>) {
    let text = render_job(view);
    for family in PER_JOB {
        // `section` gives `&str` or `String` depending on the revision; both read as `&str`.
        let section: &str = &text.section(family);
        let name = family.spec().name;
        assert!(
            section.is_empty() || section.ends_with('\n'),
            "section {name} does not end with a newline: {section:?}"
        );
        let mut ones = 0;
        let mut lines = 0;
        for line in section.lines() {
            lines += 1;
            let (n, labels, value) =
                parse_line(line).unwrap_or_else(|e| panic!("bad line ({e}): {line:?}"));
            assert_eq!(n, name, "line in the wrong section: {line:?}");
            assert!(
                labels.iter().any(|(k, _)| *k == "job_id"),
                "no job_id label: {line:?}"
            );
            if value == "1" {
                ones += 1;
            }
            match family {
                Family::Duration => {
                    let v: f64 = value.parse().expect("duration is a number");
                    assert!(v >= 0.0, "negative duration: {line:?}");
                }
                Family::FailureInfo => {
                    let reason = labels
                        .iter()
                        .find(|(k, _)| *k == "fail_reason")
                        .map(|(_, v)| unescape(v))
                        .expect("fail_reason label");
                    assert!(
                        reason.chars().count() <= FAIL_REASON_MAX,
                        "long fail_reason"
                    );
                }
                _ => {}
            }
        }
        match family {
            Family::Status => {
                // A state set: the documented statuses, plus the current one if it is another.
                let documented = job.status.as_ref().is_some_and(Status::is_documented);
                let want = if documented { 4 } else { 5 };
                assert_eq!(lines, want, "status lines: {section:?}");
                assert_eq!(ones, 1, "status set must have exactly one 1: {section:?}");
            }
            Family::SubjobStatus => {
                assert!(
                    lines >= 4 * job.sub_jobs.len(),
                    "sub-job lines: {section:?}"
                );
            }
            Family::FetchSuccess => assert_eq!(lines, 1),
            Family::LastFetchSuccess => {
                assert_eq!(lines, usize::from(view.last_success.is_some()));
            }
            _ => {}
        }
    }
}

/// Reverses the label-value escaping (`\\`, `\"`, `\n`).
fn unescape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    let mut chars = v.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('n') => out.push('\n'),
                Some(c) => out.push(c),
                None => panic!("dangling backslash in {v:?}"),
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Parses `name{k="v",...} value`, returning the name, the raw (escaped) label values and the
/// value text.
fn parse_line(line: &str) -> Result<(&str, Vec<(&str, &str)>, &str), String> {
    let brace = line.find('{').ok_or("no '{'")?;
    let name = &line[..brace];
    if !is_name(name, true) {
        return Err(format!("bad metric name {name:?}"));
    }
    let mut rest = &line[brace + 1..];
    let mut labels = Vec::new();
    loop {
        let eq = rest.find('=').ok_or("label without '='")?;
        let key = &rest[..eq];
        if !is_name(key, false) {
            return Err(format!("bad label name {key:?}"));
        }
        if labels.iter().any(|(k, _)| *k == key) {
            return Err(format!("duplicate label {key:?}"));
        }
        rest = rest[eq + 1..]
            .strip_prefix('"')
            .ok_or("label value not quoted")?;
        // Find the closing quote, skipping escapes.
        let bytes = rest.as_bytes();
        let mut i = 0;
        loop {
            match bytes.get(i) {
                None => return Err("unterminated label value".into()),
                Some(b'\\') => match bytes.get(i + 1) {
                    Some(b'\\' | b'"' | b'n') => i += 2,
                    _ => return Err("bad escape".into()),
                },
                Some(b'"') => break,
                Some(_) => i += 1,
            }
        }
        labels.push((key, &rest[..i]));
        rest = &rest[i + 1..];
        if let Some(r) = rest.strip_prefix(',') {
            rest = r;
        } else if let Some(r) = rest.strip_prefix("} ") {
            rest = r;
            break;
        } else {
            return Err("expected ',' or '} ' after a label".into());
        }
    }
    let value = rest;
    let ok = matches!(value, "NaN" | "+Inf" | "-Inf")
        || (value.parse::<f64>().is_ok_and(f64::is_finite)
            && !value.contains(['i', 'I', 'n', 'N', ' ']));
    if !ok {
        return Err(format!("bad value {value:?}"));
    }
    Ok((name, labels, value))
}

fn is_name(s: &str, metric: bool) -> bool {
    let mut bytes = s.bytes();
    let first = bytes.next();
    let head = |b: u8| b.is_ascii_alphabetic() || b == b'_' || (metric && b == b':');
    first.is_some_and(head) && bytes.all(|b| head(b) || b.is_ascii_digit())
}
