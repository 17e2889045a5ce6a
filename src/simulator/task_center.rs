//! The simulator's SDRS task centre: `GET /v1/{project_id}/task-center/failure-jobs` (also
//! under a `/{service}` prefix), signed like the job API. It lists every finished SDRS job of the
//! project that failed, however old, newest first, paged with `offset` and `limit`.
//! docs/simulator.md describes the behaviour.

use std::collections::HashMap;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, Response, StatusCode, Uri};
use axum::routing::get;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::fleet::{JobScript, Outcome, Phase, iso};
use super::{Api, Simulator, answer, json_response};

/// `limit` when none is given, and its largest value, as the SDK documents.
const MAX_LIMIT: u64 = 1000;

/// The query parameters of one authenticated failure-job request, as sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailureJobsQuery {
    /// `limit`.
    pub limit: Option<String>,
    /// `offset`.
    pub offset: Option<String>,
}

#[derive(Default)]
pub(super) struct TaskCenterState {
    queries: Vec<FailureJobsQuery>,
}

/// A rejected query: SDRS answers 400.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("invalid {field} {value:?}: {why}")]
pub(super) struct QueryError {
    field: &'static str,
    value: String,
    why: &'static str,
}

/// `failure_status` from the operation a job type names.
fn failure_status(job_type: &str) -> &'static str {
    const VERBS: [(&str, &str); 11] = [
        ("create", "createFail"),
        ("delete", "deleteFail"),
        ("attach", "attachFail"),
        ("add", "attachFail"),
        ("detach", "detachFail"),
        ("expand", "expandFail"),
        ("resize", "resizeFail"),
        ("start", "startFail"),
        ("stop", "stopFail"),
        ("failover", "failoverFail"),
        ("reverse", "reverseFail"),
    ];
    if job_type.starts_with("reprotect") {
        return "reprotectFail";
    }
    VERBS
        .iter()
        .find(|(verb, _)| job_type.starts_with(verb))
        .map_or("createFail", |(_, status)| status)
}

/// `(resource_type, resource_id)` from the job's entities or its first sub-job's.
fn resource_of(script: &JobScript) -> (&'static str, Option<String>) {
    const KEYS: [(&str, &str); 4] = [
        ("drill_id", "disaster_recovery_drills"),
        ("replication_pair_id", "replications"),
        ("protected_instance_id", "protected_instances"),
        ("server_group_id", "server_groups"),
    ];
    let find = |m: &Map<String, Value>| {
        KEYS.iter().find_map(|(k, ty)| {
            m.get(*k)
                .and_then(Value::as_str)
                .map(|v| (*ty, Some(v.to_string())))
        })
    };
    find(&script.entities)
        .or_else(|| script.sub_jobs.first().and_then(|s| find(&s.entities)))
        .unwrap_or(("server_groups", None))
}

/// The protection group a job touches, for the `server_group_id` filter.
fn server_group(script: &JobScript) -> Option<&str> {
    std::iter::once(&script.entities)
        .chain(script.sub_jobs.iter().map(|s| &s.entities))
        .find_map(|m| m.get("server_group_id").and_then(Value::as_str))
}

/// A failed job as the task centre lists it, with its begin time for sorting.
fn failure_job(script: &JobScript, start_unix: f64) -> Option<(f64, Map<String, Value>)> {
    let Outcome::Fail {
        error_code,
        fail_reason,
    } = &script.outcome
    else {
        return None;
    };
    let (resource_type, resource_id) = resource_of(script);
    let resource_name = script
        .entities
        .get("name")
        .and_then(Value::as_str)
        .map(str::to_string)
        .or_else(|| {
            resource_id.as_deref().map(|id| {
                format!(
                    "{}-{}",
                    resource_type.trim_end_matches('s'),
                    &id[..8.min(id.len())]
                )
            })
        });
    let begin = start_unix + script.start_secs;
    let mut m = Map::new();
    m.insert("job_id".into(), json!(script.job_id));
    m.insert("job_type".into(), json!(script.job_type));
    m.insert("job_status".into(), json!("FAIL"));
    m.insert("begin_time".into(), json!(iso(begin)));
    m.insert(
        "failure_status".into(),
        json!(failure_status(&script.job_type)),
    );
    m.insert("resource_id".into(), json!(resource_id));
    m.insert("resource_name".into(), json!(resource_name));
    m.insert("resource_type".into(), json!(resource_type));
    m.insert("error_code".into(), json!(error_code));
    m.insert("fail_reason".into(), json!(fail_reason));
    Some((begin, m))
}

fn number(field: &'static str, v: Option<&str>, default: u64) -> Result<u64, QueryError> {
    match v {
        None => Ok(default),
        Some(s) => s.parse().map_err(|_| QueryError {
            field,
            value: s.to_string(),
            why: "must be a non-negative integer",
        }),
    }
}

