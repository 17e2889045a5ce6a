//! Retries, HTTP server limits and graceful stop: the real exporter against the real simulator,
//! both on 127.0.0.1:0. No test asserts how long something took; bounds below only keep a
//! broken build from hanging.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use huaweicloud_job_exporter::scope::Scope;
use huaweicloud_job_exporter::secret::{Credentials, Secret};
use huaweicloud_job_exporter::simulator::{DEMO_ACCESS_KEY, DEMO_SECRET_KEY, Fault, Outcome};
use huaweicloud_job_exporter::{WebOptions, cloud, telemetry::Telemetry, web};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

fn on_demand_yaml(base: &str, jobs: &[&str]) -> String {
    format!(
        "mode: on_demand\nrequest_timeout: 2s\nscrape_timeout: 20s\nmax_requests_per_second: 1000\naccounts: [{{name: a, access_key: {DEMO_ACCESS_KEY}, secret_key: {DEMO_SECRET_KEY}}}]\ntargets: [{{account: a, cloud_service: evs, cloud_region: r, project_id: {PROJECT}, endpoint: \"{base}\", jobs: {jobs:?}}}]\n"
    )
}

fn running(id: &str) -> huaweicloud_job_exporter::simulator::JobScript {
    script(id, "evs", "createVolume", 0.0, 1e12, Outcome::Success)
}

fn series(family: &str, id: &str) -> String {
    format!(
        "{family}{{cloud_service=\"evs\",cloud_region=\"r\",project_id=\"{PROJECT}\",job_id=\"{id}\"}}"
    )
}

fn reason(r: &str) -> String {
    format!(
        "huaweicloud_job_fetch_errors_total{{cloud_service=\"evs\",cloud_region=\"r\",project_id=\"{PROJECT}\",reason=\"{r}\"}}"
    )
}

#[tokio::test]
async fn a_transient_503_is_retried_once_and_a_404_is_fetched_once() {
    let (sim, base, sim_stop) = simulator(vec![running("flaky"), running("gone")]).await;
    sim.set_job_fault_times("flaky", Fault::Status { status: 503 }, 1);
    sim.set_job_fault("gone", Some(Fault::NotFound));
    let exp = exporter(config(&on_demand_yaml(&base, &["flaky", "gone"]))).await;
    let text = exp.metrics().await;
    assert_eq!(sim.requests_for("flaky"), 2, "one 503, one retry");
    assert_eq!(
        value(&text, &series("huaweicloud_job_fetch_success", "flaky")),
        Some(1.0)
    );
    assert_eq!(value(&text, &reason("server_error")), Some(0.0));
    assert_eq!(sim.requests_for("gone"), 1, "a 404 is never retried");
    assert_eq!(
        value(&text, &series("huaweicloud_job_fetch_success", "gone")),
        Some(0.0)
    );
    assert_eq!(value(&text, &reason("not_found")), Some(1.0));
    // Each attempt is an API request of its own.
    assert_eq!(
        value(
            &text,
            "huaweicloud_job_exporter_api_requests_total{cloud_region=\"r\",cloud_service=\"evs\",code=\"503\"}"
        ),
        Some(1.0)
    );
    exp.shutdown().await;
    sim_stop.cancel();
}

#[tokio::test]
async fn persistent_server_errors_are_retried_twice_then_counted_once() {
    let (sim, base, sim_stop) = simulator(vec![running("down"), running("bad-json")]).await;
    sim.set_job_fault("down", Some(Fault::HtmlError));
    sim.set_job_fault("bad-json", Some(Fault::MalformedJson));
    let exp = exporter(config(&on_demand_yaml(&base, &["down", "bad-json"]))).await;
    let text = exp.metrics().await;
    assert_eq!(sim.requests_for("down"), 3, "first attempt and two retries");
    assert_eq!(value(&text, &reason("server_error")), Some(1.0));
    assert_eq!(
        sim.requests_for("bad-json"),
        1,
        "a body that does not decode is final"
    );
    exp.shutdown().await;
    sim_stop.cancel();
}

