//! The real exporter against the real simulator, both on 127.0.0.1:0.

mod common;

use std::time::Duration;

use common::*;
use huaweicloud_job_exporter::simulator::{Fault, Outcome};
use serde_json::json;

/// A small scenario whose every value is known: see `GOLDEN`.
fn scenario() -> Vec<huaweicloud_job_exporter::simulator::JobScript> {
    let mut ok = script(
        "evs-ok",
        "evs",
        "createVolume",
        0.0,
        120.0,
        Outcome::Success,
    );
    ok.entities = volume("vol-1");
    let mut failed = script(
        "evs-failed",
        "evs",
        "extendVolume",
        100.0,
        60.5,
        fail("EVS.2024", "quota \"gold\" exceeded\\\nsee 配额"),
    );
    failed.entities = volume("vol-2");
    let mut running = script(
        "running-ecs",
        "ecs",
        "createServer",
        50.0,
        1e12,
        Outcome::Success,
    );
    running.sub_jobs = vec![
        sub(
            "s1",
            "createSingleServer",
            10.0,
            Outcome::Success,
            json_entities(json!({"server_id": "srv-1"})),
        ),
        sub(
            "s2",
            "createSingleServer",
            10.0,
            fail("Ecs.0013", "no EIP"),
            json_entities(json!({"server_id": "srv-2"})),
        ),
    ];
    let mut pair = script(
        "sdrs-pair",
        "sdrs",
        "createReplicationPairNoCG",
        0.0,
        30.0,
        Outcome::Success,
    );
    pair.entities = json_entities(json!({"replication_pair_id": "rp-1", "volume_ids": "v-a,v-b"}));
    vec![ok, failed, running, pair]
}

fn scenario_config(base: &str, mode: &str) -> String {
    format!(
        r#"
mode: {mode}
refresh_interval: 1h
request_timeout: 2s
accounts:
  - name: demo
    access_key: {ak}
    secret_key: {sk}
targets:
  - account: demo
    cloud_service: evs
    cloud_region: cn-north-4
    project_id: {PROJECT}
    endpoint: {base}/evs
    jobs: [evs-ok, evs-failed, missing-job]
  - account: demo
    cloud_service: ecs
    cloud_region: cn-north-4
    project_id: {PROJECT}
    endpoint: {base}/ecs
    jobs: [running-ecs]
  - account: demo
    cloud_service: sdrs
    cloud_region: cn-north-4
    project_id: {PROJECT}
    endpoint: {base}
    jobs: [sdrs-pair]
"#,
        ak = huaweicloud_job_exporter::simulator::DEMO_ACCESS_KEY,
        sk = huaweicloud_job_exporter::simulator::DEMO_SECRET_KEY,
    )
}

const GOLDEN: &str = include_str!("data/golden_metrics.txt");

#[tokio::test]
async fn full_metrics_text_for_a_scripted_scenario() {
    let (_sim, base, sim_stop) = simulator(scenario()).await;
    let exp = exporter(config(&scenario_config(&base, "cached"))).await;
    exp.wait_ready().await;
    let text = exp.metrics().await;
    let got = job_families(&text);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(
            concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/golden_metrics.txt"),
            &got,
        )
        .expect("write golden");
    }
    assert_eq!(got, GOLDEN);
    // Self-metrics are there too, and nothing carries a timestamp.
    assert!(text.contains("huaweicloud_job_exporter_build_info{"));
    assert!(text.contains("huaweicloud_job_exporter_tracked_jobs{cloud_region=\"cn-north-4\",cloud_service=\"evs\",phase=\"terminal\",project_id=\"0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e\"} 2"));
    assert!(text.contains("process_resident_memory_bytes "));
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let after_labels = line.rsplit_once('}').map_or(line, |(_, v)| v).trim();
        let fields = after_labels.split(' ').count();
        let expected = if line.contains('{') { 1 } else { 2 };
        assert_eq!(fields, expected, "sample with a timestamp: {line}");
    }
    exp.shutdown().await;
    sim_stop.cancel();
}

