//! Job fetches over HTTP/1.1 keep-alive connections that the fetching task drives itself.
//!
//! reqwest hands every request to a connection task through channels and runs it through its
//! redirect, retry and timeout layers (it parses the URL twice and clones the headers per
//! request). Refreshing 10,000 active jobs every 30 s, that cost 30-31 µs of CPU per signed
//! fetch, 1.0% of a core, against a target of under 1%; through this module 20-24 µs (0.7-0.8%),
//! measured in one A/B run of `scripts/bench-scale idle` (BENCHMARKS.md). Here the task that
//! fetches a job also polls the connection (hyper's `client::conn::http1`), so a fetch is a
//! write, a readiness event and a read, with no task in between.
//!
//! reqwest still makes the IAM and metadata calls, and every call when a proxy variable
//! (`HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY`) is set: see [`proxy_configured`].

use std::collections::{HashMap, VecDeque};
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use reqwest::header::{ACCEPT, HeaderMap, HeaderValue, USER_AGENT};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_util::either::Either;

use super::{FetchError, causes};

/// An idle connection older than this is closed rather than reused (reqwest's default too):
/// gateways close idle connections after a minute or two.
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// Whether a proxy variable is set in the environment, in which case reqwest (which honours
/// them, and `NO_PROXY`) makes every call.
pub(crate) fn proxy_configured() -> bool {
    proxy_in(|name| std::env::var_os(name))
}

fn proxy_in(var: impl Fn(&str) -> Option<std::ffi::OsString>) -> bool {
    [
        "HTTPS_PROXY",
        "https_proxy",
        "HTTP_PROXY",
        "http_proxy",
        "ALL_PROXY",
        "all_proxy",
    ]
    .iter()
    .any(|name| var(name).is_some_and(|v| !v.is_empty()))
}

/// Scheme, host and port: connections are reused per origin.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Origin {
    tls: bool,
    host: String,
    port: u16,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.tls { "https" } else { "http" };
        if self.host.contains(':') {
            write!(f, "{scheme}://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{scheme}://{}:{}", self.host, self.port)
        }
    }
}

/// Why a URL has no origin this client can connect to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unreachable {
    /// Neither http nor https.
    #[error("{url}: unsupported scheme {scheme:?}")]
    Scheme {
        /// The URL.
        url: String,
        /// Its scheme.
        scheme: String,
    },
    /// The URL has no host.
    #[error("{0}: no host")]
    NoHost(String),
    /// The URL has no port, and its scheme no default one.
    #[error("{0}: no port")]
    NoPort(String),
}

/// Why a fetch's connection stopped before the fetch was done.
#[derive(Debug, thiserror::Error)]
enum Ended {
    /// The connection failed.
    #[error("{0}")]
    Failed(hyper::Error),
    /// The server closed it.
    #[error("connection closed")]
    Closed,
}

impl Origin {
    /// The failure of a request to this origin.
    fn fail(&self, what: impl std::fmt::Display) -> FetchError {
        FetchError::Connect(format!("{self}: {what}"))
    }

    /// The origin of `url`.
    pub fn of(url: &reqwest::Url) -> Result<Self, Unreachable> {
        let tls = match url.scheme() {
            "https" => true,
            "http" => false,
            other => {
                return Err(Unreachable::Scheme {
                    url: url.to_string(),
                    scheme: other.into(),
                });
            }
        };
        let host = url
            .host_str()
            .ok_or_else(|| Unreachable::NoHost(url.to_string()))?;
        // IPv6 literals come bracketed; connecting and TLS want the bare address.
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port = url
            .port_or_known_default()
            .ok_or_else(|| Unreachable::NoPort(url.to_string()))?;
        Ok(Self {
            tls,
            host: host.to_string(),
            port,
        })
    }
}

type Io = TokioIo<Either<TcpStream, TlsStream<TcpStream>>>;

