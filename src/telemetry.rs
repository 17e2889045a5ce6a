//! The exporter's own metrics (`huaweicloud_job_exporter_*` and `process_*`), kept in a
//! `prometheus` crate registry: they are few and small, so the crate's cost does not matter here
//! (the per-job families are rendered by [`crate::exposition`] instead).

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use crate::config::Mode;
use crate::exposition::{self, Format};
use crate::scope::Scope;
use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

const PREFIX: &str = "huaweicloud_job_exporter";

/// Longest failure message kept per account for the landing page.
const FAILURE_MESSAGE_MAX: usize = 300;

/// How an account's credentials are doing, for the landing page.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AccountStatus {
    /// Where the credentials come from (`config`, `env`, `file`, `iam`, `metadata`).
    pub source: &'static str,
    /// When the current token or temporary credentials expire, Unix seconds.
    pub token_expiry: Option<f64>,
    /// Requests rejected as unauthenticated, and failures to get credentials.
    pub failures: u64,
    /// When the last failure happened (Unix seconds) and what it said.
    pub last_failure: Option<(f64, String)>,
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Self-metrics of one exporter instance.
pub struct Telemetry {
    registry: Registry,
    api_requests: IntCounterVec,
    api_duration: HistogramVec,
    /// Duration of a cached-mode refresh.
    pub refresh_duration: Histogram,
    /// When the last cached-mode refresh finished.
    pub last_refresh: Gauge,
    /// Duration of an on-demand collection.
    pub collect_duration: Histogram,
    tracked_jobs: IntGaugeVec,
    auth_token_expiry: GaugeVec,
    auth_failures: IntCounterVec,
    auth_last_success: GaugeVec,
    truncated: IntCounterVec,
    label_folded: IntCounterVec,
    /// 1 when the last configuration load succeeded.
    pub config_reload_ok: IntGauge,
    /// When the configuration was last loaded successfully.
    pub config_reload_ts: Gauge,
    /// Discovery's families.
    pub discovery: DiscoveryMetrics,
    /// Failed writes of the state file (journal appends and snapshot rewrites).
    pub state_write_failures: IntCounter,
    accounts: Mutex<BTreeMap<String, AccountStatus>>,
}

/// The discovery families; every series of a (target, source) is created when its task starts,
/// so `rate()` and alerts see the first error or job.
#[derive(Clone)]
pub struct DiscoveryMetrics {
    last_success: GaugeVec,
    errors: IntCounterVec,
    jobs: IntCounterVec,
    skipped: IntCounterVec,
    over_limit: IntCounterVec,
    page_limit: IntCounterVec,
    gap: prometheus::CounterVec,
    lag: GaugeVec,
}

/// (cloud_service, cloud_region, project_id, source): the labels of one discovery task.
pub(crate) type DiscoveryLabels<'a> = [&'a str; 4];

