//! The simulator's IAM (`POST /v3/auth/tokens`, password identity scoped to a project) and ECS
//! metadata service (`PUT /meta-data/latest/api/token`, `GET /openstack/latest/securitykey`),
//! with the error shapes of Huawei's documentation: IAM errors carry an integer `code`.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Response, StatusCode, header};
use axum::routing::{get, post, put};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Credential, Simulator, json_response, unix_now};

/// Token validity, as IAM's.
const DEFAULT_TOKEN_TTL: f64 = 24.0 * 3600.0;
/// Lifetime of metadata temporary keys.
const DEFAULT_KEY_TTL: f64 = 24.0 * 3600.0;

struct Token {
    project_id: String,
    expires_at: f64,
    revoked: bool,
}

pub(super) struct IamState {
    users: HashMap<(String, String), String>,
    tokens: HashMap<String, Token>,
    token_ttl: f64,
    key_ttl: f64,
    sessions: HashSet<String>,
    tokens_issued: u64,
    token_requests: u64,
    keys_issued: u64,
}

impl Default for IamState {
    fn default() -> Self {
        Self {
            users: HashMap::new(),
            tokens: HashMap::new(),
            token_ttl: DEFAULT_TOKEN_TTL,
            key_ttl: DEFAULT_KEY_TTL,
            sessions: HashSet::new(),
            tokens_issued: 0,
            token_requests: 0,
            keys_issued: 0,
        }
    }
}

impl IamState {
    pub(super) fn check_token(
        &self,
        token: &str,
        project_id: &str,
        now: f64,
    ) -> Result<(), TokenRefused> {
        let t = self.tokens.get(token).ok_or(TokenRefused::Unknown)?;
        if t.revoked {
            return Err(TokenRefused::Revoked);
        }
        if t.expires_at <= now {
            return Err(TokenRefused::Expired);
        }
        if t.project_id != project_id {
            return Err(TokenRefused::OtherProject);
        }
        Ok(())
    }
}

/// Why the gateway refuses an `X-Auth-Token`; the message goes into its 401.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(super) enum TokenRefused {
    /// IAM never issued it.
    #[error("the token is invalid")]
    Unknown,
    /// Revoked since.
    #[error("the token has been revoked")]
    Revoked,
    /// Past its expiry.
    #[error("the token has expired")]
    Expired,
    /// Scoped to another project than the request's.
    #[error("the token is not scoped to this project")]
    OtherProject,
}

fn secret(len: usize) -> String {
    const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    (0..len)
        .map(|_| CHARS[fastrand::usize(..CHARS.len())] as char)
        .collect()
}

fn iso(unix: f64) -> String {
    chrono::DateTime::from_timestamp_millis((unix * 1000.0) as i64)
        .map(|d| d.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string())
        .unwrap_or_default()
}

fn iam_error(status: StatusCode, message: &str, title: &str) -> Response<Body> {
    json_response(
        status,
        json!({"error": {"code": status.as_u16(), "message": message, "title": title}}).to_string(),
    )
}

impl Simulator {
    /// Adds an IAM user, or changes its password.
    pub fn set_iam_user(&self, domain: &str, user: &str, password: &str) {
        self.lock()
            .iam
            .users
            .insert((domain.to_string(), user.to_string()), password.to_string());
    }

    /// Revokes every token issued so far.
    pub fn revoke_tokens(&self) {
        for t in self.lock().iam.tokens.values_mut() {
            t.revoked = true;
        }
    }

    /// Lifetime of tokens issued from now on.
    pub fn set_token_ttl(&self, ttl: Duration) {
        self.lock().iam.token_ttl = ttl.as_secs_f64();
    }

    /// Lifetime of metadata keys issued from now on.
    pub fn set_metadata_key_ttl(&self, ttl: Duration) {
        self.lock().iam.key_ttl = ttl.as_secs_f64();
    }

    /// Tokens issued.
    pub fn tokens_issued(&self) -> u64 {
        self.lock().iam.tokens_issued
    }

    /// Token requests, successful or not.
    pub fn token_requests(&self) -> u64 {
        self.lock().iam.token_requests
    }

    /// Temporary key pairs handed out by the metadata service.
    pub fn metadata_keys_issued(&self) -> u64 {
        self.lock().iam.keys_issued
    }
}