#[tokio::test]
async fn terminal_jobs_are_never_fetched_again_and_counters_hold() {
    let (sim, base, sim_stop) = simulator(scenario()).await;
    let mut cfg = config(&scenario_config(&base, "on_demand"));
    cfg.max_requests_per_second = 1000.0;
    let exp = exporter(cfg).await;
    let first = exp.metrics().await;
    for _ in 0..4 {
        exp.metrics().await;
    }
    let last = exp.metrics().await;
    assert_eq!(sim.requests_for("evs-ok"), 1);
    assert_eq!(sim.requests_for("evs-failed"), 1);
    assert_eq!(sim.requests_for("sdrs-pair"), 1);
    assert_eq!(sim.requests_for("running-ecs"), 6);
    let failures = "huaweicloud_job_failures_total{cloud_service=\"evs\",cloud_region=\"cn-north-4\",project_id=\"0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e\",job_type=\"extendVolume\",error_code=\"EVS.2024\"}";
    assert_eq!(value(&first, failures), Some(1.0));
    assert_eq!(value(&last, failures), Some(1.0));
    let sub = "huaweicloud_job_subjob_failures_total{cloud_service=\"ecs\",cloud_region=\"cn-north-4\",project_id=\"0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e\",subjob_type=\"createSingleServer\",error_code=\"Ecs.0013\"}";
    assert_eq!(value(&last, sub), Some(1.0));
    let not_found = "huaweicloud_job_fetch_errors_total{cloud_service=\"evs\",cloud_region=\"cn-north-4\",project_id=\"0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e\",reason=\"not_found\"}";
    assert_eq!(value(&last, not_found), Some(6.0));
    exp.shutdown().await;
    sim_stop.cancel();
}

#[tokio::test]
async fn on_demand_honours_the_scrape_timeout_header_and_shares_collections() {
    let (sim, base, sim_stop) = simulator(scenario()).await;
    sim.set_job_fault("running-ecs", Some(Fault::Latency { ms: 1500 }));
    let mut cfg = config(&scenario_config(&base, "on_demand"));
    cfg.max_requests_per_second = 1000.0;
    let exp = exporter(cfg).await;
    let client = reqwest::Client::new();
    let scrape = |timeout: &'static str| {
        let client = client.clone();
        let url = exp.url("/metrics");
        async move {
            let started = std::time::Instant::now();
            let body = client
                .get(url)
                .header("X-Prometheus-Scrape-Timeout-Seconds", timeout)
                .send()
                .await
                .expect("scrape")
                .text()
                .await
                .expect("body");
            (body, started.elapsed())
        }
    };
    // 1 s from Prometheus leaves 0.5 s: the slow job misses it and is exported with
    // fetch_success 0, the others are fetched.
    let ((a, _), (b, _)) = tokio::join!(scrape("1"), scrape("1"));
    assert_eq!(
        sim.requests_for("evs-ok"),
        1,
        "two concurrent scrapes, one collection"
    );
    for body in [&a, &b] {
        let slow = "huaweicloud_job_fetch_success{cloud_service=\"ecs\",cloud_region=\"cn-north-4\",project_id=\"0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e\",job_id=\"running-ecs\"}";
        assert_eq!(value(body, slow), Some(0.0));
        let ok = "huaweicloud_job_fetch_success{cloud_service=\"evs\",cloud_region=\"cn-north-4\",project_id=\"0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e\",job_id=\"evs-ok\"}";
        assert_eq!(value(body, ok), Some(1.0));
    }
    // With 10 s the slow job makes it.
    let (c, _) = scrape("10").await;
    let slow = "huaweicloud_job_fetch_success{cloud_service=\"ecs\",cloud_region=\"cn-north-4\",project_id=\"0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e\",job_id=\"running-ecs\"}";
    assert_eq!(value(&c, slow), Some(1.0));
    exp.shutdown().await;
    sim_stop.cancel();
}

