//! Serving: the accept loop (hyper, HTTP/1.1, TLS when the settings in force say so), the
//! connection limits (in all and per client address), and the graceful stop.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::Web;

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