fn client_and_target(base: &str) -> (cloud::Client, cloud::Target) {
    let client =
        cloud::Client::new(Duration::from_secs(2), Arc::new(Telemetry::new())).expect("client");
    let target = cloud::Target::new(
        "a",
        Scope::new("evs", "r", PROJECT),
        base,
        Credentials {
            access_key: Secret::new(DEMO_ACCESS_KEY),
            secret_key: Secret::new(DEMO_SECRET_KEY),
            security_token: None,
        },
    );
    (client, target)
}

#[tokio::test]
async fn both_transports_fetch_alike_and_map_failures_to_the_same_reasons() {
    use cloud::Reason::*;
    let cases: [(&str, Option<Fault>, Result<&str, cloud::Reason>); 11] = [
        ("plain", None, Ok("RUNNING")),
        (
            "slow-body",
            Some(Fault::SlowBody { ms_per_chunk: 1 }),
            Ok("RUNNING"),
        ),
        ("late", Some(Fault::Latency { ms: 2_500 }), Err(Timeout)),
        (
            "unavailable",
            Some(Fault::Status { status: 503 }),
            Err(ServerError),
        ),
        ("gateway-page", Some(Fault::HtmlError), Err(ServerError)),
        (
            "throttled",
            Some(Fault::Throttle { retry_after: None }),
            Err(Throttled),
        ),
        ("garbage", Some(Fault::MalformedJson), Err(Decode)),
        ("cut", Some(Fault::TruncatedJson), Err(Decode)),
        (
            "huge",
            Some(Fault::Oversized { bytes: 2 << 20 }),
            Err(Decode),
        ),
        ("gone", Some(Fault::NotFound), Err(NotFound)),
        ("reset", Some(Fault::Reset), Err(Connect)),
    ];
    let (sim, base, sim_stop) =
        simulator(cases.iter().map(|(id, _, _)| running(id)).collect()).await;
    for (id, fault, _) in &cases {
        sim.set_job_fault(id, fault.clone());
    }
    let (direct, target) = client_and_target(&base);
    let direct = direct.with_retry(cloud::RetryPolicy::none());
    let reqwest = direct.clone().through_reqwest();
    for (name, client) in [("cloud::conn", &direct), ("reqwest", &reqwest)] {
        for (id, _, want) in &cases {
            let got = client
                .get_job(&target, id)
                .await
                .map(|job| job.status.map(String::from).unwrap_or_default())
                .map_err(|e| e.reason());
            assert_eq!(got.as_deref().map_err(|r| *r), *want, "{id} through {name}");
        }
    }
    // Once per client: neither path retried on its own (the policy is off).
    for (id, _, _) in &cases {
        assert_eq!(sim.requests_for(id), 2, "{id}");
    }
    sim_stop.cancel();
}

#[tokio::test]
async fn a_retry_never_sleeps_past_the_deadline() {
    let (sim, base, sim_stop) = simulator(vec![running("busy"), running("busy-short")]).await;
    let (client, target) = client_and_target(&base);
    // Retry-After 30 s (capped at 10 s) does not fit in a 1 s deadline: no retry at all.
    sim.set_job_fault(
        "busy",
        Some(Fault::Throttle {
            retry_after: Some(30),
        }),
    );
    let ctx = cloud::FetchContext {
        deadline: Some(tokio::time::Instant::now() + Duration::from_secs(1)),
        ..Default::default()
    };
    let result = tokio::time::timeout(
        Duration::from_secs(8),
        client.get_job_since(&target, "busy", None, &ctx),
    )
    .await
    .expect("returns without sleeping 10 s");
    assert_eq!(
        result.expect_err("throttled").reason(),
        cloud::Reason::Throttled
    );
    assert_eq!(sim.requests_for("busy"), 1);
    // Without a deadline, a short Retry-After is honoured and the retry succeeds.
    sim.set_job_fault_times(
        "busy-short",
        Fault::Throttle {
            retry_after: Some(1),
        },
        1,
    );
    let job = client
        .get_job(&target, "busy-short")
        .await
        .expect("retried");
    assert_eq!(job.status, Some(cloud::Status::Running));
    assert_eq!(sim.requests_for("busy-short"), 2);
    sim_stop.cancel();
}

