//! A faithful stand-in for Huawei Cloud's job API, used by `demo`, `simulate`, the tests and the
//! benchmarks; docs/simulator.md describes its behaviour in full.
//!
//! It serves `GET /v1/{project_id}/jobs/{job_id}` (optionally under a `/{service}` prefix, so
//! one simulator can stand in for several endpoints), Cloud Trace Service's trace list
//! (`cts`) and SDRS's task centre (`task_center`), verifies SDK-HMAC-SHA256 signatures the way
//! API Gateway does (401 with an APIG-shaped body on a bad signature, an unknown key or an
//! `X-Sdk-Date` more than 15 minutes off), plays scripted lifecycles, and injects faults per job
//! or globally. A small control API under `/_sim/` lets out-of-process tests steer it.
//!
//! Connections are served by hand (hyper-util) rather than `axum::serve` so that a handler can
//! ask for its connection to be reset: the socket is set to linger 0 and dropped, which sends
//! a TCP RST, as a crashing load balancer does.

mod cts;
pub mod fleet;
mod iam;
mod task_center;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, Request, Response, StatusCode, Uri, header};
use axum::response::IntoResponse;
use axum::routing::{get, post, put};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::cloud::signer;
pub use fleet::{FleetShape, JobScript, Outcome, SubJobScript};

/// Allowed distance between `X-Sdk-Date` and the simulator's clock, as upstream.
pub(crate) const MAX_CLOCK_SKEW: Duration = Duration::from_secs(15 * 60);

/// Access key the demo and `simulate` accept by default. Not a secret: it only opens the
/// simulator.
pub const DEMO_ACCESS_KEY: &str = "DEMOACCESSKEY0000001";
/// Secret key paired with [`DEMO_ACCESS_KEY`].
pub const DEMO_SECRET_KEY: &str = "demo-secret-key-for-the-simulator-only";
/// Project id of generated fleets.
pub const DEMO_PROJECT_ID: &str = "0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e";

/// Errors of the simulator.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// Address asked for.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
}

/// Result alias for this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A fault the simulator can inject.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Fault {
    /// Answer normally, after a delay.
    Latency {
        /// Delay in milliseconds.
        ms: u64,
    },
    /// An error status (500, 502, 503, …) with a Huawei-shaped body.
    Status {
        /// HTTP status.
        status: u16,
    },
    /// 429 with `APIGW.0308`, optionally with `Retry-After`.
    Throttle {
        /// Seconds for `Retry-After`.
        retry_after: Option<u64>,
    },
    /// A 200 whose body is not JSON.
    MalformedJson,
    /// A 200 whose JSON is cut in the middle.
    TruncatedJson,
    /// A 502 HTML page, as a gateway sends.
    HtmlError,
    /// The connection is reset before any response.
    Reset,
    /// A 200 whose body arrives in small pieces with a pause between them.
    SlowBody {
        /// Pause between 16-byte pieces, in milliseconds.
        ms_per_chunk: u64,
    },
    /// 404 with an `itemNotFound` body.
    NotFound,
    /// A 200 with a valid job padded beyond this many bytes.
    Oversized {
        /// Body size.
        bytes: usize,
    },
    /// A 200 with a valid job whose `job_id` is this one instead of the one asked for, as a
    /// misrouting cache or proxy would answer.
    WrongJobId {
        /// The `job_id` the body reports.
        job_id: String,
    },
    /// 401 `APIGW.0301` although the request was signed or carried a valid token, as when a
    /// token's scope or a policy does not cover the job API, or a proxy refuses the request.
    Unauthorized,
}

/// A fault applied to every job with some probability.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GlobalFault {
    /// The fault.
    pub fault: Fault,
    /// Probability per request, 0 to 1.
    #[serde(default = "one")]
    pub probability: f64,
}

fn one() -> f64 {
    1.0
}

