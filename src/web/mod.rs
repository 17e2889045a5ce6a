//! The web configuration: exporter-toolkit's `web-config.yml` (`--web.config.file`: TLS, basic
//! auth, extra response headers), its hot reload, and the guard every HTTP request passes
//! (authentication, the `/metrics` concurrency limit, the request body limit, the headers).
//!
//! The file has the toolkit's shape, so a file written for node_exporter works here:
//!
//! ```yaml
//! tls_server_config:
//!   cert_file: server.crt          # relative paths are relative to this file's directory
//!   key_file: server.key
//!   client_ca_file: ca.crt         # with a client_auth_type that verifies
//!   client_auth_type: RequireAndVerifyClientCert
//!   min_version: TLS12             # TLS12 or TLS13 (rustls has no older versions)
//! http_server_config:
//!   headers: {Strict-Transport-Security: max-age=31536000}
//! basic_auth_users:
//!   prometheus: $2y$10$...        # bcrypt hash (htpasswd -nBC 10 "" | tr -d ':\n')
//! ```
//!
//! The file and the files it names are polled; a change is applied to new connections and
//! requests, and a file that does not validate leaves the previous settings in force (logged).
//!
//! - `config`: the file's schema and the [`Settings`] it gives.
//! - `tls`: `tls_server_config` as a rustls server configuration.
//! - `basic_auth`: `basic_auth_users`, checked with bcrypt and cached.
//! - `serve`: the accept loop, the connection limits and the graceful stop.
//! - here: the settings in force (`Web`), their hot reload, and the guard every request
//!   passes.

mod basic_auth;
mod config;
mod serve;
mod tls;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

pub use config::{Settings, load, parse};
pub(crate) use serve::serve;

/// Why a web configuration file was refused.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read.
    #[error("{file}: cannot read: {source}")]
    Read {
        /// The file.
        file: String,
        /// Why.
        source: std::io::Error,
    },
    /// A field has a bad value.
    #[error("{file}: {field}: {message}")]
    Invalid {
        /// The web configuration file.
        file: String,
        /// Field path, such as `tls_server_config.client_auth_type`.
        field: String,
        /// What is wrong with the value.
        message: String,
    },
}

/// Result alias for this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Limits of the HTTP server.
#[derive(Debug, Clone)]
pub struct Limits {
    /// A client must send a request's headers within this (slowloris); also how long an idle
    /// keep-alive connection and a TLS handshake may last.
    pub header_read_timeout: Duration,
    /// Largest request head (request line and headers); beyond it, 431. At least 8 KiB.
    pub max_header_bytes: usize,
    /// Largest request body; beyond it, 413.
    pub max_body_bytes: usize,
    /// `/metrics` requests served at once; 0 means no limit.
    pub max_concurrent_scrapes: usize,
    /// How long an excess `/metrics` request waits for a slot before a 503.
    pub scrape_queue_wait: Duration,
    /// Open connections; beyond it, new ones are closed at once. When fewer than an eighth of
    /// them are left, idle keep-alive connections are closed (and busy ones after their
    /// response), so that a scrape can always get in.
    pub max_connections: usize,
    /// Open connections from one client address; beyond it, its new ones are closed at once.
    /// 0 means no limit.
    pub max_connections_per_client: usize,
    /// How often the web configuration file is checked for changes.
    pub reload_interval: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            max_header_bytes: 16 * 1024,
            max_body_bytes: 1 << 20,
            max_concurrent_scrapes: 40,
            scrape_queue_wait: Duration::from_secs(2),
            max_connections: 1024,
            max_connections_per_client: 64,
            reload_interval: Duration::from_secs(5),
        }
    }
}

/// The web configuration in force, its reloading, and the per-request guard.
pub(crate) struct Web {
    path: Option<PathBuf>,
    current: RwLock<Arc<Settings>>,
    /// Fingerprint of the last file that failed to load, so it is logged once.
    last_bad: Mutex<Option<[u8; 32]>>,
    limits: Limits,
    scrapes: Option<Arc<Semaphore>>,
    telemetry_path: String,
}

