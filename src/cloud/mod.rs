//! The Huawei Cloud client: one shared HTTPS client, AK/SK signing, job fetches, and the
//! mapping of every failure onto the bounded `reason` label set of docs/metrics.md.

pub mod auth;
mod conn;
pub mod cts;
pub mod model;
pub mod signer;
pub(crate) mod task_center;

use std::hash::BuildHasher as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HOST, HeaderMap, HeaderName, HeaderValue};

use crate::scope::Scope;
use crate::secret::{Account, AccountAuth, Credentials, Secret, SecretRef};
use crate::telemetry::Telemetry;
use auth::{Material, Provider};
pub use model::{Job, Status};

/// Bounded reasons a fetch fails, the `reason` label of `huaweicloud_job_fetch_errors_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reason {
    /// The request did not finish within `request_timeout` (or the scrape's deadline).
    Timeout,
    /// Connecting failed, or the connection broke.
    Connect,
    /// HTTP 429 or an `APIGW.0308` throttling code.
    Throttled,
    /// HTTP 401.
    Unauthorized,
    /// HTTP 403.
    Forbidden,
    /// HTTP 404.
    NotFound,
    /// Any other 4xx.
    ClientError,
    /// 5xx or an unexpected status.
    ServerError,
    /// A body that could not be decoded, or was too large.
    Decode,
    /// Credentials could not be used to sign.
    Auth,
}

impl Reason {
    /// Every reason, in label order.
    pub const ALL: [Reason; 10] = [
        Reason::Timeout,
        Reason::Connect,
        Reason::Throttled,
        Reason::Unauthorized,
        Reason::Forbidden,
        Reason::NotFound,
        Reason::ClientError,
        Reason::ServerError,
        Reason::Decode,
        Reason::Auth,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Timeout => "timeout",
            Reason::Connect => "connect",
            Reason::Throttled => "throttled",
            Reason::Unauthorized => "unauthorized",
            Reason::Forbidden => "forbidden",
            Reason::NotFound => "not_found",
            Reason::ClientError => "client_error",
            Reason::ServerError => "server_error",
            Reason::Decode => "decode",
            Reason::Auth => "auth",
        }
    }
}

/// Why fetching a job failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FetchError {
    /// No answer in time.
    #[error("request timed out")]
    Timeout,
    /// Transport failure.
    #[error("connection failed: {0}")]
    Connect(String),
    /// The cloud answered with an error status.
    #[error("HTTP {status} {}: {}{}", code.as_deref().unwrap_or("(no code)"), message.as_deref().unwrap_or("(no message)"), request_id.as_deref().map(|r| format!(" (request id {r})")).unwrap_or_default())]
    Api {
        /// HTTP status.
        status: u16,
        /// The error code from the body.
        code: Option<String>,
        /// The message from the body.
        message: Option<String>,
        /// `X-Request-Id`.
        request_id: Option<String>,
        /// `Retry-After`, when sent.
        retry_after: Option<Duration>,
    },
    /// A 200 whose body is not a job.
    #[error("cannot decode response: {0}")]
    Decode(String),
    /// Signing was impossible (e.g. credentials not usable in a header).
    #[error("cannot sign request: {0}")]
    Auth(String),
}

impl FetchError {
    /// The bounded label for this failure.
    pub fn reason(&self) -> Reason {
        match self {
            FetchError::Timeout => Reason::Timeout,
            FetchError::Connect(_) => Reason::Connect,
            FetchError::Decode(_) => Reason::Decode,
            FetchError::Auth(_) => Reason::Auth,
            FetchError::Api { status, code, .. } => {
                let throttle_code = code
                    .as_deref()
                    .is_some_and(|c| c.ends_with(".0308") && c.starts_with("APIG"));
                match status {
                    429 => Reason::Throttled,
                    _ if throttle_code => Reason::Throttled,
                    401 => Reason::Unauthorized,
                    403 => Reason::Forbidden,
                    404 => Reason::NotFound,
                    400..=499 => Reason::ClientError,
                    _ => Reason::ServerError,
                }
            }
        }
    }
}

/// Result alias for this module.
pub type Result<T, E = FetchError> = std::result::Result<T, E>;

