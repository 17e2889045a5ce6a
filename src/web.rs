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

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use serde::Deserialize;
use sha2::{Digest as _, Sha256};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

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

// ---------------------------------------------------------------------------------------------
// The file.

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    #[serde(default)]
    tls_server_config: Option<TlsFile>,
    #[serde(default)]
    http_server_config: Option<HttpFile>,
    #[serde(default)]
    basic_auth_users: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsFile {
    cert_file: Option<String>,
    key_file: Option<String>,
    client_ca_file: Option<String>,
    client_auth_type: Option<String>,
    min_version: Option<String>,
    max_version: Option<String>,
    // Toolkit keys this exporter cannot honour: refused rather than ignored, since each
    // narrows who may connect.
    cipher_suites: Option<serde_norway::Value>,
    curve_preferences: Option<serde_norway::Value>,
    client_allowed_sans: Option<serde_norway::Value>,
    prefer_server_cipher_suites: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpFile {
    /// Accepted for compatibility; the exporter serves HTTP/1.1.
    #[allow(dead_code)]
    http2: Option<bool>,
    headers: Option<BTreeMap<String, String>>,
}

/// Response headers the toolkit lets a web config set, with the values allowed (empty: any).
const ALLOWED_HEADERS: [(&str, &[&str]); 5] = [
    ("Strict-Transport-Security", &[]),
    ("X-Content-Type-Options", &["nosniff"]),
    ("X-Frame-Options", &["deny", "sameorigin"]),
    ("X-XSS-Protection", &[]),
    ("Content-Security-Policy", &[]),
];

/// The files a web config names, resolved against its directory.
fn referenced_files(cfg: &FileConfig, dir: &Path) -> Vec<PathBuf> {
    let Some(tls) = &cfg.tls_server_config else {
        return Vec::new();
    };
    [&tls.cert_file, &tls.key_file, &tls.client_ca_file]
        .into_iter()
        .flatten()
        .filter(|f| !f.is_empty())
        .map(|f| dir.join(f))
        .collect()
}

fn parse_file(text: &str, file: &str) -> Result<FileConfig> {
    if text.trim().is_empty() {
        return Ok(FileConfig::default());
    }
    let de = serde_norway::Deserializer::from_str(text);
    let parsed: Option<FileConfig> = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        Error::Invalid {
            file: file.to_string(),
            field: if path == "." {
                "(top level)".into()
            } else {
                path
            },
            message: e.into_inner().to_string(),
        }
    })?;
    Ok(parsed.unwrap_or_default())
}

fn read(path: &Path) -> Result<Vec<u8>> {
    crate::files::read(path, crate::files::MAX_CONFIG_BYTES).map_err(|source| Error::Read {
        file: path.display().to_string(),
        source,
    })
}

/// Settings in force: built from one version of the file.
pub struct Settings {
    tls: Option<Arc<rustls::ServerConfig>>,
    auth: Option<Arc<BasicAuth>>,
    headers: Vec<(HeaderName, HeaderValue)>,
    fingerprint: [u8; 32],
}

impl Settings {
    fn none() -> Self {
        Self {
            tls: None,
            auth: None,
            headers: Vec::new(),
            fingerprint: [0; 32],
        }
    }

    /// The TLS server configuration, when TLS is on.
    pub fn tls(&self) -> Option<Arc<rustls::ServerConfig>> {
        self.tls.clone()
    }

    /// True when basic auth is required.
    pub fn has_basic_auth(&self) -> bool {
        self.auth.is_some()
    }
}

/// A hash of the file and of every file it names, to notice changes cheaply.
fn fingerprint(path: &Path) -> Result<[u8; 32]> {
    let text = read(path)?;
    let mut h = Sha256::new();
    h.update(&text);
    let dir = path.parent().unwrap_or(Path::new("."));
    if let Ok(cfg) = parse_file(&String::from_utf8_lossy(&text), "") {
        for f in referenced_files(&cfg, dir) {
            h.update(f.as_os_str().as_encoded_bytes());
            // A missing file hashes as empty; loading it reports the error.
            h.update(crate::files::read(&f, crate::files::MAX_CONFIG_BYTES).unwrap_or_default());
        }
    }
    Ok(h.finalize().into())
}