#[tokio::test]
async fn a_body_seen_before_is_not_decoded_again_and_a_changed_one_is() {
    let (sim, base, sim_stop) = simulator(vec![running("steady")]).await;
    let (client, target) = client_and_target(&base);
    let first = client
        .get_job_since(&target, "steady", None, &Default::default())
        .await
        .expect("fetched");
    let cloud::Fetched::Job(job, Some(digest)) = first else {
        panic!("a first fetch decodes and digests the body: {first:?}");
    };
    assert_eq!(job.status, Some(cloud::Status::Running));
    let again = client
        .get_job_since(&target, "steady", Some(digest), &Default::default())
        .await
        .expect("fetched");
    assert!(matches!(again, cloud::Fetched::Unchanged), "{again:?}");
    // Another body (an injected malformed one) is decoded, and fails as such.
    sim.set_job_fault_times("steady", Fault::MalformedJson, 1);
    let err = client
        .get_job_since(&target, "steady", Some(digest), &Default::default())
        .await
        .expect_err("malformed");
    assert_eq!(err.reason(), cloud::Reason::Decode);
    assert_eq!(sim.requests_for("steady"), 3);
    sim_stop.cancel();
}

fn limits(f: impl FnOnce(&mut web::Limits)) -> WebOptions {
    let mut l = web::Limits::default();
    f(&mut l);
    WebOptions {
        limits: l,
        ..WebOptions::default()
    }
}

