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
    // The gzip body, joined from blocks compressed at refresh time, decodes (zlib's decoder,
    // through flate2) to the same text.
    let r = reqwest::Client::new()
        .get(exp.url("/metrics"))
        .header("Accept-Encoding", "gzip")
        .send()
        .await
        .expect("gzip scrape");
    assert_eq!(r.headers()["content-encoding"], "gzip");
    let body = r.bytes().await.expect("body");
    let mut unzipped = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&body[..]), &mut unzipped)
        .expect("valid gzip");
    assert_eq!(job_families(&unzipped), GOLDEN);
    assert!(unzipped.contains("huaweicloud_job_exporter_build_info{"));
    assert!(unzipped.ends_with('\n'));
    // Self-metrics are there too, and nothing carries a timestamp.
    assert!(text.contains("huaweicloud_job_exporter_build_info{"));
    // The demo account's requests were answered 200: its credentials are proven good.
    assert!(text.contains(
        "huaweicloud_job_exporter_auth_last_success_timestamp_seconds{account=\"demo\"} "
    ));
    assert!(text.contains("huaweicloud_job_exporter_tracked_jobs{cloud_region=\"cn-north-4\",cloud_service=\"evs\",phase=\"terminal\",project_id=\"0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e\"} 2"));
    assert!(text.contains("process_resident_memory_bytes "));
    // Pre-initialised, so an alert on increase() sees the first failure.
    assert!(text.contains("\nhuaweicloud_job_exporter_state_write_failures_total 0\n"));
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

/// Every fault the simulator injects, the job that gets it, the reason it must count, and how
/// many requests one on-demand fetch makes (retries included). docs/faults.md tabulates it.
fn fault_matrix() -> Vec<(&'static str, Fault, &'static str, u64)> {
    vec![
        ("f-500", Fault::Status { status: 500 }, "server_error", 3),
        ("f-502", Fault::Status { status: 502 }, "server_error", 3),
        ("f-503", Fault::Status { status: 503 }, "server_error", 3),
        (
            "f-429",
            Fault::Throttle {
                retry_after: Some(1),
            },
            "throttled",
            3,
        ),
        (
            "f-429-bare",
            Fault::Throttle { retry_after: None },
            "throttled",
            3,
        ),
        ("f-bad-json", Fault::MalformedJson, "decode", 1),
        ("f-truncated", Fault::TruncatedJson, "decode", 1),
        ("f-html", Fault::HtmlError, "server_error", 3),
        ("f-reset", Fault::Reset, "connect", 3),
        ("f-404", Fault::NotFound, "not_found", 1),
        ("f-slow", Fault::Latency { ms: 3000 }, "timeout", 1),
        (
            "f-drip",
            Fault::SlowBody { ms_per_chunk: 400 },
            "timeout",
            1,
        ),
        ("f-huge", Fault::Oversized { bytes: 2 << 20 }, "decode", 1),
        (
            "f-other-id",
            Fault::WrongJobId {
                job_id: "f-404".into(),
            },
            "decode",
            1,
        ),
    ]
}