/// One HTTP/1.1 connection: the request handle, and the connection state machine.
struct Conn {
    send: http1::SendRequest<Empty<Bytes>>,
    driver: Driver,
    idle_since: Instant,
}

/// hyper's connection state machine, which only makes progress while a fetch polls it in
/// [`Driver::drive`].
struct Driver {
    conn: http1::Connection<Io, Empty<Bytes>>,
    /// The connection future finished (closed, or failed): it must not be polled again.
    ended: bool,
}

impl Driver {
    /// Polls `fut` and the connection together until `fut` is done. Fails if the connection
    /// ends first, since nothing else would ever wake `fut`.
    async fn drive<T>(&mut self, fut: impl Future<Output = T>) -> Result<T, Ended> {
        let mut fut = std::pin::pin!(fut);
        let mut ended: Option<Result<(), hyper::Error>> = None;
        poll_fn(|cx| {
            if !self.ended
                && let Poll::Ready(r) = Pin::new(&mut self.conn).poll(cx)
            {
                self.ended = true;
                ended = Some(r);
            }
            if let Poll::Ready(v) = fut.as_mut().poll(cx) {
                return Poll::Ready(Ok(v));
            }
            if self.ended {
                return Poll::Ready(Err(match ended.take() {
                    Some(Err(e)) => Ended::Failed(e),
                    _ => Ended::Closed,
                }));
            }
            Poll::Pending
        })
        .await
    }
}

/// The answer to a GET, its body read in full.
pub(crate) struct Response {
    /// HTTP status.
    pub status: reqwest::StatusCode,
    /// Response headers.
    pub headers: HeaderMap,
    /// The body, at most the caller's limit.
    pub body: Vec<u8>,
}

/// Keep-alive connections per origin, shared by every fetch of one [`super::Client`].
pub(crate) struct Connections {
    /// Boxed: a connection is 1,800 bytes, which every checkout and return would copy.
    idle: Mutex<HashMap<Origin, VecDeque<Box<Conn>>>>,
    idle_timeout: Duration,
    tls: tokio_rustls::TlsConnector,
    connect_timeout: Duration,
    user_agent: HeaderValue,
}

impl Connections {
    /// Connections verifying servers with the platform's trust store, as reqwest does.
    pub fn new(
        connect_timeout: Duration,
        user_agent: &'static str,
    ) -> Result<Self, super::ClientError> {
        use rustls_platform_verifier::BuilderVerifierExt as _;
        let config = rustls::ClientConfig::builder()
            .with_platform_verifier()
            .map_err(|e| super::ClientError(format!("TLS trust store: {e}")))?
            .with_no_client_auth();
        Ok(Self::with_tls(config, connect_timeout, user_agent))
    }

    fn with_tls(
        mut config: rustls::ClientConfig,
        connect_timeout: Duration,
        user_agent: &'static str,
    ) -> Self {
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Self {
            idle: Mutex::new(HashMap::new()),
            tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
            idle_timeout: IDLE_TIMEOUT,
            connect_timeout,
            user_agent: HeaderValue::from_static(user_agent),
        }
    }