impl DiscoveryMetrics {
    fn new() -> Self {
        let key = ["cloud_service", "cloud_region", "project_id", "source"];
        let with = |extra: &'static str| {
            let mut v = key.to_vec();
            v.push(extra);
            v
        };
        Self {
            last_success: GaugeVec::new(
                opts(
                    "discovery_last_success_timestamp_seconds",
                    "When the last discovery cycle of this target and source completed, as Unix time.",
                ),
                &key,
            )
            .expect("valid metric"),
            errors: IntCounterVec::new(
                opts(
                    "discovery_errors_total",
                    "Discovery requests that failed, by bounded reason; the cycle is retried with backoff.",
                ),
                &with("reason"),
            )
            .expect("valid metric"),
            jobs: IntCounterVec::new(
                opts(
                    "discovered_jobs_total",
                    "Jobs discovered and added to the tracked set, each counted once.",
                ),
                &key,
            )
            .expect("valid metric"),
            skipped: IntCounterVec::new(
                opts(
                    "discovery_skipped_traces_total",
                    "CTS traces read but revealing no job: failed_call (code >= 400), order (a purchase order, no job), no_job, unparsable (response unreadable).",
                ),
                &with("reason"),
            )
            .expect("valid metric"),
            over_limit: IntCounterVec::new(
                opts(
                    "discovery_jobs_over_limit_total",
                    "Discovered jobs not tracked because the target already tracks max_discovered_jobs discovered jobs.",
                ),
                &key,
            )
            .expect("valid metric"),
            page_limit: IntCounterVec::new(
                opts(
                    "discovery_page_limit_reached_total",
                    "Discovery cycles stopped by max_pages; the rest is read in the following cycles.",
                ),
                &key,
            )
            .expect("valid metric"),
            gap: prometheus::CounterVec::new(
                opts(
                    "discovery_gap_seconds_total",
                    "Seconds of CTS history that could not be read because they fell out of the 7 days CTS keeps (after a long stop).",
                ),
                &key,
            )
            .expect("valid metric"),
            lag: GaugeVec::new(
                opts(
                    "discovery_cursor_lag_seconds",
                    "How far behind the present the CTS cursor is (everything before it has been read).",
                ),
                &key,
            )
            .expect("valid metric"),
        }
    }

    fn collectors(&self) -> Vec<Box<dyn prometheus::core::Collector>> {
        vec![
            Box::new(self.last_success.clone()),
            Box::new(self.errors.clone()),
            Box::new(self.jobs.clone()),
            Box::new(self.skipped.clone()),
            Box::new(self.over_limit.clone()),
            Box::new(self.page_limit.clone()),
            Box::new(self.gap.clone()),
            Box::new(self.lag.clone()),
        ]
    }

    /// Creates every series of a task at zero; `skip_reasons` only for CTS.
    pub fn register(&self, l: DiscoveryLabels<'_>, skip_reasons: &[&str]) {
        for r in crate::cloud::Reason::ALL {
            self.errors
                .with_label_values(&[l[0], l[1], l[2], l[3], r.as_str()]);
        }
        for r in skip_reasons {
            self.skipped.with_label_values(&[l[0], l[1], l[2], l[3], r]);
        }
        self.jobs.with_label_values(&l);
        self.over_limit.with_label_values(&l);
        self.page_limit.with_label_values(&l);
        if !skip_reasons.is_empty() {
            self.gap.with_label_values(&l);
        }
    }

    /// Removes every series of a task whose target or source is gone.
    pub(crate) fn unregister(&self, l: DiscoveryLabels<'_>, skip_reasons: &[&str]) {
        for r in crate::cloud::Reason::ALL {
            let _ = self
                .errors
                .remove_label_values(&[l[0], l[1], l[2], l[3], r.as_str()]);
        }
        for r in skip_reasons {
            let _ = self
                .skipped
                .remove_label_values(&[l[0], l[1], l[2], l[3], r]);
        }
        for v in [&self.jobs, &self.over_limit, &self.page_limit] {
            let _ = v.remove_label_values(&l);
        }
        let _ = self.gap.remove_label_values(&l);
        let _ = self.last_success.remove_label_values(&l);
        let _ = self.lag.remove_label_values(&l);
    }

    /// A cycle completed at `unix_seconds`.
    pub fn success(&self, l: DiscoveryLabels<'_>, unix_seconds: f64) {
        self.last_success.with_label_values(&l).set(unix_seconds);
    }

    /// A request failed.
    pub fn error(&self, l: DiscoveryLabels<'_>, reason: crate::cloud::Reason) {
        self.errors
            .with_label_values(&[l[0], l[1], l[2], l[3], reason.as_str()])
            .inc();
    }

    /// `n` jobs were added.
    pub fn discovered(&self, l: DiscoveryLabels<'_>, n: u64) {
        self.jobs.with_label_values(&l).inc_by(n);
    }

    /// `n` traces were skipped for `reason`.
    pub fn skipped(&self, l: DiscoveryLabels<'_>, reason: &str, n: u64) {
        self.skipped
            .with_label_values(&[l[0], l[1], l[2], l[3], reason])
            .inc_by(n);
    }

    /// `n` jobs were not added: the target's bound is reached.
    pub(crate) fn over_limit(&self, l: DiscoveryLabels<'_>, n: u64) {
        self.over_limit.with_label_values(&l).inc_by(n);
    }

    /// A cycle stopped at `max_pages`.
    pub(crate) fn page_limit(&self, l: DiscoveryLabels<'_>) {
        self.page_limit.with_label_values(&l).inc();
    }

    /// `seconds` of history could not be read.
    pub(crate) fn gap(&self, l: DiscoveryLabels<'_>, seconds: f64) {
        self.gap.with_label_values(&l).inc_by(seconds);
    }

    /// The cursor is `seconds` behind the present.
    pub(crate) fn lag(&self, l: DiscoveryLabels<'_>, seconds: f64) {
        self.lag.with_label_values(&l).set(seconds);
    }
}