/// Reads and validates a web configuration file; every problem names the file, the field and
/// the value.
pub fn load(path: &Path) -> Result<Settings> {
    let file = path.display().to_string();
    let fp = fingerprint(path)?;
    let bytes = read(path)?;
    let text = String::from_utf8(bytes).map_err(|_| Error::Invalid {
        file: file.clone(),
        field: "(file)".into(),
        message: "not UTF-8".into(),
    })?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut settings = parse(&text, &file, dir)?;
    settings.fingerprint = fp;
    Ok(settings)
}

/// Validates a web configuration held in memory: `file` names it in errors and `dir` anchors
/// relative certificate paths (which are read). The fuzz target enters here.
pub fn parse(text: &str, file: &str, dir: &Path) -> Result<Settings> {
    let file = file.to_string();
    let cfg = parse_file(text, &file)?;
    let fp: [u8; 32] = Sha256::digest(text.as_bytes()).into();
    let invalid = |field: &str, message: String| Error::Invalid {
        file: file.clone(),
        field: field.to_string(),
        message,
    };
    let tls = match &cfg.tls_server_config {
        Some(t) => Some(Arc::new(build_tls(t, dir, &invalid)?)),
        None => None,
    };
    let auth = match &cfg.basic_auth_users {
        Some(users) if !users.is_empty() => Some(Arc::new(BasicAuth::new(users, &invalid)?)),
        _ => None,
    };
    let mut headers = Vec::new();
    if let Some(h) = cfg
        .http_server_config
        .as_ref()
        .and_then(|h| h.headers.as_ref())
    {
        for (name, value) in h {
            let field = format!("http_server_config.headers.{name}");
            let Some((canonical, allowed)) = ALLOWED_HEADERS
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
            else {
                return Err(invalid(
                    &field,
                    format!(
                        "HTTP header {name:?} cannot be customized; allowed: {}",
                        ALLOWED_HEADERS.map(|(n, _)| n).join(", ")
                    ),
                ));
            };
            if !allowed.is_empty() && !allowed.contains(&value.as_str()) {
                return Err(invalid(
                    &field,
                    format!("{value:?} is not one of {allowed:?}"),
                ));
            }
            let name = HeaderName::from_bytes(canonical.as_bytes())
                .map_err(|e| invalid(&field, e.to_string()))?;
            let value = HeaderValue::from_str(value)
                .map_err(|_| invalid(&field, format!("{value:?} is not a valid header value")))?;
            headers.push((name, value));
        }
    }
    Ok(Settings {
        tls,
        auth,
        headers,
        fingerprint: fp,
    })
}