/// How failed job fetches are retried: connection failures, 5xx and throttling (429 or
/// `APIGW.0308`) only, with exponential backoff and jitter. Other 4xx, timeouts and bodies that
/// do not decode are final (a 401 is retried once with fresh credentials, apart from this, when
/// the provider allows a refresh: see `auth::Provider::invalidate`).
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// Backoff before the first retry; doubled each time, up to `max_backoff`. The sleep is
    /// drawn uniformly between half of it and all of it.
    pub base_backoff: Duration,
    /// Largest backoff.
    pub max_backoff: Duration,
    /// A `Retry-After` is honoured up to this.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_retries: 2,
            base_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(2),
            max_retry_after: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    /// No retries.
    pub fn none() -> Self {
        Self {
            max_retries: 0,
            ..Self::default()
        }
    }

    /// The sleep before retry number `attempt + 1` after `err`, or None if `err` is final.
    pub fn delay(&self, err: &FetchError, attempt: u32) -> Option<Duration> {
        if attempt >= self.max_retries {
            return None;
        }
        let exp = self
            .base_backoff
            .saturating_mul(1u32 << attempt.min(16))
            .min(self.max_backoff);
        let jittered = exp.mul_f64(0.5 + fastrand::f64() * 0.5);
        match (err, err.reason()) {
            (FetchError::Connect(_), _) => Some(jittered),
            (FetchError::Api { retry_after, .. }, Reason::Throttled) => Some(
                retry_after
                    .map_or(jittered, |r| r.min(self.max_retry_after))
                    .max(jittered),
            ),
            (FetchError::Api { .. }, Reason::ServerError) => Some(jittered),
            _ => None,
        }
    }
}

/// Paces the requests to one endpoint; the poller's per-endpoint rate limiter implements it,
/// and slows down when told the cloud throttled.
pub trait Pacer: Send + Sync {
    /// Waits for the next request slot.
    fn acquire(&self) -> BoxFuture<'_, ()>;
    /// The cloud answered 429 / `APIGW.0308`.
    fn throttled(&self);
    /// The cloud answered (anything but throttling).
    fn answered(&self);
}

/// What a fetch knows about its caller: the deadline no retry sleep may outlive, the pacer
/// retries go through, and how much of a job body to keep. Passed to [`Client::get_job_since`];
/// the default (no deadline, no pacer, default limits) retries unpaced and bounded only by the
/// policy.
#[derive(Clone, Default)]
pub struct FetchContext {
    /// When the scrape or refresh gives up on this fetch.
    pub deadline: Option<tokio::time::Instant>,
    /// The endpoint's rate limiter.
    pub pacer: Option<Arc<dyn Pacer>>,
    /// How much of a job body is kept: cut while decoding, so a body packed with ids costs
    /// what is kept, not what it lists.
    pub limits: model::Limits,
}

/// One (account, service, region, project) and how to reach it.
#[derive(Debug)]
pub struct Target {
    /// Account name.
    pub account: String,
    /// The `cloud_service`, `cloud_region` and `project_id` labels.
    pub scope: Scope,
    /// Base URL without trailing slash.
    pub endpoint: String,
    host: String,
    path_prefix: String,
    auth: Arc<Provider>,
    /// Checked at configuration time ([`check_endpoint`]); an error here is a target built
    /// around that check (tests), reported as `connect` on each fetch.
    request: std::result::Result<Prepared, EndpointError>,
}

/// Why requests cannot be built for an endpoint.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum EndpointError {
    /// The jobs URL made from it does not parse.
    #[error("{endpoint:?} does not make a valid URL ({url}): {reason}")]
    Url {
        /// The endpoint.
        endpoint: String,
        /// The URL made from it.
        url: String,
        /// Why it does not parse.
        reason: String,
    },
    /// It parses, but cannot be connected to (scheme other than http or https, no host, no
    /// port).
    #[error("{endpoint:?} cannot be connected to: {reason}")]
    Unreachable {
        /// The endpoint.
        endpoint: String,
        /// Why.
        reason: conn::Unreachable,
    },
    /// A header every request carries cannot hold a part of it (a host that is not ASCII).
    #[error("{what} {value:?} is not a valid HTTP header value")]
    Header {
        /// Which part.
        what: &'static str,
        /// Its value.
        value: String,
    },
}

/// Whether requests can be built for `endpoint` (a base URL without trailing slash) exactly as
/// the client will build them: the configuration calls this so that a bad endpoint is an error
/// at load time rather than `reason="connect"` on every fetch.
pub(crate) fn check_endpoint(endpoint: &str) -> std::result::Result<(), EndpointError> {
    // Any project id the configuration accepts ([A-Za-z0-9-]) gives the URL the same shape.
    const ANY_PROJECT: &str = "0";
    let (host, _) = split_endpoint(endpoint);
    Prepared::new(endpoint, host, ANY_PROJECT).map(drop)
}

/// The host and the path prefix of an endpoint (`https://host[:port][/prefix]`).
fn split_endpoint(endpoint: &str) -> (&str, &str) {
    let after_scheme = endpoint.split_once("://").map_or("", |(_, r)| r);
    match after_scheme.find('/') {
        Some(i) => (&after_scheme[..i], &after_scheme[i..]),
        None => (after_scheme, ""),
    }
}

/// The parts of every request to a target that do not depend on the job: parsed once, because
/// parsing the URL and building header values per request took about 6% of a refresh's CPU
/// (a perf profile of 10,000 active jobs, BENCHMARKS.md).
#[derive(Debug)]
struct Prepared {
    /// `{endpoint}/v1/{project_id}/jobs/`, the job id still to push.
    jobs_url: reqwest::Url,
    origin: conn::Origin,
    host: HeaderValue,
    project_id: HeaderValue,
}