/// An upstream list API the simulator serves besides the job API, for per-API faults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Api {
    /// Cloud Trace Service, `GET /v3/{project_id}/traces`.
    Cts,
    /// SDRS task centre, `GET /v1/{project_id}/task-center/failure-jobs`.
    TaskCenter,
}

/// A fault set on an [`Api`], for some requests or until cleared.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct ApiFault {
    /// The fault; `None` clears it.
    pub fault: Option<Fault>,
    /// Requests it still applies to; `None`: until cleared.
    #[serde(default)]
    pub times: Option<u64>,
}

#[derive(Clone)]
struct Credential {
    secret_key: String,
    security_token: Option<String>,
    /// Temporary keys stop working at this Unix time.
    expires_at: Option<f64>,
}

struct Job {
    script: JobScript,
    fault: Option<Fault>,
    /// Requests the fault still applies to; None: until cleared.
    fault_left: Option<u64>,
    requests: u64,
}

struct SimState {
    credentials: HashMap<String, Credential>,
    jobs: HashMap<String, Job>,
    global_faults: Vec<GlobalFault>,
    offset_secs: f64,
    requests_total: u64,
    rejected_total: u64,
    rng: fastrand::Rng,
    /// Seconds added to the real clock when checking `X-Sdk-Date` and sending `Date`.
    clock_skew_secs: f64,
    iam: iam::IamState,
    api_faults: HashMap<Api, ApiFault>,
    cts: cts::CtsState,
    task_center: task_center::TaskCenterState,
}

/// The simulator. Cheap to clone; clones share state.
#[derive(Clone)]
pub struct Simulator {
    state: Arc<Mutex<SimState>>,
    start_unix: f64,
}

impl Default for Simulator {
    fn default() -> Self {
        Self::new()
    }
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

impl Simulator {
    /// An empty simulator that accepts the demo credentials.
    pub fn new() -> Self {
        Self::with_start(unix_now())
    }