#[tokio::test]
async fn faults_map_to_reasons_keep_last_values_and_recover() {
    let faults = [
        ("f-503", Fault::Status { status: 503 }, "server_error"),
        ("f-500", Fault::Status { status: 500 }, "server_error"),
        (
            "f-429",
            Fault::Throttle {
                retry_after: Some(1),
            },
            "throttled",
        ),
        ("f-bad-json", Fault::MalformedJson, "decode"),
        ("f-truncated", Fault::TruncatedJson, "decode"),
        ("f-html", Fault::HtmlError, "server_error"),
        ("f-reset", Fault::Reset, "connect"),
        ("f-404", Fault::NotFound, "not_found"),
        ("f-slow", Fault::Latency { ms: 3000 }, "timeout"),
        ("f-drip", Fault::SlowBody { ms_per_chunk: 400 }, "timeout"),
        ("f-huge", Fault::Oversized { bytes: 2 << 20 }, "decode"),
    ];
    let jobs: Vec<_> = faults
        .iter()
        .map(|(id, _, _)| script(id, "evs", "createVolume", 0.0, 1e12, Outcome::Success))
        .collect();
    let (sim, base, sim_stop) = simulator(jobs).await;
    let ids: Vec<&str> = faults.iter().map(|f| f.0).collect();
    let yaml = format!(
        "mode: on_demand\nrequest_timeout: 1s\nscrape_timeout: 20s\nmax_requests_per_second: 1000\naccounts: [{{name: a, access_key: {}, secret_key: {}}}]\ntargets: [{{account: a, cloud_service: evs, cloud_region: r, project_id: {PROJECT}, endpoint: \"{base}\", jobs: {ids:?}}}]\n",
        huaweicloud_job_exporter::simulator::DEMO_ACCESS_KEY,
        huaweicloud_job_exporter::simulator::DEMO_SECRET_KEY,
    );
    let exp = exporter(config(&yaml)).await;
    // First scrape: all healthy, values known.
    let healthy = exp.metrics().await;
    for id in &ids {
        let line = format!(
            "huaweicloud_job_status{{cloud_service=\"evs\",cloud_region=\"r\",project_id=\"{PROJECT}\",job_id=\"{id}\",job_type=\"createVolume\",status=\"RUNNING\"}}"
        );
        assert_eq!(value(&healthy, &line), Some(1.0), "{id}");
    }
    for (id, fault, _) in &faults {
        sim.set_job_fault(id, Some(fault.clone()));
    }
    let broken = exp.metrics().await;
    for (id, _, _) in &faults {
        let ok = format!(
            "huaweicloud_job_fetch_success{{cloud_service=\"evs\",cloud_region=\"r\",project_id=\"{PROJECT}\",job_id=\"{id}\"}}"
        );
        assert_eq!(value(&broken, &ok), Some(0.0), "{id}");
        let status = format!(
            "huaweicloud_job_status{{cloud_service=\"evs\",cloud_region=\"r\",project_id=\"{PROJECT}\",job_id=\"{id}\",job_type=\"createVolume\",status=\"RUNNING\"}}"
        );
        assert_eq!(
            value(&broken, &status),
            Some(1.0),
            "{id} keeps its last value"
        );
    }
    let mut expected: std::collections::BTreeMap<&str, f64> = Default::default();
    for (_, _, reason) in &faults {
        *expected.entry(reason).or_default() += 1.0;
    }
    for (reason, n) in &expected {
        let series = format!(
            "huaweicloud_job_fetch_errors_total{{cloud_service=\"evs\",cloud_region=\"r\",project_id=\"{PROJECT}\",reason=\"{reason}\"}}"
        );
        assert_eq!(value(&broken, &series), Some(*n), "{reason}");
    }
    let landing = exp.get("/").await.1;
    assert!(
        landing.contains("f-reset") && landing.contains("connect"),
        "{landing}"
    );
    for (id, _, _) in &faults {
        sim.set_job_fault(id, None);
    }
    let recovered = exp.metrics().await;
    for (id, _, _) in &faults {
        let ok = format!(
            "huaweicloud_job_fetch_success{{cloud_service=\"evs\",cloud_region=\"r\",project_id=\"{PROJECT}\",job_id=\"{id}\"}}"
        );
        assert_eq!(value(&recovered, &ok), Some(1.0), "{id} recovers");
    }
    exp.shutdown().await;
    sim_stop.cancel();
}

