//! The HTTP server's routes: `/` landing page, `/jobs`, `/metrics`, `/-/healthy`, `/-/ready`,
//! `/-/reload`, and the registration API (`api`: `/api/v1/jobs`).

mod api;

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use tower_http::compression::CompressionLayer;

pub use api::with_json_api_errors;

use crate::config::Mode;
use crate::exposition::Format;
use crate::gzip;
use crate::pages::{self, escape_html};
use crate::poller::Poller;
use crate::registry::Registry;
use crate::reload::{Control, ReloadError};
use crate::scope::Scope;
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
        .route("/", get(landing))
        .route("/jobs", get(jobs_page))
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
/// buffers come warm from the heap instead of fresh pages each time.
const METRICS_CHUNK: usize = 64 * 1024;

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

/// `/jobs`: the tracked jobs, failed first, as HTML or (`?format=json`, `Accept:
/// application/json`) JSON. Read-only like `/metrics`, so behind the same web-config auth and
/// not the API token.
async fn jobs_page(
    State(app): State<App>,
    headers: HeaderMap,
    params: Result<Query<pages::Params>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(params)) = params else {
        return (
            StatusCode::BAD_REQUEST,
            "bad query: expected cloud_service, cloud_region, project_id, status, limit (a number) or format\n",
        )
            .into_response();
    };
    let query = params.query();
    let poller = app.poller.clone();
    let control = Arc::clone(&app.control);
    // Sorting 100,000 jobs and looking up where each listed one comes from is a few
    // milliseconds of CPU: off the async workers.
    let listing = tokio::task::spawn_blocking(move || {
        let mut listing = poller.list_jobs(&query);
        let wanted: std::collections::HashMap<(&Scope, &str), usize> = listing
            .rows
            .iter()
            .enumerate()
            .map(|(i, r)| ((&r.scope, r.job_id.as_str()), i))
            .collect();
        let mut sources = vec![""; listing.rows.len()];
        for l in control.list() {
            let key = (&l.scope, l.job_id.as_str());
            if let Some(&i) = wanted.get(&key)
                && sources[i].is_empty()
            {
                sources[i] = l.source;
            }
        }
        for (row, source) in listing.rows.iter_mut().zip(sources) {
            row.source = source;
        }
        listing
    })
    .await;
    let Ok(listing) = listing else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    if params.wants_json(accept) {
        axum::Json(pages::JobsJson::new(&listing)).into_response()
    } else {
        Html(pages::jobs_html(&listing, &params)).into_response()
    }
}

async fn landing(State(app): State<App>) -> Html<String> {
    let mode = match app.poller.mode() {
        Mode::Cached => "cached",
        Mode::OnDemand => "on_demand",
    };
    let path = escape_html(&app.telemetry_path);
    let mut rows = String::new();
    for s in app.poller.summary() {
        let filter = serde_urlencoded::to_string([
            ("cloud_service", s.scope.cloud_service.as_str()),
            ("cloud_region", s.scope.cloud_region.as_str()),
            ("project_id", s.scope.project_id.as_str()),
        ])
        .unwrap_or_default();
        let _ = write!(
            rows,
            "<tr><td>{}</td><td>{}</td><td class=\"id\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td><a href=\"/jobs?{}\">jobs</a></td></tr>",
            escape_html(&s.scope.cloud_service),
            escape_html(&s.scope.cloud_region),
            escape_html(&s.scope.project_id),
            s.active,
            s.terminal,
            s.failing,
            escape_html(&filter),
        );
    }
    if rows.is_empty() {
        rows.push_str("<tr><td colspan=\"7\" class=\"muted\">none</td></tr>");
    }
    let mut discovery = String::new();
    let mut statuses = app.control.discovery().status();
    statuses.sort_by(|a, b| (&a.scope, a.source).cmp(&(&b.scope, b.source)));
    for d in statuses {
        let when = d
            .last_success
            .and_then(|t| chrono::DateTime::from_timestamp(t as i64, 0))
            .map_or_else(
                || "never".to_string(),
                |d| d.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
            );
        let _ = write!(
            discovery,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape_html(&d.scope.cloud_service),
            escape_html(&d.scope.cloud_region),
            escape_html(&d.scope.project_id),
            d.source.as_str(),
            when,
            d.jobs_found,
            escape_html(d.last_error.as_deref().unwrap_or("none"))
        );
    }
    if discovery.is_empty() {
        discovery.push_str("<tr><td colspan=\"7\">no target discovers jobs (discover: in the configuration)</td></tr>");
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let refreshed = match (app.poller.mode(), app.telemetry.last_refresh()) {
        (Mode::OnDemand, _) => "each scrape collects (on demand)".to_string(),
        (Mode::Cached, Some(t)) => format!("{} ({} ago)", pages::time(t), pages::age(now - t)),
        (Mode::Cached, None) => "not yet".to_string(),
    };
    let accounts = pages::accounts_html(&app.telemetry.accounts(), now);
    let errors = pages::errors_html(&app.poller.recent_errors());
    Html(format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Huawei Cloud Job Exporter</title>\
<style>{style}</style></head>\
<body><h1>Huawei Cloud Job Exporter</h1>\
<p>Version {version} (revision {revision}), mode <b>{mode}</b>, {ready}. Last refresh: {refreshed}.</p>\
<ul><li><a href=\"/jobs\">Jobs</a> (failed and stuck first)</li><li><a href=\"{path}\">Metrics</a></li><li><a href=\"/-/healthy\">Health</a></li><li><a href=\"/-/ready\">Readiness</a></li></ul>\
<h2>Tracked jobs</h2><table><tr><th>cloud_service</th><th>cloud_region</th><th>project_id</th><th>active</th><th>terminal</th><th>last fetch failed</th><th></th></tr>{rows}</table>\
<h2>Discovery</h2><table><tr><th>cloud_service</th><th>cloud_region</th><th>project_id</th><th>source</th><th>last success</th><th>jobs found</th><th>last error</th></tr>{discovery}</table>\
<h2>Credentials</h2>{accounts}\
<h2>Recent fetch errors</h2>{errors}\
</body></html>\n",
        style = pages::STYLE,
        version = env!("CARGO_PKG_VERSION"),
        revision = crate::REVISION,
        ready = if app.poller.is_ready() {
            "ready"
        } else {
            "not ready yet"
        },
    ))
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