/// The page of failed SDRS jobs of `project_id` at `now_rel` (seconds since the simulator's
/// start), or why the query is refused.
fn query<'a>(
    jobs: impl Iterator<Item = &'a JobScript>,
    project_id: &str,
    params: &HashMap<String, String>,
    now_rel: f64,
    start_unix: f64,
) -> Result<Value, QueryError> {
    let p = |k: &str| params.get(k).map(String::as_str);
    let limit = number("limit", p("limit"), MAX_LIMIT)?;
    if limit > MAX_LIMIT {
        return Err(QueryError {
            field: "limit",
            value: limit.to_string(),
            why: "must be from 0 to 1000",
        });
    }
    let offset = number("offset", p("offset"), 0)?;
    let mut failed: Vec<(f64, &str, Map<String, Value>)> = jobs
        .filter(|j| {
            j.project_id == project_id && j.service == "sdrs" && j.phase(now_rel) == Phase::Done
        })
        .filter(|j| p("server_group_id").is_none_or(|g| server_group(j) == Some(g)))
        .filter_map(|j| failure_job(j, start_unix).map(|(b, m)| (b, j.job_id.as_str(), m)))
        .filter(|(_, _, m)| {
            ["failure_status", "resource_type", "resource_name"]
                .iter()
                .all(|f| p(f).is_none_or(|want| m.get(*f).and_then(Value::as_str) == Some(want)))
        })
        .collect();
    failed.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| b.1.cmp(a.1)));
    let count = failed.len();
    let page: Vec<Value> = failed
        .into_iter()
        .skip(usize::try_from(offset).unwrap_or(usize::MAX))
        .take(limit as usize)
        .map(|(_, _, m)| Value::Object(m))
        .collect();
    Ok(json!({"failure_jobs": page, "count": count}))
}

impl Simulator {
    /// The query of every authenticated failure-job request so far, oldest first; its length
    /// is the number of such requests (faulted ones included).
    pub fn task_center_requests(&self) -> Vec<FailureJobsQuery> {
        self.lock().task_center.queries.clone()
    }

    async fn serve_failure_jobs(
        &self,
        method: Method,
        uri: Uri,
        headers: HeaderMap,
        project_id: String,
        params: HashMap<String, String>,
    ) -> Response<Body> {
        if let Some(denied) = self.admit(&method, &uri, &headers, &project_id) {
            return denied;
        }
        let now_rel = self.now_secs();
        let result = {
            let mut st = self.lock();
            st.task_center.queries.push(FailureJobsQuery {
                limit: params.get("limit").cloned(),
                offset: params.get("offset").cloned(),
            });
            query(
                st.jobs.values().map(|j| &j.script),
                &project_id,
                &params,
                now_rel,
                self.start_unix,
            )
        };
        let fault = self.take_api_fault(Api::TaskCenter);
        let body = match result {
            Ok(body) => body,
            Err(e) => {
                return json_response(
                    StatusCode::BAD_REQUEST,
                    json!({"error": {"code": "SDRS.1000", "message": e.to_string()}}).to_string(),
                );
            }
        };
        let server_error =
            json!({"error": {"code": "SDRS.5000", "message": "Internal server error."}});
        answer(fault, Some(body), &project_id, &server_error).await
    }
}

pub(super) fn routes() -> axum::Router<Simulator> {
    axum::Router::new()
        .route(
            "/v1/{project_id}/task-center/failure-jobs",
            get(list_failure_jobs),
        )
        .route(
            "/{service}/v1/{project_id}/task-center/failure-jobs",
            get(prefixed_list_failure_jobs),
        )
        .route("/_sim/task-center/requests", get(show_requests))
}