#[tokio::test]
async fn a_wrong_secret_key_fails_only_its_own_account() {
    let jobs = vec![
        script(
            "good-job",
            "evs",
            "createVolume",
            0.0,
            10.0,
            Outcome::Success,
        ),
        script(
            "bad-job",
            "evs",
            "createVolume",
            0.0,
            10.0,
            Outcome::Success,
        ),
    ];
    let (sim, base, sim_stop) = simulator(jobs).await;
    let yaml = format!(
        r#"
mode: on_demand
accounts:
  - {{name: good, access_key: {ak}, secret_key: {sk}}}
  - {{name: bad, access_key: {ak}, secret_key: not-the-secret}}
targets:
  - {{account: good, cloud_service: evs, cloud_region: r, project_id: {PROJECT}, endpoint: "{base}", jobs: [good-job]}}
  - {{account: bad, cloud_service: evs, cloud_region: r2, project_id: {PROJECT}, endpoint: "{base}", jobs: [bad-job]}}
"#,
        ak = huaweicloud_job_exporter::simulator::DEMO_ACCESS_KEY,
        sk = huaweicloud_job_exporter::simulator::DEMO_SECRET_KEY,
    );
    let exp = exporter(config(&yaml)).await;
    let text = exp.metrics().await;
    assert_eq!(
        value(
            &text,
            &format!(
                "huaweicloud_job_fetch_success{{cloud_service=\"evs\",cloud_region=\"r\",project_id=\"{PROJECT}\",job_id=\"good-job\"}}"
            )
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &text,
            &format!(
                "huaweicloud_job_fetch_success{{cloud_service=\"evs\",cloud_region=\"r2\",project_id=\"{PROJECT}\",job_id=\"bad-job\"}}"
            )
        ),
        Some(0.0)
    );
    assert_eq!(
        value(
            &text,
            &format!(
                "huaweicloud_job_fetch_errors_total{{cloud_service=\"evs\",cloud_region=\"r2\",project_id=\"{PROJECT}\",reason=\"unauthorized\"}}"
            )
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &text,
            "huaweicloud_job_exporter_auth_failures_total{account=\"bad\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &text,
            "huaweicloud_job_exporter_auth_failures_total{account=\"good\"}"
        ),
        Some(0.0)
    );
    assert_eq!(sim.rejected_total(), 1);
    assert!(!text.contains("not-the-secret"));
    exp.shutdown().await;
    sim_stop.cancel();
}

#[tokio::test]
async fn simulator_rejects_skewed_and_unsigned_requests() {
    use huaweicloud_job_exporter::cloud::signer;
    let (_sim, base, sim_stop) = simulator(vec![script(
        "j",
        "evs",
        "createVolume",
        0.0,
        10.0,
        Outcome::Success,
    )])
    .await;
    let host = base.trim_start_matches("http://").to_string();
    let path = format!("/v1/{PROJECT}/jobs/j");
    let signed = |date: String, sk: &str| {
        let headers = vec![
            ("Host".to_string(), host.clone()),
            ("X-Sdk-Date".to_string(), date.clone()),
        ];
        let canonical = signer::canonical_request(&signer::Request {
            method: "GET",
            path: &path,
            query: &[],
            headers: &headers,
            body: b"",
        });
        let sig = signer::signature(sk, &signer::string_to_sign(&date, &canonical));
        let auth = signer::authorization(
            huaweicloud_job_exporter::simulator::DEMO_ACCESS_KEY,
            &signer::signed_headers(&headers),
            &sig,
        );
        (date, auth)
    };
    let client = reqwest::Client::new();
    let send = |date: String, auth: String| {
        client
            .get(format!("{base}{path}"))
            .header("X-Sdk-Date", date)
            .header("Authorization", auth)
            .send()
    };
    let sk = huaweicloud_job_exporter::simulator::DEMO_SECRET_KEY;
    let now = chrono::Utc::now();
    let (d, a) = signed(now.format(signer::DATE_FORMAT).to_string(), sk);
    assert_eq!(send(d, a).await.expect("send").status(), 200);
    let skewed = now - chrono::Duration::minutes(20);
    let (d, a) = signed(skewed.format(signer::DATE_FORMAT).to_string(), sk);
    let r = send(d, a).await.expect("send");
    assert_eq!(r.status(), 401);
    let body: serde_json::Value =
        serde_json::from_str(&r.text().await.expect("body")).expect("json");
    assert_eq!(body["error_code"], "APIGW.0303");
    let (d, a) = signed(now.format(signer::DATE_FORMAT).to_string(), "wrong");
    let r = send(d, a).await.expect("send");
    assert_eq!(r.status(), 401);
    let body: serde_json::Value =
        serde_json::from_str(&r.text().await.expect("body")).expect("json");
    assert_eq!(body["error_code"], "APIGW.0301");
    let r = client
        .get(format!("{base}{path}"))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 401);
    sim_stop.cancel();
}