fn build_tls(
    t: &TlsFile,
    dir: &Path,
    invalid: &dyn Fn(&str, String) -> Error,
) -> Result<rustls::ServerConfig> {
    let unsupported = [
        ("cipher_suites", t.cipher_suites.is_some()),
        ("curve_preferences", t.curve_preferences.is_some()),
        ("client_allowed_sans", t.client_allowed_sans.is_some()),
    ];
    for (field, set) in unsupported {
        if set {
            return Err(invalid(
                &format!("tls_server_config.{field}"),
                "is not supported by this exporter (rustls picks safe suites and curves); remove it"
                    .into(),
            ));
        }
    }
    let _ = t.prefer_server_cipher_suites;
    let required = |field: &str, v: &Option<String>| -> Result<PathBuf> {
        match v.as_deref() {
            Some(f) if !f.is_empty() => Ok(dir.join(f)),
            _ => Err(invalid(
                &format!("tls_server_config.{field}"),
                "is required when tls_server_config is set".into(),
            )),
        }
    };
    let read_field = |field: &str, path: &Path| -> Result<Vec<u8>> {
        crate::files::read(path, crate::files::MAX_CONFIG_BYTES).map_err(|e| {
            invalid(
                &format!("tls_server_config.{field}"),
                format!("{}: cannot read: {e}", path.display()),
            )
        })
    };
    let cert_path = required("cert_file", &t.cert_file)?;
    let key_path = required("key_file", &t.key_file)?;
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(&read_field("cert_file", &cert_path)?)
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| {
                invalid(
                    "tls_server_config.cert_file",
                    format!("{}: not PEM certificates: {e}", cert_path.display()),
                )
            })?;
    if certs.is_empty() {
        return Err(invalid(
            "tls_server_config.cert_file",
            format!("{}: holds no certificate", cert_path.display()),
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(&read_field("key_file", &key_path)?).map_err(|e| {
        invalid(
            "tls_server_config.key_file",
            format!("{}: no PEM private key: {e}", key_path.display()),
        )
    })?;

    let version = |field: &str, v: &Option<String>| -> Result<Option<u8>> {
        match v.as_deref() {
            None | Some("") => Ok(None),
            // rustls has no TLS 1.0 or 1.1: the floor is TLS 1.2 whatever is asked.
            Some("TLS10" | "TLS11" | "TLS12") => Ok(Some(12)),
            Some("TLS13") => Ok(Some(13)),
            Some(other) => Err(invalid(
                &format!("tls_server_config.{field}"),
                format!("{other:?} is not one of TLS10, TLS11, TLS12, TLS13"),
            )),
        }
    };
    let min = version("min_version", &t.min_version)?.unwrap_or(12);
    let max = version("max_version", &t.max_version)?.unwrap_or(13);
    if min > max {
        return Err(invalid(
            "tls_server_config.min_version",
            "is above max_version".into(),
        ));
    }
    let versions: Vec<&'static rustls::SupportedProtocolVersion> =
        [(12, &rustls::version::TLS12), (13, &rustls::version::TLS13)]
            .into_iter()
            .filter(|(v, _)| (min..=max).contains(v))
            .map(|(_, p)| p)
            .collect();

    let auth_type = t.client_auth_type.as_deref().unwrap_or("NoClientCert");
    let ca_path = t
        .client_ca_file
        .as_deref()
        .filter(|f| !f.is_empty())
        .map(|f| dir.join(f));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = || -> Result<Arc<rustls::RootCertStore>> {
        let Some(ca) = &ca_path else {
            return Err(invalid(
                "tls_server_config.client_ca_file",
                format!("is required with client_auth_type {auth_type}"),
            ));
        };
        let mut store = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&read_field("client_ca_file", ca)?) {
            let cert = cert.map_err(|e| {
                invalid(
                    "tls_server_config.client_ca_file",
                    format!("{}: not PEM certificates: {e}", ca.display()),
                )
            })?;
            store.add(cert).map_err(|e| {
                invalid(
                    "tls_server_config.client_ca_file",
                    format!("{}: {e}", ca.display()),
                )
            })?;
        }
        if store.is_empty() {
            return Err(invalid(
                "tls_server_config.client_ca_file",
                format!("{}: holds no certificate", ca.display()),
            ));
        }
        Ok(Arc::new(store))
    };
    let verifier_err = |e: rustls::server::VerifierBuilderError| {
        invalid("tls_server_config.client_ca_file", e.to_string())
    };
    let verifier: Arc<dyn ClientCertVerifier> = match auth_type {
        "NoClientCert" | "" => {
            if ca_path.is_some() {
                return Err(invalid(
                    "tls_server_config.client_ca_file",
                    "is set but client_auth_type is NoClientCert; set client_auth_type to RequireAndVerifyClientCert or VerifyClientCertIfGiven".into(),
                ));
            }
            WebPkiClientVerifier::no_client_auth()
        }
        "RequestClientCert" => Arc::new(AnyClientCert {
            mandatory: false,
            provider: Arc::clone(&provider),
        }),
        "RequireAnyClientCert" | "RequireClientCert" => Arc::new(AnyClientCert {
            mandatory: true,
            provider: Arc::clone(&provider),
        }),
        "VerifyClientCertIfGiven" => {
            WebPkiClientVerifier::builder_with_provider(roots()?, Arc::clone(&provider))
                .allow_unauthenticated()
                .build()
                .map_err(verifier_err)?
        }
        "RequireAndVerifyClientCert" => {
            WebPkiClientVerifier::builder_with_provider(roots()?, Arc::clone(&provider))
                .build()
                .map_err(verifier_err)?
        }
        other => {
            return Err(invalid(
                "tls_server_config.client_auth_type",
                format!(
                    "{other:?} is not one of NoClientCert, RequestClientCert, RequireAnyClientCert, VerifyClientCertIfGiven, RequireAndVerifyClientCert"
                ),
            ));
        }
    };
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&versions)
        .map_err(|e| invalid("tls_server_config.min_version", e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|e| {
            invalid(
                "tls_server_config.key_file",
                format!(
                    "{} does not go with {}: {e}",
                    key_path.display(),
                    cert_path.display()
                ),
            )
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// `RequestClientCert` and `RequireAnyClientCert`: a client certificate is asked for (or
/// required) but not checked against any CA, as Go's crypto/tls does; the handshake signature
/// still proves the client holds its key.
#[derive(Debug)]
struct AnyClientCert {
    mandatory: bool,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ClientCertVerifier for AnyClientCert {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> std::result::Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

// ---------------------------------------------------------------------------------------------
// Basic auth.

/// Verified (user, hash, password) triples kept, so a scrape pays bcrypt once, not every time.
const AUTH_CACHE: usize = 1024;

struct BasicAuth {
    users: BTreeMap<String, String>,
    /// A hash of the same cost as the users', checked for unknown users so that they take as
    /// long as known ones.
    dummy: String,
    /// SHA-256 of user, hash and password: no password is kept in memory.
    verified: Mutex<HashSet<[u8; 32]>>,
}

impl BasicAuth {
    fn new(
        users: &BTreeMap<String, String>,
        invalid: &dyn Fn(&str, String) -> Error,
    ) -> Result<Self> {
        let mut cost = bcrypt::DEFAULT_COST;
        for (user, hash) in users {
            let field = format!("basic_auth_users.{user}");
            if user.contains(':') {
                return Err(invalid(&field, "a user name cannot contain ':'".into()));
            }
            let parts: bcrypt::HashParts = hash.parse().map_err(|_| {
                // The hash is not a secret, but it need not be echoed whole either.
                invalid(
                    &field,
                    "is not a bcrypt hash ($2a$, $2b$ or $2y$, as htpasswd -B writes)".into(),
                )
            })?;
            cost = parts.get_cost();
        }
        let dummy = bcrypt::hash("not a password: only for timing", cost)
            .map_err(|e| invalid("basic_auth_users", e.to_string()))?;
        Ok(Self {
            users: users.clone(),
            dummy,
            verified: Mutex::new(HashSet::new()),
        })
    }

    fn key(user: &str, hash: &str, password: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        for part in [user, hash, password] {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part.as_bytes());
        }
        h.finalize().into()
    }

    /// True when `authorization` holds the credentials of a configured user.
    async fn check(self: &Arc<Self>, authorization: Option<&HeaderValue>) -> bool {
        let Some((user, password)) = authorization.and_then(parse_basic) else {
            return false;
        };
        let known = self.users.get(&user).cloned();
        let hash = known.clone().unwrap_or_else(|| self.dummy.clone());
        let key = Self::key(&user, &hash, &password);
        if known.is_some()
            && self
                .verified
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .contains(&key)
        {
            return true;
        }
        // bcrypt costs tens of milliseconds of CPU: off the async workers.
        let ok = tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash))
            .await
            .ok()
            .and_then(|r| r.ok())
            .unwrap_or(false);
        if ok && known.is_some() {
            let mut cache = self.verified.lock().unwrap_or_else(PoisonError::into_inner);
            if cache.len() >= AUTH_CACHE {
                cache.clear();
            }
            cache.insert(key);
            return true;
        }
        false
    }
}

/// `Basic base64(user:password)`.
fn parse_basic(v: &HeaderValue) -> Option<(String, String)> {
    let v = v.to_str().ok()?.trim();
    let (scheme, rest) = v.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(rest.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

// ---------------------------------------------------------------------------------------------
// Runtime state and the request guard.

/// The web configuration in force, its reloading, and the per-request guard.
pub struct Web {
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

    /// The limits.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The settings in force.
    pub fn settings(&self) -> Arc<Settings> {
        Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Re-reads the file if it or a file it names changed. Returns true when new settings were
    /// applied; a file that does not validate is logged once and the previous settings stay.
    pub fn reload_if_changed(&self) -> bool {
        let Some(path) = &self.path else {
            return false;
        };
        let fp = match fingerprint(path) {
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
    pub fn wrap(self: &Arc<Self>, router: Router) -> Router {
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

// ---------------------------------------------------------------------------------------------
// Serving.

/// Accepts connections on `listener` and serves `router` on each (TLS when the settings in
/// force at accept time say so) until `shutdown` completes. Then it stops accepting, cancels
/// `stopping`, lets in-flight requests finish for up to `grace`, and drops what is left.
pub(crate) async fn serve(
    router: Router,
    web: Arc<Web>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()>,
    grace: Duration,
    stopping: CancellationToken,
) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use tower::ServiceExt as _;

    let limits = web.limits.clone();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        // hyper answers 431 when the request head outgrows its buffer; 8 KiB is its minimum.
        .max_buf_size(limits.max_header_bytes.max(8192))
        .keep_alive(true);
    // Shutdown: every connection finishes its request in flight, then closes.
    let closing = CancellationToken::new();
    // Near the connection limit: every connection open before then closes once idle. A
    // generation count each connection subscribes to when accepted, so none misses a signal.
    let (pressure, _) = tokio::sync::watch::channel(0u64);
    let connections = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let low_water = limits.max_connections.max(1) / 8;
    let clients = Clients::new(limits.max_connections_per_client);
    let mut tasks = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors, most likely: let some connections close.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Some(client) = clients.admit(peer.ip()) else {
            tracing::debug!(%peer, limit = limits.max_connections_per_client, "too many connections from this address; closing a new one");
            continue;
        };
        let Ok(permit) = Arc::clone(&connections).try_acquire_owned() else {
            tracing::debug!(%peer, limit = limits.max_connections, "too many connections; closing a new one");
            pressure.send_modify(|g| *g += 1);
            continue;
        };
        if connections.available_permits() < low_water.max(1) {
            tracing::debug!(
                open = limits.max_connections - connections.available_permits(),
                "near the connection limit; closing idle connections"
            );
            pressure.send_modify(|g| *g += 1);
        }
        let _ = stream.set_nodelay(true);
        let tls = web.settings().tls();
        let closing = closing.clone();
        // After the signal above: the connection that took a slot is not the one closed.
        let mut pressed = pressure.subscribe();
        let router = router.clone();
        let http = http.clone();
        let handshake_timeout = limits.header_read_timeout;
        tasks.spawn(async move {
            let _slots = (permit, client);
            let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                router.clone().oneshot(req.map(axum::body::Body::new))
            });
            let Some(tls) = tls else {
                let conn = http.serve_connection(TokioIo::new(stream), svc);
                if let Err(e) = drive(conn, &closing, &mut pressed).await {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                return;
            };
            let acceptor = tokio_rustls::TlsAcceptor::from(tls);
            let handshake = tokio::time::timeout(handshake_timeout, acceptor.accept(stream));
            let stream = tokio::select! {
                _ = closing.cancelled() => return,
                r = handshake => match r {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "TLS handshake timed out");
                        return;
                    }
                },
            };
            let conn = http.serve_connection(TokioIo::new(stream), svc);
            if let Err(e) = drive(conn, &closing, &mut pressed).await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tracing::info!(grace_seconds = grace.as_secs_f64(), "shutting down");
    stopping.cancel();
    closing.cancel();
    let drained = async { while tasks.join_next().await.is_some() {} };
    tokio::select! {
        _ = drained => {}
        _ = tokio::time::sleep(grace) => {
            tracing::warn!(
                connections = tasks.len(),
                "shutdown grace period over; dropping the connections still open"
            );
        }
    }
    tasks.shutdown().await;
}

/// Serves one connection until it ends; on shutdown or under connection pressure, asks it to
/// close once its request in flight (if any) is answered.
async fn drive<C>(
    conn: C,
    closing: &CancellationToken,
    pressure: &mut tokio::sync::watch::Receiver<u64>,
) -> Result<(), C::Error>
where
    C: hyper_util::server::graceful::GracefulConnection,
{
    tokio::pin!(conn);
    let mut asked = false;
    loop {
        tokio::select! {
            r = conn.as_mut() => return r,
            _ = closing.cancelled(), if !asked => {}
            Ok(()) = pressure.changed(), if !asked => {}
        }
        conn.as_mut().graceful_shutdown();
        asked = true;
    }
}

/// Open connections per client address, so one client cannot take them all.
#[derive(Clone)]
struct Clients {
    limit: usize,
    open: Arc<Mutex<HashMap<std::net::IpAddr, usize>>>,
}

/// One connection's place in its address's count, given back when dropped.
struct ClientSlot {
    clients: Clients,
    ip: std::net::IpAddr,
}

impl Clients {
    fn new(limit: usize) -> Self {
        Self {
            limit,
            open: Arc::default(),
        }
    }

    /// A slot for a new connection from `ip`, or none if it has `limit` open already. An
    /// IPv4 client reaching an IPv6 socket counts as its IPv4 address.
    fn admit(&self, ip: std::net::IpAddr) -> Option<ClientSlot> {
        let ip = ip.to_canonical();
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let n = open.entry(ip).or_default();
        if self.limit > 0 && *n >= self.limit {
            return None;
        }
        *n += 1;
        Some(ClientSlot {
            clients: self.clone(),
            ip,
        })
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut open = self
            .clients
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).expect("write");
        p
    }

    fn err(dir: &Path, yaml: &str) -> String {
        let p = write(dir, "web.yml", yaml);
        match load(&p) {
            Ok(_) => panic!("accepted: {yaml}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn empty_file_means_plain_http() {
        let dir = tempfile::tempdir().expect("dir");
        let s = load(&write(dir.path(), "web.yml", "")).expect("loads");
        assert!(s.tls.is_none() && s.auth.is_none() && s.headers.is_empty());
    }

    #[test]
    fn errors_name_the_file_the_field_and_the_value() {
        let dir = tempfile::tempdir().expect("dir");
        let e = err(dir.path(), "tls_server_config: {cert_file: a.crt}\n");
        assert!(
            e.contains("web.yml") && e.contains("tls_server_config.key_file"),
            "{e}"
        );
        let e = err(
            dir.path(),
            "tls_server_config: {cert_file: a.crt, key_file: a.key}\n",
        );
        assert!(e.contains("a.crt") && e.contains("cannot read"), "{e}");
        let e = err(dir.path(), "no_such_key: 1\n");
        assert!(e.contains("no_such_key"), "{e}");
        let e = err(dir.path(), "basic_auth_users: {alice: plaintext}\n");
        assert!(
            e.contains("basic_auth_users.alice") && !e.contains("plaintext"),
            "{e}"
        );
        let e = err(dir.path(), "http_server_config: {headers: {Server: x}}\n");
        assert!(e.contains("http_server_config.headers.Server"), "{e}");
        let e = err(
            dir.path(),
            "http_server_config: {headers: {X-Frame-Options: allow}}\n",
        );
        assert!(e.contains("\"allow\""), "{e}");
        let e = err(
            dir.path(),
            "tls_server_config: {cert_file: a, key_file: b, cipher_suites: [X]}\n",
        );
        assert!(e.contains("tls_server_config.cipher_suites"), "{e}");
    }

    #[test]
    fn allowed_headers_and_hashes_load() {
        let dir = tempfile::tempdir().expect("dir");
        let hash = bcrypt::hash("pw", 4).expect("hash");
        let yaml = format!(
            "http_server_config:\n  http2: true\n  headers:\n    X-Frame-Options: deny\n    Strict-Transport-Security: max-age=300\nbasic_auth_users:\n  alice: {hash}\n"
        );
        let s = load(&write(dir.path(), "web.yml", &yaml)).expect("loads");
        assert!(s.auth.is_some());
        assert_eq!(s.headers.len(), 2);
        assert_eq!(s.headers[0].0, "strict-transport-security");
    }

    #[tokio::test]
    async fn basic_auth_caches_good_pairs_and_rejects_the_rest() {
        let hash = bcrypt::hash("secret", 4).expect("hash");
        let users: BTreeMap<String, String> = [("alice".to_string(), hash)].into();
        let auth = Arc::new(
            BasicAuth::new(&users, &|f: &str, m: String| Error::Invalid {
                file: "t".into(),
                field: f.into(),
                message: m,
            })
            .expect("auth"),
        );
        let basic = |u: &str, p: &str| {
            let v = base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"));
            HeaderValue::from_str(&format!("Basic {v}")).expect("hv")
        };
        assert!(auth.check(Some(&basic("alice", "secret"))).await);
        assert_eq!(auth.verified.lock().expect("lock").len(), 1);
        assert!(auth.check(Some(&basic("alice", "secret"))).await);
        assert!(!auth.check(Some(&basic("alice", "wrong"))).await);
        assert!(!auth.check(Some(&basic("bob", "secret"))).await);
        assert!(!auth.check(None).await);
        assert!(
            !auth
                .check(Some(&HeaderValue::from_static("Bearer x")))
                .await
        );
        assert_eq!(auth.verified.lock().expect("lock").len(), 1);
    }
}
