//! The HTML an operator reads without Grafana: the landing page and the `/jobs` page (and its
//! JSON twin). Server-rendered, no JavaScript, every value from the cloud or the configuration
//! escaped.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::config::Mode;
use crate::discovery;
use crate::listing::{self, Listing, MAX_ROWS, Row};
use crate::poller::{RecentError, TargetSummary};
use crate::scope::Scope;
use crate::telemetry::AccountStatus;

/// The style sheet of every page: plain, readable tables and status colours.
pub const STYLE: &str = "body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:1.5em 2em;color:#1f2328;font-size:14px}\
h1{font-size:1.6em;margin:.2em 0 .4em}h2{font-size:1.2em;margin:1.4em 0 .4em}\
a{color:#0969da}table{border-collapse:collapse;margin:.4em 0}\
th,td{border-bottom:1px solid #d0d7de;padding:.3em .6em;text-align:left;vertical-align:top}\
th{background:#f6f8fa;font-weight:600}tr:hover td{background:#f6f8fa}\
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}code,.id{font-family:ui-monospace,monospace;font-size:.92em}\
.st{display:inline-block;padding:0 .5em;border-radius:1em;font-weight:600;font-size:.85em;color:#fff}\
.st-failed{background:#cf222e}.st-stuck{background:#bc4c00}.st-running{background:#0969da}.st-succeeded{background:#1a7f37}\
.bad{color:#cf222e}.muted{color:#656d76}.note{background:#fff8c5;border:1px solid #d4a72c;padding:.4em .8em;display:inline-block}\
form{margin:.6em 0}form label{margin-right:.8em}input,select{font:inherit;padding:.1em .3em}\
table.jobs{font-size:.93em}table.jobs td.t{white-space:nowrap}table.jobs td.why{min-width:14em;max-width:30em}table.jobs td.ent{max-width:24em}\
table.jobs td.ent{font-size:.9em}tr.failed td{background:#fff5f5}tr.stuck td{background:#fff8f0}";