fn opts(name: &str, help: &str) -> Opts {
    Opts::new(format!("{PREFIX}_{name}"), help)
}

fn hopts(name: &str, help: &str, buckets: Vec<f64>) -> HistogramOpts {
    HistogramOpts::new(format!("{PREFIX}_{name}"), help).buckets(buckets)
}

impl Telemetry {
    /// The self-metrics of cached mode, the default (tests and benchmarks).
    pub fn new() -> Self {
        Self::for_mode(Mode::Cached)
    }

    /// Creates and registers the self-metrics of an exporter in `mode`: the refresh families
    /// only in cached mode and the collection family only on demand, so that no family sits
    /// at zero forever (a `last_refresh_timestamp_seconds` of 0 would read as a refresh
    /// overdue since 1970).
    pub(crate) fn for_mode(mode: Mode) -> Self {
        let registry = Registry::new();
        let upstream_buckets = vec![0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
        let round_buckets = vec![
            0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
        ];
        let build_info = IntGaugeVec::new(
            opts(
                "build_info",
                "Version and git revision of the exporter; always 1.",
            ),
            &["version", "revision"],
        )
        .expect("valid metric");
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION"), crate::REVISION])
            .set(1);
        let t = Self {
            api_requests: IntCounterVec::new(
                opts(
                    "api_requests_total",
                    "Upstream job API requests by HTTP status code, or by failure reason when no response came.",
                ),
                &["cloud_service", "cloud_region", "code"],
            )
            .expect("valid metric"),
            api_duration: HistogramVec::new(
                hopts(
                    "api_request_duration_seconds",
                    "Duration of upstream job API requests.",
                    upstream_buckets,
                ),
                &["cloud_service", "cloud_region"],
            )
            .expect("valid metric"),
            refresh_duration: Histogram::with_opts(hopts(
                "refresh_duration_seconds",
                "Duration of a cached-mode refresh of all active jobs.",
                round_buckets.clone(),
            ))
            .expect("valid metric"),
            last_refresh: Gauge::with_opts(opts(
                "last_refresh_timestamp_seconds",
                "When the last cached-mode refresh finished, as Unix time.",
            ))
            .expect("valid metric"),
            collect_duration: Histogram::with_opts(hopts(
                "collect_duration_seconds",
                "Duration of an on-demand collection of all active jobs.",
                round_buckets,
            ))
            .expect("valid metric"),
            tracked_jobs: IntGaugeVec::new(
                opts(
                    "tracked_jobs",
                    "Tracked jobs; active ones are still polled, terminal ones are kept until terminal_retention.",
                ),
                &["cloud_service", "cloud_region", "project_id", "phase"],
            )
            .expect("valid metric"),
            auth_token_expiry: GaugeVec::new(
                opts(
                    "auth_token_expiry_timestamp_seconds",
                    "When the account's current token or temporary credentials expire, as Unix time.",
                ),
                &["account"],
            )
            .expect("valid metric"),
            auth_failures: IntCounterVec::new(
                opts(
                    "auth_failures_total",
                    "Requests the cloud rejected as unauthenticated (HTTP 401), per account.",
                ),
                &["account"],
            )
            .expect("valid metric"),
            auth_last_success: GaugeVec::new(
                opts(
                    "auth_last_success_timestamp_seconds",
                    "When the cloud last accepted the account's credentials (a job request answered with anything but 401 or 403), as Unix time; absent until the first such answer.",
                ),
                &["account"],
            )
            .expect("valid metric"),
            truncated: IntCounterVec::new(
                opts(
                    "truncated_total",
                    "Entities and sub-jobs of job bodies not exported because a job held more than max_entities_per_job or max_subjobs_per_job.",
                ),
                &["kind"],
            )
            .expect("valid metric"),
            label_folded: IntCounterVec::new(
                opts(
                    "label_values_folded_total",
                    "Jobs, sub-jobs and failures counted under the label value \"other\" because their target already had 100 distinct values of that label (error_code, job_type, subjob_type) in a family.",
                ),
                &["cloud_service", "cloud_region", "project_id", "label"],
            )
            .expect("valid metric"),
            config_reload_ok: IntGauge::with_opts(opts(
                "config_last_reload_successful",
                "1 if the last configuration load succeeded.",
            ))
            .expect("valid metric"),
            config_reload_ts: Gauge::with_opts(opts(
                "config_last_reload_success_timestamp_seconds",
                "When the configuration was last loaded successfully, as Unix time.",
            ))
            .expect("valid metric"),
            discovery: DiscoveryMetrics::new(),
            state_write_failures: IntCounter::with_opts(opts(
                "state_write_failures_total",
                "Failed writes of the state file; the change was not acknowledged (API answers 503), see the error log for the file and the reason.",
            ))
            .expect("valid metric"),
            registry,
            accounts: Mutex::default(),
        };
        let mut collectors: Vec<Box<dyn prometheus::core::Collector>> = vec![
            Box::new(build_info),
            Box::new(t.api_requests.clone()),
            Box::new(t.api_duration.clone()),
            Box::new(t.tracked_jobs.clone()),
            Box::new(t.auth_token_expiry.clone()),
            Box::new(t.auth_failures.clone()),
            Box::new(t.auth_last_success.clone()),
            Box::new(t.truncated.clone()),
            Box::new(t.label_folded.clone()),
            Box::new(t.config_reload_ok.clone()),
            Box::new(t.config_reload_ts.clone()),
            Box::new(t.state_write_failures.clone()),
            Box::new(prometheus::process_collector::ProcessCollector::for_self()),
        ];
        match mode {
            Mode::Cached => {
                collectors.push(Box::new(t.refresh_duration.clone()));
                collectors.push(Box::new(t.last_refresh.clone()));
            }
            Mode::OnDemand => collectors.push(Box::new(t.collect_duration.clone())),
        }
        collectors.extend(t.discovery.collectors());
        for c in collectors {
            t.registry.register(c).expect("metric names are unique");
        }
        for kind in ["entities", "subjobs"] {
            t.truncated.with_label_values(&[kind]);
        }
        t
    }

    /// Counts one upstream request and its duration.
    pub(crate) fn observe_api_request(
        &self,
        service: &str,
        region: &str,
        code: &str,
        took: Duration,
    ) {
        self.api_requests
            .with_label_values(&[service, region, code])
            .inc();
        self.api_duration
            .with_label_values(&[service, region])
            .observe(took.as_secs_f64());
    }

    fn account(&self, account: &str, f: impl FnOnce(&mut AccountStatus)) {
        let mut accounts = self.accounts.lock().unwrap_or_else(PoisonError::into_inner);
        match accounts.get_mut(account) {
            Some(a) => f(a),
            None => {
                let mut a = AccountStatus::default();
                f(&mut a);
                accounts.insert(account.to_string(), a);
            }
        }
    }

    /// Counts a 401, or a failure to get credentials, for `account`; `detail` says what
    /// happened (without secrets).
    pub(crate) fn auth_failure(&self, account: &str, detail: &str) {
        self.auth_failures.with_label_values(&[account]).inc();
        self.account(account, |a| {
            a.failures += 1;
            let detail = detail.chars().take(FAILURE_MESSAGE_MAX).collect();
            a.last_failure = Some((unix_now(), detail));
        });
    }

    /// Records that the cloud just accepted `account`'s credentials. Alerts compare this with
    /// the time rather than the failure rate, which thins out as the retry backoff grows.
    pub(crate) fn auth_success(&self, account: &str) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        self.auth_last_success
            .with_label_values(&[account])
            .set(now);
    }

