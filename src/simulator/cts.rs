//! The simulator's Cloud Trace Service: `GET /v3/{project_id}/traces` (also under a
//! `/{service}` prefix), signed like the job API. Every job the simulator knows leaves a request
//! trace when it begins and, once finished, a `SystemAction` result trace carrying the job body;
//! seeded noise adds the traces that name no job. docs/simulator.md describes the behaviour and
//! the quirks reproduced.

use std::collections::HashMap;
use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, Response, StatusCode, Uri};
use axum::routing::{get, post, put};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::fleet::{JobScript, Phase, uuid};
use super::{Api, Simulator, answer, json_response};

/// How long after an operation its trace becomes visible, as CTS's (about a minute).
const DEFAULT_DELAY: Duration = Duration::from_secs(60);
/// Largest `limit`.
const MAX_LIMIT: u32 = 200;
/// `limit` when none is given.
const DEFAULT_LIMIT: u32 = 10;
/// How far back `from` may reach.
const RETENTION_MS: i64 = 7 * 24 * 3600 * 1000;
/// Window when `from` and `to` are not given: the last hour.
const DEFAULT_WINDOW_MS: i64 = 3600 * 1000;

/// The query parameters of one authenticated trace request, as sent (before validation), so
/// tests can check the windows and pages a client asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CtsQuery {
    /// `from`, milliseconds.
    pub from: Option<String>,
    /// `to`, milliseconds.
    pub to: Option<String>,
    /// `next`, the previous page's marker.
    pub next: Option<String>,
    /// `limit`.
    pub limit: Option<String>,
}

/// A trace added outside the job lifecycle (noise or given by a test).
struct ExtraTrace {
    project_id: String,
    time_ms: i64,
    body: Map<String, Value>,
}

pub(super) struct CtsState {
    delay: Duration,
    extra: Vec<ExtraTrace>,
    queries: Vec<CtsQuery>,
}

impl Default for CtsState {
    fn default() -> Self {
        Self {
            delay: DEFAULT_DELAY,
            extra: Vec::new(),
            queries: Vec::new(),
        }
    }
}

/// A rejected query: CTS answers 400 `CTS.0003`.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("invalid {field} {value:?}: {why}")]
pub(super) struct QueryError {
    field: &'static str,
    value: String,
    why: &'static str,
}

fn invalid(field: &'static str, value: &str, why: &'static str) -> QueryError {
    QueryError {
        field,
        value: value.to_string(),
        why,
    }
}

/// One trace with its sort key: newest first, then by trace id (descending), so pages are
/// stable when several traces share a millisecond.
#[derive(Debug, Clone)]
struct Trace {
    time_ms: i64,
    trace_id: String,
    body: Map<String, Value>,
}

impl Trace {
    fn key(&self) -> (i64, &str) {
        (self.time_ms, &self.trace_id)
    }
}

/// FNV-1a, so that a job's traces are the same in every run and on every platform.
fn seed_of(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The API operation behind a job type: `batchCreateVolume` → `createVolume`,
/// `failoverProtectionGroupNoCG` → `failoverProtectionGroup`, `addNicNew` →
/// `addProtectedInstanceNic`.
fn trace_name(job_type: &str) -> String {
    let t = match job_type.strip_prefix("batch") {
        Some(rest) => {
            let mut c = rest.chars();
            c.next()
                .map(|f| f.to_lowercase().chain(c).collect())
                .unwrap_or_default()
        }
        None => job_type.to_string(),
    };
    let t = t.trim_end_matches("NoCG").trim_end_matches("New");
    match t {
        "addNic" => "addProtectedInstanceNic".into(),
        other => other.into(),
    }
}

/// Entity keys naming the resource a job works on, with the trace's `resource_type`.
const RESOURCE_KEYS: [(&str, &str); 5] = [
    ("volume_id", "volume"),
    ("server_id", "server"),
    ("protected_instance_id", "protectedInstance"),
    ("replication_pair_id", "replication"),
    ("server_group_id", "protectionGroup"),
];

/// `(resource_type, resource_id)` from the job's entities, or its first sub-job's.
fn resource_of(script: &JobScript) -> Option<(&'static str, String)> {
    let from = |m: &Map<String, Value>| {
        RESOURCE_KEYS
            .iter()
            .find_map(|(k, ty)| m.get(*k).and_then(Value::as_str).map(|v| (*ty, v.into())))
    };
    from(&script.entities).or_else(|| script.sub_jobs.first().and_then(|s| from(&s.entities)))
}

fn api_version(service: &str) -> &'static str {
    if service == "evs" { "v2" } else { "v1" }
}

/// The people behind the simulated calls: (name, console user?).
const USERS: [(&str, bool); 3] = [("terraform", false), ("ops-admin", false), ("alice", true)];
const DOMAIN_ID: &str = "9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d";