/// Escapes `s` for HTML text and attribute values.
pub fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Unix seconds as `2026-01-02 15:04:05 UTC`.
pub fn time(unix: f64) -> String {
    chrono::DateTime::from_timestamp(unix as i64, 0)
        .map(|d| d.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_default()
}

/// Unix seconds as `11-30 23:40:21` (UTC, the year left out to keep table columns narrow).
fn short_time(unix: f64) -> String {
    chrono::DateTime::from_timestamp(unix as i64, 0)
        .map(|d| d.format("%m-%d %H:%M:%S").to_string())
        .unwrap_or_default()
}

/// Seconds as `3d 4h`, `2h 5m`, `4m 10s` or `12s`.
pub fn age(seconds: f64) -> String {
    let s = seconds.max(0.0) as u64;
    let (d, h, m) = (s / 86_400, s / 3600 % 24, s / 60 % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {}s", s % 60),
        (0, _, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}

/// The query string of `/jobs`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct Params {
    /// Only this service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloud_service: Option<String>,
    /// Only this region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloud_region: Option<String>,
    /// Only this project.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_id: Option<String>,
    /// Statuses, comma-separated (`FAIL,stuck`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Most rows (at most 1,000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
    /// `json` or `html`; otherwise the Accept header decides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
}

impl Params {
    /// The listing query these parameters ask for; empty values match everything.
    pub fn query(&self) -> listing::Query {
        fn some(v: &Option<String>) -> Option<&str> {
            v.as_deref().map(str::trim).filter(|v| !v.is_empty())
        }
        listing::Query {
            cloud_service: some(&self.cloud_service).map(String::from),
            cloud_region: some(&self.cloud_region).map(String::from),
            project_id: some(&self.project_id).map(String::from),
            status: some(&self.status)
                .map(|s| {
                    s.split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(String::from)
                        .collect()
                })
                .unwrap_or_default(),
            limit: self.limit.unwrap_or(MAX_ROWS).min(MAX_ROWS),
        }
    }

    /// True when the answer should be JSON: `format=json`, or an Accept header that names
    /// `application/json` and not HTML.
    pub fn wants_json(&self, accept: Option<&str>) -> bool {
        match self.format.as_deref() {
            Some("json") => true,
            Some("html") => false,
            _ => accept.is_some_and(|a| a.contains("application/json") && !a.contains("text/html")),
        }
    }
}

/// The JSON twin of the page.
#[derive(Debug, Serialize)]
pub struct JobsJson<'a> {
    /// Unix time of the listing.
    pub now: f64,
    /// Jobs that matched the filter.
    pub matched: usize,
    /// Jobs listed here.
    pub shown: usize,
    /// Matched but not listed: narrow the filter to see them.
    pub more: usize,
    /// A non-terminal job older than this many seconds is `stuck`.
    pub stuck_after_seconds: f64,
    /// The jobs, failed first.
    pub jobs: &'a [Row],
}

impl<'a> JobsJson<'a> {
    /// The JSON of `listing`.
    pub fn new(listing: &'a Listing) -> Self {
        Self {
            now: listing.now,
            matched: listing.matched,
            shown: listing.rows.len(),
            more: listing.matched - listing.rows.len(),
            stuck_after_seconds: listing::STUCK_AFTER_SECONDS,
            jobs: &listing.rows,
        }
    }
}

const STATUS_CHOICES: [(&str, &str); 7] = [
    ("", "any"),
    ("FAIL", "FAIL"),
    ("stuck", "stuck (running over 1 h)"),
    ("RUNNING", "RUNNING"),
    ("INIT", "INIT"),
    ("PENDING", "PENDING (not fetched yet)"),
    ("SUCCESS", "SUCCESS"),
];

fn input(out: &mut String, name: &str, value: &Option<String>) {
    let _ = write!(
        out,
        "<label>{name} <input name=\"{name}\" size=\"14\" value=\"{}\"></label>",
        escape_html(value.as_deref().unwrap_or(""))
    );
}

/// A table cell with a short time, the full one on hover.
fn time_cell(t: Option<f64>) -> String {
    match t {
        Some(t) => format!(
            "<td class=\"t\" title=\"{}\">{}</td>",
            time(t),
            short_time(t)
        ),
        None => "<td></td>".into(),
    }
}

/// The `/jobs` page.
pub fn jobs_html(listing: &Listing, params: &Params) -> String {
    let mut form = String::from("<form method=\"get\" action=\"/jobs\">");
    input(&mut form, "cloud_service", &params.cloud_service);
    input(&mut form, "cloud_region", &params.cloud_region);
    input(&mut form, "project_id", &params.project_id);
    form.push_str("<label>status <select name=\"status\">");
    let current = params.status.as_deref().unwrap_or("");
    let mut known = false;
    for (value, label) in STATUS_CHOICES {
        let selected = value == current;
        known |= selected;
        let _ = write!(
            form,
            "<option value=\"{value}\"{}>{label}</option>",
            if selected { " selected" } else { "" }
        );
    }
    if !known {
        let v = escape_html(current);
        let _ = write!(form, "<option value=\"{v}\" selected>{v}</option>");
    }
    form.push_str("</select></label><button type=\"submit\">Filter</button></form>");

    let mut rows = String::new();
    for r in &listing.rows {
        let entities: Vec<String> = r
            .entities
            .iter()
            .map(|(k, v)| {
                format!(
                    "{}=<span class=\"id\">{}</span>",
                    escape_html(k),
                    escape_html(v)
                )
            })
            .collect();
        let _ = write!(
            rows,
            "<tr class=\"{group}\"><td><span class=\"st st-{group}\">{status}</span>{fetch}</td>\
<td>{job_type}</td><td class=\"id\">{job_id}</td><td class=\"t\" title=\"project_id {project}\">{svc}/{region}</td>\
<td class=\"id\">{code}</td><td class=\"why\">{reason}</td><td class=\"ent\">{entities}</td>{begin}{end}\
<td class=\"num\">{age}</td><td>{source}</td></tr>",
            group = r.group.as_str(),
            status = escape_html(&r.status),
            fetch = if r.fetch_ok {
                ""
            } else {
                " <span class=\"bad\" title=\"the last fetch of this job failed\">fetch failing</span>"
            },
            job_type = escape_html(&r.job_type),
            job_id = escape_html(&r.job_id),
            svc = escape_html(&r.scope.cloud_service),
            region = escape_html(&r.scope.cloud_region),
            project = escape_html(&r.scope.project_id),
            code = escape_html(r.error_code.as_deref().unwrap_or("")),
            reason = escape_html(r.fail_reason.as_deref().unwrap_or("")),
            entities = entities.join("<br>"),
            begin = time_cell(r.begin),
            end = time_cell(r.end),
            age = r.age_seconds.map(age).unwrap_or_default(),
            source = escape_html(r.source),
        );
    }
    if rows.is_empty() {
        rows.push_str("<tr><td colspan=\"11\" class=\"muted\">no job matches</td></tr>");
    }
    let more = listing.matched - listing.rows.len();
    let note = if more > 0 {
        format!(
            "<p class=\"note\">{more} more, filter to see them (at most {} rows are listed).</p>",
            listing.rows.len()
        )
    } else {
        String::new()
    };
    let json_params = Params {
        format: Some("json".into()),
        ..params.clone()
    };
    let json_link = serde_urlencoded::to_string(&json_params).unwrap_or_default();
    format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Jobs - Huawei Cloud Job Exporter</title>\
<style>{STYLE}</style></head><body><h1>Jobs</h1>\
<p><a href=\"/\">Home</a> · {matched} matched, {shown} listed: failed first, then stuck (running over {stuck} h), then running by age, then succeeded. \
<a href=\"/jobs?{json}\">JSON</a></p>{form}{note}\
<table class=\"jobs\"><tr><th>status</th><th>job_type</th><th>job_id</th><th>target</th><th>error_code</th><th>fail_reason</th>\
<th>entities</th><th>begin (UTC)</th><th>end (UTC)</th><th>age</th><th>source</th></tr>{rows}</table>{note}</body></html>\n",
        matched = listing.matched,
        shown = listing.rows.len(),
        stuck = listing::STUCK_AFTER_SECONDS / 3600.0,
        json = escape_html(&json_link),
    )
}

