//! The simulator's list APIs over HTTP, signed as a client signs them: Cloud Trace Service and
//! the SDRS task centre under their service prefixes, query parameters in the signature, per-API
//! faults and the request log. docs/simulator.md describes the behaviour.

mod common;

use std::time::Duration;

use common::*;
use huaweicloud_job_exporter::cloud::signer;
use huaweicloud_job_exporter::simulator::{
    Api, DEMO_ACCESS_KEY, DEMO_SECRET_KEY, Fault, JobScript, Outcome, Simulator,
};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

/// GETs `path?query` signed with the demo key (or `sk`); returns status and JSON body (Null
/// when the body is not JSON).
async fn signed_get(base: &str, path: &str, query: &[(&str, &str)], sk: &str) -> (u16, Value) {
    let host = base.trim_start_matches("http://").to_string();
    let date = chrono::Utc::now().format(signer::DATE_FORMAT).to_string();
    let headers = vec![
        ("Host".to_string(), host),
        ("X-Sdk-Date".to_string(), date.clone()),
    ];
    let owned: Vec<(String, String)> = query
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let canonical = signer::canonical_request(&signer::Request {
        method: "GET",
        path,
        query: &owned,
        headers: &headers,
        body: b"",
    });
    let sig = signer::signature(sk, &signer::string_to_sign(&date, &canonical));
    let auth = signer::authorization(DEMO_ACCESS_KEY, &signer::signed_headers(&headers), &sig);
    huaweicloud_job_exporter::install_crypto_provider();
    // The values tests use need no escaping.
    let qs: Vec<String> = query.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let r = reqwest::Client::new()
        .get(format!("{base}{path}?{}", qs.join("&")))
        .header("X-Sdk-Date", date)
        .header("Authorization", auth)
        .send()
        .await
        .expect("send");
    let status = r.status().as_u16();
    let text = r.text().await.expect("body");
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn start(jobs: Vec<JobScript>) -> (Simulator, String, CancellationToken) {
    // Real time, so that jobs a few minutes old fall in CTS's default one-hour window.
    let sim = Simulator::new();
    sim.add_jobs(jobs);
    let stop = CancellationToken::new();
    let addr = sim.spawn("127.0.0.1:0", stop.clone()).await.expect("bind");
    (sim, format!("http://{addr}"), stop)
}

#[tokio::test]
async fn cts_under_a_prefix_checks_the_query_in_the_signature_and_pages() {
    let jobs: Vec<JobScript> = (0..5)
        .map(|i| {
            script(
                &format!("job{i}"),
                "evs",
                "createVolume",
                -600.0 - f64::from(i),
                10.0,
                Outcome::Success,
            )
        })
        .collect();
    let (sim, base, stop) = start(jobs).await;
    let path = format!("/cts/v3/{PROJECT}/traces");
    let mut seen = 0;
    let mut next: Option<String> = None;
    loop {
        let mut q = vec![("trace_type", "system"), ("limit", "4")];
        if let Some(n) = &next {
            q.push(("next", n));
        }
        let (status, body) = signed_get(&base, &path, &q, DEMO_SECRET_KEY).await;
        assert_eq!(status, 200, "{body}");
        seen += body["traces"].as_array().map_or(0, Vec::len);
        match body["meta_data"]["marker"].as_str() {
            Some(m) => next = Some(m.to_string()),
            None => break,
        }
    }
    assert_eq!(seen, 10, "five requests and five results");
    let log = sim.cts_requests();
    assert_eq!(log.len(), 3);
    assert_eq!(log[0].limit.as_deref(), Some("4"));
    assert_eq!(log[0].next, None);
    assert!(log[1].next.is_some() && log[2].next.is_some());

    // A signature over other query values is refused and not logged.
    let (status, body) = signed_get(&base, &path, &[("trace_type", "data")], "wrong").await;
    assert_eq!(
        (status, body["error_code"].as_str()),
        (401, Some("APIGW.0301"))
    );
    let (status, body) = signed_get(&base, &path, &[("trace_type", "data")], DEMO_SECRET_KEY).await;
    assert_eq!(
        (status, body["error_code"].as_str()),
        (400, Some("CTS.0003"))
    );
    assert_eq!(sim.cts_requests().len(), 4);
    stop.cancel();
}

#[tokio::test]
async fn list_api_faults_apply_to_their_api_only_and_count_down() {
    let mut failed = script(
        "sdrs1",
        "sdrs",
        "createProtectionGroupNoCG",
        -30.0 * 86400.0,
        60.0,
        fail("SDRS.1201", "busy"),
    );
    failed
        .entities
        .insert("server_group_id".into(), "group-1".into());
    let (sim, base, stop) = start(vec![failed]).await;
    let cts = format!("/v3/{PROJECT}/traces");
    let tasks = format!("/sdrs/v1/{PROJECT}/task-center/failure-jobs");
    let q = [("trace_type", "system")];
    sim.set_api_fault(
        Api::Cts,
        Some(Fault::Throttle {
            retry_after: Some(2),
        }),
        Some(1),
    );
    let (status, body) = signed_get(&base, &cts, &q, DEMO_SECRET_KEY).await;
    assert_eq!(
        (status, body["error_code"].as_str()),
        (429, Some("APIGW.0308"))
    );
    let (status, page) = signed_get(&base, &tasks, &[("limit", "5")], DEMO_SECRET_KEY).await;
    assert_eq!(status, 200, "the task centre has no fault");
    assert_eq!(page["count"], 1);
    assert_eq!(page["failure_jobs"][0]["job_id"], "sdrs1");
    assert_eq!(page["failure_jobs"][0]["failure_status"], "createFail");
    assert_eq!(page["failure_jobs"][0]["resource_id"], "group-1");
    assert_eq!(signed_get(&base, &cts, &q, DEMO_SECRET_KEY).await.0, 200);

    sim.set_api_fault(Api::TaskCenter, Some(Fault::MalformedJson), None);
    for _ in 0..2 {
        let (status, body) = signed_get(&base, &tasks, &[], DEMO_SECRET_KEY).await;
        assert_eq!((status, body), (200, Value::Null), "not JSON");
    }
    sim.set_api_fault(Api::TaskCenter, None, None);
    assert_eq!(
        signed_get(&base, &tasks, &[], DEMO_SECRET_KEY).await.1["count"],
        1
    );
    let (status, body) = signed_get(&base, &tasks, &[("limit", "1001")], DEMO_SECRET_KEY).await;
    assert_eq!(status, 400);
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("limit"))
    );
    assert_eq!(sim.task_center_requests().len(), 5);

    // Stepping simulated time past a trace's recording delay makes it visible.
    sim.set_trace_delay(Duration::from_secs(3600));
    sim.add_jobs(vec![script(
        "late",
        "evs",
        "createVolume",
        0.0,
        1e9,
        Outcome::Success,
    )]);
    let names_late = |body: &Value| body["traces"].to_string().contains("late");
    let (_, before) = signed_get(&base, &cts, &q, DEMO_SECRET_KEY).await;
    assert!(!names_late(&before));
    sim.advance(Duration::from_secs(3601));
    let now_ms = ((sim.start_unix() + sim.now_secs()) * 1000.0) as i64;
    let (from, to) = ((now_ms - 7_200_000).to_string(), now_ms.to_string());
    let (_, after) = signed_get(
        &base,
        &cts,
        &[("trace_type", "system"), ("from", &from), ("to", &to)],
        DEMO_SECRET_KEY,
    )
    .await;
    assert!(names_late(&after), "{after}");
    stop.cancel();
}