    /// The labels a target's values can be folded under.
    const FOLDABLE: [&'static str; 3] = ["error_code", "job_type", "subjob_type"];

    /// Creates a target's folded-value counters at 0, so `increase()` sees the first fold.
    pub(crate) fn register_label_caps(&self, scope: &Scope) {
        for label in Self::FOLDABLE {
            self.folded_counter(scope, label);
        }
    }

    fn folded_counter(&self, scope: &Scope, label: &str) -> IntCounter {
        self.label_folded.with_label_values(&[
            &*scope.cloud_service,
            &scope.cloud_region,
            &scope.project_id,
            label,
        ])
    }

    /// Counts one job, sub-job or failure of `scope` whose `label` was exported as `other`.
    pub(crate) fn count_folded(&self, scope: &Scope, label: &str) {
        self.folded_counter(scope, label).inc();
    }

    /// Records when the account's token or temporary credentials expire.
    pub(crate) fn set_token_expiry(&self, account: &str, unix_seconds: f64) {
        self.auth_token_expiry
            .with_label_values(&[account])
            .set(unix_seconds);
        self.account(account, |a| a.token_expiry = Some(unix_seconds));
    }

    /// Records where the account's credentials come from.
    pub(crate) fn set_account_source(&self, account: &str, source: &'static str) {
        self.account(account, |a| a.source = source);
    }

    /// Every account seen, by name.
    pub fn accounts(&self) -> Vec<(String, AccountStatus)> {
        let accounts = self.accounts.lock().unwrap_or_else(PoisonError::into_inner);
        accounts
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// When the last cached-mode refresh finished, Unix seconds; `None` before the first.
    pub(crate) fn last_refresh(&self) -> Option<f64> {
        let v = self.last_refresh.get();
        (v > 0.0).then_some(v)
    }

    /// Counts what capping one job body cut.
    pub fn truncated(&self, cut: crate::cloud::model::Truncated) {
        for (kind, n) in [("entities", cut.entities), ("subjobs", cut.subjobs)] {
            if n > 0 {
                self.truncated.with_label_values(&[kind]).inc_by(n as u64);
            }
        }
    }

    /// Makes sure the account has a zero-valued failure series from the start.
    pub(crate) fn register_account(&self, account: &str) {
        self.auth_failures.with_label_values(&[account]);
        self.account(account, |_| {});
    }

    /// Sets the tracked-job gauges; series of targets no longer present are removed.
    pub(crate) fn set_tracked(&self, counts: &[(&Scope, i64, i64)]) {
        self.tracked_jobs.reset();
        for (scope, active, terminal) in counts {
            for (phase, n) in [("active", active), ("terminal", terminal)] {
                self.tracked_jobs
                    .with_label_values(&[
                        &*scope.cloud_service,
                        &scope.cloud_region,
                        &scope.project_id,
                        phase,
                    ])
                    .set(*n);
            }
        }
    }

    /// Appends every self-metric in `format` (without OpenMetrics' closing `# EOF`).
    pub(crate) fn encode_in(&self, out: &mut Vec<u8>, format: Format) {
        match format {
            Format::Text => self.encode(out),
            Format::OpenMetrics => {
                let mut text = Vec::with_capacity(16 * 1024);
                self.encode(&mut text);
                to_openmetrics(&String::from_utf8_lossy(&text), out);
            }
        }
    }

    /// Appends the text exposition of every self-metric.
    pub fn encode(&self, out: &mut Vec<u8>) {
        // Encoding into a Vec cannot fail for I/O; a failure would be a metric-definition bug,
        // and a scrape should still return the job metrics.
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), out) {
            tracing::error!(error = %e, "cannot encode self-metrics");
        }
    }
}

