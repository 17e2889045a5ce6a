//! The exporter's own metrics (`huaweicloud_job_exporter_*` and `process_*`), kept in a
//! `prometheus` crate registry: they are few and small, so the crate's cost does not matter here
//! (the per-job families are rendered by [`crate::exposition`] instead).

use std::time::Duration;

use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

const PREFIX: &str = "huaweicloud_job_exporter";

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
    truncated: IntCounterVec,
    /// 1 when the last configuration load succeeded.
    pub config_reload_ok: IntGauge,
    /// When the configuration was last loaded successfully.
    pub config_reload_ts: Gauge,
}

fn opts(name: &str, help: &str) -> Opts {
    Opts::new(format!("{PREFIX}_{name}"), help)
}

fn hopts(name: &str, help: &str, buckets: Vec<f64>) -> HistogramOpts {
    HistogramOpts::new(format!("{PREFIX}_{name}"), help).buckets(buckets)
}

impl Telemetry {
    /// Creates and registers every self-metric.
    pub fn new() -> Self {
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
            truncated: IntCounterVec::new(
                opts(
                    "truncated_total",
                    "Entities and sub-jobs of job bodies not exported because a job held more than max_entities_per_job or max_subjobs_per_job.",
                ),
                &["kind"],
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
            registry,
        };
        let collectors: Vec<Box<dyn prometheus::core::Collector>> = vec![
            Box::new(build_info),
            Box::new(t.api_requests.clone()),
            Box::new(t.api_duration.clone()),
            Box::new(t.refresh_duration.clone()),
            Box::new(t.last_refresh.clone()),
            Box::new(t.collect_duration.clone()),
            Box::new(t.tracked_jobs.clone()),
            Box::new(t.auth_token_expiry.clone()),
            Box::new(t.auth_failures.clone()),
            Box::new(t.truncated.clone()),
            Box::new(t.config_reload_ok.clone()),
            Box::new(t.config_reload_ts.clone()),
            Box::new(prometheus::process_collector::ProcessCollector::for_self()),
        ];
        for c in collectors {
            t.registry.register(c).expect("metric names are unique");
        }
        for kind in ["entities", "subjobs"] {
            t.truncated.with_label_values(&[kind]);
        }
        t
    }

    /// Counts one upstream request and its duration.
    pub fn observe_api_request(&self, service: &str, region: &str, code: &str, took: Duration) {
        self.api_requests
            .with_label_values(&[service, region, code])
            .inc();
        self.api_duration
            .with_label_values(&[service, region])
            .observe(took.as_secs_f64());
    }

    /// Counts a 401 for `account`.
    pub fn auth_failure(&self, account: &str) {
        self.auth_failures.with_label_values(&[account]).inc();
    }

    /// Records when the account's token or temporary credentials expire.
    pub fn set_token_expiry(&self, account: &str, unix_seconds: f64) {
        self.auth_token_expiry
            .with_label_values(&[account])
            .set(unix_seconds);
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
    pub fn register_account(&self, account: &str) {
        self.auth_failures.with_label_values(&[account]);
    }

    /// Sets the tracked-job gauges; series of targets no longer present are removed.
    pub fn set_tracked(&self, counts: &[((&str, &str, &str), i64, i64)]) {
        self.tracked_jobs.reset();
        for ((svc, region, project), active, terminal) in counts {
            self.tracked_jobs
                .with_label_values(&[svc, region, project, "active"])
                .set(*active);
            self.tracked_jobs
                .with_label_values(&[svc, region, project, "terminal"])
                .set(*terminal);
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

impl Default for Telemetry {
    fn default() -> Self {
        Self::new()
    }
}
