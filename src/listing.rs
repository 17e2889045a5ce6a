//! The job listing behind the `/jobs` page: which tracked jobs match a filter, in the order an
//! operator wants to read them (failed, then stuck, then running by age, then succeeded), and at
//! most a bounded number of them, so 100,000 tracked jobs never make a 100 MB page.

use std::borrow::Cow;

use serde::Serialize;

use crate::cloud::{Job, Status};
use crate::scope::Scope;

/// Most rows a listing returns, whatever is asked.
pub const MAX_ROWS: usize = 1000;

/// A non-terminal job older than this (by `begin_time`) is listed as stuck.
pub const STUCK_AFTER_SECONDS: f64 = 3600.0;

/// `status` of a job not fetched successfully yet.
pub const PENDING: &str = "PENDING";

/// What to list. Empty fields match everything.
#[derive(Debug, Clone, Default)]
pub struct Query {
    /// Only this service.
    pub cloud_service: Option<String>,
    /// Only this region.
    pub cloud_region: Option<String>,
    /// Only this project.
    pub project_id: Option<String>,
    /// Only these statuses (as reported, e.g. `FAIL`), or `stuck`.
    pub status: Vec<String>,
    /// At most this many rows (capped at [`MAX_ROWS`]).
    pub limit: usize,
}

/// Where a job sorts: the groups in page order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Group {
    /// Finished with FAIL.
    Failed,
    /// Not finished and older than [`STUCK_AFTER_SECONDS`].
    Stuck,
    /// Not finished (or not fetched yet).
    Running,
    /// Finished with SUCCESS.
    Succeeded,
}

impl Group {
    /// The group's name, as in the JSON and the CSS class.
    pub fn as_str(self) -> &'static str {
        match self {
            Group::Failed => "failed",
            Group::Stuck => "stuck",
            Group::Running => "running",
            Group::Succeeded => "succeeded",
        }
    }
}

/// One tracked job, as the poller holds it.
pub struct Item<'a> {
    /// Its target's service, region and project.
    pub scope: &'a Scope,
    /// Its id.
    pub job_id: &'a str,
    /// The last decoded body (finished jobs keep only part of it, or only their last state, from
    /// which it is rebuilt).
    pub job: Option<Cow<'a, Job>>,
    /// Whether the last fetch succeeded.
    pub fetch_ok: bool,
}

/// One listed job.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Row {
    /// Service, region and project (flat in JSON).
    #[serde(flatten)]
    pub scope: Scope,
    /// Job id.
    pub job_id: String,
    /// `job_type`, empty when unknown.
    pub job_type: String,
    /// `status` as reported, or [`PENDING`].
    pub status: String,
    /// Where it sorts.
    pub group: Group,
    /// `error_code` of a failed job.
    pub error_code: Option<String>,
    /// `fail_reason` of a failed job.
    pub fail_reason: Option<String>,
    /// (entity_type, entity_id) pairs; finished jobs other than failed ones keep none.
    pub entities: Vec<(String, String)>,
    /// `begin_time`, Unix seconds.
    pub begin: Option<f64>,
    /// `end_time`, Unix seconds.
    pub end: Option<f64>,
    /// Seconds since `begin_time`.
    pub age_seconds: Option<f64>,
    /// Whether the last fetch succeeded.
    pub fetch_ok: bool,
    /// Where the job comes from (`config`, `api`, ...), filled in by the caller.
    pub source: &'static str,
}

/// The rows of a listing and how many matched.
#[derive(Debug, Clone, Serialize)]
pub struct Listing {
    /// Unix time the listing was made.
    pub now: f64,
    /// Jobs that matched the filter.
    pub matched: usize,
    /// The first of them, in page order.
    pub rows: Vec<Row>,
}

fn group(job: Option<&Job>, now: f64) -> Group {
    let Some(job) = job else {
        return Group::Running;
    };
    match job.status {
        Some(Status::Fail) => Group::Failed,
        Some(Status::Success) => Group::Succeeded,
        _ if job.begin.is_some_and(|b| now - b > STUCK_AFTER_SECONDS) => Group::Stuck,
        _ => Group::Running,
    }
}

impl Query {
    fn matches(&self, item: &Item<'_>, group: Group) -> bool {
        let s = item.scope;
        let eq = |want: &Option<String>, have: &str| want.as_deref().is_none_or(|w| w == have);
        if !(eq(&self.cloud_service, &s.cloud_service)
            && eq(&self.cloud_region, &s.cloud_region)
            && eq(&self.project_id, &s.project_id))
        {
            return false;
        }
        if self.status.is_empty() {
            return true;
        }
        let status = item
            .job
            .as_deref()
            .and_then(|j| j.status.as_ref())
            .map_or(PENDING, Status::as_str);
        self.status
            .iter()
            .any(|s| s.eq_ignore_ascii_case(status) || (s == "stuck" && group == Group::Stuck))
    }
}

/// The sort key within a group: failed and succeeded jobs newest end first, the others oldest
/// begin first (the longest-running on top). Unknown times sort last.
fn order_key(group: Group, job: Option<&Job>) -> (Group, f64) {
    let time = match group {
        Group::Failed | Group::Succeeded => job.and_then(|j| j.end.or(j.begin)).map(|t| -t),
        Group::Stuck | Group::Running => job.and_then(|j| j.begin),
    };
    (group, time.unwrap_or(f64::INFINITY))
}

