//! huaweicloud-job-exporter: a Prometheus exporter for Huawei Cloud's asynchronous jobs.
//!
//! Huawei Cloud answers long operations (EVS disks, SDRS protection groups, ECS servers, …) with
//! a job id; `GET /v1/{project_id}/jobs/{job_id}` says how the job is going. This crate tracks a
//! set of jobs and exports their status, durations and failures.
//!
//! How the pieces fit, following one job from configuration to `/metrics`:
//!
//! ```text
//!  config ──► cloud::Target ──► poller ──(cloud::Client: signer, model)──► Huawei Cloud
//!  (YAML,        (endpoint,      (jobs, limits,                              or simulator
//!   secrets)      credentials)    cached / on-demand)
//!                                   │ renders changed jobs (exposition)
//!                                   ▼
//!                                snapshot ──► http (/metrics) ◄── Prometheus
//!                                             + telemetry (self-metrics)
//! ```
//!
//! - [`config`]: the YAML file, secrets (`{env:}`, `{file:}`, SDK variables) and validation.
//! - [`cli`]: the command line (exporter-toolkit flag names).
//! - [`cloud`]: the HTTP client, SDK-HMAC-SHA256 signing ([`cloud::signer`]) and lenient
//!   decoding of job and error bodies ([`cloud::model`]), with the bounded failure reasons.
//! - [`poller`]: tracked jobs, concurrency and rate limits, cached and on-demand collection.
//! - [`exposition`]: the text format, rendered per job when the job changes.
//! - [`snapshot`]: the immutable view a scrape serves.
//! - [`telemetry`]: the exporter's own metrics.
//! - [`http`]: the landing page, `/metrics`, health and readiness.
//! - [`simulator`]: a faithful stand-in for the cloud, for `demo`, tests and benchmarks.
//! - [`demo`]: the exporter and the simulator together, with a sample fleet.

pub mod cli;
pub mod cloud;
pub mod config;
pub mod demo;
pub mod exposition;
pub mod http;
pub mod poller;
pub mod simulator;
pub mod snapshot;
pub mod telemetry;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::poller::Poller;
use crate::telemetry::Telemetry;

/// Git revision the binary was built from.
pub const REVISION: &str = env!("HWJE_REVISION");

/// Errors that stop the exporter.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] config::Error),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// Address asked for.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
    /// The simulator failed.
    #[error(transparent)]
    Simulator(#[from] simulator::Error),
    /// Serving failed.
    #[error("server error: {0}")]
    Serve(std::io::Error),
}

/// Result alias for the crate's top level.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Installs rustls' ring provider once; reqwest is built without a default provider so that
/// the heavier aws-lc-rs is not compiled.
pub fn install_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Fails only if another provider was installed first, which is as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// Where and how the exporter serves.
#[derive(Debug, Clone)]
pub struct WebOptions {
    /// `host:port` or `:port`.
    pub listen_address: String,
    /// Metrics path.
    pub telemetry_path: String,
}

/// A bound, not yet running exporter.
pub struct Exporter {
    listener: TcpListener,
    local_addr: SocketAddr,
    poller: Poller,
    telemetry: Arc<Telemetry>,
    telemetry_path: String,
}

impl Exporter {
    /// Builds the client and poller from `config` and binds the listen address.
    pub async fn bind(config: Config, web: WebOptions) -> Result<Self> {
        let telemetry = Arc::new(Telemetry::new());
        let client = cloud::Client::new(config.request_timeout, Arc::clone(&telemetry))?;
        let providers: std::collections::BTreeMap<&str, Arc<cloud::auth::Provider>> = config
            .accounts
            .values()
            .map(|a| {
                tracing::info!(account = %a.name, source = a.auth.source(), "credentials");
                (a.name.as_str(), Arc::new(client.provider(a)))
            })
            .collect();
        let targets = config
            .targets
            .iter()
            .filter_map(|t| {
                let provider = providers.get(t.account.as_str())?;
                Some((
                    Arc::new(cloud::Target::with_provider(t, Arc::clone(provider))),
                    t.jobs.clone(),
                ))
            })
            .collect();
        let poller = Poller::new(
            Arc::new(client),
            targets,
            poller::Settings::from(&config),
            Arc::clone(&telemetry),
        );
        telemetry.config_reload_ok.set(1);
        telemetry.config_reload_ts.set(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
        );
        let addr = cli::listen_address(&web.listen_address);
        let bind_err = |source| Error::Bind {
            addr: web.listen_address.clone(),
            source,
        };
        let listener = TcpListener::bind(&addr).await.map_err(bind_err)?;
        let local_addr = listener.local_addr().map_err(bind_err)?;
        Ok(Self {
            listener,
            local_addr,
            poller,
            telemetry,
            telemetry_path: web.telemetry_path,
        })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves until `shutdown` completes, then stops the poller and lets in-flight requests
    /// finish.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<()> {
        let token = CancellationToken::new();
        let poller_task = (self.poller.mode() == config::Mode::Cached)
            .then(|| tokio::spawn(self.poller.clone().run_cached(token.clone())));
        let app = http::router(self.poller, self.telemetry, &self.telemetry_path);
        tracing::info!(address = %self.local_addr, "listening");
        let stop = token.clone();
        let served = axum::serve(self.listener, app)
            .with_graceful_shutdown(async move {
                shutdown.await;
                tracing::info!("shutting down");
                stop.cancel();
            })
            .await;
        token.cancel();
        if let Some(task) = poller_task {
            let _ = task.await;
        }
        served.map_err(Error::Serve)
    }
}

/// Binds and runs the exporter until `shutdown` completes.
pub async fn run(
    config: Config,
    web: WebOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    Exporter::bind(config, web).await?.run(shutdown).await
}