/// The metrics once the exporter has seen the simulator's current behaviour: on demand, the
/// next scrape; cached, a scrape after two more refreshes have finished (the first may have
/// started before the change).
async fn settled_metrics(exp: &Running, mode: &str) -> String {
    if mode == "on_demand" {
        return exp.metrics().await;
    }
    let count = |text: &str| {
        value(
            text,
            "huaweicloud_job_exporter_refresh_duration_seconds_count",
        )
    };
    let before = count(&exp.metrics().await).unwrap_or(0.0);
    for _ in 0..600 {
        let text = exp.metrics().await;
        if count(&text).unwrap_or(0.0) >= before + 2.0 {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no refresh finished");
}

/// The fault matrix in one mode: faults keep /metrics served and the last values, set
/// fetch_success to 0, count the right reason per job, and clear.
async fn faults_keep_last_values_and_recover(mode: &str) {
    let faults = fault_matrix();
    let jobs: Vec<_> = faults
        .iter()
        .map(|(id, ..)| script(id, "evs", "createVolume", 0.0, 1e12, Outcome::Success))
        .collect();
    let (sim, base, sim_stop) = simulator(jobs).await;
    let ids: Vec<&str> = faults.iter().map(|f| f.0).collect();
    let yaml = format!(
        "mode: {mode}\nrefresh_interval: 1s\nrequest_timeout: 1s\nscrape_timeout: 20s\nmax_requests_per_second: 1000\naccounts: [{{name: a, access_key: {}, secret_key: {}}}]\ntargets: [{{account: a, cloud_service: evs, cloud_region: r, project_id: {PROJECT}, endpoint: \"{base}\", jobs: {ids:?}}}]\n",
        huaweicloud_job_exporter::simulator::DEMO_ACCESS_KEY,
        huaweicloud_job_exporter::simulator::DEMO_SECRET_KEY,
    );
    let exp = exporter(config(&yaml)).await;
    exp.wait_ready().await;
    let job_line = |family: &str, id: &str, extra: &str| {
        format!(
            "{family}{{cloud_service=\"evs\",cloud_region=\"r\",project_id=\"{PROJECT}\",job_id=\"{id}\"{extra}}}"
        )
    };
    let running = |id: &str| {
        job_line(
            "huaweicloud_job_status",
            id,
            ",job_type=\"createVolume\",status=\"RUNNING\"",
        )
    };
    let ok = |id: &str| job_line("huaweicloud_job_fetch_success", id, "");
    let reason_series = |reason: &str| {
        format!(
            "huaweicloud_job_fetch_errors_total{{cloud_service=\"evs\",cloud_region=\"r\",project_id=\"{PROJECT}\",reason=\"{reason}\"}}"
        )
    };
    // All healthy first: values known.
    let healthy = settled_metrics(&exp, mode).await;
    for id in &ids {
        assert_eq!(value(&healthy, &running(id)), Some(1.0), "{mode} {id}");
        assert_eq!(value(&healthy, &ok(id)), Some(1.0), "{mode} {id}");
    }
    let requests_before: Vec<u64> = ids.iter().map(|id| sim.requests_for(id)).collect();
    for (id, fault, ..) in &faults {
        sim.set_job_fault(id, Some(fault.clone()));
    }
    let broken = settled_metrics(&exp, mode).await;
    if mode == "on_demand" {
        for ((id, _, _, attempts), before) in faults.iter().zip(&requests_before) {
            assert_eq!(
                sim.requests_for(id) - before,
                *attempts,
                "{id}: requests for one fetch"
            );
        }
    }
    for (id, ..) in &faults {
        assert_eq!(value(&broken, &ok(id)), Some(0.0), "{mode} {id}");
        assert_eq!(
            value(&broken, &running(id)),
            Some(1.0),
            "{mode} {id} keeps its last value"
        );
    }
    let mut expected: std::collections::BTreeMap<&str, f64> = Default::default();
    for (_, _, reason, _) in &faults {
        *expected.entry(reason).or_default() += 1.0;
    }
    for reason in huaweicloud_job_exporter::cloud::Reason::ALL.map(|r| r.as_str()) {
        let got = value(&broken, &reason_series(reason)).expect("every reason exported");
        let want = expected.get(reason).copied().unwrap_or(0.0);
        if mode == "on_demand" || want == 0.0 {
            // One scrape, one fetch per job: exact.
            assert_eq!(got, want, "{mode} {reason}");
        } else {
            // Cached: as many as the refreshes since the faults began, at least one each.
            assert!(got >= want, "{mode} {reason}: {got} < {want}");
        }
    }
    // The landing page's recent errors count alike failures together (same reason and
    // message): each reason has at least as many as the faults that map to it, and the last
    // job named for it is one of them.
    let landing = exp.get("/").await.1;
    let errors = landing
        .split("Recent fetch errors")
        .nth(1)
        .expect("recent errors table");
    let mut counted: std::collections::BTreeMap<String, (f64, Vec<String>)> = Default::default();
    for row in errors.split("<tr>").skip(2) {
        let cells: Vec<String> = row
            .split("</td>")
            .map(|c| c.rsplit('>').next().unwrap_or("").to_string())
            .collect();
        // last seen, count, first seen, target, last job_id, reason, error
        let e = counted.entry(cells[5].clone()).or_default();
        e.0 += cells[1].parse::<f64>().expect("count");
        e.1.push(cells[4].clone());
    }
    for (id, _, reason, _) in &faults {
        let (n, jobs) = counted.get(*reason).cloned().unwrap_or_default();
        let want = expected.get(reason).copied().unwrap_or(0.0);
        assert!(
            n >= want,
            "{mode} {id}: {reason} counted {n} < {want}: {landing}"
        );
        assert!(
            jobs.iter()
                .all(|j| faults.iter().any(|f| f.0 == j && f.2 == *reason)),
            "{mode} {reason}: {jobs:?}"
        );
    }
    for (id, ..) in &faults {
        sim.set_job_fault(id, None);
    }
    let recovered = settled_metrics(&exp, mode).await;
    for (id, ..) in &faults {
        assert_eq!(
            value(&recovered, &ok(id)),
            Some(1.0),
            "{mode} {id} recovers"
        );
        assert_eq!(value(&recovered, &running(id)), Some(1.0), "{mode} {id}");
    }
    exp.shutdown().await;
    sim_stop.cancel();
}

#[tokio::test]
async fn faults_map_to_reasons_keep_last_values_and_recover() {
    faults_keep_last_values_and_recover("on_demand").await;
}

#[tokio::test]
async fn faults_map_to_reasons_keep_last_values_and_recover_in_cached_mode() {
    faults_keep_last_values_and_recover("cached").await;
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
    // Accepted credentials are timestamped; rejected ones never are.
    let good_at = value(
        &text,
        "huaweicloud_job_exporter_auth_last_success_timestamp_seconds{account=\"good\"}",
    );
    assert!(good_at.is_some_and(|t| t > 1.7e9), "{good_at:?}");
    assert!(
        !text.contains(
            "huaweicloud_job_exporter_auth_last_success_timestamp_seconds{account=\"bad\"}"
        )
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
    // Started now, as the demo's own simulator is, so that CTS holds the fleet's traces.
    let sim = huaweicloud_job_exporter::simulator::Simulator::new();
    let jobs = huaweicloud_job_exporter::demo::setup(&sim);
    let sim_stop = tokio_util::sync::CancellationToken::new();
    let addr = sim
        .spawn("127.0.0.1:0", sim_stop.clone())
        .await
        .expect("simulator");
    let base = format!("http://{addr}");
    let mut cfg = huaweicloud_job_exporter::demo::config(&base, &jobs, Duration::from_secs(1));
    cfg.max_requests_per_second = 1000.0;
    let listed: usize = cfg.targets.iter().map(|t| t.jobs.len()).sum();
    assert!(listed > 0 && listed < jobs.len());
    let exp = exporter(cfg).await;
    exp.wait_ready().await;
    // The jobs begun over a minute ago have a recorded trace: discovery adds them to the
    // listed ones, and the failed SDRS ones come from the task centre as well.
    let recorded = jobs
        .iter()
        .enumerate()
        .filter(|(i, j)| !huaweicloud_job_exporter::demo::listed(*i) && j.start_secs < -61.0)
        .count();
    assert!(recorded > 0);
    let mut text = String::new();
    for _ in 0..200 {
        text = exp.metrics().await;
        let fetched = text
            .lines()
            .filter(|l| l.starts_with("huaweicloud_job_fetch_success{") && l.ends_with(" 1"))
            .count();
        if fetched >= listed + recorded {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let fetched = text
        .lines()
        .filter(|l| l.starts_with("huaweicloud_job_fetch_success{") && l.ends_with(" 1"))
        .count();
    assert!(
        fetched >= listed + recorded,
        "{fetched} < {listed} + {recorded}"
    );
    assert!(text.lines().any(
        |l| l.starts_with("huaweicloud_job_exporter_discovered_jobs_total{")
            && l.contains("source=\"cts\"")
            && !l.ends_with(" 0")
    ));
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

/// The golden text without the lines (headers and samples) of `families`.
fn golden_without(families: &[&str]) -> String {
    let name = |line: &str| -> String {
        match line.strip_prefix("# ") {
            Some(rest) => rest.split(' ').nth(1).unwrap_or("").to_string(),
            None => line.split(['{', ' ']).next().unwrap_or("").to_string(),
        }
    };
    GOLDEN
        .lines()
        .filter(|l| !families.contains(&name(l).as_str()))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// A denylist in the config file leaves its families out of `/metrics`, plain and gzip
/// (headers, samples and their stored compressed blocks), and the rest is the golden text.
#[tokio::test]
async fn denied_families_are_absent_plain_and_gzip() {
    let denied = [
        "huaweicloud_job_entity_info",
        "huaweicloud_job_subjob_status",
        "huaweicloud_job_fetch_errors_total",
    ];
    let (_sim, base, sim_stop) = simulator(scenario()).await;
    let yaml = format!(
        "metric_denylist: [{}]\n{}",
        denied.join(", "),
        scenario_config(&base, "cached")
    );
    let exp = exporter(config(&yaml)).await;
    exp.wait_ready().await;
    let expected = golden_without(&denied);
    assert!(expected.len() < GOLDEN.len() && expected.contains("huaweicloud_job_status{"));
    let text = exp.metrics().await;
    assert_eq!(job_families(&text), expected);
    let r = reqwest::Client::new()
        .get(exp.url("/metrics"))
        .header("Accept-Encoding", "gzip")
        .send()
        .await
        .expect("gzip scrape");
    assert_eq!(r.headers()["content-encoding"], "gzip");
    let body = r.bytes().await.expect("body");
    let mut unzipped = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&body[..]), &mut unzipped)
        .expect("valid gzip");
    assert_eq!(job_families(&unzipped), expected);
    for family in denied {
        assert!(!unzipped.contains(family), "{family} is served");
    }
    exp.shutdown().await;
    sim_stop.cancel();
}

/// An unknown family in the config file is a validation error naming the key and the value.
#[test]
fn unknown_family_in_the_config_is_an_error() {
    let yaml = format!(
        "metric_allowlist: [huaweicloud_job_status, huaweicloud_job_nope]\n{}",
        scenario_config("http://127.0.0.1:1", "cached")
    );
    let e = huaweicloud_job_exporter::config::Config::parse(
        &yaml,
        "c.yml",
        std::path::Path::new("."),
        &|_| None,
    )
    .expect_err("unknown family");
    let text = e.to_string();
    assert!(
        text.contains("metric_allowlist") && text.contains("\"huaweicloud_job_nope\""),
        "{text}"
    );
}

/// `docs/metrics.md` is the metric contract: every family served is documented there with the
/// same type, and every documented family is served (unless the row says it is conditional).
#[tokio::test]
async fn docs_metrics_md_lists_exactly_the_families_served() {
    let docs = include_str!("../docs/metrics.md");
    let mut documented = std::collections::BTreeMap::new();
    for row in docs.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let name = cells[1].trim_matches('`').to_string();
        let conditional = row.contains("*conditional*");
        documented.insert(name, (cells[2].to_string(), conditional));
    }
    let mut served = std::collections::BTreeMap::new();
    for mode in ["cached", "on_demand"] {
        let (_sim, base, sim_stop) = simulator(scenario()).await;
        let exp = exporter(config(&scenario_config(&base, mode))).await;
        exp.wait_ready().await;
        let text = exp.metrics().await;
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("TYPE line");
                served.insert(name.to_string(), kind.to_string());
            }
        }
        exp.shutdown().await;
        sim_stop.cancel();
    }
    for (name, kind) in &served {
        match documented.get(name) {
            Some((doc_kind, _)) => assert_eq!(doc_kind, kind, "{name}: type in docs/metrics.md"),
            None => panic!("{name} ({kind}) is served but not in docs/metrics.md"),
        }
    }
    for (name, (_, conditional)) in &documented {
        assert!(
            *conditional || served.contains_key(name),
            "{name} is in docs/metrics.md but not served (mark it *conditional* if it only appears sometimes)"
        );
    }
}