/// Rewrites the `prometheus` crate's text exposition as OpenMetrics: the crate has no
/// OpenMetrics encoder, and the two differ here only in the header lines (see
/// [`exposition::family_name`]) and HELP escaping; sample lines are the same.
fn to_openmetrics(text: &str, out: &mut Vec<u8>) {
    // The crate writes HELP before TYPE; the HELP line waits for the TYPE, which decides the
    // family's OpenMetrics name.
    let mut help: Option<(&str, &str)> = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, h) = rest.split_once(' ').unwrap_or((rest, ""));
            help = Some((name, h));
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "unknown"));
            let (family, kind) = exposition::family_name(name, kind, Format::OpenMetrics);
            if let Some((hname, h)) = help.take()
                && hname == name
            {
                out.extend_from_slice(b"# HELP ");
                out.extend_from_slice(family.as_bytes());
                out.push(b' ');
                // The text format escaped backslash and newline already; OpenMetrics also
                // escapes the double quote.
                out.extend_from_slice(h.replace('"', "\\\"").as_bytes());
                out.push(b'\n');
            }
            out.extend_from_slice(b"# TYPE ");
            out.extend_from_slice(family.as_bytes());
            out.push(b' ');
            out.extend_from_slice(if kind == "untyped" { "unknown" } else { kind }.as_bytes());
            out.push(b'\n');
            continue;
        }
        out.extend_from_slice(line.as_bytes());
        out.push(b'\n');
    }
}