impl Prepared {
    fn new(
        endpoint: &str,
        host: &str,
        project_id: &str,
    ) -> std::result::Result<Self, EndpointError> {
        let url = format!("{endpoint}/v1/{project_id}/jobs/");
        let jobs_url = reqwest::Url::parse(&url).map_err(|e| EndpointError::Url {
            endpoint: endpoint.into(),
            reason: e.to_string(),
            url: url.clone(),
        })?;
        let value = |what: &'static str, v: &str| {
            HeaderValue::from_str(v).map_err(|_| EndpointError::Header {
                what,
                value: v.into(),
            })
        };
        let origin = conn::Origin::of(&jobs_url).map_err(|reason| EndpointError::Unreachable {
            endpoint: endpoint.into(),
            reason,
        })?;
        Ok(Self {
            origin,
            jobs_url,
            host: value("endpoint host", host)?,
            project_id: value("project_id", project_id)?,
        })
    }

    /// The request path of a job: `jobs_url`'s path, already encoded, and the encoded id.
    fn path(&self, job_id: &str) -> String {
        let base = self.jobs_url.path();
        let mut path = String::with_capacity(base.len() + job_id.len());
        path.push_str(base);
        path.extend(percent_encoding::utf8_percent_encode(
            job_id,
            signer::UNRESERVED,
        ));
        path
    }

    fn url(&self, job_id: &str) -> reqwest::Url {
        let mut url = self.jobs_url.clone();
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.pop_if_empty().push(job_id);
        }
        url
    }
}

impl Target {
    /// A target whose account signs with fixed keys (tests, benchmarks).
    pub fn new(account: &str, scope: Scope, endpoint: &str, credentials: Credentials) -> Self {
        let account = Account {
            name: account.to_string(),
            auth: AccountAuth::AkSk {
                access_key: SecretRef {
                    value: credentials.access_key,
                    file: None,
                },
                secret_key: SecretRef {
                    value: credentials.secret_key,
                    file: None,
                },
                security_token: credentials.security_token.map(|t| SecretRef {
                    value: t,
                    file: None,
                }),
                source: "config",
            },
        };
        // Fixed keys never call out, so this client only satisfies the type.
        crate::install_crypto_provider();
        let auth = Arc::new(Provider::new(&account, reqwest::Client::new(), None));
        Self::with_provider(&account.name, scope, endpoint, auth)
    }

    /// A target of `account` in `scope`, reached at `endpoint` (a base URL without trailing
    /// slash), signed by the account's credential provider.
    pub(crate) fn with_provider(
        account: &str,
        scope: Scope,
        endpoint: &str,
        auth: Arc<Provider>,
    ) -> Self {
        let (host, path_prefix) = split_endpoint(endpoint);
        let request = Prepared::new(endpoint, host, &scope.project_id);
        Self {
            account: account.to_string(),
            endpoint: endpoint.to_string(),
            host: host.to_string(),
            path_prefix: path_prefix.to_string(),
            scope,
            auth,
            request,
        }
    }

    /// The rate-limit key: requests per second are limited per endpoint host.
    pub fn endpoint_key(&self) -> &str {
        &self.host
    }
}

/// A digest of a job body as last decoded, to recognise the same body next time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyDigest(u64);

impl BodyDigest {
    /// A digest from its value, for sources other than [`Client`].
    pub fn new(value: u64) -> Self {
        Self(value)
    }
}

/// What a job fetch brought back.
// Moved once, from the fetch to the poller: boxing the job would cost an allocation a fetch.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Fetched {
    /// A body unlike the one the caller knows: the job, and the body's digest (none from
    /// sources that do not keep them, such as test fakes).
    Job(Job, Option<BodyDigest>),
    /// The same bytes as the body whose digest the caller gave: the job has not changed.
    Unchanged,
}

/// The shared upstream client.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    /// Job fetches, unless a proxy variable is set (then `http` makes them).
    conns: Option<Arc<conn::Connections>>,
    /// Keys the body digests; SipHash with a per-process random key, so a body cannot be
    /// crafted to look unchanged.
    digests: std::hash::RandomState,
    timeout: Duration,
    max_body: usize,
    retry: RetryPolicy,
    telemetry: Arc<Telemetry>,
}

const USER_AGENT_VALUE: &str = concat!("huaweicloud-job-exporter/", env!("CARGO_PKG_VERSION"));

/// The HTTP client could not be built (no usable TLS trust store).
#[derive(Debug, thiserror::Error)]
#[error("cannot build the HTTP client: {0}")]
pub struct ClientError(String);

/// Bodies beyond this are refused: a job is a few KiB at most.
pub(crate) const DEFAULT_MAX_BODY: usize = 1 << 20;