/// The jobs of `items` that match `query`, in page order, at most `query.limit` of them.
pub fn select<'a>(items: impl Iterator<Item = Item<'a>>, query: &Query, now: f64) -> Listing {
    let mut matched: Vec<((Group, f64), Item<'a>)> = items
        .filter_map(|item| {
            let g = group(item.job.as_deref(), now);
            query
                .matches(&item, g)
                .then(|| (order_key(g, item.job.as_deref()), item))
        })
        .collect();
    let total = matched.len();
    let limit = query.limit.min(MAX_ROWS);
    let cmp = |a: &((Group, f64), Item<'a>), b: &((Group, f64), Item<'a>)| {
        a.0.0
            .cmp(&b.0.0)
            .then(a.0.1.total_cmp(&b.0.1))
            .then_with(|| a.1.job_id.cmp(b.1.job_id))
    };
    if matched.len() > limit && limit > 0 {
        matched.select_nth_unstable_by(limit - 1, cmp);
    }
    matched.truncate(limit);
    matched.sort_unstable_by(cmp);
    let rows = matched
        .into_iter()
        .map(|((group, _), item)| {
            let job = item.job.as_deref();
            let failed = group == Group::Failed;
            Row {
                scope: item.scope.clone(),
                job_id: item.job_id.to_string(),
                job_type: job.and_then(|j| j.job_type.clone()).unwrap_or_default(),
                status: job
                    .and_then(|j| j.status.as_ref())
                    .map_or(PENDING, Status::as_str)
                    .to_string(),
                group,
                error_code: job.and_then(|j| j.error_code.clone()).filter(|_| failed),
                fail_reason: job.and_then(|j| j.fail_reason.clone()).filter(|_| failed),
                entities: job.map(|j| j.entities.clone()).unwrap_or_default(),
                begin: job.and_then(|j| j.begin),
                end: job.and_then(|j| j.end),
                age_seconds: job.and_then(|j| j.begin).map(|b| (now - b).max(0.0)),
                fetch_ok: item.fetch_ok,
                source: "",
            }
        })
        .collect();
    Listing {
        now,
        matched: total,
        rows,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(status: &str, begin: f64, end: Option<f64>) -> Job {
        Job {
            job_type: Some("createVolume".into()),
            status: Some(status.into()),
            begin: Some(begin),
            end,
            error_code: (status == "FAIL").then(|| "EVS.1".into()),
            fail_reason: (status == "FAIL").then(|| "no capacity".into()),
            ..Job::default()
        }
    }

    #[test]
    fn failed_then_stuck_then_running_by_age_then_succeeded() {
        let evs = Scope::new("evs", "r", "p");
        let now = 100_000.0;
        let jobs = [
            ("ok-old", Some(job("SUCCESS", 10.0, Some(20.0)))),
            ("run-new", Some(job("RUNNING", now - 60.0, None))),
            ("fail-old", Some(job("FAIL", 10.0, Some(30.0)))),
            ("stuck", Some(job("RUNNING", now - 7200.0, None))),
            ("run-older", Some(job("INIT", now - 600.0, None))),
            ("fail-new", Some(job("FAIL", 50.0, Some(90.0)))),
            ("pending", None),
            ("ok-new", Some(job("SUCCESS", 10.0, Some(99.0)))),
        ];
        let items = || {
            jobs.iter().map(|(id, j)| Item {
                scope: &evs,
                job_id: id,
                job: j.as_ref().map(Cow::Borrowed),
                fetch_ok: j.is_some(),
            })
        };
        let all = Query {
            limit: MAX_ROWS,
            ..Query::default()
        };
        let l = select(items(), &all, now);
        let ids: Vec<&str> = l.rows.iter().map(|r| r.job_id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "fail-new",
                "fail-old",
                "stuck",
                "run-older",
                "run-new",
                "pending",
                "ok-new",
                "ok-old"
            ]
        );
        assert_eq!(l.matched, 8);
        assert_eq!(l.rows[0].error_code.as_deref(), Some("EVS.1"));
        assert_eq!(l.rows[5].status, PENDING);

        let two = Query {
            limit: 2,
            ..all.clone()
        };
        let l = select(items(), &two, now);
        assert_eq!((l.matched, l.rows.len()), (8, 2));
        assert_eq!(l.rows[1].job_id, "fail-old");

        let stuck_or_ok = Query {
            status: vec!["stuck".into(), "success".into()],
            ..all.clone()
        };
        let ids: Vec<String> = select(items(), &stuck_or_ok, now)
            .rows
            .into_iter()
            .map(|r| r.job_id)
            .collect();
        assert_eq!(ids, ["stuck", "ok-new", "ok-old"]);

        let other = Query {
            cloud_service: Some("sdrs".into()),
            ..all
        };
        assert_eq!(select(items(), &other, now).matched, 0);
    }

    #[test]
    fn the_limit_is_capped() {
        let evs = Scope::new("evs", "r", "p");
        let ids: Vec<String> = (0..MAX_ROWS + 10).map(|i| format!("j{i}")).collect();
        let items = ids.iter().map(|id| Item {
            scope: &evs,
            job_id: id,
            job: None,
            fetch_ok: false,
        });
        let q = Query {
            limit: usize::MAX,
            ..Query::default()
        };
        let l = select(items, &q, 0.0);
        assert_eq!((l.matched, l.rows.len()), (MAX_ROWS + 10, MAX_ROWS));
    }
}
