//! The HTTP server's routes: `/metrics`, `/-/healthy`, `/-/ready` and `/-/reload` here, the
//! landing page and `/jobs` (`pages`), and the registration API (`api`: `/api/v1/jobs`).

mod api;
mod pages;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tower_http::compression::CompressionLayer;

pub use api::with_json_api_errors;

use crate::exposition::Format;
use crate::gzip;
use crate::poller::Poller;
use crate::registry::Registry;
use crate::reload::{Control, ReloadError};
use crate::telemetry::Telemetry;

/// Content type of the text exposition format.
pub const TEXT_FORMAT: &str = crate::exposition::TEXT_CONTENT_TYPE;

#[derive(Clone)]
struct App {
    poller: Poller,
    control: Arc<Control>,
    registry: Registry,
    telemetry: Arc<Telemetry>,
    telemetry_path: Arc<str>,
}

/// Paths the server registers besides the telemetry path; `/-/` and `/api/` are reserved whole,
/// so a later route there cannot collide either.
const FIXED_PATHS: &[&str] = &["/", "/jobs"];
const RESERVED_PREFIXES: &[&str] = &["/-/", "/api/"];

/// A `--web.telemetry-path` the router cannot serve.
#[derive(Debug, thiserror::Error)]
#[error("--web.telemetry-path {path:?}: {reason}")]
pub struct TelemetryPathError {
    path: String,
    reason: &'static str,
}

/// Checks a telemetry path before anything binds: an absolute path without route syntax that
/// no other route of the server uses (axum would panic on the overlap when the router is built).
pub fn check_telemetry_path(path: &str) -> Result<(), TelemetryPathError> {
    let reason = if !path.starts_with('/') || path.len() < 2 {
        Some("must be an absolute path such as /metrics")
    } else if path.contains(['{', '}', '*', '?', '#', ' '])
        || path.split('/').any(|seg| seg.starts_with(':'))
    {
        Some(
            "must be a plain path (no `{`, `}`, `*`, `?`, `#`, space, or segment starting with `:`)",
        )
    } else if FIXED_PATHS.contains(&path)
        || RESERVED_PREFIXES
            .iter()
            .any(|p| path.starts_with(p) || path == &p[..p.len() - 1])
    {
        Some("collides with a route the server already serves (/, /jobs, /-/..., /api/...)")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(TelemetryPathError {
            path: path.to_string(),
            reason,
        }),
        None => Ok(()),
    }
}

/// The exporter's routes.
pub fn router(
    poller: Poller,
    control: Arc<Control>,
    telemetry: Arc<Telemetry>,
    telemetry_path: &str,
) -> Router {
    let app = App {
        poller,
        registry: Registry::new(Arc::clone(&control)),
        control,
        telemetry,
        telemetry_path: telemetry_path.into(),
    };
    Router::new()
        .route("/", get(pages::landing))
        .route("/jobs", get(pages::jobs))
        .route(telemetry_path, get(metrics))
        .route("/-/healthy", get(|| async { "Healthy\n" }))
        .route("/-/ready", get(ready))
        .route("/-/reload", post(reload).put(reload))
        .merge(api::routes(app.clone()))
        // `/metrics` sends its own gzip body, joined from blocks compressed when jobs changed
        // (see `gzip`); this layer compresses the other pages, and `/metrics` only should the
        // stored blocks be missing. Fastest level: at the default level gzip took 340 ms for
        // the 33 MB of 10,000 jobs, against 19 ms for the text itself (callgrind,
        // BENCHMARKS.md).
        .layer(
            CompressionLayer::new()
                .gzip(true)
                .no_br()
                .no_deflate()
                .no_zstd()
                .quality(tower_http::CompressionLevel::Fastest),
        )
        // Outside the compression layer, which would call the handler (a whole scrape) and
        // only then turn its answer into a 406 carrying the full body.
        .layer(axum::middleware::from_fn(not_acceptable))
        .with_state(app)
}

/// Answers 406, without running the handler, a request whose `Accept-Encoding` refuses both
/// identity and gzip, the only codings served.
async fn not_acceptable(req: Request, next: Next) -> Response {
    let values: Vec<&str> = req
        .headers()
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    if values.is_empty() {
        return next.run(req).await;
    }
    let joined = values.join(",");
    if gzip::accepted(&joined) || gzip::identity_accepted(&joined) {
        return next.run(req).await;
    }
    (
        StatusCode::NOT_ACCEPTABLE,
        [(header::VARY, "accept-encoding")],
    )
        .into_response()
}