/// What the landing page shows.
pub struct Landing<'a> {
    /// Cached or on demand.
    pub mode: Mode,
    /// Whether the first refresh has finished.
    pub ready: bool,
    /// When the last cached-mode refresh finished (Unix seconds).
    pub last_refresh: Option<f64>,
    /// The page's time (Unix seconds).
    pub now: f64,
    /// Where the metrics are served.
    pub telemetry_path: &'a str,
    /// Tracked jobs per target.
    pub targets: &'a [TargetSummary],
    /// The discovery tasks, in any order.
    pub discovery: Vec<discovery::Status>,
    /// The accounts and their credentials.
    pub accounts: &'a [(String, AccountStatus)],
    /// The last failed fetches, latest last.
    pub errors: &'a [RecentError],
}

/// The landing page.
pub fn landing_html(page: Landing<'_>) -> String {
    let mode = match page.mode {
        Mode::Cached => "cached",
        Mode::OnDemand => "on_demand",
    };
    let refreshed = match (page.mode, page.last_refresh) {
        (Mode::OnDemand, _) => "each scrape collects (on demand)".to_string(),
        (Mode::Cached, Some(t)) => format!("{} ({} ago)", time(t), age(page.now - t)),
        (Mode::Cached, None) => "not yet".to_string(),
    };
    format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Huawei Cloud Job Exporter</title>\
<style>{STYLE}</style></head>\
<body><h1>Huawei Cloud Job Exporter</h1>\
<p>Version {version} (revision {revision}), mode <b>{mode}</b>, {ready}. Last refresh: {refreshed}.</p>\
<ul><li><a href=\"/jobs\">Jobs</a> (failed and stuck first)</li><li><a href=\"{path}\">Metrics</a></li><li><a href=\"/-/healthy\">Health</a></li><li><a href=\"/-/ready\">Readiness</a></li></ul>\
<h2>Tracked jobs</h2>{targets}\
<h2>Discovery</h2>{discovery}\
<h2>Credentials</h2>{accounts}\
<h2>Recent fetch errors</h2>{errors}\
</body></html>\n",
        version = env!("CARGO_PKG_VERSION"),
        revision = crate::REVISION,
        ready = if page.ready { "ready" } else { "not ready yet" },
        path = escape_html(page.telemetry_path),
        targets = targets_html(page.targets),
        discovery = discovery_html(page.discovery),
        accounts = accounts_html(page.accounts, page.now),
        errors = errors_html(page.errors),
    )
}