    /// Like [`Simulator::new`], with job times relative to `start_unix` rather than to now;
    /// tests use it to make every `begin_time` and `end_time` known in advance.
    pub fn with_start(start_unix: f64) -> Self {
        let sim = Self {
            state: Arc::new(Mutex::new(SimState {
                credentials: HashMap::new(),
                jobs: HashMap::new(),
                global_faults: Vec::new(),
                offset_secs: 0.0,
                requests_total: 0,
                rejected_total: 0,
                rng: fastrand::Rng::with_seed(1),
                clock_skew_secs: 0.0,
                iam: iam::IamState::default(),
                api_faults: HashMap::new(),
                cts: cts::CtsState::default(),
                task_center: task_center::TaskCenterState::default(),
            })),
            start_unix,
        };
        sim.add_credential(DEMO_ACCESS_KEY, DEMO_SECRET_KEY, None);
        sim
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SimState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Accepts requests signed with this key pair (and, if given, this security token).
    pub fn add_credential(&self, access_key: &str, secret_key: &str, security_token: Option<&str>) {
        self.lock().credentials.insert(
            access_key.to_string(),
            Credential {
                secret_key: secret_key.to_string(),
                security_token: security_token.map(str::to_string),
                expires_at: None,
            },
        );
    }

    /// Stops accepting an access key.
    pub fn remove_credential(&self, access_key: &str) {
        self.lock().credentials.remove(access_key);
    }

    /// Makes the simulator's clock run `seconds` ahead of the real one (negative: behind), for
    /// the `X-Sdk-Date` check and the `Date` header, as a cloud seen from a skewed host.
    pub fn set_clock_skew(&self, seconds: f64) {
        self.lock().clock_skew_secs = seconds;
    }

    /// Adds or replaces jobs.
    pub fn add_jobs(&self, scripts: impl IntoIterator<Item = JobScript>) {
        let mut st = self.lock();
        for script in scripts {
            st.jobs.insert(
                script.job_id.clone(),
                Job {
                    script,
                    fault: None,
                    fault_left: None,
                    requests: 0,
                },
            );
        }
    }

    /// Sets or clears the fault of one job.
    pub fn set_job_fault(&self, job_id: &str, fault: Option<Fault>) {
        if let Some(j) = self.lock().jobs.get_mut(job_id) {
            j.fault = fault;
            j.fault_left = None;
        }
    }

    /// Makes the next `times` requests for a job fail with `fault`, then answers normally: a
    /// transient failure, such as a 503 that a retry gets past.
    pub fn set_job_fault_times(&self, job_id: &str, fault: Fault, times: u64) {
        if let Some(j) = self.lock().jobs.get_mut(job_id) {
            j.fault = Some(fault);
            j.fault_left = Some(times);
        }
    }

    /// Replaces the global faults.
    pub fn set_global_faults(&self, faults: Vec<GlobalFault>) {
        self.lock().global_faults = faults;
    }

    /// Sets (or, with `fault: None`, clears) the fault of a list API; with `times`, only the
    /// next `times` authenticated requests get it, then the API answers normally again.
    pub fn set_api_fault(&self, api: Api, fault: Option<Fault>, times: Option<u64>) {
        self.lock()
            .api_faults
            .insert(api, ApiFault { fault, times });
    }

    /// Takes the fault the next request to `api` gets, counting it down.
    fn take_api_fault(&self, api: Api) -> Option<Fault> {
        let mut st = self.lock();
        let f = st.api_faults.get_mut(&api)?;
        match f.times {
            Some(0) => None,
            Some(n) => {
                f.times = Some(n - 1);
                f.fault.clone()
            }
            None => f.fault.clone(),
        }
    }

    /// Simulated Unix time in milliseconds: the clock list APIs (traces, failure jobs) use.
    fn now_unix_ms(&self) -> i64 {
        ((self.start_unix + self.now_secs()) * 1000.0).round() as i64
    }

    /// Moves simulated time forward (lifecycles only; signatures use the real clock).
    pub fn advance(&self, by: Duration) {
        self.lock().offset_secs += by.as_secs_f64();
    }

    /// Seconds of simulated time since the simulator started.
    pub fn now_secs(&self) -> f64 {
        unix_now() - self.start_unix + self.lock().offset_secs
    }

    /// Unix time of the simulator's start; job times are relative to it.
    pub fn start_unix(&self) -> f64 {
        self.start_unix
    }

    /// Requests answered for `job_id` (after authentication).
    pub fn requests_for(&self, job_id: &str) -> u64 {
        self.lock().jobs.get(job_id).map_or(0, |j| j.requests)
    }

    /// All job requests that passed authentication.
    pub fn requests_total(&self) -> u64 {
        self.lock().requests_total
    }

    /// Requests rejected with 401.
    pub fn rejected_total(&self) -> u64 {
        self.lock().rejected_total
    }

    /// The status a job reports now.
    pub fn status_of(&self, job_id: &str) -> Option<&'static str> {
        let t = self.now_secs();
        self.lock().jobs.get(job_id).map(|j| j.script.status(t))
    }

    /// The body a job reports now, exactly as served.
    pub(crate) fn body_of(&self, job_id: &str) -> Option<serde_json::Value> {
        let t = self.now_secs();
        let start = self.start_unix;
        self.lock()
            .jobs
            .get(job_id)
            .map(|j| j.script.render(t, start))
    }

    /// The axum router of the job API and the control API.
    fn router(&self) -> axum::Router {
        axum::Router::new()
            .route("/v1/{project_id}/jobs/{job_id}", get(job_handler))
            .route(
                "/{service}/v1/{project_id}/jobs/{job_id}",
                get(prefixed_job_handler),
            )
            .route("/_sim/jobs", get(list_jobs).post(add_jobs))
            .route("/_sim/jobs/{job_id}", get(show_job))
            .route("/_sim/jobs/{job_id}/fault", put(put_job_fault))
            .route("/_sim/faults", put(put_global_faults))
            .route("/_sim/advance", post(advance))
            .route("/_sim/faults/{api}", put(put_api_fault))
            .merge(iam::routes())
            .merge(cts::routes())
            .merge(task_center::routes())
            .with_state(self.clone())
    }