impl Web {
    /// Loads `path` (none: plain HTTP, no auth) and sets the limits.
    pub fn new(path: Option<&Path>, limits: Limits, telemetry_path: &str) -> Result<Self> {
        let settings = match path {
            Some(p) => load(p)?,
            None => Settings::none(),
        };
        let scrapes = (limits.max_concurrent_scrapes > 0)
            .then(|| Arc::new(Semaphore::new(limits.max_concurrent_scrapes)));
        Ok(Self {
            path: path.map(Path::to_path_buf),
            current: RwLock::new(Arc::new(settings)),
            last_bad: Mutex::new(None),
            limits,
            scrapes,
            telemetry_path: telemetry_path.to_string(),
        })
    }

    /// The settings in force.
    pub fn settings(&self) -> Arc<Settings> {
        Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Re-reads the file if it or a file it names changed. Returns true when new settings were
    /// applied; a file that does not validate is logged once and the previous settings stay.
    pub(crate) fn reload_if_changed(&self) -> bool {
        let Some(path) = &self.path else {
            return false;
        };
        let fp = match config::fingerprint(path) {
            Ok(fp) => fp,
            Err(e) => {
                let mut last = self.last_bad.lock().unwrap_or_else(PoisonError::into_inner);
                if last.is_none() {
                    tracing::error!(error = %e, "cannot reload the web configuration; keeping the previous one");
                }
                *last = Some([0xff; 32]);
                return false;
            }
        };
        if fp == self.settings().fingerprint {
            // Back to what is in force (after a bad edit, say): nothing to do or to log.
            *self.last_bad.lock().unwrap_or_else(PoisonError::into_inner) = None;
            return false;
        }
        if *self.last_bad.lock().unwrap_or_else(PoisonError::into_inner) == Some(fp) {
            return false;
        }
        match load(path) {
            Ok(settings) => {
                tracing::info!(
                    file = %path.display(),
                    tls = settings.tls.is_some(),
                    basic_auth = settings.auth.is_some(),
                    "web configuration reloaded"
                );
                *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(settings);
                *self.last_bad.lock().unwrap_or_else(PoisonError::into_inner) = None;
                true
            }
            Err(e) => {
                tracing::error!(error = %e, "invalid web configuration; keeping the previous one");
                *self.last_bad.lock().unwrap_or_else(PoisonError::into_inner) = Some(fp);
                false
            }
        }
    }

    /// Polls the file every `reload_interval` until `stop`.
    pub async fn watch(self: Arc<Self>, stop: CancellationToken) {
        if self.path.is_none() {
            return;
        }
        let mut ticker = tokio::time::interval(self.limits.reload_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = ticker.tick() => {}
            }
            let this = Arc::clone(&self);
            // Loading hashes a dummy bcrypt password: keep it off the async workers.
            let _ = tokio::task::spawn_blocking(move || this.reload_if_changed()).await;
        }
    }

    /// Wraps `router` with the guard (auth, scrape limit, headers) and the body limit.
    pub(crate) fn wrap(self: &Arc<Self>, router: Router) -> Router {
        router
            .layer(axum::middleware::from_fn_with_state(
                Arc::clone(self),
                guard,
            ))
            .layer(tower_http::limit::RequestBodyLimitLayer::new(
                self.limits.max_body_bytes,
            ))
    }
}

async fn guard(State(web): State<Arc<Web>>, req: Request, next: Next) -> Response {
    let settings = web.settings();
    let mut resp = 'resp: {
        if let Some(auth) = &settings.auth
            && !auth.check(req.headers().get(header::AUTHORIZATION)).await
        {
            break 'resp (
                StatusCode::UNAUTHORIZED,
                [(
                    header::WWW_AUTHENTICATE,
                    "Basic realm=\"huaweicloud-job-exporter\"",
                )],
                "Unauthorized\n",
            )
                .into_response();
        }
        let _permit = match &web.scrapes {
            Some(sem) if req.uri().path() == web.telemetry_path => {
                match tokio::time::timeout(
                    web.limits.scrape_queue_wait,
                    Arc::clone(sem).acquire_owned(),
                )
                .await
                {
                    Ok(Ok(p)) => Some(p),
                    _ => {
                        tracing::warn!(
                            limit = web.limits.max_concurrent_scrapes,
                            "too many concurrent scrapes; answering 503"
                        );
                        break 'resp (
                            StatusCode::SERVICE_UNAVAILABLE,
                            [(header::RETRY_AFTER, "1")],
                            "Too many concurrent scrapes\n",
                        )
                            .into_response();
                    }
                }
            }
            _ => None,
        };
        next.run(req).await
    };
    for (name, value) in &settings.headers {
        resp.headers_mut().insert(name.clone(), value.clone());
    }
    resp
}
