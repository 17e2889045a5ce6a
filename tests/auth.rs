//! Credential sources against the simulator: IAM tokens (reuse, refresh before expiry and after
//! a 401, one refresh for concurrent requests, backoff), ECS metadata keys, rotated key files,
//! several accounts, and clock skew.

mod common;

use std::time::Duration;

use common::*;
use huaweicloud_job_exporter::simulator::{
    DEMO_ACCESS_KEY, DEMO_SECRET_KEY, Fault, GlobalFault, Outcome,
};

fn running_jobs(n: usize) -> Vec<huaweicloud_job_exporter::simulator::JobScript> {
    (0..n)
        .map(|i| {
            script(
                &format!("j{i}"),
                "evs",
                "createVolume",
                0.0,
                1e12,
                Outcome::Success,
            )
        })
        .collect()
}

fn ids(n: usize) -> String {
    (0..n)
        .map(|i| format!("j{i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn iam_config(base: &str, jobs: usize, margin: &str) -> String {
    format!(
        r#"
mode: on_demand
max_requests_per_second: 1000
accounts:
  - name: ops
    token_refresh_margin: {margin}
    iam: {{endpoint: "{base}", domain: example, user: exporter, password: right-password}}
targets:
  - {{account: ops, cloud_service: evs, cloud_region: r, project_id: {PROJECT}, endpoint: "{base}", jobs: [{}]}}
"#,
        ids(jobs)
    )
}

fn fetch_ok(text: &str, job: &str) -> Option<f64> {
    value(
        text,
        &format!(
            "huaweicloud_job_fetch_success{{cloud_service=\"evs\",cloud_region=\"r\",project_id=\"{PROJECT}\",job_id=\"{job}\"}}"
        ),
    )
}

#[tokio::test]
async fn iam_token_is_reused_refreshed_after_revocation_once_for_all() {
    let (sim, base, stop) = simulator(running_jobs(20)).await;
    sim.set_iam_user("example", "exporter", "right-password");
    let exp = exporter(config(&iam_config(&base, 20, "1h"))).await;
    for _ in 0..3 {
        let t = exp.metrics().await;
        assert_eq!(fetch_ok(&t, "j0"), Some(1.0));
    }
    assert_eq!(
        sim.tokens_issued(),
        1,
        "one token for three scrapes of 20 jobs"
    );
    let t = exp.metrics().await;
    assert!(
        t.contains("huaweicloud_job_exporter_auth_token_expiry_timestamp_seconds{account=\"ops\"}")
    );

    // Revoked: 20 concurrent requests get 401, one refresh serves them all.
    sim.revoke_tokens();
    let t = exp.metrics().await;
    for i in 0..20 {
        assert_eq!(fetch_ok(&t, &format!("j{i}")), Some(1.0), "j{i}");
    }
    assert_eq!(sim.tokens_issued(), 2);
    exp.shutdown().await;
    stop.cancel();
}

#[tokio::test]
async fn a_401_to_a_valid_token_refreshes_once_then_backs_off_instead_of_storming_iam() {
    const JOBS: usize = 30;
    const SCRAPES: u32 = 4;
    let (sim, base, stop) = simulator(running_jobs(JOBS)).await;
    sim.set_iam_user("example", "exporter", "right-password");
    let exp = exporter(config(&iam_config(&base, JOBS, "1h"))).await;
    assert_eq!(fetch_ok(&exp.metrics().await, "j0"), Some(1.0));
    assert_eq!(sim.token_requests(), 1);
    // The job API now refuses the (valid) token, as a policy or a proxy would.
    sim.set_global_faults(vec![GlobalFault {
        fault: Fault::Unauthorized,
        probability: 1.0,
    }]);
    let started = std::time::Instant::now();
    let mut text = String::new();
    for _ in 0..SCRAPES {
        text = exp.metrics().await;
    }
    // The first 401 of the token buys one refresh; later ones only after the backoff, which
    // starts at 1 s and doubles: within `elapsed`, at most 1 + log2(elapsed + 1) of them.
    // (Before, every second 401 asked IAM: about 60 requests for these 4 scrapes.)
    let elapsed = started.elapsed().as_secs_f64();
    let allowed = 1 + 1 + (elapsed + 1.0).log2().floor() as u64;
    let asked = sim.token_requests();
    assert!(
        (2..=allowed).contains(&asked),
        "{asked} token requests in {elapsed:.1} s (at most {allowed})"
    );
    // The 401s are counted, each fetch once.
    let unauthorized = format!(
        "huaweicloud_job_fetch_errors_total{{cloud_service=\"evs\",cloud_region=\"r\",project_id=\"{PROJECT}\",reason=\"unauthorized\"}}"
    );
    assert_eq!(
        value(&text, &unauthorized),
        Some((JOBS as u32 * SCRAPES) as f64)
    );
    assert_eq!(
        value(
            &text,
            "huaweicloud_job_exporter_auth_failures_total{account=\"ops\"}"
        ),
        Some((JOBS as u32 * SCRAPES) as f64)
    );
    assert_eq!(fetch_ok(&text, "j0"), Some(0.0));
    // The fault gone, the jobs are fetched again with the token in hand.
    sim.set_global_faults(Vec::new());
    let before = sim.token_requests();
    assert_eq!(fetch_ok(&exp.metrics().await, "j0"), Some(1.0));
    assert_eq!(sim.token_requests(), before);
    exp.shutdown().await;
    stop.cancel();
}

#[tokio::test]
async fn iam_token_is_refreshed_before_expiry() {
    let (sim, base, stop) = simulator(running_jobs(2)).await;
    sim.set_iam_user("example", "exporter", "right-password");
    // Tokens live 3 s and are refreshed 2 s before they expire.
    sim.set_token_ttl(Duration::from_secs(3));
    let exp = exporter(config(&iam_config(&base, 2, "2s"))).await;
    exp.metrics().await;
    assert_eq!(sim.tokens_issued(), 1);
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let t = exp.metrics().await;
    assert_eq!(fetch_ok(&t, "j0"), Some(1.0));
    assert_eq!(sim.tokens_issued(), 2);
    assert_eq!(
        sim.rejected_total(),
        0,
        "refreshed before, not after, expiry"
    );
    exp.shutdown().await;
    stop.cancel();
}

#[tokio::test]
async fn a_changed_password_is_reported_and_backed_off() {
    let (sim, base, stop) = simulator(running_jobs(3)).await;
    sim.set_iam_user("example", "exporter", "another-password");
    let exp = exporter(config(&iam_config(&base, 3, "1h"))).await;
    let t = exp.metrics().await;
    assert_eq!(fetch_ok(&t, "j0"), Some(0.0));
    let auth = format!(
        "huaweicloud_job_fetch_errors_total{{cloud_service=\"evs\",cloud_region=\"r\",project_id=\"{PROJECT}\",reason=\"auth\"}}"
    );
    assert_eq!(value(&t, &auth), Some(3.0));
    assert_eq!(
        value(
            &t,
            "huaweicloud_job_exporter_auth_failures_total{account=\"ops\"}"
        ),
        Some(1.0)
    );
    assert_eq!(sim.token_requests(), 1, "one attempt shared by three jobs");
    // Within the backoff, more scrapes do not hammer IAM. The backoff starts at 1 s and
    // doubles: on a loaded machine the scrapes may outlast the first step, never the third.
    let started = std::time::Instant::now();
    for _ in 0..5 {
        exp.metrics().await;
    }
    let elapsed = started.elapsed();
    let attempts = sim.token_requests();
    if elapsed < Duration::from_millis(900) {
        assert_eq!(attempts, 1, "within the first backoff step");
    } else if elapsed < Duration::from_secs(6) {
        assert!(attempts <= 3, "{attempts} token requests in {elapsed:?}");
    }
    let (_, landing) = exp.get("/").await;
    assert!(
        landing.contains("The username or password is wrong."),
        "{landing}"
    );
    // Fixed password: once the backoff (1 s, doubled per failed attempt) has passed, tokens
    // flow again.
    sim.set_iam_user("example", "exporter", "right-password");
    let mut t = String::new();
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        t = exp.metrics().await;
        if fetch_ok(&t, "j0") == Some(1.0) {
            break;
        }
    }
    assert_eq!(fetch_ok(&t, "j0"), Some(1.0), "recovered after the backoff");
    assert!(!t.contains("right-password") && !landing.contains("another-password"));
    exp.shutdown().await;
    stop.cancel();
}

#[tokio::test]
async fn metadata_keys_are_used_and_renewed() {
    let (sim, base, stop) = simulator(running_jobs(2)).await;
    sim.set_metadata_key_ttl(Duration::from_secs(3));
    let yaml = format!(
        r#"
mode: on_demand
max_requests_per_second: 1000
accounts:
  - {{name: node, source: metadata, metadata_url: "{base}", token_refresh_margin: 2s}}
targets:
  - {{account: node, cloud_service: evs, cloud_region: r, project_id: {PROJECT}, endpoint: "{base}", jobs: [j0, j1]}}
"#
    );
    let exp = exporter(config(&yaml)).await;
    let t = exp.metrics().await;
    assert_eq!(fetch_ok(&t, "j0"), Some(1.0));
    assert_eq!(sim.metadata_keys_issued(), 1);
    exp.metrics().await;
    assert_eq!(sim.metadata_keys_issued(), 1);
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let t = exp.metrics().await;
    assert_eq!(fetch_ok(&t, "j1"), Some(1.0));
    assert_eq!(sim.metadata_keys_issued(), 2);
    assert!(t.contains(
        "huaweicloud_job_exporter_auth_token_expiry_timestamp_seconds{account=\"node\"}"
    ));
    exp.shutdown().await;
    stop.cancel();
}

#[tokio::test]
async fn rotated_key_files_are_picked_up_and_accounts_stay_apart() {
    let (sim, base, stop) = simulator(running_jobs(2)).await;
    sim.set_iam_user("example", "exporter", "wrong-on-purpose-elsewhere");
    let dir = tempfile::tempdir().expect("tempdir");
    let (ak, sk) = (dir.path().join("ak"), dir.path().join("sk"));
    std::fs::write(&ak, format!("{DEMO_ACCESS_KEY}\n")).expect("write");
    std::fs::write(&sk, format!("{DEMO_SECRET_KEY}\n")).expect("write");
    let yaml = format!(
        r#"
mode: on_demand
max_requests_per_second: 1000
accounts:
  - {{name: files, access_key: {{file: {}}}, secret_key: {{file: {}}}}}
  - name: broken
    iam: {{endpoint: "{base}", domain: example, user: exporter, password: not-it}}
targets:
  - {{account: files, cloud_service: evs, cloud_region: r, project_id: {PROJECT}, endpoint: "{base}", jobs: [j0]}}
  - {{account: broken, cloud_service: evs, cloud_region: r2, project_id: {PROJECT}, endpoint: "{base}", jobs: [j1]}}
"#,
        ak.display(),
        sk.display()
    );
    let exp = exporter(config(&yaml)).await;
    let t = exp.metrics().await;
    assert_eq!(fetch_ok(&t, "j0"), Some(1.0));
    assert_eq!(
        value(
            &t,
            "huaweicloud_job_exporter_auth_failures_total{account=\"files\"}"
        ),
        Some(0.0)
    );
    assert_eq!(
        value(
            &t,
            "huaweicloud_job_exporter_auth_failures_total{account=\"broken\"}"
        ),
        Some(1.0)
    );

    // Rotate: new keys in the files, the old ones revoked upstream.
    sim.add_credential("ROTATEDKEY000000002", "rotated-secret", None);
    sim.remove_credential(DEMO_ACCESS_KEY);
    std::fs::write(&ak, "ROTATEDKEY000000002\n").expect("write");
    std::fs::write(&sk, "rotated-secret\n").expect("write");
    let t = exp.metrics().await;
    assert_eq!(
        fetch_ok(&t, "j0"),
        Some(0.0),
        "old keys rejected until the file is re-read"
    );
    tokio::time::sleep(Duration::from_millis(5200)).await;
    let t = exp.metrics().await;
    assert_eq!(fetch_ok(&t, "j0"), Some(1.0), "rotated keys in use");
    exp.shutdown().await;
    stop.cancel();
}

#[tokio::test]
async fn clock_skew_is_rejected_as_apigw_0303() {
    let (sim, base, stop) = simulator(running_jobs(1)).await;
    sim.set_clock_skew(1200.0);
    let yaml = format!(
        "mode: on_demand\naccounts: [{{name: a, access_key: {DEMO_ACCESS_KEY}, secret_key: {DEMO_SECRET_KEY}}}]\ntargets: [{{account: a, cloud_service: evs, cloud_region: r, project_id: {PROJECT}, endpoint: \"{base}\", jobs: [j0]}}]\n"
    );
    let exp = exporter(config(&yaml)).await;
    let t = exp.metrics().await;
    assert_eq!(fetch_ok(&t, "j0"), Some(0.0));
    let (_, landing) = exp.get("/").await;
    assert!(landing.contains("APIGW.0303"), "{landing}");
    sim.set_clock_skew(0.0);
    let t = exp.metrics().await;
    assert_eq!(fetch_ok(&t, "j0"), Some(1.0));
    exp.shutdown().await;
    stop.cancel();
}