    /// Binds `addr` (use port 0 for any).
    pub async fn bind(&self, addr: &str) -> Result<(TcpListener, SocketAddr)> {
        let bind_err = |source| Error::Bind {
            addr: addr.to_string(),
            source,
        };
        let listener = TcpListener::bind(addr).await.map_err(bind_err)?;
        let local = listener.local_addr().map_err(bind_err)?;
        Ok((listener, local))
    }

    /// Serves on `listener` until `shutdown`.
    pub async fn serve(self, listener: TcpListener, shutdown: CancellationToken) {
        let router = self.router();
        loop {
            let stream = tokio::select! {
                _ = shutdown.cancelled() => return,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        tracing::debug!(error = %e, "simulator accept failed");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                },
            };
            let router = router.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                let sock = Arc::new(socket2::SockRef::from(&stream).try_clone().ok());
                let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                    let router = router.clone();
                    let sock = Arc::clone(&sock);
                    async move {
                        use tower::ServiceExt as _;
                        let resp = router
                            .oneshot(req.map(Body::new))
                            .await
                            .unwrap_or_else(|never| match never {});
                        if resp.extensions().get::<ResetConnection>().is_some() {
                            if let Some(s) = sock.as_ref() {
                                // Linger 0 turns the close into an RST.
                                let _ = s.set_linger(Some(Duration::ZERO));
                            }
                            return Err(ResetConnection);
                        }
                        Ok::<_, ResetConnection>(resp)
                    }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc);
                tokio::select! {
                    _ = conn => {}
                    _ = shutdown.cancelled() => {}
                }
            });
        }
    }

    /// Binds and serves in a background task; returns the bound address.
    pub async fn spawn(&self, addr: &str, shutdown: CancellationToken) -> Result<SocketAddr> {
        let (listener, local) = self.bind(addr).await?;
        tokio::spawn(self.clone().serve(listener, shutdown));
        Ok(local)
    }

    fn authenticate(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        project_id: &str,
    ) -> Option<Response<Body>> {
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        if let Some(token) = header("x-auth-token") {
            let now = unix_now();
            return match self.lock().iam.check_token(token, project_id, now) {
                Ok(()) => None,
                Err(msg) => Some(apig_error(
                    StatusCode::UNAUTHORIZED,
                    "APIGW.0301",
                    &format!("Incorrect IAM authentication information: {msg}"),
                )),
            };
        }
        let Some(auth) = header("authorization").and_then(signer::parse_authorization) else {
            return Some(apig_error(
                StatusCode::UNAUTHORIZED,
                "APIGW.0301",
                "Incorrect IAM authentication information: Authorization header is missing or malformed",
            ));
        };
        let deny = |msg: &str| {
            Some(apig_error(
                StatusCode::UNAUTHORIZED,
                "APIGW.0301",
                &format!("Incorrect IAM authentication information: {msg}"),
            ))
        };
        let Some(date) = header("x-sdk-date") else {
            return deny("x-sdk-date is missing");
        };
        let Ok(when) = chrono::NaiveDateTime::parse_from_str(date, signer::DATE_FORMAT) else {
            return deny("x-sdk-date is not in the format YYYYMMDDTHHMMSSZ");
        };
        let server_now = unix_now() + self.lock().clock_skew_secs;
        let skew = (when.and_utc().timestamp() as f64 - server_now).abs();
        if skew > MAX_CLOCK_SKEW.as_secs_f64() {
            return Some(apig_error(
                StatusCode::UNAUTHORIZED,
                "APIGW.0303",
                "Incorrect app authentication information: the request time differs from the server time by more than 15 minutes",
            ));
        }
        let cred = self.lock().credentials.get(auth.access).cloned();
        let Some(cred) = cred else {
            return deny("the access key does not exist");
        };
        if cred.expires_at.is_some_and(|t| t <= unix_now()) {
            return deny("the temporary access key has expired");
        }
        for required in ["host", "x-sdk-date"] {
            if !auth.signed_headers.contains(&required) {
                return deny(&format!("{required} must be signed"));
            }
        }
        if let Some(token) = &cred.security_token
            && (header("x-security-token") != Some(token.as_str())
                || !auth.signed_headers.contains(&"x-security-token"))
        {
            return deny("the security token is missing or invalid");
        }
        let mut signed: Vec<(String, String)> = Vec::new();
        for name in &auth.signed_headers {
            let values: Vec<&str> = headers
                .get_all(*name)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect();
            if values.is_empty() {
                return deny(&format!("signed header {name} is missing"));
            }
            signed.push((name.to_string(), values.join(",")));
        }
        let path = percent_encoding::percent_decode_str(uri.path()).decode_utf8_lossy();
        let query: Vec<(String, String)> = uri
            .query()
            .unwrap_or("")
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                let d = |s: &str| {
                    percent_encoding::percent_decode_str(s)
                        .decode_utf8_lossy()
                        .into_owned()
                };
                (d(k), d(v))
            })
            .collect();
        let canonical = signer::canonical_request(&signer::Request {
            method: method.as_str(),
            path: &path,
            query: &query,
            headers: &signed,
            body: b"",
        });
        let sts = signer::string_to_sign(date, &canonical);
        if signer::verify(&cred.secret_key, &sts, auth.signature) {
            None
        } else {
            deny("verify aksk signature fail")
        }
    }

    /// Authenticates a request to any signed API; on refusal counts it and answers a 401 whose
    /// `Date` shows the simulator's (possibly skewed) clock.
    fn admit(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        project_id: &str,
    ) -> Option<Response<Body>> {
        let mut denied = self.authenticate(method, uri, headers, project_id)?;
        let skew = {
            let mut st = self.lock();
            st.rejected_total += 1;
            st.clock_skew_secs
        };
        if skew != 0.0 {
            let server =
                chrono::Utc::now() + chrono::Duration::milliseconds((skew * 1000.0) as i64);
            if let Ok(v) = server
                .format("%a, %d %b %Y %H:%M:%S GMT")
                .to_string()
                .parse()
            {
                denied.headers_mut().insert(header::DATE, v);
            }
        }
        Some(denied)
    }

    async fn serve_job(
        &self,
        method: Method,
        uri: Uri,
        headers: HeaderMap,
        project_id: String,
        job_id: String,
    ) -> Response<Body> {
        if let Some(denied) = self.admit(&method, &uri, &headers, &project_id) {
            return denied;
        }
        let t = self.now_secs();
        let (body, fault) = {
            let mut st = self.lock();
            st.requests_total += 1;
            let mut fault = None;
            let globals = st.global_faults.clone();
            for g in globals {
                if st.rng.f64() < g.probability {
                    fault = Some(g.fault);
                    break;
                }
            }
            let start = self.start_unix;
            match st.jobs.get_mut(&job_id) {
                Some(j) if j.script.project_id == project_id => {
                    j.requests += 1;
                    let own = match j.fault_left {
                        Some(0) => None,
                        Some(n) => {
                            j.fault_left = Some(n - 1);
                            j.fault.clone()
                        }
                        None => j.fault.clone(),
                    };
                    (Some(j.script.render(t, start)), own.or(fault))
                }
                _ => (None, fault),
            }
        };
        let server_error =
            json!({"error": {"code": "EVS.5000", "message": "Internal server error."}});
        answer(fault, body, &job_id, &server_error).await
    }
}