impl Default for Telemetry {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_metrics_in_openmetrics_rename_only_counter_and_info_families() {
        let t = Telemetry::new();
        t.auth_failure("prod", "HTTP 401");
        let mut text = Vec::new();
        t.encode(&mut text);
        let mut om = Vec::new();
        t.encode_in(&mut om, Format::OpenMetrics);
        let (text, om) = (
            String::from_utf8(text).expect("utf8"),
            String::from_utf8(om).expect("utf8"),
        );
        assert!(om.contains("# TYPE huaweicloud_job_exporter_auth_failures counter\n"));
        assert!(om.contains("# HELP huaweicloud_job_exporter_auth_failures Requests"));
        assert!(om.contains("# TYPE huaweicloud_job_exporter_build info\n"));
        assert!(om.contains("# TYPE process_cpu_seconds counter\n"));
        assert!(!om.contains("untyped"));
        // Sample lines are untouched.
        let samples = |s: &str| -> Vec<String> {
            s.lines()
                .filter(|l| !l.starts_with('#') && !l.starts_with("process_"))
                .map(String::from)
                .collect()
        };
        assert_eq!(samples(&text), samples(&om));
        assert!(om.contains("huaweicloud_job_exporter_auth_failures_total{account=\"prod\"} 1\n"));
        let status = &t.accounts()[0].1;
        assert_eq!(
            (
                status.failures,
                status.last_failure.as_ref().map(|f| f.1.as_str())
            ),
            (1, Some("HTTP 401"))
        );
    }

    #[test]
    fn refresh_families_in_cached_mode_collect_family_on_demand() {
        let families = |mode| {
            let t = Telemetry::for_mode(mode);
            let mut text = Vec::new();
            t.encode(&mut text);
            let text = String::from_utf8(text).expect("utf8");
            [
                "refresh_duration_seconds",
                "last_refresh_timestamp_seconds",
                "collect_duration_seconds",
            ]
            .map(|f| text.contains(&format!("# TYPE {PREFIX}_{f} ")))
        };
        assert_eq!(families(Mode::Cached), [true, true, false]);
        assert_eq!(families(Mode::OnDemand), [false, false, true]);
    }
}