async fn list_failure_jobs(
    State(sim): State<Simulator>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    Path(project_id): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Response<Body> {
    sim.serve_failure_jobs(method, uri, headers, project_id, params)
        .await
}

async fn prefixed_list_failure_jobs(
    State(sim): State<Simulator>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    Path((_service, project_id)): Path<(String, String)>,
    Query(params): Query<HashMap<String, String>>,
) -> Response<Body> {
    sim.serve_failure_jobs(method, uri, headers, project_id, params)
        .await
}

async fn show_requests(State(sim): State<Simulator>) -> Json<Vec<FailureJobsQuery>> {
    Json(sim.task_center_requests())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simulator::SubJobScript;

    const START: f64 = 1_800_000_000.0;

    fn sdrs(i: usize, job_type: &str, start_secs: f64, fails: bool) -> JobScript {
        let mut entities = Map::new();
        let key = if job_type.contains("ReplicationPair") {
            "replication_pair_id"
        } else if job_type.contains("ProtectedInstance") {
            "protected_instance_id"
        } else {
            "server_group_id"
        };
        entities.insert(key.into(), json!(format!("res-{i:04}-abcdef")));
        JobScript {
            job_id: format!("job-{i:03}"),
            project_id: "p".into(),
            service: "sdrs".into(),
            job_type: job_type.into(),
            start_secs,
            init_secs: 5.0,
            run_secs: 55.0,
            outcome: if fails {
                Outcome::Fail {
                    error_code: "SDRS.1201".into(),
                    fail_reason: "busy".into(),
                }
            } else {
                Outcome::Success
            },
            entities,
            sub_jobs: Vec::new(),
        }
    }

    fn run(jobs: &[JobScript], q: &[(&str, &str)]) -> Result<Value, QueryError> {
        let params = q
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        query(jobs.iter(), "p", &params, 0.0, START)
    }

    fn job_ids(v: &Value) -> Vec<&str> {
        v["failure_jobs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|j| j["job_id"].as_str())
            .collect()
    }

    #[test]
    fn lists_finished_failed_sdrs_jobs_of_any_age_newest_first() {
        let weeks = -21.0 * 86400.0;
        let mut jobs = vec![
            sdrs(1, "failoverProtectionGroupNoCG", weeks, true),
            sdrs(2, "createReplicationPairNoCG", -3600.0, true),
            sdrs(3, "createProtectedInstanceNoCG", -600.0, true),
            sdrs(4, "reverseProtectionGroupNoCG", -30.0, true), // still running
            sdrs(5, "createProtectionGroupNoCG", -7200.0, false), // succeeded
        ];
        let mut evs = sdrs(6, "extendVolume", -7200.0, true);
        evs.service = "evs".into();
        jobs.push(evs);
        let mut other = sdrs(7, "createProtectionGroupNoCG", -7200.0, true);
        other.project_id = "q".into();
        jobs.push(other);
        let page = run(&jobs, &[]).expect("valid");
        assert_eq!(page["count"], 3);
        assert_eq!(job_ids(&page), ["job-003", "job-002", "job-001"]);
        let old = &page["failure_jobs"][2];
        assert_eq!(old["job_status"], "FAIL");
        assert_eq!(old["failure_status"], "failoverFail");
        assert_eq!(old["resource_type"], "server_groups");
        assert_eq!(old["resource_id"], "res-0001-abcdef");
        assert_eq!(old["resource_name"], "server_group-res-0001");
        assert_eq!(old["error_code"], "SDRS.1201");
        assert_eq!(old["fail_reason"], "busy");
        assert_eq!(old["begin_time"], "2026-12-25T08:00:00.000Z");
        assert_eq!(page["failure_jobs"][1]["resource_type"], "replications");
        assert_eq!(
            page["failure_jobs"][0]["resource_type"],
            "protected_instances"
        );
        assert_eq!(page["failure_jobs"][0]["failure_status"], "createFail");
    }

    #[test]
    fn pages_with_offset_and_limit_and_counts_every_match() {
        let jobs: Vec<JobScript> = (0..25)
            .map(|i| sdrs(i, "createProtectionGroupNoCG", -100.0 - i as f64, true))
            .collect();
        let mut seen = Vec::new();
        for offset in (0..30).step_by(10) {
            let page =
                run(&jobs, &[("limit", "10"), ("offset", &offset.to_string())]).expect("valid");
            assert_eq!(page["count"], 25);
            seen.extend(job_ids(&page).into_iter().map(str::to_string));
        }
        let want: Vec<String> = (0..25).map(|i| format!("job-{i:03}")).collect();
        assert_eq!(seen, want);
        assert_eq!(
            job_ids(&run(&jobs, &[("limit", "0")]).expect("valid")).len(),
            0
        );
        for bad in [
            [("limit", "1001")],
            [("limit", "-1")],
            [("offset", "-1")],
            [("offset", "x")],
        ] {
            assert!(run(&jobs, &bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn filters_by_status_type_name_and_group() {
        let mut failover = sdrs(1, "failoverProtectionGroupNoCG", -500.0, true);
        failover.entities.clear();
        let mut sub = Map::new();
        sub.insert("server_group_id".into(), json!("group-a"));
        failover.sub_jobs.push(SubJobScript {
            job_id: "sub".into(),
            job_type: "failoverProtectionGroupRepNoCG".into(),
            delay_secs: 0.0,
            run_secs: 10.0,
            outcome: Outcome::Success,
            entities: sub,
        });
        let jobs = vec![
            failover,
            sdrs(2, "createReplicationPairNoCG", -500.0, true),
            sdrs(3, "deleteProtectedInstance", -500.0, true),
        ];
        let only = |q: &[(&str, &str)]| {
            let page = run(&jobs, q).expect("valid");
            assert_eq!(page["count"].as_u64(), Some(job_ids(&page).len() as u64));
            job_ids(&page)
                .into_iter()
                .map(str::to_string)
                .collect::<Vec<_>>()
        };
        assert_eq!(only(&[("failure_status", "failoverFail")]), ["job-001"]);
        assert_eq!(only(&[("failure_status", "deleteFail")]), ["job-003"]);
        assert_eq!(only(&[("resource_type", "replications")]), ["job-002"]);
        assert_eq!(only(&[("server_group_id", "group-a")]), ["job-001"]);
        assert_eq!(
            only(&[("resource_name", "protected_instance-res-0003")]),
            ["job-003"]
        );
        assert!(only(&[("resource_type", "disaster_recovery_drills")]).is_empty());
    }
}
