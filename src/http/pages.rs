//! The pages an operator reads: the landing page and `/jobs`. They gather what the poller,
//! discovery and telemetry know; the HTML is [`crate::pages`]'.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};

use super::App;
use crate::pages::{self, Landing};
use crate::scope::Scope;

/// `/`: what is tracked and discovered, the credentials, the recent fetch errors.
pub(super) async fn landing(State(app): State<App>) -> Html<String> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    Html(pages::landing_html(Landing {
        mode: app.poller.mode(),
        ready: app.poller.is_ready(),
        last_refresh: app.telemetry.last_refresh(),
        now,
        telemetry_path: &app.telemetry_path,
        targets: &app.poller.summary(),
        discovery: app.control.discovery().status(),
        accounts: &app.telemetry.accounts(),
        errors: &app.poller.recent_errors(),
    }))
}

/// `/jobs`: the tracked jobs, failed first, as HTML or (`?format=json`, `Accept:
/// application/json`) JSON. Read-only like `/metrics`, so behind the same web-config auth and
/// not the API token.
pub(super) async fn jobs(
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