impl Client {
    /// A client with `timeout` on every request.
    pub fn new(timeout: Duration, telemetry: Arc<Telemetry>) -> Result<Self, ClientError> {
        crate::install_crypto_provider();
        let conns = if conn::proxy_configured() {
            None
        } else {
            Some(Arc::new(conn::Connections::new(timeout, USER_AGENT_VALUE)?))
        };
        let http = reqwest::Client::builder()
            .user_agent(USER_AGENT_VALUE)
            .connect_timeout(timeout)
            .timeout(timeout)
            .pool_idle_timeout(Duration::from_secs(90))
            // The job API does not redirect, and a signature covers the host it was made for.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| ClientError(e.to_string()))?;
        Ok(Self {
            http,
            conns,
            digests: std::hash::RandomState::new(),
            timeout,
            max_body: DEFAULT_MAX_BODY,
            retry: RetryPolicy::default(),
            telemetry,
        })
    }

    /// The per-request timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Refuses response bodies larger than `bytes` (default [`DEFAULT_MAX_BODY`]).
    pub(crate) fn with_max_body(mut self, bytes: usize) -> Self {
        self.max_body = bytes;
        self
    }

    /// Retries failed fetches with `policy` (default [`RetryPolicy::default`]).
    pub fn with_retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// Sends job fetches through reqwest, as when a proxy variable is set; tests hold the two
    /// paths to the same results with it.
    pub fn through_reqwest(mut self) -> Self {
        self.conns = None;
        self
    }

    /// A credential provider for `account` that shares this client's connections.
    pub(crate) fn provider(&self, account: &Account) -> Provider {
        Provider::new(
            account,
            self.http.clone(),
            Some(Arc::clone(&self.telemetry)),
        )
    }

    /// `GET {endpoint}/v1/{project_id}/jobs/{job_id}`, authenticated with the target's account.
    /// A 401 with a token or temporary keys is retried once with fresh ones; connection
    /// failures, 5xx and throttling are retried by the [`RetryPolicy`], with no caller's
    /// deadline or pacer (see [`Client::get_job_since`]).
    pub async fn get_job(&self, target: &Target, job_id: &str) -> Result<Job> {
        match self
            .get_job_since(target, job_id, None, &FetchContext::default())
            .await?
        {
            Fetched::Job(job, _) => Ok(job),
            // Only a known digest can match.
            Fetched::Unchanged => Err(FetchError::Decode("no body to compare with".into())),
        }
    }

    /// [`Client::get_job`], but a body whose digest is `known` is not decoded again: most
    /// fetches of a running job return the bytes of the last one, and decoding was about 10%
    /// of a refresh's CPU (a perf profile of 10,000 active jobs, BENCHMARKS.md). Each retry is
    /// paced by `ctx`'s pacer and never sleeps past its deadline.
    pub async fn get_job_since(
        &self,
        target: &Target,
        job_id: &str,
        known: Option<BodyDigest>,
        ctx: &FetchContext,
    ) -> Result<Fetched> {
        let mut attempt = 0;
        loop {
            let result = self.get_job_once(target, job_id, known, ctx.limits).await;
            if let Some(p) = &ctx.pacer {
                match &result {
                    Err(e) if e.reason() == Reason::Throttled => p.throttled(),
                    Ok(_) | Err(FetchError::Api { .. }) => p.answered(),
                    Err(_) => {}
                }
            }
            let err = match result {
                Ok(job) => return Ok(job),
                Err(e) => e,
            };
            let Some(delay) = self.retry.delay(&err, attempt) else {
                return Err(err);
            };
            if ctx
                .deadline
                .is_some_and(|d| tokio::time::Instant::now() + delay >= d)
            {
                return Err(err);
            }
            attempt += 1;
            tracing::debug!(
                job_id,
                endpoint = %target.endpoint,
                attempt,
                delay_ms = delay.as_millis() as u64,
                reason = err.reason().as_str(),
                "retrying"
            );
            tokio::time::sleep(delay).await;
            if let Some(p) = &ctx.pacer {
                p.acquire().await;
            }
        }
    }

    async fn get_job_once(
        &self,
        target: &Target,
        job_id: &str,
        known: Option<BodyDigest>,
        limits: model::Limits,
    ) -> Result<Fetched> {
        let material = self.material(target).await?;
        match self
            .get_job_with(target, job_id, &material, known, limits)
            .await
        {
            Err(FetchError::Api { status: 401, .. })
                if target
                    .auth
                    .invalidate(&target.scope.project_id, &material)
                    .await =>
            {
                let fresh = self.material(target).await?;
                self.get_job_with(target, job_id, &fresh, known, limits)
                    .await
            }
            other => other,
        }
    }

    async fn material(&self, target: &Target) -> Result<Material> {
        target
            .auth
            .material(&target.scope.project_id)
            .await
            .map_err(|e| FetchError::Auth(e.to_string()))
    }