/// A target's `cloud_service`, `cloud_region` and `project_id` cells.
fn scope_cells(out: &mut String, scope: &Scope) {
    let _ = write!(
        out,
        "<td>{}</td><td>{}</td><td class=\"id\">{}</td>",
        escape_html(&scope.cloud_service),
        escape_html(&scope.cloud_region),
        escape_html(&scope.project_id),
    );
}

/// The landing page's tracked jobs per target, each linked to its `/jobs` listing.
fn targets_html(targets: &[TargetSummary]) -> String {
    let mut out = String::from(
        "<table><tr><th>cloud_service</th><th>cloud_region</th><th>project_id</th><th>active</th><th>terminal</th><th>last fetch failed</th><th></th></tr>",
    );
    for t in targets {
        let filter = serde_urlencoded::to_string([
            ("cloud_service", t.scope.cloud_service.as_str()),
            ("cloud_region", t.scope.cloud_region.as_str()),
            ("project_id", t.scope.project_id.as_str()),
        ])
        .unwrap_or_default();
        out.push_str("<tr>");
        scope_cells(&mut out, &t.scope);
        let _ = write!(
            out,
            "<td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td><a href=\"/jobs?{}\">jobs</a></td></tr>",
            t.active,
            t.terminal,
            t.failing,
            escape_html(&filter),
        );
    }
    if targets.is_empty() {
        out.push_str("<tr><td colspan=\"7\" class=\"muted\">none</td></tr>");
    }
    out.push_str("</table>");
    out
}

/// The landing page's discovery tasks, by target and source.
fn discovery_html(mut statuses: Vec<discovery::Status>) -> String {
    let mut out = String::from(
        "<table><tr><th>cloud_service</th><th>cloud_region</th><th>project_id</th><th>source</th><th>last success</th><th>jobs found</th><th>last error</th></tr>",
    );
    statuses.sort_by(|a, b| (&a.scope, a.source).cmp(&(&b.scope, b.source)));
    for d in &statuses {
        let when = d
            .last_success
            .map(time)
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| "never".to_string());
        out.push_str("<tr>");
        scope_cells(&mut out, &d.scope);
        let _ = write!(
            out,
            "<td>{}</td><td>{when}</td><td>{}</td><td>{}</td></tr>",
            d.source.as_str(),
            d.jobs_found,
            escape_html(d.last_error.as_deref().unwrap_or("none"))
        );
    }
    if statuses.is_empty() {
        out.push_str("<tr><td colspan=\"7\">no target discovers jobs (discover: in the configuration)</td></tr>");
    }
    out.push_str("</table>");
    out
}

/// The landing page's credentials table.
pub fn accounts_html(accounts: &[(String, AccountStatus)], now: f64) -> String {
    let mut out = String::from(
        "<table><tr><th>account</th><th>source</th><th>token expires</th><th>auth failures</th><th>last failure</th></tr>",
    );
    for (name, a) in accounts {
        let expiry = match a.token_expiry {
            Some(t) if t > now => format!("{} (in {})", time(t), age(t - now)),
            Some(t) => format!("<span class=\"bad\">{} (expired)</span>", time(t)),
            None => "<span class=\"muted\">n/a (fixed keys, or none yet)</span>".into(),
        };
        let last = match &a.last_failure {
            Some((at, msg)) => format!(
                "<span class=\"bad\">{} ({} ago)</span>: {}",
                time(*at),
                age(now - at),
                escape_html(msg)
            ),
            None => "<span class=\"muted\">none</span>".into(),
        };
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{expiry}</td><td class=\"num\">{}</td><td>{last}</td></tr>",
            escape_html(name),
            escape_html(if a.source.is_empty() { "?" } else { a.source }),
            a.failures,
        );
    }
    if accounts.is_empty() {
        out.push_str("<tr><td colspan=\"5\" class=\"muted\">no account</td></tr>");
    }
    out.push_str("</table>");
    out
}

