//! `--web.config.file`: TLS, client certificates, basic auth, headers and reloading, through a
//! real TLS client. Certificates are made at test time (rcgen); no key is committed.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use huaweicloud_job_exporter::simulator::{DEMO_ACCESS_KEY, DEMO_SECRET_KEY, Outcome};
use huaweicloud_job_exporter::{Exporter, WebOptions, web};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

const HOST: &str = "exporter.test";

struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("key");
        Self {
            issuer: CertifiedIssuer::self_signed(params, key).expect("ca"),
        }
    }

    fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// (certificate PEM, key PEM) of a leaf for `name`.
    fn leaf(&self, name: &str, client: bool) -> (String, String) {
        let mut params = CertificateParams::new(vec![name.to_string()]).expect("params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![if client {
            ExtendedKeyUsagePurpose::ClientAuth
        } else {
            ExtendedKeyUsagePurpose::ServerAuth
        }];
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign");
        (cert.pem(), key.serialize_pem())
    }

    fn identity(&self, name: &str) -> reqwest::Identity {
        let (cert, key) = self.leaf(name, true);
        reqwest::Identity::from_pem(format!("{key}{cert}").as_bytes()).expect("identity")
    }

    fn root(&self) -> reqwest::Certificate {
        reqwest::Certificate::from_pem(self.pem().as_bytes()).expect("root")
    }
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).expect("write");
}

/// A simulator with one job and the YAML of an exporter config tracking it.
async fn backend() -> (String, tokio_util::sync::CancellationToken) {
    let (_sim, base, stop) = simulator(vec![script(
        "j",
        "evs",
        "createVolume",
        0.0,
        1e12,
        Outcome::Success,
    )])
    .await;
    let yaml = format!(
        "mode: on_demand\nmax_requests_per_second: 1000\naccounts: [{{name: a, access_key: {DEMO_ACCESS_KEY}, secret_key: {DEMO_SECRET_KEY}}}]\ntargets: [{{account: a, cloud_service: evs, cloud_region: r, project_id: {PROJECT}, endpoint: \"{base}\", jobs: [j]}}]\n"
    );
    (yaml, stop)
}

async fn exporter_on(yaml: &str, web_file: &Path, reload: Duration) -> Running {
    exporter_with(
        config(yaml),
        WebOptions {
            config_file: Some(web_file.to_path_buf()),
            limits: web::Limits {
                reload_interval: reload,
                ..web::Limits::default()
            },
            ..WebOptions::default()
        },
    )
    .await
}

fn tls_client(
    exp: &Running,
    root: Option<&Ca>,
    identity: Option<reqwest::Identity>,
) -> reqwest::Client {
    huaweicloud_job_exporter::install_crypto_provider();
    let mut b = reqwest::Client::builder().resolve(HOST, exp.addr);
    if let Some(ca) = root {
        b = b.tls_certs_only([ca.root()]);
    }
    if let Some(id) = identity {
        b = b.identity(id);
    }
    b.build().expect("client")
}

async fn status(client: &reqwest::Client, url: &str) -> Result<u16, String> {
    client
        .get(url)
        .send()
        .await
        .map(|r| r.status().as_u16())
        .map_err(|e| format!("{e:?}"))
}

/// A server CA, a client CA and a rogue CA; the server's certificate and key (`server.crt`,
/// `server.key`), the client CA (`clients.crt`) and `web_yaml` (`web.yml`) written to a new
/// directory. Relative paths in a web config resolve against its directory.
fn tls_files(web_yaml: &str) -> (tempfile::TempDir, Ca, Ca, Ca) {
    let dir = tempfile::tempdir().expect("dir");
    let server_ca = Ca::new("server ca");
    let client_ca = Ca::new("client ca");
    let rogue_ca = Ca::new("rogue ca");
    let (cert, key) = server_ca.leaf(HOST, false);
    write(dir.path(), "server.crt", &cert);
    write(dir.path(), "server.key", &key);
    write(dir.path(), "clients.crt", &client_ca.pem());
    write(dir.path(), "web.yml", web_yaml);
    (dir, server_ca, client_ca, rogue_ca)
}