    async fn get_job_with(
        &self,
        target: &Target,
        job_id: &str,
        material: &Material,
        known: Option<BodyDigest>,
        limits: model::Limits,
    ) -> Result<Fetched> {
        let prepared = target
            .request
            .as_ref()
            .map_err(|e| FetchError::Connect(e.to_string()))?;
        let headers = match material {
            Material::Keys(creds) => {
                let path = format!(
                    "{}/v1/{}/jobs/{}",
                    target.path_prefix, target.scope.project_id, job_id
                );
                sign(target, prepared, creds, &path, chrono::Utc::now())?
            }
            Material::Token(token) => token_headers(prepared, token)?,
        };
        let started = Instant::now();
        let result = self.send(prepared, job_id, headers).await;
        let code = match &result {
            Ok((status, _, _)) => status.as_str(),
            Err(e) => e.reason().as_str(),
        };
        self.telemetry.observe_api_request(
            &target.scope.cloud_service,
            &target.scope.cloud_region,
            code,
            started.elapsed(),
        );
        let (status, resp_headers, body) = result?;
        // Any answer but 401/403 means the signature or token was accepted.
        if !matches!(status.as_u16(), 401 | 403) {
            self.telemetry.auth_success(target.auth.account());
        }
        if status.is_success() {
            let digest = BodyDigest(self.digests.hash_one(&body));
            if known == Some(digest) {
                return Ok(Fetched::Unchanged);
            }
            let (job, cut) = model::decode_job_capped(&body, limits)
                .map_err(|e| FetchError::Decode(e.to_string()))?;
            // A body about another job (a misrouting proxy or cache) must not be exported under
            // the id asked for: it is a body that does not decode to this job.
            if let Some(reported) = job.job_id.as_deref()
                && reported != job_id
            {
                tracing::warn!(
                    job_id,
                    body_job_id = reported,
                    endpoint = %target.endpoint,
                    "the job body is for another job_id; keeping the job's last values"
                );
                return Err(FetchError::Decode(format!(
                    "the body is for job_id {reported:?}, not {job_id:?}"
                )));
            }
            // Counted here, where it was cut; the poller's own cap finds nothing left to cut.
            self.telemetry.truncated(cut);
            return Ok(Fetched::Job(job, Some(digest)));
        }
        let err = api_error(status, &resp_headers, &body);
        if let FetchError::Api { code: Some(c), .. } = &err
            && c == "APIGW.0303"
        {
            let offset = resp_headers
                .get("date")
                .and_then(|v| v.to_str().ok())
                .and_then(|d| clock_offset(d, chrono::Utc::now()));
            tracing::warn!(
                account = %target.account,
                endpoint = %target.endpoint,
                offset_seconds = offset.map(|o| format!("{o:+}")).unwrap_or_else(|| "unknown".into()),
                "the cloud rejected the request time (APIGW.0303): this host's clock is off by more than 15 minutes"
            );
        }
        Err(err)
    }

    /// `GET {endpoint}{path}?{query}` on an API other than the job API (CTS traces, the SDRS
    /// task centre), authenticated with the target's account; the query takes part in the
    /// signature, encoded as the signer encodes it. Returns the 2xx body, at most the client's
    /// body limit. A 401 with a token or temporary keys is retried once with fresh ones, and
    /// transient failures by the [`RetryPolicy`].
    pub(crate) async fn get_api(
        &self,
        target: &Target,
        path: &str,
        query: &[(String, String)],
    ) -> Result<Vec<u8>> {
        let mut attempt = 0;
        loop {
            let err = match self.get_api_once(target, path, query).await {
                Ok(body) => return Ok(body),
                Err(e) => e,
            };
            let Some(delay) = self.retry.delay(&err, attempt) else {
                return Err(err);
            };
            attempt += 1;
            tokio::time::sleep(delay).await;
        }
    }

    async fn get_api_once(
        &self,
        target: &Target,
        path: &str,
        query: &[(String, String)],
    ) -> Result<Vec<u8>> {
        let material = self.material(target).await?;
        match self.get_api_with(target, path, query, &material).await {
            Err(FetchError::Api { status: 401, .. })
                if target
                    .auth
                    .invalidate(&target.scope.project_id, &material)
                    .await =>
            {
                let fresh = self.material(target).await?;
                self.get_api_with(target, path, query, &fresh).await
            }
            other => other,
        }
    }

    async fn get_api_with(
        &self,
        target: &Target,
        path: &str,
        query: &[(String, String)],
        material: &Material,
    ) -> Result<Vec<u8>> {
        let prepared = target
            .request
            .as_ref()
            .map_err(|e| FetchError::Connect(e.to_string()))?;
        let full_path = format!("{}{path}", target.path_prefix);
        let headers = match material {
            Material::Keys(creds) => sign_query(
                target,
                prepared,
                creds,
                &full_path,
                query,
                chrono::Utc::now(),
            )?,
            Material::Token(token) => token_headers(prepared, token)?,
        };
        let url = format!("{}{path}{}", target.endpoint, query_string(query));
        let url = reqwest::Url::parse(&url).map_err(|e| FetchError::Connect(e.to_string()))?;
        let started = Instant::now();
        let result = self.send_url(url, headers).await;
        let code = match &result {
            Ok((status, _, _)) => status.as_str(),
            Err(e) => e.reason().as_str(),
        };
        self.telemetry.observe_api_request(
            &target.scope.cloud_service,
            &target.scope.cloud_region,
            code,
            started.elapsed(),
        );
        let (status, resp_headers, body) = result?;
        if status.is_success() {
            return Ok(body);
        }
        Err(api_error(status, &resp_headers, &body))
    }