    /// `GET path` on `origin` with `headers` (`Host` among them); bodies over `max_body` bytes
    /// are refused. A request that a reused connection could not take (the server closed it
    /// while it sat idle) goes out on a new connection.
    pub async fn get(
        &self,
        origin: &Origin,
        path: String,
        mut headers: HeaderMap,
        max_body: usize,
    ) -> Result<Response, FetchError> {
        headers.insert(USER_AGENT, self.user_agent.clone());
        headers.insert(ACCEPT, HeaderValue::from_static("*/*"));
        let mut request = hyper::Request::new(Empty::new());
        *request.uri_mut() = hyper::Uri::try_from(path)
            .map_err(|e| FetchError::Connect(format!("request path: {e}")))?;
        *request.headers_mut() = headers;
        let (mut conn, answer) = loop {
            let (mut conn, reused) = match self.checkout(origin) {
                Some(c) => (c, true),
                None => (self.connect(origin).await?, false),
            };
            let ready = conn.driver.drive(conn.send.ready()).await;
            if ready.is_err() || conn.driver.ended {
                if reused {
                    continue;
                }
                return Err(origin.fail("the server closed the connection"));
            }
            match conn.driver.drive(conn.send.try_send_request(request)).await {
                Ok(Ok(answer)) => break (conn, answer),
                Ok(Err(mut e)) => match e.take_message() {
                    Some(unsent) if reused => request = unsent,
                    _ => return Err(origin.fail(causes(e.error()))),
                },
                Err(e) => return Err(origin.fail(e)),
            }
        };
        let (parts, mut body) = answer.into_parts();
        let too_large = |len: usize| {
            (len > max_body)
                .then(|| FetchError::Decode(format!("body larger than {max_body} bytes")))
        };
        let declared = parts
            .headers
            .get(reqwest::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        if let Some(err) = declared.and_then(too_large) {
            return Err(err);
        }
        let mut bytes = Vec::with_capacity(declared.unwrap_or(0));
        loop {
            let frame = match conn.driver.drive(body.frame()).await {
                Ok(Some(Ok(frame))) => frame,
                Ok(None) => break,
                Ok(Some(Err(e))) => return Err(origin.fail(causes(&e))),
                Err(e) => return Err(origin.fail(e)),
            };
            if let Ok(data) = frame.into_data() {
                if let Some(err) = too_large(bytes.len() + data.len()) {
                    return Err(err);
                }
                bytes.extend_from_slice(&data);
            }
        }
        self.checkin(origin, conn);
        Ok(Response {
            status: parts.status,
            headers: parts.headers,
            body: bytes,
        })
    }

    /// The most recently used idle connection: the likeliest to be still open.
    fn checkout(&self, origin: &Origin) -> Option<Box<Conn>> {
        let now = Instant::now();
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        let conns = idle.get_mut(origin)?;
        self.close_stale(conns, now);
        while let Some(c) = conns.pop_back() {
            if !c.driver.ended && !c.send.is_closed() {
                return Some(c);
            }
        }
        None
    }

    fn checkin(&self, origin: &Origin, mut conn: Box<Conn>) {
        if conn.driver.ended || conn.send.is_closed() {
            return;
        }
        let now = Instant::now();
        conn.idle_since = now;
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        let conns = match idle.get_mut(origin) {
            Some(conns) => conns,
            None => idle.entry(origin.clone()).or_default(),
        };
        conns.push_back(conn);
        self.close_stale(conns, now);
    }

    /// Closes the connections idle for longer than the idle timeout. They are oldest first
    /// (returned at the back, taken from the back), so only the front needs looking at; this
    /// also closes those left over from a burst of concurrency, which are never taken again.
    fn close_stale(&self, conns: &mut VecDeque<Box<Conn>>, now: Instant) {
        while conns
            .front()
            .is_some_and(|c| now.duration_since(c.idle_since) >= self.idle_timeout)
        {
            conns.pop_front();
        }
    }

    async fn connect(&self, origin: &Origin) -> Result<Box<Conn>, FetchError> {
        let fail = |what: &str, e: &dyn std::fmt::Display| origin.fail(format!("{what}: {e}"));
        let tcp = tokio::time::timeout(
            self.connect_timeout,
            TcpStream::connect((origin.host.as_str(), origin.port)),
        )
        .await
        .map_err(|_| FetchError::Timeout)?
        .map_err(|e| fail("connecting", &e))?;
        tcp.set_nodelay(true).map_err(|e| fail("connecting", &e))?;
        let io = if origin.tls {
            let name = rustls_pki_types::ServerName::try_from(origin.host.clone())
                .map_err(|e| fail("TLS server name", &e))?;
            let tls = tokio::time::timeout(self.connect_timeout, self.tls.connect(name, tcp))
                .await
                .map_err(|_| FetchError::Timeout)?
                .map_err(|e| fail("TLS handshake", &e))?;
            Either::Right(tls)
        } else {
            Either::Left(tcp)
        };
        let (send, conn) = http1::handshake(TokioIo::new(io))
            .await
            .map_err(|e| fail("HTTP handshake", &e))?;
        Ok(Box::new(Conn {
            send,
            driver: Driver { conn, ended: false },
            idle_since: Instant::now(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};

    /// What the test server does once it has answered a request.
    #[derive(Clone, Copy)]
    enum Then {
        /// Waits for the next request on the connection.
        KeepAlive,
        /// Closes the connection a moment later, as a gateway closes idle connections.
        CloseIdle,
        /// Reads the next request on the connection and closes without answering.
        DropSecond,
    }

    struct Server {
        origin: Origin,
        accepted: Arc<AtomicUsize>,
        /// Connections not yet closed by the client.
        open: Arc<AtomicUsize>,
        /// The head of every request received, in order.
        heads: Arc<Mutex<Vec<String>>>,
    }

    impl Server {
        fn accepted(&self) -> usize {
            self.accepted.load(Ordering::SeqCst)
        }

        /// Waits (up to 10 s) for the number of open connections to be `n`.
        async fn wait_open(&self, n: usize) {
            for _ in 0..1000 {
                if self.open.load(Ordering::SeqCst) == n {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            panic!(
                "{} connections open, expected {n}",
                self.open.load(Ordering::SeqCst)
            );
        }
    }

    /// A raw HTTP/1.1 server on 127.0.0.1 answering every request with `response`.
    async fn server(
        response: &'static str,
        then: Then,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let open = Arc::new(AtomicUsize::new(0));
        let heads = Arc::new(Mutex::new(Vec::new()));
        let (a, o, h) = (Arc::clone(&accepted), Arc::clone(&open), Arc::clone(&heads));
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                a.fetch_add(1, Ordering::SeqCst);
                o.fetch_add(1, Ordering::SeqCst);
                let (o, h, tls) = (Arc::clone(&o), Arc::clone(&h), tls.clone());
                tokio::spawn(async move {
                    match tls {
                        Some(acceptor) => {
                            if let Ok(s) = acceptor.accept(tcp).await {
                                answer(s, response, then, h).await;
                            }
                        }
                        None => answer(tcp, response, then, h).await,
                    }
                    o.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        Server {
            origin: Origin {
                tls: false,
                host: "127.0.0.1".into(),
                port,
            },
            accepted,
            open,
            heads,
        }
    }

    async fn answer(
        mut s: impl AsyncRead + AsyncWrite + Unpin,
        response: &'static str,
        then: Then,
        heads: Arc<Mutex<Vec<String>>>,
    ) {
        let mut served = 0;
        loop {
            let mut head = Vec::new();
            while !head.ends_with(b"\r\n\r\n") {
                let mut byte = [0u8; 1];
                if s.read(&mut byte).await.unwrap_or(0) == 0 {
                    return;
                }
                head.push(byte[0]);
            }
            heads
                .lock()
                .expect("heads")
                .push(String::from_utf8_lossy(&head).into_owned());
            if served == 1 && matches!(then, Then::DropSecond) {
                return;
            }
            if s.write_all(response.as_bytes()).await.is_err() {
                return;
            }
            let _ = s.flush().await;
            served += 1;
            if matches!(then, Then::CloseIdle) {
                tokio::time::sleep(Duration::from_millis(20)).await;
                let _ = s.shutdown().await;
                return;
            }
        }
    }

    const OK: &str = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nx-request-id: r1\r\n\r\n{}";

    fn connections() -> Connections {
        crate::install_crypto_provider();
        Connections::new(Duration::from_secs(2), "test-agent/1").expect("connections")
    }

    fn host_header(origin: &Origin) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            reqwest::header::HOST,
            HeaderValue::try_from(format!("{}:{}", origin.host, origin.port)).expect("host"),
        );
        h
    }

    async fn get(c: &Connections, origin: &Origin, max: usize) -> Result<Response, FetchError> {
        c.get(origin, "/v1/p/jobs/a%20b".into(), host_header(origin), max)
            .await
    }

    #[tokio::test]
    async fn keeps_one_connection_alive_across_requests_and_sends_the_expected_head() {
        let srv = server(OK, Then::KeepAlive, None).await;
        let c = connections();
        for _ in 0..3 {
            let r = get(&c, &srv.origin, 1024).await.expect("get");
            assert_eq!(r.status, 200);
            assert_eq!(r.body, b"{}");
            assert_eq!(r.headers["x-request-id"], "r1");
        }
        assert_eq!(srv.accepted(), 1);
        let heads = srv.heads.lock().expect("heads").clone();
        assert_eq!(heads.len(), 3);
        let head = heads[0].to_ascii_lowercase();
        assert!(
            head.starts_with("get /v1/p/jobs/a%20b http/1.1\r\n"),
            "{head}"
        );
        for line in [
            format!("host: 127.0.0.1:{}\r\n", srv.origin.port),
            "user-agent: test-agent/1\r\n".into(),
            "accept: */*\r\n".into(),
        ] {
            assert!(head.contains(&line), "{line:?} not in {head:?}");
        }
    }

    #[tokio::test]
    async fn connections_idle_past_the_timeout_are_closed_not_reused() {
        let srv = server(OK, Then::KeepAlive, None).await;
        let mut c = connections();
        c.idle_timeout = Duration::from_millis(100);
        let (a, b) = tokio::join!(get(&c, &srv.origin, 1024), get(&c, &srv.origin, 1024));
        a.expect("first");
        b.expect("second");
        assert_eq!(srv.accepted(), 2);
        srv.wait_open(2).await;
        tokio::time::sleep(Duration::from_millis(250)).await;
        get(&c, &srv.origin, 1024)
            .await
            .expect("after the idle timeout");
        assert_eq!(srv.accepted(), 3);
        srv.wait_open(1).await;
    }

    #[tokio::test]
    async fn a_connection_the_server_closed_while_idle_is_replaced() {
        let srv = server(OK, Then::CloseIdle, None).await;
        let c = connections();
        get(&c, &srv.origin, 1024).await.expect("first");
        tokio::time::sleep(Duration::from_millis(200)).await;
        get(&c, &srv.origin, 1024)
            .await
            .expect("second, on a new connection");
        assert_eq!(srv.accepted(), 2);
        assert_eq!(srv.heads.lock().expect("heads").len(), 2);
    }

    #[tokio::test]
    async fn a_request_lost_with_its_connection_fails_and_the_next_one_reconnects() {
        let srv = server(OK, Then::DropSecond, None).await;
        let c = connections();
        get(&c, &srv.origin, 1024).await.expect("first");
        // Sent, then the connection closed: it may have been processed, so it is not resent
        // here; the client's retry policy decides.
        match get(&c, &srv.origin, 1024).await {
            Err(FetchError::Connect(msg)) => assert!(!msg.is_empty()),
            other => panic!(
                "expected a connection error, got {:?}",
                other.map(|r| r.status)
            ),
        }
        get(&c, &srv.origin, 1024).await.expect("third");
        assert_eq!(srv.accepted(), 2);
    }

    #[tokio::test]
    async fn bodies_over_the_limit_are_refused_whether_declared_or_chunked() {
        let declared = server(
            "HTTP/1.1 200 OK\r\ncontent-length: 20\r\n\r\n01234567890123456789",
            Then::KeepAlive,
            None,
        )
        .await;
        let chunked = server(
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n8\r\n01234567\r\n8\r\n89012345\r\n0\r\n\r\n",
            Then::KeepAlive,
            None,
        )
        .await;
        let c = connections();
        for (srv, body) in [
            (&declared, &b"01234567890123456789"[..]),
            (&chunked, &b"0123456789012345"[..]),
        ] {
            match get(&c, &srv.origin, 10).await {
                Err(FetchError::Decode(msg)) => assert_eq!(msg, "body larger than 10 bytes"),
                other => panic!("expected a decode error, got {:?}", other.map(|r| r.status)),
            }
            assert_eq!(get(&c, &srv.origin, 20).await.expect("get").body, body);
        }
    }

    #[tokio::test]
    async fn nothing_listening_is_a_connection_error_naming_the_address() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr").port()
        };
        let origin = Origin {
            tls: false,
            host: "127.0.0.1".into(),
            port,
        };
        match get(&connections(), &origin, 1024).await {
            Err(FetchError::Connect(msg)) => {
                assert!(
                    msg.starts_with(&format!("http://127.0.0.1:{port}: connecting: ")),
                    "{msg}"
                )
            }
            other => panic!(
                "expected a connection error, got {:?}",
                other.map(|r| r.status)
            ),
        }
    }

    #[tokio::test]
    async fn speaks_tls_to_a_trusted_server_and_refuses_an_unknown_one() {
        crate::install_crypto_provider();
        let cert =
            rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("certificate");
        let der = cert.cert.der().clone();
        let key = rustls_pki_types::PrivateKeyDer::Pkcs8(
            rustls_pki_types::PrivatePkcs8KeyDer::from(cert.signing_key.serialize_der()),
        );
        let server_config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(vec![der.clone()], key)
            .expect("server config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_config));
        let mut srv = server(OK, Then::KeepAlive, Some(acceptor)).await;
        srv.origin.tls = true;
        srv.origin.host = "localhost".into();

        let mut roots = rustls::RootCertStore::empty();
        roots.add(der).expect("root");
        let trusting = Connections::with_tls(
            rustls::ClientConfig::builder()
                .with_root_certificates(roots)
                .with_no_client_auth(),
            Duration::from_secs(2),
            "test-agent/1",
        );
        for _ in 0..2 {
            let r = get(&trusting, &srv.origin, 1024)
                .await
                .expect("get over TLS");
            assert_eq!(r.body, b"{}");
        }
        assert_eq!(srv.accepted(), 1);

        match get(&connections(), &srv.origin, 1024).await {
            Err(FetchError::Connect(msg)) => {
                let prefix = format!("https://localhost:{}: TLS handshake: ", srv.origin.port);
                assert!(msg.starts_with(&prefix), "{msg}")
            }
            other => panic!("expected a TLS error, got {:?}", other.map(|r| r.status)),
        }
    }

    #[test]
    fn origins_carry_the_scheme_host_and_port() {
        let of = |u: &str| Origin::of(&reqwest::Url::parse(u).expect("url"));
        assert_eq!(
            of("https://evs.cn-north-4.myhuaweicloud.com/v1/p/jobs/"),
            Ok(Origin {
                tls: true,
                host: "evs.cn-north-4.myhuaweicloud.com".into(),
                port: 443
            })
        );
        assert_eq!(
            of("http://[::1]:8080/x"),
            Ok(Origin {
                tls: false,
                host: "::1".into(),
                port: 8080
            })
        );
        let ftp = of("ftp://h/x");
        assert_eq!(
            ftp,
            Err(Unreachable::Scheme {
                url: "ftp://h/x".into(),
                scheme: "ftp".into()
            })
        );
        assert_eq!(
            ftp.map_err(|e| e.to_string()),
            Err("ftp://h/x: unsupported scheme \"ftp\"".into())
        );
    }

    #[test]
    fn any_non_empty_proxy_variable_hands_calls_to_reqwest() {
        let env = |set: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                set.iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, v)| std::ffi::OsString::from(v))
            }
        };
        assert!(!proxy_in(env(&[])));
        assert!(!proxy_in(env(&[("HTTPS_PROXY", ""), ("NO_PROXY", "*")])));
        assert!(proxy_in(env(&[("https_proxy", "http://proxy:3128")])));
        assert!(proxy_in(env(&[("ALL_PROXY", "socks5://p:1080")])));
    }
}