fn user(name: &str) -> Value {
    let id = format!(
        "{:016x}{:016x}",
        seed_of(name),
        seed_of(&format!("{name}-id"))
    );
    json!({
        "id": id,
        "name": name,
        "user_name": name,
        "domain": {"id": DOMAIN_ID, "name": "example-domain"},
        "account_id": DOMAIN_ID,
        "access_key_id": format!("HST{:017X}", seed_of(name) >> 4),
        "principal_urn": format!("iam::{DOMAIN_ID}:user:{name}"),
        "principal_id": id,
        "principal_is_root_user": "false",
        "type": "User",
        "invoked_by": ["service.console"],
    })
}

/// A JSON value as a JSON string or as the object itself, as CTS's schema and its own
/// examples disagree.
fn string_or_object(v: Value, as_string: bool) -> Value {
    if as_string {
        Value::String(v.to_string())
    } else {
        v
    }
}

/// `code` as `"202"` or `202`: both are seen.
fn code(status: u16, as_string: bool) -> Value {
    if as_string {
        json!(status.to_string())
    } else {
        json!(status)
    }
}

/// The fields every trace carries, before the kind-specific ones.
fn base_trace(
    trace_id: &str,
    name: &str,
    trace_type: &str,
    service: &str,
    time_ms: i64,
) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("trace_id".into(), json!(trace_id));
    m.insert("trace_name".into(), json!(name));
    m.insert("trace_rating".into(), json!("normal"));
    m.insert("trace_type".into(), json!(trace_type));
    m.insert("service_type".into(), json!(service.to_uppercase()));
    m.insert("time".into(), json!(time_ms));
    m.insert("tracker_name".into(), json!("system"));
    m.insert("api_version".into(), json!(api_version(service)));
    m.insert(
        "endpoint".into(),
        json!(format!("https://{service}.cn-north-4.myhuaweicloud.com")),
    );
    m.insert("enterprise_project_id".into(), json!("0"));
    m.insert("resource_account_id".into(), json!(DOMAIN_ID));
    m.insert("read_only".into(), json!(false));
    m.insert("message".into(), Value::Null);
    m
}

/// The traces a job has left by `now_rel` (seconds since the simulator's start): its request
/// once begun, and its result once finished.
fn job_traces(script: &JobScript, now_rel: f64, start_unix: f64) -> Vec<Trace> {
    if now_rel < script.start_secs {
        return Vec::new();
    }
    let mut rng = fastrand::Rng::with_seed(seed_of(&script.job_id));
    let name = trace_name(&script.job_type);
    let resource = resource_of(script);
    let begin_ms = ((start_unix + script.start_secs) * 1000.0).round() as i64;
    let (user_name, console) = USERS[rng.usize(..USERS.len())];
    let request_id = format!("{:032x}", rng.u128(..));
    let fill_resource = |m: &mut Map<String, Value>| {
        m.insert(
            "resource_type".into(),
            resource.as_ref().map_or(Value::Null, |r| json!(r.0)),
        );
        m.insert(
            "resource_id".into(),
            resource.as_ref().map_or(Value::Null, |r| json!(r.1)),
        );
        m.insert(
            "resource_name".into(),
            script.entities.get("name").cloned().unwrap_or(Value::Null),
        );
        m.insert("request_id".into(), json!(request_id));
        m.insert(
            "operation_id".into(),
            json!(format!("{}{}", name[..1].to_uppercase(), &name[1..])),
        );
    };

    let id = uuid(&mut rng);
    let trace_type = if console { "ConsoleAction" } else { "ApiCall" };
    let mut req = base_trace(&id, &name, trace_type, &script.service, begin_ms);
    fill_resource(&mut req);
    req.insert(
        "request".into(),
        json!(Value::Object(script.entities.clone()).to_string()),
    );
    req.insert(
        "response".into(),
        string_or_object(json!({"job_id": script.job_id}), rng.bool()),
    );
    req.insert("code".into(), code(202, rng.bool()));
    req.insert("user".into(), user(user_name));
    req.insert(
        "source_ip".into(),
        json!(format!("192.0.2.{}", rng.u8(2..250))),
    );
    req.insert("location_info".into(), json!(""));
    req.insert("resource_url".into(), Value::Null);
    let mut out = vec![Trace {
        time_ms: begin_ms,
        trace_id: id,
        body: req,
    }];

    let result_id = uuid(&mut rng);
    let response_as_string = rng.bool();
    let code_as_string = rng.bool();
    if script.phase(now_rel) == Phase::Done {
        let end_rel = script.start_secs + script.init_secs + script.run_secs;
        let end_ms = ((start_unix + end_rel) * 1000.0).round() as i64;
        let mut res = base_trace(&result_id, &name, "SystemAction", &script.service, end_ms);
        fill_resource(&mut res);
        res.insert("request".into(), Value::Null);
        res.insert(
            "response".into(),
            // A finished job's body no longer changes; rendering it at `end_rel` itself could
            // fall just short of the end through rounding.
            string_or_object(script.render(now_rel, start_unix), response_as_string),
        );
        res.insert("code".into(), code(200, code_as_string));
        // CTS leaves the caller of system-initiated records empty.
        res.insert("user".into(), Value::Null);
        res.insert("source_ip".into(), Value::Null);
        out.push(Trace {
            time_ms: end_ms,
            trace_id: result_id,
            body: res,
        });
    }
    out
}

