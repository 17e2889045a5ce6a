//! The last failed fetches, alike ones counted together, for the landing page.

use std::collections::VecDeque;

use crate::cloud::{FetchError, Reason};

/// Most entries kept.
const RECENT_ERRORS: usize = 20;

/// Failed fetches with the same target, reason and message, for the landing page.
#[derive(Debug, Clone)]
pub(crate) struct RecentError {
    /// Unix seconds, of the latest.
    pub at: f64,
    /// Unix seconds, of the first.
    pub first_at: f64,
    /// How many.
    pub count: u64,
    /// `service/region/project`.
    pub target: String,
    /// The job of the latest.
    pub job_id: String,
    /// Bounded reason.
    pub reason: Reason,
    /// The error, without secrets or request id.
    pub message: String,
}

/// Adds a failed fetch to `errors`: counted with an equal one (same target, reason and message,
/// request ids aside, since each request has its own), else added, dropping the one seen longest
/// ago when [`RECENT_ERRORS`] are kept. One broken endpoint failing 10,000 jobs is one line.
pub(super) fn remember_error(
    errors: &mut VecDeque<RecentError>,
    now: f64,
    target: String,
    job_id: &str,
    e: &FetchError,
) {
    let mut e = e.clone();
    if let FetchError::Api { request_id, .. } = &mut e {
        *request_id = None;
    }
    let reason = e.reason();
    let message = e.to_string();
    let same = errors
        .iter()
        .position(|r| r.reason == reason && r.target == target && r.message == message);
    let mut entry = match same.and_then(|i| errors.remove(i)) {
        Some(r) => r,
        None => RecentError {
            at: now,
            first_at: now,
            count: 0,
            target,
            job_id: String::new(),
            reason,
            message,
        },
    };
    entry.at = now;
    entry.count += 1;
    job_id.clone_into(&mut entry.job_id);
    if errors.len() >= RECENT_ERRORS {
        errors.pop_front();
    }
    errors.push_back(entry);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alike_errors_are_counted_together_and_the_list_stays_bounded() {
        let mut errors = VecDeque::new();
        let api = |rid: &str| FetchError::Api {
            status: 500,
            code: Some("EVS.5000".into()),
            message: Some("boom".into()),
            request_id: Some(rid.into()),
            retry_after: None,
        };
        for (i, rid) in ["r1", "r2", "r3"].into_iter().enumerate() {
            remember_error(
                &mut errors,
                i as f64,
                "evs/r/p".into(),
                &format!("j{i}"),
                &api(rid),
            );
        }
        remember_error(
            &mut errors,
            5.0,
            "evs/r/p".into(),
            "j9",
            &FetchError::Timeout,
        );
        assert_eq!(errors.len(), 2);
        let e = &errors[0];
        assert_eq!(
            (e.count, e.first_at, e.at, e.job_id.as_str()),
            (3, 0.0, 2.0, "j2")
        );
        assert!(!e.message.contains("request id"), "{}", e.message);
        assert_eq!((errors[1].reason, errors[1].count), (Reason::Timeout, 1));
        // The alike one seen again moves to the end.
        remember_error(&mut errors, 6.0, "evs/r/p".into(), "j3", &api("r4"));
        assert_eq!((errors[1].count, errors[1].at), (4, 6.0));
        for i in 0..RECENT_ERRORS + 5 {
            remember_error(
                &mut errors,
                10.0,
                format!("t{i}"),
                "j",
                &FetchError::Timeout,
            );
        }
        assert_eq!(errors.len(), RECENT_ERRORS);
        assert_eq!(errors[0].target, "t5");
    }
}