/// Parses `X-Prometheus-Scrape-Timeout-Seconds`; nonsense is ignored, not trusted.
fn scrape_timeout(headers: &HeaderMap) -> Option<Duration> {
    let v: f64 = headers
        .get("x-prometheus-scrape-timeout-seconds")?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    (v.is_finite() && v > 0.0 && v < 86_400.0).then(|| Duration::from_secs_f64(v))
}

/// Bytes per `/metrics` body chunk: small enough to stay under glibc's mmap threshold, so chunk
/// buffers come warm from the heap instead of fresh pages each time, and with the writer's head
/// room under 64 KiB, whose every free makes glibc consolidate its free lists (6% of a plain
/// 100,000-job scrape's samples with 64 KiB chunks; BENCHMARKS.md).
const METRICS_CHUNK: usize = 56 * 1024;

async fn metrics(State(app): State<App>, headers: HeaderMap) -> Response {
    let format = Format::negotiate(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()));
    let snapshot = app.poller.scrape(scrape_timeout(&headers)).await;
    let mut own = Vec::with_capacity(16 * 1024);
    app.telemetry.encode_in(&mut own, format);
    own.extend_from_slice(format.trailer().as_bytes());
    let wants_gzip = headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .any(|v| v.to_str().is_ok_and(gzip::accepted));
    // The stored compressed text is the text format's; OpenMetrics is compressed by the layer.
    if wants_gzip && format == Format::Text {
        // The job families were compressed when they changed (see `gzip`): only the
        // exporter's own metrics are compressed here, and every scraper shares the rest.
        let stored = gzip::compress(&own)
            .ok()
            .and_then(|tail| Arc::clone(&snapshot).gzip_chunks(tail, METRICS_CHUNK));
        if let Some(chunks) = stored {
            let body = axum::body::Body::from_stream(futures_util::stream::iter(
                chunks.map(Ok::<_, std::convert::Infallible>),
            ));
            return (
                [
                    (header::CONTENT_TYPE, TEXT_FORMAT),
                    (header::CONTENT_ENCODING, "gzip"),
                    (header::VARY, "accept-encoding"),
                ],
                body,
            )
                .into_response();
        }
    }
    // The body is written chunk by chunk as the connection takes it: a scrape of 100,000 jobs
    // (320 MB of text) holds a chunk at a time, not a copy of the whole text (BENCHMARKS.md).
    let chunks = snapshot
        .chunks_in(METRICS_CHUNK, format)
        .chain(std::iter::once(bytes::Bytes::from(own)))
        .map(Ok::<_, std::convert::Infallible>);
    let body = axum::body::Body::from_stream(futures_util::stream::iter(chunks));
    ([(header::CONTENT_TYPE, format.content_type())], body).into_response()
}

async fn ready(State(app): State<App>) -> Response {
    if app.poller.is_ready() {
        "Ready\n".into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "Not ready: the first refresh has not finished\n",
        )
            .into_response()
    }
}

async fn reload(State(app): State<App>) -> Response {
    match app.control.reload_shared().await {
        Ok(()) => "Configuration reloaded\n".into_response(),
        Err(e @ ReloadError::InProgress) => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "5")],
            format!("{e}\n"),
        )
            .into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("Reload failed, the running configuration is kept:\n{e}\n"),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrape_timeout_header_is_validated() {
        let mut h = HeaderMap::new();
        assert_eq!(scrape_timeout(&h), None);
        h.insert(
            "x-prometheus-scrape-timeout-seconds",
            "9.5".parse().expect("hv"),
        );
        assert_eq!(scrape_timeout(&h), Some(Duration::from_millis(9500)));
        for bad in ["-1", "NaN", "inf", "abc", "1e12"] {
            h.insert(
                "x-prometheus-scrape-timeout-seconds",
                bad.parse().expect("hv"),
            );
            assert_eq!(scrape_timeout(&h), None, "{bad}");
        }
    }
}

#[cfg(test)]
mod path_tests {
    use super::*;

    #[test]
    fn telemetry_path_must_not_collide_with_a_route() {
        for bad in [
            "/",
            "/jobs",
            "/-/healthy",
            "/-/ready",
            "/-/reload",
            "/-",
            "/api/v1/jobs",
            "/api/v1/jobs/evs/r/p/j",
            "/api",
            "/x/:id",
            "/a{b}",
            "metrics",
        ] {
            let e = check_telemetry_path(bad).expect_err(bad);
            assert!(e.to_string().contains("--web.telemetry-path"), "{e}");
        }
        for good in [
            "/metrics",
            "/m",
            "/jobs/metrics",
            "/prometheus/metrics",
            "/apis",
        ] {
            check_telemetry_path(good).expect(good);
        }
    }
}