/// `count` traces that name no job, spread over the hour before `around_ms`: purchases that
/// answer an `order_id` (code 200), failed calls (400, 403 or 409 with an error body) and
/// sparse records whose fields are null or missing, in turn.
fn noise(count: usize, seed: u64, around_ms: i64) -> Vec<(i64, Map<String, Value>)> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..count)
        .map(|i| {
            let time_ms = around_ms - rng.i64(0..DEFAULT_WINDOW_MS);
            let id = uuid(&mut rng);
            let m = match i % 3 {
                0 => {
                    let (service, name) = if rng.bool() {
                        ("ecs", "createServer")
                    } else {
                        ("evs", "createVolume")
                    };
                    let mut m = base_trace(&id, name, "ConsoleAction", service, time_ms);
                    let order = format!("CS{:014}{}", rng.u64(..100_000_000_000_000), "XXXX");
                    m.insert(
                        "response".into(),
                        string_or_object(json!({"order_id": order}), rng.bool()),
                    );
                    m.insert("code".into(), code(200, rng.bool()));
                    m.insert("user".into(), user("alice"));
                    m.insert(
                        "request".into(),
                        json!("{\"bssParam\":{\"chargingMode\":\"prePaid\"}}"),
                    );
                    m
                }
                1 => {
                    let (status, service, name, err, msg) = [
                        (
                            400,
                            "evs",
                            "extendVolume",
                            "EVS.2024",
                            "The disk quota is insufficient.",
                        ),
                        (
                            403,
                            "ecs",
                            "deleteServer",
                            "Ecs.0610",
                            "Policy doesn't allow ecs:cloudServers:delete to be performed.",
                        ),
                        (
                            409,
                            "sdrs",
                            "failoverProtectionGroup",
                            "SDRS.1201",
                            "The protection group is not in a state that allows this operation.",
                        ),
                    ][rng.usize(..3)];
                    let mut m = base_trace(&id, name, "ApiCall", service, time_ms);
                    m.insert("trace_rating".into(), json!("warning"));
                    m.insert(
                        "response".into(),
                        string_or_object(
                            json!({"error": {"code": err, "message": msg}}),
                            rng.bool(),
                        ),
                    );
                    m.insert("code".into(), code(status, rng.bool()));
                    m.insert("user".into(), user("ops-admin"));
                    m.insert("resource_id".into(), json!(uuid(&mut rng)));
                    m
                }
                _ => {
                    // A sparse record: only what CTS always fills, the rest null or absent.
                    let mut m = Map::new();
                    m.insert("trace_id".into(), json!(id));
                    m.insert("trace_name".into(), json!("deleteMetadata"));
                    m.insert("trace_type".into(), json!("SystemAction"));
                    m.insert("service_type".into(), json!("ECS"));
                    m.insert("time".into(), json!(time_ms));
                    m.insert("response".into(), Value::Null);
                    m.insert("code".into(), Value::Null);
                    m.insert("user".into(), Value::Null);
                    m.insert("resource_id".into(), Value::Null);
                    m
                }
            };
            (time_ms, m)
        })
        .collect()
}

/// Every trace of `project_id` that exists at `now_rel`, visible or not yet, unsorted.
fn all_traces<'a>(
    jobs: impl Iterator<Item = &'a JobScript>,
    extra: &[ExtraTrace],
    project_id: &str,
    now_rel: f64,
    start_unix: f64,
) -> Vec<Trace> {
    let mut out: Vec<Trace> = jobs
        .filter(|j| j.project_id == project_id)
        .flat_map(|j| job_traces(j, now_rel, start_unix))
        .collect();
    out.extend(
        extra
            .iter()
            .filter(|e| e.project_id == project_id)
            .map(|e| Trace {
                time_ms: e.time_ms,
                trace_id: e
                    .body
                    .get("trace_id")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                body: e.body.clone(),
            }),
    );
    out
}

fn millis(field: &'static str, v: &str) -> Result<i64, QueryError> {
    if v.len() != 13 || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid(
            field,
            v,
            "must be a 13-digit UTC timestamp in milliseconds",
        ));
    }
    v.parse()
        .map_err(|_| invalid(field, v, "must be a 13-digit UTC timestamp in milliseconds"))
}