/// Sends `request` on a fresh connection and returns what the server answered before closing.
async fn raw(addr: std::net::SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(request).await.expect("write");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn huge_headers_get_431_and_huge_bodies_get_413() {
    let (_sim, base, sim_stop) = simulator(vec![running("j")]).await;
    let exp = exporter_with(
        config(&on_demand_yaml(&base, &["j"])),
        limits(|l| l.max_body_bytes = 1024),
    )
    .await;
    let big = "a".repeat(64 * 1024);
    let answer = raw(
        exp.addr,
        format!("GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer:.200}");
    let r = reqwest::Client::new()
        .post(exp.url("/-/reload"))
        .body(vec![b'x'; 16 * 1024])
        .send()
        .await
        .expect("answered");
    assert_eq!(r.status(), 413);
    // A small body is not refused for its size.
    let r = reqwest::Client::new()
        .post(exp.url("/-/healthy"))
        .body("x")
        .send()
        .await
        .expect("answered");
    assert_ne!(r.status(), 413);
    assert_eq!(exp.get("/-/healthy").await.0, 200);
    exp.shutdown().await;
    sim_stop.cancel();
}

#[tokio::test]
async fn slowloris_clients_do_not_stop_a_real_scrape_and_are_cut_off() {
    let (_sim, base, sim_stop) = simulator(vec![running("j")]).await;
    let exp = exporter_with(
        config(&on_demand_yaml(&base, &["j"])),
        limits(|l| l.header_read_timeout = Duration::from_secs(1)),
    )
    .await;
    let addr = exp.addr;
    // 20 clients sending a request head one byte every 100 ms, never finishing it.
    let mut slow = Vec::new();
    for _ in 0..20 {
        slow.push(tokio::spawn(async move {
            let mut s = TcpStream::connect(addr).await.expect("connect");
            let head = b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
            for b in head.iter().take(100) {
                if s.write_all(&[*b]).await.is_err() {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                // Closed by the server?
                let mut buf = [0u8; 256];
                match tokio::time::timeout(Duration::from_millis(1), s.read(&mut buf)).await {
                    Ok(Ok(0)) | Ok(Err(_)) => return true,
                    Ok(Ok(_)) => return true, // an error response, then close
                    Err(_) => {}
                }
            }
            false
        }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    for _ in 0..5 {
        let (status, body) = exp.get("/metrics").await;
        assert_eq!(status, 200);
        assert!(body.contains("huaweicloud_job_fetch_success"));
    }
    for task in slow {
        assert!(
            task.await.expect("task"),
            "a slowloris connection outlived the header read timeout"
        );
    }
    exp.shutdown().await;
    sim_stop.cancel();
}

#[tokio::test]
async fn excess_concurrent_scrapes_get_503_quickly() {
    let (sim, base, sim_stop) = simulator(vec![running("slow")]).await;
    sim.set_job_fault("slow", Some(Fault::Latency { ms: 1500 }));
    let exp = exporter_with(
        config(&on_demand_yaml(&base, &["slow"])),
        limits(|l| {
            l.max_concurrent_scrapes = 1;
            l.scrape_queue_wait = Duration::from_millis(100);
        }),
    )
    .await;
    let url = exp.url("/metrics");
    let first = tokio::spawn(async move { reqwest::get(url).await.expect("scrape").status() });
    tokio::time::sleep(Duration::from_millis(400)).await;
    let r = reqwest::get(exp.url("/metrics")).await.expect("answered");
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "1");
    // Other paths are not limited.
    assert_eq!(exp.get("/-/healthy").await.0, 200);
    assert_eq!(first.await.expect("first"), 200);
    // The slot is free again.
    assert_eq!(exp.get("/metrics").await.0, 200);
    exp.shutdown().await;
    sim_stop.cancel();
}

#[tokio::test]
async fn shutdown_lets_an_in_flight_scrape_finish() {
    let (sim, base, sim_stop) = simulator(vec![running("slow")]).await;
    sim.set_job_fault("slow", Some(Fault::Latency { ms: 1500 }));
    let exp = exporter_with(
        config(&on_demand_yaml(&base, &["slow"])),
        WebOptions {
            shutdown_grace: Duration::from_secs(10),
            ..WebOptions::default()
        },
    )
    .await;
    let url = exp.url("/metrics");
    let scrape = tokio::spawn(async move {
        let r = reqwest::get(url).await.expect("scrape");
        (r.status().as_u16(), r.text().await.expect("body"))
    });
    // Wait until the scrape is in flight upstream, then ask for shutdown.
    for _ in 0..100 {
        if sim.requests_for("slow") > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    exp.stop.cancel();
    let (status, body) = scrape.await.expect("scrape task");
    assert_eq!(status, 200);
    assert_eq!(
        value(&body, &series("huaweicloud_job_fetch_success", "slow")),
        Some(1.0),
        "the scrape completed its collection"
    );
    tokio::time::timeout(Duration::from_secs(10), exp.task)
        .await
        .expect("run() returns")
        .expect("task")
        .expect("clean exit");
    // The listener is closed.
    assert!(TcpStream::connect(exp.addr).await.is_err());
    sim_stop.cancel();
}

#[tokio::test]
async fn past_the_grace_period_connections_are_dropped_and_the_exit_is_clean() {
    let (sim, base, sim_stop) = simulator(vec![running("stuck")]).await;
    sim.set_job_fault("stuck", Some(Fault::Latency { ms: 15_000 }));
    let exp = exporter_with(
        config(
            &on_demand_yaml(&base, &["stuck"])
                .replace("request_timeout: 2s", "request_timeout: 20s"),
        ),
        WebOptions {
            shutdown_grace: Duration::from_millis(300),
            ..WebOptions::default()
        },
    )
    .await;
    let url = exp.url("/metrics");
    let scrape = tokio::spawn(async move { reqwest::get(url).await.map(|r| r.status()) });
    for _ in 0..100 {
        if sim.requests_for("stuck") > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    exp.stop.cancel();
    // run() returns Ok long before the 15 s upstream answer, and the scrape's connection is
    // dropped rather than answered.
    tokio::time::timeout(Duration::from_secs(8), exp.task)
        .await
        .expect("run() returns after the grace period")
        .expect("task")
        .expect("clean exit");
    let scraped = tokio::time::timeout(Duration::from_secs(8), scrape)
        .await
        .expect("the scrape ends")
        .expect("task");
    assert!(scraped.is_err(), "{scraped:?}");
    sim_stop.cancel();
}

/// A connection from `from` that has sent one request and read its answer: open and idle, as a
/// keep-alive client leaves it. None if the server closed it without an answer.
async fn idle_connection(addr: std::net::SocketAddr, from: std::net::IpAddr) -> Option<TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind(std::net::SocketAddr::new(from, 0))
        .expect("bind");
    let mut s = socket.connect(addr).await.expect("connect");
    s.write_all(b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .ok()?;
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !String::from_utf8_lossy(&got).contains("Healthy") {
        match tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => got.extend_from_slice(&buf[..n]),
            _ => return None,
        }
    }
    Some(s)
}

/// True when the server closes `s` (end of stream or reset) before the bound.
async fn closed_by_server(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 64];
    matches!(
        tokio::time::timeout(Duration::from_secs(20), s.read(&mut buf)).await,
        Ok(Ok(0) | Err(_))
    )
}

#[tokio::test]
async fn one_client_address_cannot_take_every_connection() {
    let (_sim, base, sim_stop) = simulator(vec![running("j")]).await;
    let exp = exporter_with(
        config(&on_demand_yaml(&base, &["j"])),
        limits(|l| l.max_connections_per_client = 4),
    )
    .await;
    let local: std::net::IpAddr = [127, 0, 0, 1].into();
    let mut held = Vec::new();
    for i in 0..4 {
        held.push(
            idle_connection(exp.addr, local)
                .await
                .unwrap_or_else(|| panic!("connection {i} served")),
        );
    }
    // The fifth from the same address is closed unanswered; another address is served.
    assert!(idle_connection(exp.addr, local).await.is_none());
    let other: std::net::IpAddr = [127, 0, 0, 2].into();
    assert!(
        idle_connection(exp.addr, other).await.is_some(),
        "another address gets in"
    );
    // One of the four closed: the address gets a connection again.
    drop(held.pop());
    let mut again = None;
    for _ in 0..100 {
        again = idle_connection(exp.addr, local).await;
        if again.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(again.is_some(), "a freed slot is given back");
    exp.shutdown().await;
    sim_stop.cancel();
}

#[tokio::test]
async fn near_the_connection_limit_idle_connections_close_so_a_scrape_gets_in() {
    let (_sim, base, sim_stop) = simulator(vec![running("j")]).await;
    let exp = exporter_with(
        config(&on_demand_yaml(&base, &["j"])),
        limits(|l| {
            l.max_connections = 8;
            // Idle connections would otherwise stay this long: not what closes them here.
            l.header_read_timeout = Duration::from_secs(60);
        }),
    )
    .await;
    let mut idle = Vec::new();
    for _ in 0..8 {
        idle.push(TcpStream::connect(exp.addr).await.expect("connect"));
    }
    // Taking the last slot closed every idle connection opened before...
    let newest = idle.pop();
    for (i, s) in idle.iter_mut().enumerate() {
        assert!(closed_by_server(s).await, "idle connection {i} closed");
    }
    // ...so a scrape gets in, the newest still open.
    let mut scraped = false;
    for _ in 0..100 {
        if let Ok(r) = reqwest::get(exp.url("/metrics")).await
            && r.status() == 200
        {
            scraped = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(scraped);
    drop(newest);
    exp.shutdown().await;
    sim_stop.cancel();
}
