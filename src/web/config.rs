//! The web configuration file: exporter-toolkit's `web-config.yml` schema, and the
//! [`Settings`] one version of it gives (TLS, basic auth, extra response headers), validated
//! so that every problem names the file, the field and the value.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::http::{HeaderName, HeaderValue};
use serde::Deserialize;

use super::basic_auth::BasicAuth;
use super::{Error, Result, tls};

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

/// `tls_server_config`, as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TlsFile {
    pub(super) cert_file: Option<String>,
    pub(super) key_file: Option<String>,
    pub(super) client_ca_file: Option<String>,
    pub(super) client_auth_type: Option<String>,
    pub(super) min_version: Option<String>,
    pub(super) max_version: Option<String>,
    // Toolkit keys this exporter cannot honour (see `tls`).
    pub(super) cipher_suites: Option<serde_norway::Value>,
    pub(super) curve_preferences: Option<serde_norway::Value>,
    pub(super) client_allowed_sans: Option<serde_norway::Value>,
    pub(super) prefer_server_cipher_suites: Option<bool>,
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

/// Makes the errors of one web configuration file, each naming the file and a field.
#[derive(Clone, Copy)]
pub(super) struct Invalid<'a> {
    file: &'a str,
}

impl<'a> Invalid<'a> {
    /// Errors about `file`.
    pub(super) fn new(file: &'a str) -> Self {
        Self { file }
    }

    /// `field` is the whole path, such as `tls_server_config.client_auth_type`.
    pub(super) fn at(self, field: &str, message: impl Into<String>) -> Error {
        Error::Invalid {
            file: self.file.to_string(),
            field: field.to_string(),
            message: message.into(),
        }
    }
}

/// Settings in force: built from one version of the file.
pub struct Settings {
    pub(super) tls: Option<Arc<rustls::ServerConfig>>,
    pub(super) auth: Option<Arc<BasicAuth>>,
    pub(super) headers: Vec<(HeaderName, HeaderValue)>,
    /// Of the file and of every file it names (see `fingerprint`).
    pub(super) fingerprint: [u8; 32],
}

impl Settings {
    /// No file: plain HTTP, no authentication, no extra headers.
    pub(super) fn none() -> Self {
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
        let field = if path == "." {
            "(top level)".into()
        } else {
            path
        };
        Invalid::new(file).at(&field, e.into_inner().to_string())
    })?;
    Ok(parsed.unwrap_or_default())
}

fn read(path: &Path) -> Result<Vec<u8>> {
    crate::files::read(path, crate::files::MAX_CONFIG_BYTES).map_err(|source| Error::Read {
        file: path.display().to_string(),
        source,
    })
}

/// A SHA-256 digest as its 32 bytes.
pub(super) fn sha256_bytes(d: ring::digest::Digest) -> [u8; 32] {
    let mut out = [0; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// A hash of the file and of every file it names, to notice changes cheaply.
pub(super) fn fingerprint(path: &Path) -> Result<[u8; 32]> {
    let text = read(path)?;
    let mut h = ring::digest::Context::new(&ring::digest::SHA256);
    h.update(&text);
    let dir = path.parent().unwrap_or(Path::new("."));
    if let Ok(cfg) = parse_file(&String::from_utf8_lossy(&text), "") {
        for f in referenced_files(&cfg, dir) {
            h.update(f.as_os_str().as_encoded_bytes());
            // A missing file hashes as empty; loading it reports the error.
            h.update(&crate::files::read(&f, crate::files::MAX_CONFIG_BYTES).unwrap_or_default());
        }
    }
    Ok(sha256_bytes(h.finish()))
}

/// Reads and validates a web configuration file; every problem names the file, the field and
/// the value.
pub fn load(path: &Path) -> Result<Settings> {
    let file = path.display().to_string();
    let fp = fingerprint(path)?;
    let bytes = read(path)?;
    let text =
        String::from_utf8(bytes).map_err(|_| Invalid::new(&file).at("(file)", "not UTF-8"))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut settings = parse(&text, &file, dir)?;
    settings.fingerprint = fp;
    Ok(settings)
}

/// Validates a web configuration held in memory: `file` names it in errors and `dir` anchors
/// relative certificate paths (which are read). The fuzz target enters here.
pub fn parse(text: &str, file: &str, dir: &Path) -> Result<Settings> {
    let cfg = parse_file(text, file)?;
    let invalid = Invalid::new(file);
    let tls = match &cfg.tls_server_config {
        Some(t) => Some(Arc::new(tls::server_config(t, dir, invalid)?)),
        None => None,
    };
    let auth = match &cfg.basic_auth_users {
        Some(users) if !users.is_empty() => Some(Arc::new(BasicAuth::new(users, invalid)?)),
        _ => None,
    };
    let headers = match cfg.http_server_config.and_then(|h| h.headers) {
        Some(h) => response_headers(&h, invalid)?,
        None => Vec::new(),
    };
    Ok(Settings {
        tls,
        auth,
        headers,
        fingerprint: sha256_bytes(ring::digest::digest(&ring::digest::SHA256, text.as_bytes())),
    })
}

/// `http_server_config.headers`: only the [`ALLOWED_HEADERS`], with their allowed values.
fn response_headers(
    headers: &BTreeMap<String, String>,
    invalid: Invalid<'_>,
) -> Result<Vec<(HeaderName, HeaderValue)>> {
    let mut out = Vec::new();
    for (name, value) in headers {
        let field = format!("http_server_config.headers.{name}");
        let Some((canonical, allowed)) = ALLOWED_HEADERS
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
        else {
            return Err(invalid.at(
                &field,
                format!(
                    "HTTP header {name:?} cannot be customized; allowed: {}",
                    ALLOWED_HEADERS.map(|(n, _)| n).join(", ")
                ),
            ));
        };
        if !allowed.is_empty() && !allowed.contains(&value.as_str()) {
            return Err(invalid.at(&field, format!("{value:?} is not one of {allowed:?}")));
        }
        let name = HeaderName::from_bytes(canonical.as_bytes())
            .map_err(|e| invalid.at(&field, e.to_string()))?;
        let value = HeaderValue::from_str(value)
            .map_err(|_| invalid.at(&field, format!("{value:?} is not a valid header value")))?;
        out.push((name, value));
    }
    Ok(out)
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
}