/// Answers a trace query over `traces` at `now_ms`, with traces recorded `delay_ms` after they
/// happen: the page body, or why the query is refused.
fn query(
    mut traces: Vec<Trace>,
    params: &HashMap<String, String>,
    now_ms: i64,
    delay_ms: i64,
) -> Result<Value, QueryError> {
    let p = |k: &str| params.get(k).map(String::as_str);
    match p("trace_type") {
        Some("system") => {}
        Some(v) => return Err(invalid("trace_type", v, "only system traces are served")),
        None => return Err(invalid("trace_type", "", "is required")),
    }
    let limit = match p("limit") {
        None => DEFAULT_LIMIT,
        Some(v) => match v.parse::<u32>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
            _ => return Err(invalid("limit", v, "must be an integer from 1 to 200")),
        },
    };
    let (from, to) = match (p("from"), p("to")) {
        (None, None) => (now_ms - DEFAULT_WINDOW_MS, now_ms),
        (Some(f), Some(t)) => (millis("from", f)?, millis("to", t)?),
        (Some(f), None) => return Err(invalid("from", f, "must be given with to")),
        (None, Some(t)) => return Err(invalid("to", t, "must be given with from")),
    };
    if from >= to {
        return Err(invalid("from", &from.to_string(), "must be before to"));
    }
    if from < now_ms - RETENTION_MS {
        return Err(invalid(
            "from",
            &from.to_string(),
            "is more than 7 days ago; only the last 7 days can be queried",
        ));
    }
    // Only recorded traces exist for a query; record_time follows the recording delay.
    traces.retain(|t| t.time_ms + delay_ms <= now_ms);
    for t in &mut traces {
        t.body
            .insert("record_time".into(), json!(t.time_ms + delay_ms));
    }
    traces.sort_by(|a, b| b.key().cmp(&a.key()));
    if let Some(id) = p("trace_id") {
        traces.retain(|t| t.trace_id == id);
    }
    let anchor = match p("next") {
        None => None,
        Some(id) => match traces.iter().find(|t| t.trace_id == id) {
            Some(t) => Some((t.time_ms, t.trace_id.clone())),
            None => return Err(invalid("next", id, "is not the id of a recorded trace")),
        },
    };
    let field_is = |t: &Trace, field: &str, want: &str| {
        t.body.get(field).and_then(Value::as_str) == Some(want)
    };
    let filters: Vec<(&str, &str)> = [
        "service_type",
        "trace_name",
        "resource_id",
        "resource_name",
        "resource_type",
        "trace_rating",
    ]
    .into_iter()
    .filter_map(|f| p(f).map(|v| (f, v)))
    .collect();
    let user = p("user");
    let mut matching = traces.into_iter().filter(|t| {
        from < t.time_ms
            && t.time_ms < to
            && anchor
                .as_ref()
                .is_none_or(|(ms, id)| t.key() < (*ms, id.as_str()))
            && filters.iter().all(|(f, v)| field_is(t, f, v))
            && user.is_none_or(|u| {
                t.body
                    .get("user")
                    .and_then(|v| v.get("name"))
                    .and_then(Value::as_str)
                    == Some(u)
            })
    });
    let page: Vec<Trace> = matching.by_ref().take(limit as usize).collect();
    let more = matching.next().is_some();
    let marker = if more {
        page.last().map_or(Value::Null, |t| json!(t.trace_id))
    } else {
        Value::Null
    };
    let count = page.len();
    Ok(json!({
        "traces": page.into_iter().map(|t| Value::Object(t.body)).collect::<Vec<_>>(),
        "meta_data": {"count": count, "marker": marker},
    }))
}

impl Simulator {
    /// Sets how long after an operation its trace becomes visible (default 60 s): a query
    /// whose window ended before then misses it, a later overlapping one finds it.
    pub fn set_trace_delay(&self, delay: Duration) {
        self.lock().cts.delay = delay;
    }

    /// Adds `count` seeded traces to `project_id` that name no job, spread over the hour before
    /// the simulator's current time: purchases answering an `order_id`, failed calls (400, 403,
    /// 409) with error bodies, and sparse records with null or missing fields.
    pub(crate) fn add_noise_traces(&self, project_id: &str, count: usize, seed: u64) {
        let now_ms = self.now_unix_ms();
        let traces = noise(count, seed, now_ms);
        self.lock()
            .cts
            .extra
            .extend(traces.into_iter().map(|(time_ms, body)| ExtraTrace {
                project_id: project_id.to_string(),
                time_ms,
                body,
            }));
    }

    /// Adds traces exactly as given (each needs a string `trace_id` and an integer `time` in
    /// milliseconds; anything else is served as is); returns how many were taken.
    pub fn add_traces(&self, project_id: &str, traces: Vec<Value>) -> usize {
        let mut st = self.lock();
        let before = st.cts.extra.len();
        for t in traces {
            let Value::Object(body) = t else { continue };
            let Some(time_ms) = body.get("time").and_then(Value::as_i64) else {
                continue;
            };
            if body.get("trace_id").and_then(Value::as_str).is_none() {
                continue;
            }
            st.cts.extra.push(ExtraTrace {
                project_id: project_id.to_string(),
                time_ms,
                body,
            });
        }
        st.cts.extra.len() - before
    }