#[tokio::test]
async fn http_endpoints_gzip_readiness_and_graceful_stop() {
    let jobs = vec![script(
        "slow",
        "evs",
        "createVolume",
        0.0,
        10.0,
        Outcome::Success,
    )];
    let (sim, base, sim_stop) = simulator(jobs).await;
    sim.set_job_fault("slow", Some(Fault::Latency { ms: 800 }));
    let yaml = format!(
        "accounts: [{{name: a, access_key: {}, secret_key: {}}}]\ntargets: [{{account: a, cloud_service: evs, cloud_region: r, project_id: {PROJECT}, endpoint: \"{base}\", jobs: [slow]}}]\n",
        huaweicloud_job_exporter::simulator::DEMO_ACCESS_KEY,
        huaweicloud_job_exporter::simulator::DEMO_SECRET_KEY,
    );
    let exp = exporter(config(&yaml)).await;
    let (status, body) = exp.get("/-/ready").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(exp.get("/-/healthy").await.0, 200);
    exp.wait_ready().await;
    let r = reqwest::Client::new()
        .get(exp.url("/metrics"))
        .header("Accept-Encoding", "gzip")
        .send()
        .await
        .expect("scrape");
    assert_eq!(r.headers()["content-encoding"], "gzip");
    assert!(
        r.headers()["content-type"]
            .to_str()
            .expect("ct")
            .starts_with("text/plain; version=0.0.4")
    );
    let bytes = r.bytes().await.expect("body");
    assert_eq!(&bytes[..2], &[0x1f, 0x8b], "gzip magic");
    let (status, landing) = exp.get("/").await;
    assert_eq!(status, 200);
    assert!(landing.contains(env!("CARGO_PKG_VERSION")));
    assert!(landing.contains("href=\"/metrics\""));
    assert!(landing.contains("<td>evs</td><td>r</td>"));
    assert_eq!(exp.get("/nope").await.0, 404);
    exp.shutdown().await;
    sim_stop.cancel();
}

#[tokio::test]
async fn demo_serves_its_fleet() {
    let (sim, base, sim_stop) = simulator(vec![]).await;
    let jobs = huaweicloud_job_exporter::demo::setup(&sim);
    let mut cfg = huaweicloud_job_exporter::demo::config(&base, &jobs, Duration::from_secs(60));
    cfg.max_requests_per_second = 1000.0;
    let exp = exporter(cfg).await;
    exp.wait_ready().await;
    let text = exp.metrics().await;
    let fetched = text
        .lines()
        .filter(|l| l.starts_with("huaweicloud_job_fetch_success{") && l.ends_with(" 1"))
        .count();
    assert_eq!(fetched, jobs.len());
    for svc in ["evs", "sdrs", "ecs"] {
        assert!(
            text.contains(&format!("huaweicloud_jobs{{cloud_service=\"{svc}\"")),
            "{svc}"
        );
    }
    exp.shutdown().await;
    sim_stop.cancel();
}

#[tokio::test]
async fn global_faults_hit_every_job_and_clear() {
    use huaweicloud_job_exporter::simulator::GlobalFault;
    let jobs: Vec<_> = (0..4)
        .map(|i| {
            script(
                &format!("g{i}"),
                "evs",
                "createVolume",
                0.0,
                10.0,
                fail("EVS.2024", "磁盘配额不足 (quota)"),
            )
        })
        .collect();
    let (sim, base, sim_stop) = simulator(jobs).await;
    sim.set_global_faults(vec![GlobalFault {
        fault: Fault::TruncatedJson,
        probability: 1.0,
    }]);
    let yaml = format!(
        "mode: on_demand\nmax_requests_per_second: 1000\naccounts: [{{name: a, access_key: {}, secret_key: {}}}]\ntargets: [{{account: a, cloud_service: evs, cloud_region: r, project_id: {PROJECT}, endpoint: \"{base}\", jobs: [g0, g1, g2, g3]}}]\n",
        huaweicloud_job_exporter::simulator::DEMO_ACCESS_KEY,
        huaweicloud_job_exporter::simulator::DEMO_SECRET_KEY,
    );
    let exp = exporter(config(&yaml)).await;
    let broken = exp.metrics().await;
    let decode = format!(
        "huaweicloud_job_fetch_errors_total{{cloud_service=\"evs\",cloud_region=\"r\",project_id=\"{PROJECT}\",reason=\"decode\"}}"
    );
    assert_eq!(value(&broken, &decode), Some(4.0));
    sim.set_global_faults(vec![]);
    let fixed = exp.metrics().await;
    let failures = format!(
        "huaweicloud_job_failures_total{{cloud_service=\"evs\",cloud_region=\"r\",project_id=\"{PROJECT}\",job_type=\"createVolume\",error_code=\"EVS.2024\"}}"
    );
    assert_eq!(value(&fixed, &failures), Some(4.0));
    assert!(fixed.contains("fail_reason=\"磁盘配额不足 (quota)\"} 1"));
    exp.shutdown().await;
    sim_stop.cancel();
}