/// Answers `body` (or 404 naming `missing` when there is none) as `fault` distorts it; a
/// `Status` fault answers `server_error`.
async fn answer(
    fault: Option<Fault>,
    body: Option<serde_json::Value>,
    missing: &str,
    server_error: &serde_json::Value,
) -> Response<Body> {
    if let Some(Fault::Latency { ms }) = &fault {
        tokio::time::sleep(Duration::from_millis(*ms)).await;
    }
    let Some(body) = body else {
        return not_found(missing);
    };
    let json = body.to_string();
    match fault {
        None | Some(Fault::Latency { .. }) => json_response(StatusCode::OK, json),
        Some(Fault::Status { status }) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            json_response(status, server_error.to_string())
        }
        Some(Fault::Throttle { retry_after }) => {
            let mut r = apig_error(
                StatusCode::TOO_MANY_REQUESTS,
                "APIGW.0308",
                "The throttling threshold has been reached: policy user over ratelimit,limit:200,time:1 second",
            );
            if let Some(s) = retry_after
                && let Ok(v) = s.to_string().parse()
            {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
            r
        }
        Some(Fault::MalformedJson) => json_response(StatusCode::OK, "{\"status\": SUCCESS,}".into()),
        Some(Fault::TruncatedJson) => {
            // Cut by bytes, as a broken connection would, even inside a UTF-8 character.
            let mut bytes = json.into_bytes();
            bytes.truncate(bytes.len() / 2);
            let mut r = json_response(StatusCode::OK, String::new());
            *r.body_mut() = Body::from(bytes);
            r
        }
        Some(Fault::HtmlError) => Response::builder()
            .status(StatusCode::BAD_GATEWAY)
            .header(header::CONTENT_TYPE, "text/html")
            .body(Body::from(
                "<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway</h1></center></body></html>",
            ))
            .unwrap_or_default(),
        Some(Fault::Reset) => {
            let mut r = Response::new(Body::empty());
            r.extensions_mut().insert(ResetConnection);
            r
        }
        Some(Fault::SlowBody { ms_per_chunk }) => {
            let chunks: Vec<Bytes> = json
                .as_bytes()
                .chunks(16)
                .map(Bytes::copy_from_slice)
                .collect();
            let delay = Duration::from_millis(ms_per_chunk);
            let stream = futures_util::stream::iter(chunks).then(move |c| async move {
                tokio::time::sleep(delay).await;
                Ok::<_, std::convert::Infallible>(c)
            });
            let mut r = Response::new(Body::from_stream(stream));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("application/json;charset=UTF-8"),
            );
            r
        }
        Some(Fault::NotFound) => not_found(missing),
        Some(Fault::WrongJobId { job_id }) => {
            let mut v = body;
            if let Some(m) = v.as_object_mut() {
                m.insert("job_id".into(), json!(job_id));
            }
            json_response(StatusCode::OK, v.to_string())
        }
        Some(Fault::Unauthorized) => apig_error(
            StatusCode::UNAUTHORIZED,
            "APIGW.0301",
            "Incorrect IAM authentication information: the token does not allow this request",
        ),
        Some(Fault::Oversized { bytes }) => {
            let mut v = body;
            if let Some(m) = v.as_object_mut() {
                m.insert("padding".into(), json!("x".repeat(bytes)));
            }
            json_response(StatusCode::OK, v.to_string())
        }
    }
}