    /// The query of every authenticated trace request so far, oldest first; its length is the
    /// number of such requests (faulted ones included).
    pub fn cts_requests(&self) -> Vec<CtsQuery> {
        self.lock().cts.queries.clone()
    }

    /// The traces of `project_id` a query at the simulator's current time can see, newest
    /// first, whatever their age.
    pub(crate) fn visible_traces(&self, project_id: &str) -> Vec<Value> {
        let now_rel = self.now_secs();
        let now_ms = self.now_unix_ms();
        let st = self.lock();
        let delay_ms = st.cts.delay.as_millis() as i64;
        let mut traces = all_traces(
            st.jobs.values().map(|j| &j.script),
            &st.cts.extra,
            project_id,
            now_rel,
            self.start_unix,
        );
        traces.retain(|t| t.time_ms + delay_ms <= now_ms);
        traces.sort_by(|a, b| b.key().cmp(&a.key()));
        traces
            .into_iter()
            .map(|mut t| {
                t.body
                    .insert("record_time".into(), json!(t.time_ms + delay_ms));
                Value::Object(t.body)
            })
            .collect()
    }

    async fn serve_traces(
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
        let now_ms = self.now_unix_ms();
        let result = {
            let mut st = self.lock();
            st.cts.queries.push(CtsQuery {
                from: params.get("from").cloned(),
                to: params.get("to").cloned(),
                next: params.get("next").cloned(),
                limit: params.get("limit").cloned(),
            });
            let traces = all_traces(
                st.jobs.values().map(|j| &j.script),
                &st.cts.extra,
                &project_id,
                now_rel,
                self.start_unix,
            );
            query(traces, &params, now_ms, st.cts.delay.as_millis() as i64)
        };
        let fault = self.take_api_fault(Api::Cts);
        let body = match result {
            Ok(body) => body,
            Err(e) => return cts_error(StatusCode::BAD_REQUEST, "CTS.0003", &e.to_string()),
        };
        let server_error = json!({"error_code": "CTS.0005", "error_msg": "Data read exception."});
        answer(fault, Some(body), &project_id, &server_error).await
    }
}

/// CTS's error shape: top-level `error_code` and `error_msg`.
fn cts_error(status: StatusCode, code: &str, msg: &str) -> Response<Body> {
    json_response(
        status,
        json!({"error_code": code, "error_msg": msg}).to_string(),
    )
}

pub(super) fn routes() -> axum::Router<Simulator> {
    axum::Router::new()
        .route("/v3/{project_id}/traces", get(list_traces))
        .route(
            "/{service}/v3/{project_id}/traces",
            get(prefixed_list_traces),
        )
        .route("/_sim/cts/requests", get(show_requests))
        .route("/_sim/cts/delay", put(put_delay))
        .route("/_sim/cts/noise", post(post_noise))
        .route("/_sim/cts/traces", get(show_traces).post(post_traces))
}