pub(super) fn routes() -> axum::Router<Simulator> {
    axum::Router::new()
        .route("/v3/auth/tokens", post(issue_token))
        .route("/meta-data/latest/api/token", put(metadata_session))
        .route("/openstack/latest/securitykey", get(security_key))
        .route("/_sim/iam/users", put(put_user))
        .route("/_sim/iam/revoke", post(revoke))
}

async fn issue_token(State(sim): State<Simulator>, body: Bytes) -> Response<Body> {
    sim.lock().iam.token_requests += 1;
    let bad = || {
        iam_error(
            StatusCode::BAD_REQUEST,
            "The request body is invalid",
            "Bad Request",
        )
    };
    let Ok(v) = serde_json::from_slice::<Value>(&body) else {
        return bad();
    };
    let auth = &v["auth"];
    let user = &auth["identity"]["password"]["user"];
    let methods_ok = auth["identity"]["methods"]
        .as_array()
        .is_some_and(|m| m.iter().any(|x| x == "password"));
    let (Some(domain), Some(name), Some(password), Some(project)) = (
        user["domain"]["name"].as_str(),
        user["name"].as_str(),
        user["password"].as_str(),
        auth["scope"]["project"]["id"].as_str(),
    ) else {
        return bad();
    };
    if !methods_ok {
        return bad();
    }
    let now = unix_now();
    let mut st = sim.lock();
    let known = st.iam.users.get(&(domain.to_string(), name.to_string()));
    if known.map(String::as_str) != Some(password) {
        return iam_error(
            StatusCode::UNAUTHORIZED,
            "The username or password is wrong.",
            "Unauthorized",
        );
    }
    let token = format!("MIIT{}", secret(60));
    let expires_at = now + st.iam.token_ttl;
    st.iam.tokens.insert(
        token.clone(),
        Token {
            project_id: project.to_string(),
            expires_at,
            revoked: false,
        },
    );
    st.iam.tokens_issued += 1;
    let body = json!({"token": {
        "expires_at": iso(expires_at),
        "issued_at": iso(now),
        "methods": ["password"],
        "project": {"id": project, "name": "cn-north-4", "domain": {"name": domain}},
        "user": {"name": name, "domain": {"name": domain}},
        "catalog": [],
        "roles": [],
    }});
    let mut r = json_response(StatusCode::CREATED, body.to_string());
    if let Ok(v) = token.parse() {
        r.headers_mut().insert("x-subject-token", v);
    }
    r
}

async fn metadata_session(State(sim): State<Simulator>) -> Response<Body> {
    let token = secret(40);
    sim.lock().iam.sessions.insert(token.clone());
    let mut r = Response::new(Body::from(token));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain"),
    );
    r
}

async fn security_key(State(sim): State<Simulator>, headers: HeaderMap) -> Response<Body> {
    let session = headers
        .get("x-metadata-token")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mut st = sim.lock();
    if !st.iam.sessions.contains(session) {
        return iam_error(
            StatusCode::UNAUTHORIZED,
            "X-Metadata-Token is missing or invalid",
            "Unauthorized",
        );
    }
    let (ak, sk, token) = (
        format!("TMP{}", secret(17).to_uppercase()),
        secret(40),
        format!("gQpj{}", secret(80)),
    );
    let expires_at = unix_now() + st.iam.key_ttl;
    st.credentials.insert(
        ak.clone(),
        Credential {
            secret_key: sk.clone(),
            security_token: Some(token.clone()),
            expires_at: Some(expires_at),
        },
    );
    st.iam.keys_issued += 1;
    json_response(
        StatusCode::OK,
        json!({"credential": {"access": ak, "secret": sk, "securitytoken": token, "expires_at": iso(expires_at)}})
            .to_string(),
    )
}

#[derive(Deserialize)]
struct User {
    domain: String,
    user: String,
    password: String,
}

async fn put_user(State(sim): State<Simulator>, Json(u): Json<User>) -> StatusCode {
    sim.set_iam_user(&u.domain, &u.user, &u.password);
    StatusCode::NO_CONTENT
}

async fn revoke(State(sim): State<Simulator>) -> StatusCode {
    sim.revoke_tokens();
    StatusCode::NO_CONTENT
}