#[tokio::test]
async fn tls_with_required_client_certificates() {
    let (dir, server_ca, client_ca, rogue_ca) = tls_files(
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  client_ca_file: clients.crt\n  client_auth_type: RequireAndVerifyClientCert\n  min_version: TLS13\nhttp_server_config:\n  headers:\n    Strict-Transport-Security: max-age=31536000\n",
    );
    let (yaml, sim_stop) = backend().await;
    let exp = exporter_on(&yaml, &dir.path().join("web.yml"), Duration::from_secs(60)).await;
    let url = format!("https://{HOST}:{}/metrics", exp.addr.port());

    let good = tls_client(
        &exp,
        Some(&server_ca),
        Some(client_ca.identity("prometheus")),
    );
    let r = good.get(&url).send().await.expect("mutual TLS works");
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["strict-transport-security"], "max-age=31536000");
    assert!(
        r.text()
            .await
            .expect("body")
            .contains("huaweicloud_job_fetch_success")
    );

    let no_cert = tls_client(&exp, Some(&server_ca), None);
    assert!(
        status(&no_cert, &url).await.is_err(),
        "no client certificate"
    );
    let rogue = tls_client(
        &exp,
        Some(&server_ca),
        Some(rogue_ca.identity("prometheus")),
    );
    assert!(
        status(&rogue, &url).await.is_err(),
        "certificate of another CA"
    );
    let untrusting = tls_client(
        &exp,
        Some(&rogue_ca),
        Some(client_ca.identity("prometheus")),
    );
    assert!(
        status(&untrusting, &url).await.is_err(),
        "server certificate not trusted"
    );
    huaweicloud_job_exporter::install_crypto_provider();
    let tls12 = reqwest::Client::builder()
        .resolve(HOST, exp.addr)
        .tls_certs_only([server_ca.root()])
        .identity(client_ca.identity("prometheus"))
        .tls_version_max(reqwest::tls::Version::TLS_1_2)
        .build()
        .expect("client");
    assert!(status(&tls12, &url).await.is_err(), "min_version TLS13");
    let plain = reqwest::Client::new();
    assert_ne!(
        status(&plain, &format!("http://{}/metrics", exp.addr)).await,
        Ok(200),
        "plain HTTP on a TLS port"
    );
    // The good client still works after the failed handshakes.
    assert_eq!(status(&good, &url).await, Ok(200));
    exp.shutdown().await;
    sim_stop.cancel();
}

#[tokio::test]
async fn tls_with_optional_client_certificates() {
    let (dir, server_ca, client_ca, rogue_ca) = tls_files(
        "tls_server_config: {cert_file: server.crt, key_file: server.key, client_ca_file: clients.crt, client_auth_type: VerifyClientCertIfGiven}\n",
    );
    let (yaml, sim_stop) = backend().await;
    let exp = exporter_on(&yaml, &dir.path().join("web.yml"), Duration::from_secs(60)).await;
    let url = format!("https://{HOST}:{}/-/healthy", exp.addr.port());
    let none = tls_client(&exp, Some(&server_ca), None);
    assert_eq!(status(&none, &url).await, Ok(200));
    let good = tls_client(&exp, Some(&server_ca), Some(client_ca.identity("p")));
    assert_eq!(status(&good, &url).await, Ok(200));
    let rogue = tls_client(&exp, Some(&server_ca), Some(rogue_ca.identity("p")));
    assert!(status(&rogue, &url).await.is_err());
    exp.shutdown().await;
    sim_stop.cancel();
}

fn basic(
    client: &reqwest::Client,
    url: &str,
    user: &str,
    password: &str,
) -> reqwest::RequestBuilder {
    client.get(url).basic_auth(user, Some(password))
}

