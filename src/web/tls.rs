//! TLS for the server: the web configuration's `tls_server_config` turned into a rustls server
//! configuration in steps: fields this exporter cannot honour, the certificate chain and key,
//! the protocol versions, and how client certificates are asked for and verified.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, UnixTime};

use super::config::{Invalid, TlsFile};
use super::{Error, Result};

/// The client authentication types of exporter-toolkit (Go's `tls.ClientAuthType` names).
const CLIENT_AUTH_TYPES: &str = "NoClientCert, RequestClientCert, RequireAnyClientCert, VerifyClientCertIfGiven, RequireAndVerifyClientCert";

/// Builds the server's TLS configuration; certificate, key and CA paths are relative to `dir`.
pub(super) fn server_config(
    t: &TlsFile,
    dir: &Path,
    invalid: Invalid<'_>,
) -> Result<rustls::ServerConfig> {
    let tls = Fields { invalid, dir };
    refuse_unsupported(t, &tls)?;
    let cert_path = tls.required("cert_file", &t.cert_file)?;
    let key_path = tls.required("key_file", &t.key_file)?;
    let certs = tls.certificates("cert_file", &cert_path)?;
    let key = PrivateKeyDer::from_pem_slice(&tls.read("key_file", &key_path)?).map_err(|e| {
        tls.error(
            "key_file",
            format!("{}: no PEM private key: {e}", key_path.display()),
        )
    })?;
    let versions = protocol_versions(t, &tls)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = client_verifier(t, &tls, &provider)?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&versions)
        .map_err(|e| tls.error("min_version", e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|e| {
            tls.error(
                "key_file",
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

/// The fields of `tls_server_config`: errors that name them, and the files they name.
struct Fields<'a> {
    invalid: Invalid<'a>,
    dir: &'a Path,
}

impl Fields<'_> {
    fn error(&self, field: &str, message: impl Into<String>) -> Error {
        self.invalid
            .at(&format!("tls_server_config.{field}"), message)
    }

    /// The path a field names, which must be set.
    fn required(&self, field: &str, value: &Option<String>) -> Result<PathBuf> {
        match value.as_deref() {
            Some(f) if !f.is_empty() => Ok(self.dir.join(f)),
            _ => Err(self.error(field, "is required when tls_server_config is set")),
        }
    }

    fn read(&self, field: &str, path: &Path) -> Result<Vec<u8>> {
        crate::files::read(path, crate::files::MAX_CONFIG_BYTES)
            .map_err(|e| self.error(field, format!("{}: cannot read: {e}", path.display())))
    }

    /// The PEM certificates of the file a field names: at least one.
    fn certificates(&self, field: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>> {
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(&self.read(field, path)?)
                .collect::<std::result::Result<_, _>>()
                .map_err(|e| {
                    self.error(
                        field,
                        format!("{}: not PEM certificates: {e}", path.display()),
                    )
                })?;
        if certs.is_empty() {
            return Err(self.error(field, format!("{}: holds no certificate", path.display())));
        }
        Ok(certs)
    }
}

/// Toolkit keys this exporter cannot honour are refused rather than ignored, since each
/// narrows who may connect.
fn refuse_unsupported(t: &TlsFile, tls: &Fields<'_>) -> Result<()> {
    // Accepted: rustls orders the suites itself, which is what the key asks for.
    let _ = t.prefer_server_cipher_suites;
    let unsupported = [
        ("cipher_suites", t.cipher_suites.is_some()),
        ("curve_preferences", t.curve_preferences.is_some()),
        ("client_allowed_sans", t.client_allowed_sans.is_some()),
    ];
    match unsupported.iter().find(|(_, set)| *set) {
        Some((field, _)) => Err(tls.error(
            field,
            "is not supported by this exporter (rustls picks safe suites and curves); remove it",
        )),
        None => Ok(()),
    }
}

/// The protocol versions between `min_version` and `max_version`.
fn protocol_versions(
    t: &TlsFile,
    tls: &Fields<'_>,
) -> Result<Vec<&'static rustls::SupportedProtocolVersion>> {
    let version = |field: &str, v: &Option<String>| -> Result<Option<u8>> {
        match v.as_deref() {
            None | Some("") => Ok(None),
            // rustls has no TLS 1.0 or 1.1: the floor is TLS 1.2 whatever is asked.
            Some("TLS10" | "TLS11" | "TLS12") => Ok(Some(12)),
            Some("TLS13") => Ok(Some(13)),
            Some(other) => Err(tls.error(
                field,
                format!("{other:?} is not one of TLS10, TLS11, TLS12, TLS13"),
            )),
        }
    };
    let min = version("min_version", &t.min_version)?.unwrap_or(12);
    let max = version("max_version", &t.max_version)?.unwrap_or(13);
    if min > max {
        return Err(tls.error("min_version", "is above max_version"));
    }
    Ok(
        [(12, &rustls::version::TLS12), (13, &rustls::version::TLS13)]
            .into_iter()
            .filter(|(v, _)| (min..=max).contains(v))
            .map(|(_, p)| p)
            .collect(),
    )
}

/// How client certificates are asked for and checked, after `client_auth_type`.
fn client_verifier(
    t: &TlsFile,
    tls: &Fields<'_>,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<dyn ClientCertVerifier>> {
    let auth_type = t.client_auth_type.as_deref().unwrap_or("NoClientCert");
    let ca_path = t
        .client_ca_file
        .as_deref()
        .filter(|f| !f.is_empty())
        .map(|f| tls.dir.join(f));
    let against_ca = |optional: bool| -> Result<Arc<dyn ClientCertVerifier>> {
        let Some(ca) = &ca_path else {
            return Err(tls.error(
                "client_ca_file",
                format!("is required with client_auth_type {auth_type}"),
            ));
        };
        let builder = WebPkiClientVerifier::builder_with_provider(
            client_roots(tls, ca)?,
            Arc::clone(provider),
        );
        let builder = if optional {
            builder.allow_unauthenticated()
        } else {
            builder
        };
        builder
            .build()
            .map_err(|e| tls.error("client_ca_file", e.to_string()))
    };
    match auth_type {
        "NoClientCert" | "" => match ca_path {
            Some(_) => Err(tls.error(
                "client_ca_file",
                "is set but client_auth_type is NoClientCert; set client_auth_type to RequireAndVerifyClientCert or VerifyClientCertIfGiven",
            )),
            None => Ok(WebPkiClientVerifier::no_client_auth()),
        },
        "RequestClientCert" => Ok(Arc::new(AnyClientCert {
            mandatory: false,
            provider: Arc::clone(provider),
        })),
        "RequireAnyClientCert" | "RequireClientCert" => Ok(Arc::new(AnyClientCert {
            mandatory: true,
            provider: Arc::clone(provider),
        })),
        "VerifyClientCertIfGiven" => against_ca(true),
        "RequireAndVerifyClientCert" => against_ca(false),
        other => Err(tls.error(
            "client_auth_type",
            format!("{other:?} is not one of {CLIENT_AUTH_TYPES}"),
        )),
    }
}

/// The CAs client certificates are verified against.
fn client_roots(tls: &Fields<'_>, ca: &Path) -> Result<Arc<rustls::RootCertStore>> {
    let mut store = rustls::RootCertStore::empty();
    for cert in tls.certificates("client_ca_file", ca)? {
        store
            .add(cert)
            .map_err(|e| tls.error("client_ca_file", format!("{}: {e}", ca.display())))?;
    }
    Ok(Arc::new(store))
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