/// The landing page's recent errors, alike ones counted together, latest first.
pub fn errors_html(errors: &[RecentError]) -> String {
    let mut out = String::from(
        "<table><tr><th>last seen</th><th>count</th><th>first seen</th><th>target</th><th>last job_id</th><th>reason</th><th>error</th></tr>",
    );
    for e in errors.iter().rev() {
        let _ = write!(
            out,
            "<tr><td>{}</td><td class=\"num\">{}</td><td>{}</td><td>{}</td><td class=\"id\">{}</td><td>{}</td><td>{}</td></tr>",
            time(e.at),
            e.count,
            time(e.first_at),
            escape_html(&e.target),
            escape_html(&e.job_id),
            e.reason.as_str(),
            escape_html(&e.message)
        );
    }
    if errors.is_empty() {
        out.push_str("<tr><td colspan=\"7\" class=\"muted\">none</td></tr>");
    }
    out.push_str("</table>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::listing::Group;

    #[test]
    fn html_is_escaped() {
        assert_eq!(
            escape_html("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }

    #[test]
    fn ages_read_naturally() {
        assert_eq!(age(12.0), "12s");
        assert_eq!(age(250.0), "4m 10s");
        assert_eq!(age(7500.0), "2h 5m");
        assert_eq!(age(3.0 * 86_400.0 + 4.0 * 3600.0), "3d 4h");
        assert_eq!(age(-5.0), "0s");
    }

    #[test]
    fn params_make_a_bounded_query_and_choose_the_format() {
        let p: Params = serde_urlencoded::from_str(
            "cloud_service=evs&cloud_region=&status=FAIL,+stuck&limit=5000",
        )
        .expect("query");
        let q = p.query();
        assert_eq!(q.cloud_service.as_deref(), Some("evs"));
        assert_eq!(q.cloud_region, None);
        assert_eq!(q.status, ["FAIL", "stuck"]);
        assert_eq!(q.limit, MAX_ROWS);
        assert!(!p.wants_json(Some("text/html,application/json")));
        assert!(p.wants_json(Some("application/json")));
        let j = Params {
            format: Some("json".into()),
            ..Params::default()
        };
        assert!(j.wants_json(None));
    }

    fn row(job_id: &str, reason: &str) -> Row {
        Row {
            scope: crate::scope::Scope::new("evs", "r", "p"),
            job_id: job_id.into(),
            job_type: "createVolume".into(),
            status: "FAIL".into(),
            group: Group::Failed,
            error_code: Some("EVS.1".into()),
            fail_reason: Some(reason.into()),
            entities: vec![("volume_id".into(), "v<1>".into())],
            begin: Some(0.0),
            end: Some(60.0),
            age_seconds: Some(120.0),
            fetch_ok: true,
            source: "config",
        }
    }

    #[test]
    fn the_page_escapes_values_and_says_how_many_are_left_out() {
        let listing = Listing {
            now: 120.0,
            matched: 1500,
            rows: vec![row("j<1>", "<script>alert(1)</script>")],
        };
        let params = Params {
            status: Some("\"><x".into()),
            ..Params::default()
        };
        let html = jobs_html(&listing, &params);
        assert!(!html.contains("<script>alert"));
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(html.contains("j&lt;1&gt;"));
        assert!(html.contains("v&lt;1&gt;"));
        assert!(!html.contains("\"><x"));
        assert!(html.contains("1499 more, filter to see them"));
        assert!(html.contains("class=\"st st-failed\">FAIL<"));
        assert!(html.contains("href=\"/jobs?status=%22%3E%3Cx&amp;format=json\""));
    }
}
