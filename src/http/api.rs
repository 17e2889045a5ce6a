//! The registration API over HTTP (`/api/v1/jobs`): its routes, the one layer that checks the
//! bearer token, the extractors, and [`ApiError`], which renders every failure as
//! `{"error": "..."}` with the status that fits. The rules themselves are
//! [`crate::registry`]'s.

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{DefaultBodyLimit, FromRequest, Path, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use serde_json::json;

use super::App;
use crate::registry;
use crate::state::JobRef;

/// Largest registration request body.
const API_BODY_LIMIT: usize = 16 * 1024;

/// The API's routes, each behind the token layer.
pub(super) fn routes(app: App) -> Router<App> {
    // The token layer goes on each route's methods, not on the method fallback: a method the
    // API does not have answers 405 whatever the token.
    let authorized = axum::middleware::from_fn_with_state(app, authorize);
    Router::new()
        .route(
            "/api/v1/jobs",
            get(list_jobs)
                .post(register_job)
                .route_layer(authorized.clone()),
        )
        .route(
            "/api/v1/jobs/{cloud_service}/{cloud_region}/{project_id}/{job_id}",
            delete(unregister_job).route_layer(authorized),
        )
        .layer(DefaultBodyLimit::max(API_BODY_LIMIT))
}

/// Why a request to the registration API failed, as its client is told: `{"error": "..."}`
/// with the status that fits, plus `Location` for a job another shard owns and
/// `WWW-Authenticate` for a missing or wrong token.
#[derive(Debug)]
enum ApiError {
    /// The registration rules refused it.
    Refused(registry::Error),
    /// An extractor could not take it apart (a body over the limit, a path segment that is
    /// not UTF-8), with the extractor's status and reason.
    Malformed {
        /// The extractor's status.
        status: StatusCode,
        /// The extractor's reason.
        reason: String,
    },
}

impl From<registry::Error> for ApiError {
    fn from(e: registry::Error) -> Self {
        Self::Refused(e)
    }
}

impl From<BytesRejection> for ApiError {
    fn from(r: BytesRejection) -> Self {
        Self::Malformed {
            status: r.status(),
            reason: r.body_text(),
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        Self::Malformed {
            status: r.status(),
            reason: r.body_text(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let e = match self {
            Self::Malformed { status, reason } => {
                return (status, axum::Json(json!({ "error": reason }))).into_response();
            }
            Self::Refused(e) => e,
        };
        let status = match &e {
            registry::Error::Disabled
            | registry::Error::NotFound
            | registry::Error::UnknownTarget(_) => StatusCode::NOT_FOUND,
            registry::Error::Unauthorized => StatusCode::UNAUTHORIZED,
            registry::Error::Invalid(_) => StatusCode::BAD_REQUEST,
            registry::Error::Dropped(_) => StatusCode::CONFLICT,
            registry::Error::OtherShard {
                location: Some(_), ..
            } => StatusCode::TEMPORARY_REDIRECT,
            registry::Error::OtherShard { location: None, .. } => StatusCode::MISDIRECTED_REQUEST,
            registry::Error::Storage(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        let mut body = json!({"error": e.to_string()});
        let mut location = None;
        if let registry::Error::OtherShard {
            shard,
            location: owner,
            ..
        } = &e
        {
            body["shard"] = json!(shard);
            if let Some(owner) = owner {
                let url = format!("{owner}/api/v1/jobs");
                body["location"] = json!(url);
                location = Some(url);
            }
        }
        let mut r = (status, axum::Json(body)).into_response();
        if let Some(l) = location.and_then(|l| l.parse().ok()) {
            r.headers_mut().insert(header::LOCATION, l);
        }
        if status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        r
    }
}

/// The token of an `Authorization: Bearer <token>` value; the scheme name is case-insensitive
/// (RFC 7235 §2.1).
fn bearer_token(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once([' ', '\t'])?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The layer in front of every registration API route: the bearer token is checked before a
/// handler or its extractors run (so a request without it learns nothing about its body or
/// path). The token file is read afresh each time, so it can rotate.
async fn authorize(State(app): State<App>, req: Request, next: Next) -> Response {
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token);
    match app.registry.authorize(token).await {
        Ok(()) => next.run(req).await,
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// The job a `POST /api/v1/jobs` names: a JSON body with exactly the four fields of a job
/// (any content type, or none).
struct Registration(JobRef);

impl<S: Send + Sync> FromRequest<S> for Registration {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let body = Bytes::from_request(req, state).await?;
        serde_json::from_slice(&body).map(Self).map_err(|e| {
            registry::Error::Invalid(format!(
                "body must be {{\"cloud_service\", \"cloud_region\", \"project_id\", \"job_id\"}}: {e}"
            ))
            .into()
        })
    }
}

async fn list_jobs(State(app): State<App>) -> Response {
    axum::Json(json!({"jobs": app.control.list()})).into_response()
}

async fn register_job(
    State(app): State<App>,
    Registration(job): Registration,
) -> Result<Response, ApiError> {
    let created = app.registry.register(job.clone()).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, axum::Json(json!({"job": job, "created": created}))).into_response())
}

async fn unregister_job(
    State(app): State<App>,
    path: Result<Path<(String, String, String, String)>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    let Path((cloud_service, cloud_region, project_id, job_id)) = path?;
    let job = JobRef {
        cloud_service,
        cloud_region,
        project_id,
        job_id,
    };
    app.registry.unregister(&job).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Gives every error under `/api/` a JSON body, `{"error": "..."}`, whatever produced it: an
/// extractor's rejection, a method or path the API does not have, or the server's own layers
/// (the body size limit, basic authentication, the 406 of `not_acceptable`). Applied outside them all.
pub fn with_json_api_errors(router: Router) -> Router {
    router.layer(axum::middleware::from_fn(json_api_errors))
}

/// Longest error text kept when an error body is rewritten as JSON.
const ERROR_TEXT_LIMIT: usize = 4096;

async fn json_api_errors(req: Request, next: Next) -> Response {
    if !req.uri().path().starts_with("/api/") {
        return next.run(req).await;
    }
    let resp = next.run(req).await;
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let text = axum::body::to_bytes(body, ERROR_TEXT_LIMIT)
        .await
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let message = match text.trim() {
        "" => status.canonical_reason().unwrap_or("error"),
        t => t,
    };
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    let body = json!({ "error": message }).to_string();
    Response::from_parts(parts, axum::body::Body::from(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        for h in ["Bearer t0k", "bearer t0k", "BEARER  t0k ", "BeArEr\tt0k"] {
            assert_eq!(bearer_token(h), Some("t0k"), "{h:?}");
        }
        for h in ["Basic t0k", "Bearert0k", "t0k", ""] {
            assert_eq!(bearer_token(h), None, "{h:?}");
        }
    }

    async fn rendered(e: ApiError) -> (StatusCode, axum::http::HeaderMap, String) {
        let r = e.into_response();
        let (parts, body) = r.into_parts();
        let body = axum::body::to_bytes(body, 1 << 16).await.expect("body");
        (
            parts.status,
            parts.headers,
            String::from_utf8(body.to_vec()).expect("utf-8"),
        )
    }

    #[tokio::test]
    async fn errors_render_status_headers_and_json_body() {
        let (status, headers, body) = rendered(registry::Error::Unauthorized.into()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(headers[header::WWW_AUTHENTICATE], "Bearer");
        assert_eq!(headers[header::CONTENT_TYPE], "application/json");
        assert_eq!(body, r#"{"error":"missing or invalid bearer token"}"#);

        let other = |location: Option<&str>| registry::Error::OtherShard {
            shard: 1,
            total: 3,
            location: location.map(String::from),
        };
        let (status, headers, body) = rendered(other(Some("http://r1:10037")).into()).await;
        assert_eq!(status, StatusCode::TEMPORARY_REDIRECT);
        assert_eq!(headers[header::LOCATION], "http://r1:10037/api/v1/jobs");
        assert_eq!(
            body,
            r#"{"error":"job belongs to shard 1 of 3","location":"http://r1:10037/api/v1/jobs","shard":1}"#
        );
        let (status, headers, body) = rendered(other(None).into()).await;
        assert_eq!(status, StatusCode::MISDIRECTED_REQUEST);
        assert!(headers.get(header::LOCATION).is_none());
        assert_eq!(body, r#"{"error":"job belongs to shard 1 of 3","shard":1}"#);

        let malformed = ApiError::Malformed {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            reason: "too big".into(),
        };
        let (status, _, body) = rendered(malformed).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(body, r#"{"error":"too big"}"#);
        for (e, want) in [
            (registry::Error::Disabled, StatusCode::NOT_FOUND),
            (registry::Error::NotFound, StatusCode::NOT_FOUND),
            (
                registry::Error::Invalid("x".into()),
                StatusCode::BAD_REQUEST,
            ),
            (registry::Error::Dropped("x".into()), StatusCode::CONFLICT),
            (
                registry::Error::Storage("x".into()),
                StatusCode::SERVICE_UNAVAILABLE,
            ),
        ] {
            assert_eq!(rendered(e.into()).await.0, want);
        }
    }
}