    async fn send(
        &self,
        prepared: &Prepared,
        job_id: &str,
        headers: HeaderMap,
    ) -> Result<(reqwest::StatusCode, HeaderMap, Vec<u8>)> {
        if let Some(conns) = &self.conns {
            let get = conns.get(
                &prepared.origin,
                prepared.path(job_id),
                headers,
                self.max_body,
            );
            let resp = tokio::time::timeout(self.timeout, get)
                .await
                .map_err(|_| FetchError::Timeout)??;
            return Ok((resp.status, resp.headers, resp.body));
        }
        self.send_url(prepared.url(job_id), headers).await
    }

    /// A GET through reqwest, the body bounded by the client's limit.
    async fn send_url(
        &self,
        url: reqwest::Url,
        headers: HeaderMap,
    ) -> Result<(reqwest::StatusCode, HeaderMap, Vec<u8>)> {
        let mut resp = self
            .http
            .get(url)
            .headers(headers)
            .send()
            .await
            .map_err(transport)?;
        let status = resp.status();
        let headers = std::mem::take(resp.headers_mut());
        if resp
            .content_length()
            .is_some_and(|n| n > self.max_body as u64)
        {
            return Err(FetchError::Decode(format!(
                "body larger than {} bytes",
                self.max_body
            )));
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(transport)? {
            if body.len() + chunk.len() > self.max_body {
                return Err(FetchError::Decode(format!(
                    "body larger than {} bytes",
                    self.max_body
                )));
            }
            body.extend_from_slice(&chunk);
        }
        Ok((status, headers, body))
    }
}

/// `?k=v&…`, sorted and encoded exactly as the signer's canonical query (the SDK sends what it
/// signs); empty without parameters.
fn query_string(query: &[(String, String)]) -> String {
    let mut sorted: Vec<&(String, String)> = query.iter().collect();
    sorted.sort();
    let mut out = String::new();
    for (i, (k, v)) in sorted.into_iter().enumerate() {
        out.push(if i == 0 { '?' } else { '&' });
        out.extend(percent_encoding::utf8_percent_encode(k, signer::UNRESERVED));
        out.push('=');
        out.extend(percent_encoding::utf8_percent_encode(v, signer::UNRESERVED));
    }
    out
}

/// The error of a non-2xx answer, from its body and headers.
fn api_error(status: reqwest::StatusCode, headers: &HeaderMap, body: &[u8]) -> FetchError {
    let err = model::decode_error(body);
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    FetchError::Api {
        status: status.as_u16(),
        code: err.code,
        message: err.message.map(|m| m.chars().take(300).collect()),
        request_id: header("x-request-id"),
        retry_after: header("retry-after")
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs),
    }
}

fn transport(e: reqwest::Error) -> FetchError {
    if e.is_timeout() {
        return FetchError::Timeout;
    }
    FetchError::Connect(causes(&e))
}

/// An error with its causes. reqwest's and hyper's Display omit them ("error sending request",
/// "connection error"); the sources say what broke.
fn causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut msg = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        msg = format!("{msg}: {s}");
        source = s.source();
    }
    msg
}

/// Server time minus local time, in whole seconds, from an HTTP `Date` header.
fn clock_offset(date: &str, now: chrono::DateTime<chrono::Utc>) -> Option<i64> {
    let server = chrono::DateTime::parse_from_rfc2822(date).ok()?;
    Some(server.timestamp() - now.timestamp())
}

const X_PROJECT_ID: HeaderName = HeaderName::from_static("x-project-id");
const X_SDK_DATE: HeaderName = HeaderName::from_static("x-sdk-date");
const X_SECURITY_TOKEN: HeaderName = HeaderName::from_static("x-security-token");
const X_AUTH_TOKEN: HeaderName = HeaderName::from_static("x-auth-token");
const JSON: HeaderValue = HeaderValue::from_static("application/json");

/// A credential as a header value, never echoed in the error: it may be a secret.
fn secret_value(name: &HeaderName, value: String) -> Result<HeaderValue> {
    let mut v = HeaderValue::try_from(value)
        .map_err(|_| FetchError::Auth(format!("{name} is not a valid header value")))?;
    v.set_sensitive(true);
    Ok(v)
}

/// The headers every GET to a target carries, however it authenticates.
fn common_headers(prepared: &Prepared) -> HeaderMap {
    let mut map = HeaderMap::with_capacity(8);
    map.insert(CONTENT_TYPE, JSON);
    map.insert(HOST, prepared.host.clone());
    map.insert(X_PROJECT_ID, prepared.project_id.clone());
    map
}

/// The headers of a token-authenticated GET.
fn token_headers(prepared: &Prepared, token: &Secret) -> Result<HeaderMap> {
    let mut map = common_headers(prepared);
    map.insert(
        X_AUTH_TOKEN,
        secret_value(&X_AUTH_TOKEN, token.expose().to_string())?,
    );
    Ok(map)
}