async fn list_traces(
    State(sim): State<Simulator>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    Path(project_id): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Response<Body> {
    sim.serve_traces(method, uri, headers, project_id, params)
        .await
}

async fn prefixed_list_traces(
    State(sim): State<Simulator>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    Path((_service, project_id)): Path<(String, String)>,
    Query(params): Query<HashMap<String, String>>,
) -> Response<Body> {
    sim.serve_traces(method, uri, headers, project_id, params)
        .await
}

async fn show_requests(State(sim): State<Simulator>) -> Json<Vec<CtsQuery>> {
    Json(sim.cts_requests())
}

#[derive(Deserialize)]
struct Delay {
    seconds: f64,
}

async fn put_delay(State(sim): State<Simulator>, Json(d): Json<Delay>) -> StatusCode {
    match Duration::try_from_secs_f64(d.seconds) {
        Ok(delay) => {
            sim.set_trace_delay(delay);
            StatusCode::NO_CONTENT
        }
        Err(_) => StatusCode::BAD_REQUEST,
    }
}

#[derive(Deserialize)]
struct Noise {
    #[serde(default = "default_project")]
    project_id: String,
    count: usize,
    #[serde(default)]
    seed: u64,
}

fn default_project() -> String {
    super::DEMO_PROJECT_ID.to_string()
}

async fn post_noise(State(sim): State<Simulator>, Json(n): Json<Noise>) -> StatusCode {
    sim.add_noise_traces(&n.project_id, n.count.min(100_000), n.seed);
    StatusCode::NO_CONTENT
}

#[derive(Deserialize)]
struct Traces {
    #[serde(default = "default_project")]
    project_id: String,
    traces: Vec<Value>,
}

#[derive(Deserialize)]
struct Project {
    #[serde(default = "default_project")]
    project_id: String,
}

async fn show_traces(State(sim): State<Simulator>, Query(p): Query<Project>) -> Json<Vec<Value>> {
    Json(sim.visible_traces(&p.project_id))
}

async fn post_traces(State(sim): State<Simulator>, Json(t): Json<Traces>) -> Json<Value> {
    let taken = sim.add_traces(&t.project_id, t.traces);
    Json(json!({"added": taken}))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simulator::Outcome;

    const START: f64 = 1_800_000_000.0;
    const START_MS: i64 = 1_800_000_000_000;

    fn job(i: usize, service: &str, job_type: &str, start_secs: f64) -> JobScript {
        let mut entities = Map::new();
        let key = match service {
            "evs" => "volume_id",
            "sdrs" => "server_group_id",
            _ => "server_id",
        };
        entities.insert(key.into(), json!(format!("res-{i}")));
        JobScript {
            job_id: format!("job-{i:03}"),
            project_id: "p".into(),
            service: service.into(),
            job_type: job_type.into(),
            start_secs,
            init_secs: 5.0,
            run_secs: 55.0,
            outcome: Outcome::Success,
            entities,
            sub_jobs: Vec::new(),
        }
    }

    /// Thirty jobs, one a minute over the last half hour before `now_rel` = 3600.
    fn fleet() -> Vec<JobScript> {
        (0..30)
            .map(|i| {
                let (svc, ty) = [
                    ("evs", "extendVolume"),
                    ("sdrs", "failoverProtectionGroupNoCG"),
                    ("ecs", "createServer"),
                ][i % 3];
                job(i, svc, ty, 1800.0 + 60.0 * i as f64)
            })
            .collect()
    }

    fn params(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        let mut m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        m.entry("trace_type".into()).or_insert("system".into());
        m
    }

    fn run(jobs: &[JobScript], now_rel: f64, q: &[(&str, &str)]) -> Result<Value, QueryError> {
        let now_ms = START_MS + (now_rel * 1000.0) as i64;
        let traces = all_traces(jobs.iter(), &[], "p", now_rel, START);
        query(traces, &params(q), now_ms, 60_000)
    }

    fn ids(page: &Value) -> Vec<String> {
        page["traces"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|t| t["trace_id"].as_str().unwrap_or_default().to_string())
                    .collect()
            })
            .unwrap_or_default()
    }

    #[test]
    fn pages_follow_markers_newest_first_until_marker_is_null() {
        let jobs = fleet();
        let now = 3600.0;
        let mut seen = Vec::new();
        let mut times = Vec::new();
        let mut next: Option<String> = None;
        let mut pages = 0;
        loop {
            let mut q = vec![("limit", "7")];
            if let Some(n) = &next {
                q.push(("next", n.as_str()));
            }
            let page = run(&jobs, now, &q).expect("valid query");
            pages += 1;
            let count = page["meta_data"]["count"].as_u64().unwrap_or(0);
            assert_eq!(count as usize, ids(&page).len());
            seen.extend(ids(&page));
            for t in page["traces"].as_array().into_iter().flatten() {
                times.push(t["time"].as_i64().unwrap_or(0));
            }
            match &page["meta_data"]["marker"] {
                Value::Null => break,
                Value::String(m) => {
                    assert_eq!(Some(m), seen.last(), "the marker is the page's last trace");
                    next = Some(m.clone());
                }
                other => panic!("marker {other}"),
            }
            assert!(pages < 20);
        }
        // 30 requests (each job began) + 29 results (the last job finishes at 3600 but its
        // result is not recorded yet, nor is the request of a job begun after 3540).
        let all = all_traces(jobs.iter(), &[], "p", now, START);
        let visible = all
            .iter()
            .filter(|t| t.time_ms + 60_000 <= START_MS + 3_600_000)
            .count();
        assert_eq!(seen.len(), visible);
        assert_eq!(pages, visible.div_ceil(7));
        let unique: std::collections::HashSet<_> = seen.iter().collect();
        assert_eq!(unique.len(), seen.len(), "no trace on two pages");
        assert!(times.windows(2).all(|w| w[0] >= w[1]), "newest first");
    }

    #[test]
    fn windows_are_exclusive_and_bounded_to_seven_days() {
        let jobs = fleet();
        let now_ms = START_MS + 3_600_000;
        // Job 0's request is at exactly START + 1800 s.
        let t0 = START_MS + 1_800_000;
        let around = |from: i64, to: i64| {
            let page = run(
                &jobs,
                3600.0,
                &[
                    ("from", &from.to_string()),
                    ("to", &to.to_string()),
                    ("limit", "200"),
                ],
            )
            .expect("valid");
            page["traces"]
                .as_array()
                .map(|a| a.iter().any(|t| t["time"] == json!(t0)))
                .unwrap_or(false)
        };
        assert!(around(t0 - 1, t0 + 1));
        assert!(!around(t0, t0 + 1000), "from is exclusive");
        assert!(!around(t0 - 1000, t0), "to is exclusive");
        // Default window: the last hour, which here covers every job.
        let all = run(&jobs, 3600.0, &[("limit", "200")]).expect("valid");
        assert_eq!(ids(&all).len(), 59);
        let old = (now_ms - RETENTION_MS - 1).to_string();
        let err = run(
            &jobs,
            3600.0,
            &[("from", &old), ("to", &now_ms.to_string())],
        );
        assert_eq!(err.map_err(|e| e.field), Err("from"));
        let edge = (now_ms - RETENTION_MS).to_string();
        assert!(
            run(
                &jobs,
                3600.0,
                &[("from", &edge), ("to", &now_ms.to_string())]
            )
            .is_ok()
        );
        for bad in [
            vec![("from", "1800000000000")],
            vec![("to", "1800000000000")],
            vec![("from", "180000000000"), ("to", "1800000000000")],
            vec![("from", "1800000003000"), ("to", "1800000002000")],
            vec![("limit", "0")],
            vec![("limit", "201")],
            vec![("limit", "ten")],
            vec![("trace_type", "data")],
            vec![("next", "no-such-trace")],
        ] {
            assert!(run(&jobs, 3600.0, &bad).is_err(), "{bad:?} must be refused");
        }
        assert_eq!(
            ids(&run(&jobs, 3600.0, &[("limit", "200")]).expect("valid")).len(),
            ids(&run(
                &jobs,
                3600.0,
                &[
                    ("limit", "200"),
                    ("from", &(now_ms - 3_600_000).to_string()),
                    ("to", &now_ms.to_string())
                ]
            )
            .expect("valid"))
            .len(),
        );
        let mut no_type = params(&[]);
        no_type.remove("trace_type");
        assert!(query(Vec::new(), &no_type, now_ms, 0).is_err());
    }

    #[test]
    fn a_trace_becomes_visible_only_after_the_recording_delay() {
        let jobs = vec![job(1, "evs", "createVolume", 1000.0)];
        let begin = START_MS + 1_000_000;
        let window = |now_rel: f64, from: i64, to: i64| {
            run(
                &jobs,
                now_rel,
                &[("from", &from.to_string()), ("to", &to.to_string())],
            )
            .expect("valid")
        };
        // Queried 30 s after the call, for a window ending then: not recorded yet.
        let early = window(1030.0, begin - 60_000, begin + 30_000);
        assert!(ids(&early).is_empty());
        // The next, overlapping query a minute later finds it, stamped before its window.
        let later = window(1090.0, begin - 1, begin + 90_000);
        assert_eq!(ids(&later).len(), 1);
        assert_eq!(later["traces"][0]["time"], json!(begin));
        assert_eq!(later["traces"][0]["record_time"], json!(begin + 60_000));
        // Finished at 1060 s: the result is recorded at 1120 s.
        assert_eq!(ids(&window(1119.0, begin - 1, begin + 200_000)).len(), 1);
        assert_eq!(ids(&window(1120.0, begin - 1, begin + 200_000)).len(), 2);
    }

    #[test]
    fn a_job_leaves_a_request_and_a_result_with_its_body() {
        let jobs: Vec<JobScript> = (0..40)
            .map(|i| job(i, "sdrs", "failoverProtectionGroupNoCG", 100.0))
            .collect();
        let all = all_traces(jobs.iter(), &[], "p", 1000.0, START);
        assert_eq!(all.len(), 80);
        let (mut strings, mut objects, mut int_codes, mut str_codes) = (0, 0, 0, 0);
        for j in &jobs {
            let mine: Vec<&Trace> = all
                .iter()
                .filter(|t| {
                    let r = &t.body["response"];
                    let v = match r {
                        Value::String(s) => serde_json::from_str(s).unwrap_or(Value::Null),
                        other => other.clone(),
                    };
                    v["job_id"] == json!(j.job_id)
                })
                .collect();
            assert_eq!(mine.len(), 2, "{}", j.job_id);
            let (req, res) = if mine[0].body["trace_type"] == "SystemAction" {
                (mine[1], mine[0])
            } else {
                (mine[0], mine[1])
            };
            assert!(matches!(
                req.body["trace_type"].as_str(),
                Some("ApiCall" | "ConsoleAction")
            ));
            assert_eq!(req.body["trace_name"], "failoverProtectionGroup");
            assert_eq!(req.body["service_type"], "SDRS");
            assert_eq!(
                req.body["resource_id"],
                json!(j.entities["server_group_id"])
            );
            assert_eq!(req.time_ms, START_MS + 100_000);
            assert_eq!(res.time_ms, START_MS + 160_000);
            assert_eq!(res.body["user"], Value::Null);
            let body = match &res.body["response"] {
                Value::String(s) => serde_json::from_str(s).unwrap_or(Value::Null),
                other => other.clone(),
            };
            assert_eq!(body, j.render(160.0, START));
            match &req.body["response"] {
                Value::String(_) => strings += 1,
                _ => objects += 1,
            }
            match &req.body["code"] {
                Value::String(s) if s == "202" => str_codes += 1,
                Value::Number(n) if n.as_u64() == Some(202) => int_codes += 1,
                other => panic!("code {other}"),
            }
        }
        assert!(
            strings > 5 && objects > 5,
            "{strings} strings, {objects} objects"
        );
        assert!(int_codes > 5 && str_codes > 5);
        // Running jobs have no result yet; future jobs no trace at all.
        assert_eq!(all_traces(jobs.iter(), &[], "p", 120.0, START).len(), 40);
        assert!(all_traces(jobs.iter(), &[], "p", 50.0, START).is_empty());
        assert!(all_traces(jobs.iter(), &[], "other", 1000.0, START).is_empty());
        // Deterministic: the same traces every time.
        let again = all_traces(jobs.iter(), &[], "p", 1000.0, START);
        assert_eq!(
            all.iter().map(|t| &t.body).collect::<Vec<_>>(),
            again.iter().map(|t| &t.body).collect::<Vec<_>>()
        );
    }

    #[test]
    fn trace_names_follow_the_operation() {
        assert_eq!(trace_name("batchCreateVolume"), "createVolume");
        assert_eq!(trace_name("extendVolume"), "extendVolume");
        assert_eq!(
            trace_name("createProtectionGroupNoCG"),
            "createProtectionGroup"
        );
        assert_eq!(trace_name("addNicNew"), "addProtectedInstanceNic");
        assert_eq!(trace_name("createServer"), "createServer");
    }

    #[test]
    fn filters_select_by_service_name_resource_and_user() {
        let jobs = fleet();
        let page = |q: &[(&str, &str)]| {
            let mut q = q.to_vec();
            q.push(("limit", "200"));
            run(&jobs, 3600.0, &q).expect("valid")
        };
        let evs = page(&[("service_type", "EVS")]);
        assert_eq!(ids(&evs).len(), 20);
        assert!(
            evs["traces"]
                .as_array()
                .into_iter()
                .flatten()
                .all(|t| t["service_type"] == "EVS")
        );
        assert!(
            ids(&page(&[("service_type", "evs")])).is_empty(),
            "upper case only"
        );
        assert_eq!(ids(&page(&[("trace_name", "createServer")])).len(), 19);
        assert_eq!(ids(&page(&[("resource_id", "res-4")])).len(), 2);
        let users = page(&[("user", "alice")]);
        assert!(!ids(&users).is_empty());
        assert!(
            users["traces"]
                .as_array()
                .into_iter()
                .flatten()
                .all(|t| t["user"]["name"] == "alice")
        );
        let first = ids(&page(&[]))[3].clone();
        assert_eq!(ids(&page(&[("trace_id", &first)])), vec![first]);
    }

    #[test]
    fn noise_names_no_job_and_carries_the_quirks() {
        let a = noise(30, 5, START_MS);
        let b = noise(30, 5, START_MS);
        assert_eq!(a, b, "seeded");
        let text = |v: &Value| match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let mut orders = 0;
        let mut failures = 0;
        let mut sparse = 0;
        for (time, m) in &a {
            assert!((START_MS - DEFAULT_WINDOW_MS..=START_MS).contains(time));
            assert_eq!(m["time"], json!(time));
            let response = m.get("response").map(text).unwrap_or_default();
            assert!(!response.contains("job_id"));
            let code = m.get("code").map(text).unwrap_or_default();
            if response.contains("order_id") {
                orders += 1;
                assert_eq!(code, "200");
            } else if m["response"].is_null() {
                sparse += 1;
                assert!(m.get("request").is_none() && m["user"].is_null());
            } else {
                failures += 1;
                assert!(["400", "403", "409"].contains(&code.as_str()), "{code}");
                assert!(response.contains("\"error\""));
            }
        }
        assert_eq!((orders, failures, sparse), (10, 10, 10));
    }

    #[test]
    fn api_faults_count_down() {
        let sim = Simulator::with_start(START);
        sim.set_api_fault(Api::Cts, Some(super::super::Fault::MalformedJson), Some(2));
        assert!(sim.take_api_fault(Api::TaskCenter).is_none());
        assert!(sim.take_api_fault(Api::Cts).is_some());
        assert!(sim.take_api_fault(Api::Cts).is_some());
        assert!(sim.take_api_fault(Api::Cts).is_none());
        sim.set_api_fault(Api::Cts, Some(super::super::Fault::MalformedJson), None);
        assert!(sim.take_api_fault(Api::Cts).is_some());
        sim.set_api_fault(Api::Cts, None, None);
        assert!(sim.take_api_fault(Api::Cts).is_none());
    }

    #[test]
    fn added_traces_are_served_as_given() {
        let sim = Simulator::new();
        let time = sim.now_unix_ms() - 120_000;
        let taken = sim.add_traces(
            "p",
            vec![
                json!({"trace_id": "t1", "time": time, "code": 202}),
                json!({"trace_id": "t2"}),
                json!("not an object"),
            ],
        );
        assert_eq!(taken, 1);
        let visible = sim.visible_traces("p");
        assert_eq!(visible.len(), 1);
        assert_eq!(visible[0]["code"], 202);
        assert_eq!(visible[0]["record_time"], time + 60_000);
    }
}