use futures_util::StreamExt as _;

/// Marks a response whose connection must be reset instead of answered.
#[derive(Debug, Clone, Copy)]
struct ResetConnection;

impl std::fmt::Display for ResetConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection reset by the simulator")
    }
}

impl std::error::Error for ResetConnection {}

fn request_id() -> String {
    format!("{:032x}", fastrand::u128(..))
}

fn json_response(status: StatusCode, body: String) -> Response<Body> {
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json;charset=UTF-8"),
    );
    if let Ok(v) = request_id().parse() {
        h.insert("x-request-id", v);
    }
    r
}

/// API Gateway's error shape: top-level `error_code`, `error_msg`, `request_id`.
fn apig_error(status: StatusCode, code: &str, msg: &str) -> Response<Body> {
    json_response(
        status,
        json!({"error_code": code, "error_msg": msg, "request_id": request_id()}).to_string(),
    )
}

fn not_found(job_id: &str) -> Response<Body> {
    json_response(
        StatusCode::NOT_FOUND,
        json!({"itemNotFound": {"code": 404, "message": format!("Job {job_id} could not be found.")}})
            .to_string(),
    )
}

async fn job_handler(
    State(sim): State<Simulator>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    Path((project_id, job_id)): Path<(String, String)>,
) -> Response<Body> {
    sim.serve_job(method, uri, headers, project_id, job_id)
        .await
}