/// `X-Sdk-Date`: [`signer::DATE_FORMAT`], written directly (chrono's formatter parses the
/// pattern on every call).
fn sdk_date(now: chrono::DateTime<chrono::Utc>) -> String {
    use chrono::{Datelike as _, Timelike as _};
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        now.year(),
        now.month(),
        now.day(),
        now.hour(),
        now.minute(),
        now.second()
    )
}

/// The headers of a signed GET, Authorization included.
fn sign(
    target: &Target,
    prepared: &Prepared,
    creds: &Credentials,
    path: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<HeaderMap> {
    sign_query(target, prepared, creds, path, &[], now)
}

/// [`sign`] with query parameters, which the signature covers.
fn sign_query(
    target: &Target,
    prepared: &Prepared,
    creds: &Credentials,
    path: &str,
    query: &[(String, String)],
    now: chrono::DateTime<chrono::Utc>,
) -> Result<HeaderMap> {
    let date = sdk_date(now);
    let token = creds.security_token.as_ref().map(|t| t.expose());
    let all = [
        ("content-type", "application/json"),
        ("host", target.host.as_str()),
        ("x-project-id", target.scope.project_id.as_str()),
        ("x-sdk-date", date.as_str()),
        ("x-security-token", token.unwrap_or_default()),
    ];
    let signed = if token.is_some() { &all[..] } else { &all[..4] };
    let canonical = signer::canonical_request(&signer::Request {
        method: "GET",
        path,
        query,
        headers: signed,
        body: b"",
    });
    let sts = signer::string_to_sign(&date, &canonical);
    let signature = signer::signature(creds.secret_key.expose(), &sts);
    let auth = signer::authorization(
        creds.access_key.expose(),
        &signer::signed_headers(signed),
        &signature,
    );
    let mut map = common_headers(prepared);
    map.insert(
        X_SDK_DATE,
        HeaderValue::try_from(date)
            .map_err(|_| FetchError::Auth("X-Sdk-Date is not a valid header value".into()))?,
    );
    if let Some(t) = token {
        map.insert(
            X_SECURITY_TOKEN,
            secret_value(&X_SECURITY_TOKEN, t.to_string())?,
        );
    }
    map.insert(AUTHORIZATION, secret_value(&AUTHORIZATION, auth)?);
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;

    #[test]
    fn endpoints_are_checked_as_requests_are_built() {
        for good in [
            "https://evs.cn-north-4.myhuaweicloud.com",
            "http://127.0.0.1:9000/sdrs",
            "https://[::1]:8443",
        ] {
            assert_eq!(
                check_endpoint(good).map_err(|e| e.to_string()),
                Ok(()),
                "{good}"
            );
        }
        let err = |e: &str| check_endpoint(e).expect_err(e);
        assert!(matches!(err("http://[::1"), EndpointError::Url { .. }));
        assert!(matches!(err("ftp://h"), EndpointError::Unreachable { .. }));
        // The URL parser drops line ends; the Host header cannot hold them.
        let EndpointError::Header { what, value } = err("https://evs\n.example.com") else {
            panic!("a host with a line feed");
        };
        assert_eq!(
            (what, value.as_str()),
            ("endpoint host", "evs\n.example.com")
        );
    }

    #[test]
    fn reasons_cover_every_error_shape() {
        let api = |status, code: Option<&str>| FetchError::Api {
            status,
            code: code.map(str::to_string),
            message: None,
            request_id: None,
            retry_after: None,
        };
        assert_eq!(api(429, None).reason(), Reason::Throttled);
        assert_eq!(api(400, Some("APIGW.0308")).reason(), Reason::Throttled);
        assert_eq!(api(401, Some("APIGW.0301")).reason(), Reason::Unauthorized);
        assert_eq!(api(403, None).reason(), Reason::Forbidden);
        assert_eq!(api(404, Some("EVS.0004")).reason(), Reason::NotFound);
        assert_eq!(api(400, None).reason(), Reason::ClientError);
        assert_eq!(api(503, None).reason(), Reason::ServerError);
        assert_eq!(api(302, None).reason(), Reason::ServerError);
        assert_eq!(FetchError::Timeout.reason(), Reason::Timeout);
        assert_eq!(FetchError::Decode(String::new()).reason(), Reason::Decode);
        let labels: Vec<&str> = Reason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(
            labels,
            [
                "timeout",
                "connect",
                "throttled",
                "unauthorized",
                "forbidden",
                "not_found",
                "client_error",
                "server_error",
                "decode",
                "auth"
            ]
        );
    }

    #[test]
    fn signs_like_the_sdk_with_a_path_prefix_and_token() {
        let scope = Scope::new("sdrs", "cn-east-3", "0a1b2c3d4e5f60718293a4b5c6d7e8f9");
        let creds = Credentials {
            access_key: Secret::new("HPUAL9EXAMPLEAK00001"),
            secret_key: Secret::new("hwfactsEXAMPLEsecretKEY0000000000000000000"),
            security_token: Some(Secret::new(
                "gQpjbi1ub3J0aC00EXAMPLE-temporary-security-token+/==",
            )),
        };
        let t = Target::new(
            "a",
            scope.clone(),
            "https://sdrs.cn-east-3.myhuaweicloud.com",
            creds.clone(),
        );
        let now = chrono::DateTime::parse_from_rfc3339("2024-03-15T08:15:30Z")
            .expect("date")
            .with_timezone(&chrono::Utc);
        let prepared = t.request.as_ref().expect("a valid endpoint");
        let h = sign(
            &t,
            prepared,
            &creds,
            "/v1/0a1b2c3d4e5f60718293a4b5c6d7e8f9/jobs/0000000062db92d70162db9d200f000a",
            now,
        )
        .expect("signs");
        // Vector v4 of the SDK.
        assert_eq!(
            h["authorization"],
            "SDK-HMAC-SHA256 Access=HPUAL9EXAMPLEAK00001, SignedHeaders=content-type;host;x-project-id;x-sdk-date;x-security-token, Signature=68da3636fc6e5f36754e243014e41a8cb614d1f491fe5d1ec5a408e9a542413f"
        );
        let prefixed = Target::new(
            "a",
            scope,
            "http://127.0.0.1:9000/sdrs",
            Credentials {
                access_key: Secret::new("a"),
                secret_key: Secret::new("b"),
                security_token: None,
            },
        );
        assert_eq!(sdk_date(now), now.format(signer::DATE_FORMAT).to_string());
        let url = prefixed.request.as_ref().expect("valid").url("0000-ab");
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:9000/sdrs/v1/0a1b2c3d4e5f60718293a4b5c6d7e8f9/jobs/0000-ab"
        );
        assert_eq!(prefixed.host, "127.0.0.1:9000");
        assert_eq!(prefixed.path_prefix, "/sdrs");
        assert_eq!(prefixed.endpoint_key(), "127.0.0.1:9000");
    }

    #[test]
    fn retries_only_transient_failures_with_growing_jittered_backoff() {
        let p = RetryPolicy::default();
        let api = |status, code: Option<&str>, retry_after: Option<u64>| FetchError::Api {
            status,
            code: code.map(str::to_string),
            message: None,
            request_id: None,
            retry_after: retry_after.map(Duration::from_secs),
        };
        for final_err in [
            api(404, None, None),
            api(400, None, None),
            api(401, None, None),
            api(403, None, None),
            FetchError::Timeout,
            FetchError::Decode("x".into()),
            FetchError::Auth("x".into()),
        ] {
            assert_eq!(p.delay(&final_err, 0), None, "{final_err}");
        }
        for _ in 0..50 {
            let d0 = p.delay(&api(503, None, None), 0).expect("retried");
            assert!(d0 >= Duration::from_millis(100) && d0 <= Duration::from_millis(200));
            let d1 = p
                .delay(&FetchError::Connect("reset".into()), 1)
                .expect("retried");
            assert!(d1 >= Duration::from_millis(200) && d1 <= Duration::from_millis(400));
            let t = p
                .delay(&api(429, Some("APIGW.0308"), None), 0)
                .expect("retried");
            assert!(t <= Duration::from_millis(200));
        }
        // Retry-After is honoured, capped.
        assert_eq!(
            p.delay(&api(429, None, Some(3)), 0),
            Some(Duration::from_secs(3))
        );
        assert_eq!(
            p.delay(&api(400, Some("APIGW.0308"), Some(3600)), 1),
            Some(p.max_retry_after)
        );
        // Bounded in count.
        assert_eq!(p.delay(&api(503, None, None), 2), None);
        assert_eq!(RetryPolicy::none().delay(&api(503, None, None), 0), None);
        // The backoff never exceeds its cap.
        let big = RetryPolicy {
            max_retries: 40,
            ..RetryPolicy::default()
        };
        assert!(big.delay(&api(500, None, None), 39).expect("d") <= big.max_backoff);
    }

    #[test]
    fn query_string_is_the_sdks() {
        // Vector v3 of the SDK: `...?detail=true&limit=10&marker=a%20b%2Fc~d`.
        let q = |k: &str, v: &str| (k.to_string(), v.to_string());
        assert_eq!(
            query_string(&[
                q("marker", "a b/c~d"),
                q("limit", "10"),
                q("detail", "true")
            ]),
            "?detail=true&limit=10&marker=a%20b%2Fc~d"
        );
        assert_eq!(query_string(&[]), "");
    }

    #[test]
    fn clock_offset_from_the_date_header() {
        let now = chrono::DateTime::parse_from_rfc3339("2024-03-15T08:15:30Z")
            .expect("date")
            .with_timezone(&chrono::Utc);
        assert_eq!(
            clock_offset("Fri, 15 Mar 2024 08:35:30 GMT", now),
            Some(1200)
        );
        assert_eq!(clock_offset("yesterday", now), None);
    }
}