#[tokio::test]
async fn basic_auth_headers_and_reload() {
    let dir = tempfile::tempdir().expect("dir");
    let one = bcrypt::hash("one", 4).expect("hash");
    write(
        dir.path(),
        "web.yml",
        &format!(
            "basic_auth_users:\n  alice: {one}\nhttp_server_config:\n  headers:\n    X-Frame-Options: deny\n    X-Content-Type-Options: nosniff\n"
        ),
    );
    let (yaml, sim_stop) = backend().await;
    let exp = exporter_on(
        &yaml,
        &dir.path().join("web.yml"),
        Duration::from_millis(100),
    )
    .await;
    let url = exp.url("/metrics");
    let c = reqwest::Client::new();
    let r = basic(&c, &url, "alice", "one").send().await.expect("send");
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-frame-options"], "deny");
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    // Cached now: the same pair again.
    assert_eq!(
        basic(&c, &url, "alice", "one")
            .send()
            .await
            .expect("send")
            .status(),
        200
    );
    for (user, password) in [("alice", "two"), ("bob", "one"), ("alice", "")] {
        let r = basic(&c, &url, user, password).send().await.expect("send");
        assert_eq!(r.status(), 401, "{user}:{password}");
        assert!(
            r.headers()["www-authenticate"]
                .to_str()
                .expect("hv")
                .starts_with("Basic")
        );
        assert_eq!(
            r.headers()["x-frame-options"],
            "deny",
            "headers on errors too"
        );
    }
    let r = c.get(exp.url("/-/healthy")).send().await.expect("send");
    assert_eq!(r.status(), 401, "every path is protected");

    // The password changes: the new one works once the file is re-read, the old one stops.
    let two = bcrypt::hash("two", 4).expect("hash");
    write(
        dir.path(),
        "web.yml",
        &format!("basic_auth_users:\n  alice: {two}\n"),
    );
    let mut switched = false;
    for _ in 0..100 {
        if basic(&c, &url, "alice", "two")
            .send()
            .await
            .expect("send")
            .status()
            == 200
        {
            switched = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(switched, "the new password never worked");
    assert_eq!(
        basic(&c, &url, "alice", "one")
            .send()
            .await
            .expect("send")
            .status(),
        401
    );

    // A broken file keeps the previous settings.
    write(
        dir.path(),
        "web.yml",
        "basic_auth_users:\n  alice: not-a-hash\n",
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        basic(&c, &url, "alice", "two")
            .send()
            .await
            .expect("send")
            .status(),
        200
    );
    write(
        dir.path(),
        "web.yml",
        "tls_server_config: {cert_file: missing.crt, key_file: missing.key}\n",
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        basic(&c, &url, "alice", "two")
            .send()
            .await
            .expect("send")
            .status(),
        200
    );
    // Removing the users turns auth off.
    write(dir.path(), "web.yml", "");
    let mut open = false;
    for _ in 0..100 {
        if c.get(&url).send().await.expect("send").status() == 200 {
            open = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(open);
    exp.shutdown().await;
    sim_stop.cancel();
}

#[tokio::test]
async fn a_bad_web_config_stops_startup_naming_file_field_and_value() {
    let dir = tempfile::tempdir().expect("dir");
    let (yaml, sim_stop) = backend().await;
    let cases = [
        (
            "tls_server_config: {cert_file: a.crt, key_file: a.key, client_auth_type: Sometimes}\n",
            "client_auth_type",
            "Sometimes",
        ),
        (
            "tls_server_config: {cert_file: nope.crt, key_file: nope.key}\n",
            "nope.crt",
            "cannot read",
        ),
        (
            "basic_auth_users: {alice: hunter2}\n",
            "basic_auth_users.alice",
            "bcrypt",
        ),
        (
            "http_server_config: {headers: {Server: x}}\n",
            "http_server_config.headers.Server",
            "cannot be customized",
        ),
        (
            "tls_server_config: {cert_file: a.crt, key_file: a.key, min_version: TLS99}\n",
            "min_version",
            "TLS99",
        ),
    ];
    write(dir.path(), "a.crt", &Ca::new("x").pem());
    let (_, key) = Ca::new("y").leaf("z", false);
    write(dir.path(), "a.key", &key);
    for (i, (text, field, detail)) in cases.iter().enumerate() {
        let name = format!("web{i}.yml");
        write(dir.path(), &name, text);
        let err = match Exporter::bind(
            config(&yaml),
            WebOptions {
                listen_address: "127.0.0.1:0".into(),
                config_file: Some(dir.path().join(&name)),
                ..WebOptions::default()
            },
        )
        .await
        {
            Ok(_) => panic!("{text} accepted"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains(&name), "{err}");
        assert!(err.contains(field), "{err}");
        assert!(err.contains(detail), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }
    // The binary exits non-zero before binding.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("probe")
        .local_addr()
        .expect("addr")
        .port();
    write(dir.path(), "exporter.yml", &yaml);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_huaweicloud-job-exporter"))
        .arg(format!(
            "--config.file={}",
            dir.path().join("exporter.yml").display()
        ))
        .arg(format!(
            "--web.config.file={}",
            dir.path().join("web0.yml").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("web0.yml") && stderr.contains("Sometimes"),
        "{stderr}"
    );
    sim_stop.cancel();
}

#[tokio::test]
async fn a_telemetry_path_colliding_with_a_route_is_refused_before_binding() {
    let (yaml, sim_stop) = backend().await;
    for path in [
        "/-/healthy",
        "/-/ready",
        "/api/v1/jobs",
        "/",
        "/jobs",
        "/-/reload",
    ] {
        let err = match Exporter::bind(
            config(&yaml),
            WebOptions {
                listen_address: "127.0.0.1:0".into(),
                telemetry_path: path.into(),
                ..WebOptions::default()
            },
        )
        .await
        {
            Ok(_) => panic!("{path} accepted"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains("--web.telemetry-path"), "{err}");
        assert!(err.contains(path), "{err}");
    }
    // The binary refuses the flag itself, naming it, and exits non-zero without serving.
    let dir = tempfile::tempdir().expect("dir");
    write(dir.path(), "exporter.yml", &yaml);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_huaweicloud-job-exporter"))
        .arg(format!(
            "--config.file={}",
            dir.path().join("exporter.yml").display()
        ))
        .arg("--web.telemetry-path=/-/ready")
        .arg("--web.listen-address=127.0.0.1:0")
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--web.telemetry-path") && !stderr.contains("panicked"),
        "{stderr}"
    );
    sim_stop.cancel();
}