async fn prefixed_job_handler(
    State(sim): State<Simulator>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    Path((_service, project_id, job_id)): Path<(String, String, String)>,
) -> Response<Body> {
    sim.serve_job(method, uri, headers, project_id, job_id)
        .await
}

#[derive(Serialize)]
struct JobListing {
    job_id: String,
    project_id: String,
    service: String,
    job_type: String,
    status: &'static str,
    requests: u64,
}

async fn list_jobs(State(sim): State<Simulator>) -> impl IntoResponse {
    let t = sim.now_secs();
    let st = sim.lock();
    let mut jobs: Vec<JobListing> = st
        .jobs
        .values()
        .map(|j| JobListing {
            job_id: j.script.job_id.clone(),
            project_id: j.script.project_id.clone(),
            service: j.script.service.clone(),
            job_type: j.script.job_type.clone(),
            status: j.script.status(t),
            requests: j.requests,
        })
        .collect();
    jobs.sort_by(|a, b| a.job_id.cmp(&b.job_id));
    Json(
        json!({"jobs": jobs, "requests_total": st.requests_total, "rejected_total": st.rejected_total}),
    )
}

async fn show_job(State(sim): State<Simulator>, Path(job_id): Path<String>) -> Response<Body> {
    match sim.body_of(&job_id) {
        Some(body) => json_response(StatusCode::OK, body.to_string()),
        None => not_found(&job_id),
    }
}

async fn add_jobs(State(sim): State<Simulator>, Json(scripts): Json<Vec<JobScript>>) -> StatusCode {
    sim.add_jobs(scripts);
    StatusCode::NO_CONTENT
}

async fn put_job_fault(
    State(sim): State<Simulator>,
    Path(job_id): Path<String>,
    Json(fault): Json<Option<Fault>>,
) -> StatusCode {
    if sim.lock().jobs.contains_key(&job_id) {
        sim.set_job_fault(&job_id, fault);
        StatusCode::NO_CONTENT
    } else {
        StatusCode::NOT_FOUND
    }
}

async fn put_global_faults(
    State(sim): State<Simulator>,
    Json(faults): Json<Vec<GlobalFault>>,
) -> StatusCode {
    sim.set_global_faults(faults);
    StatusCode::NO_CONTENT
}

#[derive(Deserialize)]
struct Advance {
    seconds: f64,
}

async fn advance(State(sim): State<Simulator>, Json(a): Json<Advance>) -> StatusCode {
    if !(a.seconds.is_finite() && a.seconds >= 0.0) {
        return StatusCode::BAD_REQUEST;
    }
    sim.advance(Duration::from_secs_f64(a.seconds));
    StatusCode::NO_CONTENT
}

async fn put_api_fault(
    State(sim): State<Simulator>,
    Path(api): Path<String>,
    Json(f): Json<ApiFault>,
) -> StatusCode {
    let api = match api.as_str() {
        "cts" => Api::Cts,
        "task-center" => Api::TaskCenter,
        _ => return StatusCode::NOT_FOUND,
    };
    sim.set_api_fault(api, f.fault, f.times);
    StatusCode::NO_CONTENT
}
