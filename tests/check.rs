//! `check-config --connect` against the simulator: a request per target that tells accepted
//! credentials (keys and IAM passwords) from refused ones, a skewed clock and an unreachable
//! endpoint.

mod common;

use common::{PROJECT, config, simulator};
use huaweicloud_job_exporter::check;
use huaweicloud_job_exporter::simulator::{DEMO_ACCESS_KEY, DEMO_SECRET_KEY};

const WRONG_SECRET: &str = "wrong-secret-that-must-not-be-printed";

fn yaml(good: &str, skewed: &str) -> String {
    format!(
        r#"
request_timeout: 2s
accounts:
  - {{name: good, access_key: {DEMO_ACCESS_KEY}, secret_key: {DEMO_SECRET_KEY}}}
  - {{name: wrong, access_key: {DEMO_ACCESS_KEY}, secret_key: {WRONG_SECRET}}}
  - {{name: iam, iam: {{endpoint: "{good}", domain: example, user: exporter, password: right-password}}}}
  - {{name: iam-wrong, iam: {{endpoint: "{good}", domain: example, user: exporter, password: {WRONG_SECRET}}}}}
targets:
  - {{account: good, cloud_service: evs, cloud_region: r1, project_id: {PROJECT}, endpoint: "{good}", jobs: [j1]}}
  - {{account: wrong, cloud_service: sdrs, cloud_region: r1, project_id: {PROJECT}, endpoint: "{good}", jobs: [j2]}}
  - {{account: good, cloud_service: ecs, cloud_region: r2, project_id: {PROJECT}, endpoint: "{skewed}", jobs: [j3]}}
  - {{account: good, cloud_service: vpc, cloud_region: r3, project_id: {PROJECT}, endpoint: "http://127.0.0.1:1", jobs: [j4]}}
  - {{account: iam, cloud_service: evs, cloud_region: r4, project_id: {PROJECT}, endpoint: "{good}", jobs: [j5]}}
  - {{account: iam-wrong, cloud_service: evs, cloud_region: r5, project_id: {PROJECT}, endpoint: "{good}", jobs: [j6]}}
"#
    )
}

#[tokio::test]
async fn each_target_is_probed_once_and_refusals_say_why() {
    let (sim, good, stop) = simulator(vec![]).await;
    sim.set_iam_user("example", "exporter", "right-password");
    let (skewed_sim, skewed, stop2) = simulator(vec![]).await;
    skewed_sim.set_clock_skew(1200.0);
    let probes = check::connect(&config(&yaml(&good, &skewed)))
        .await
        .expect("client");
    let got: Vec<(&str, &str, bool)> = probes
        .iter()
        .map(|p| (p.account.as_str(), p.target.as_str(), p.ok))
        .collect();
    let target = |svc: &str, region: &str| format!("{svc}/{region}/{PROJECT}");
    assert_eq!(
        got,
        vec![
            ("good", target("evs", "r1").as_str(), true),
            ("wrong", target("sdrs", "r1").as_str(), false),
            ("good", target("ecs", "r2").as_str(), false),
            ("good", target("vpc", "r3").as_str(), false),
            ("iam", target("evs", "r4").as_str(), true),
            ("iam-wrong", target("evs", "r5").as_str(), false),
        ]
    );
    let has = |i: usize, needle: &str| {
        assert!(
            probes[i].detail.contains(needle),
            "{needle:?} in {}",
            probes[i]
        )
    };
    has(0, "HTTP 404 for a job that does not exist");
    has(1, "credentials refused");
    has(1, "APIGW.0301");
    has(2, "clock differs from the cloud's by more than 15 minutes");
    has(2, "APIGW.0303");
    has(3, "cannot reach the endpoint");
    has(4, "HTTP 404 for a job that does not exist");
    has(5, "cannot get credentials: ");
    assert!(probes.iter().all(|p| !p.to_string().contains(WRONG_SECRET)));
    stop.cancel();
    stop2.cancel();
}

fn run_check(yaml: &str) -> std::process::Output {
    run_check_config(yaml, &["--connect"]).0
}

/// Runs `check-config` on `yaml` written to a file; also returns the file's name as printed.
fn run_check_config(yaml: &str, args: &[&str]) -> (std::process::Output, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("config.yml");
    std::fs::write(&file, yaml).expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_huaweicloud-job-exporter"))
        .arg("check-config")
        .arg(format!("--config.file={}", file.display()))
        .args(args)
        .output()
        .expect("runs");
    (out, file.display().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_prints_each_result_and_fails_if_any_target_failed() {
    let (sim, good, stop) = simulator(vec![]).await;
    sim.set_iam_user("example", "exporter", "right-password");
    let (skewed_sim, skewed, stop2) = simulator(vec![]).await;
    skewed_sim.set_clock_skew(-1200.0);
    let all = yaml(&good, &skewed);
    let out = tokio::task::spawn_blocking(move || run_check(&all))
        .await
        .expect("join");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(
        lines[0].ends_with("valid (4 accounts, 6 targets, 6 jobs)"),
        "{stdout}"
    );
    let heads: Vec<&str> = lines[1..lines.len() - 1]
        .iter()
        .map(|l| l.split_once('/').map_or(*l, |(head, _)| head))
        .collect();
    assert_eq!(
        heads,
        vec![
            "ok     account \"good\", evs",
            "FAILED account \"wrong\", sdrs",
            "FAILED account \"good\", ecs",
            "FAILED account \"good\", vpc",
            "ok     account \"iam\", evs",
            "FAILED account \"iam-wrong\", evs",
        ],
        "{stdout}"
    );
    assert_eq!(lines.last(), Some(&"connect: 2 of 6 targets accepted"));
    assert!(!stdout.contains(WRONG_SECRET) && !stderr.contains(WRONG_SECRET));

    // Only the good targets: exit 0.
    let only_good = yaml(&good, &skewed)
        .lines()
        .filter(|l| !["wrong", "r2", "r3"].iter().any(|x| l.contains(x)))
        .collect::<Vec<_>>()
        .join("\n");
    let out = tokio::task::spawn_blocking(move || run_check(&only_good))
        .await
        .expect("join");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.ends_with("connect: 2 of 2 targets accepted\n"),
        "{stdout}"
    );
    stop.cancel();
    stop2.cancel();
}

#[test]
fn check_config_reports_every_problem_and_warns_on_an_unknown_service() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("config.yml");
    std::fs::write(
        &file,
        "colour: red\naccounts: [{name: a, source: env, shape: round}]\ntargets:\n  - {account: a, cloud_service: evs, cloud_region: r, jobs: [\"x/y\"]}\n",
    )
    .expect("write");
    let run = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_huaweicloud-job-exporter"))
            .arg("check-config")
            .arg(format!("--config.file={}", file.display()))
            .env_remove("HUAWEICLOUD_SDK_AK")
            .env_remove("HUAWEICLOUD_SDK_SK")
            .output()
            .expect("runs")
    };
    let out = run();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let f = file.display();
    // The lists of expected keys grow with the configuration; the rest is exact.
    let lines: Vec<&str> = stderr
        .lines()
        .map(|l| {
            l.split_once(", expected one of")
                .map_or(l, |(head, _)| head)
        })
        .collect();
    assert_eq!(
        lines,
        vec![
            format!("{f}: colour: unknown field `colour`"),
            format!("{f}: accounts[0].shape: unknown field `shape`"),
            format!("{f}: accounts[0].source: env: HUAWEICLOUD_SDK_AK is not set"),
            format!("{f}: accounts[0].source: env: HUAWEICLOUD_SDK_SK is not set"),
            format!("{f}: targets[0].jobs[0]: \"x/y\" is not a job id ([A-Za-z0-9-]{{1,64}})"),
        ],
        "{stderr}"
    );

    std::fs::write(
        &file,
        "accounts: [{name: a, access_key: x, secret_key: y}]\ntargets:\n  - {account: a, cloud_service: evss, cloud_region: r, project_id: p, jobs: [j]}\n",
    )
    .expect("write");
    let out = run();
    assert_eq!(out.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with(&format!("warning: {f}: targets: cloud_service \"evss\"")),
        "{stderr}"
    );
}

#[test]
fn check_config_rejects_an_endpoint_no_request_can_be_built_for() {
    // The URL parser drops the carriage return, so it parses; as a Host header it cannot be sent.
    let (out, file) = run_check_config(
        "accounts: [{name: a, access_key: x, secret_key: y}]\ntargets:\n  - {account: a, cloud_service: evs, cloud_region: r, project_id: p, endpoint: \"https://evs\\r.example.com\", jobs: [j]}\n",
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr.trim_end(),
        format!(
            "{file}: targets[0].endpoint: \"https://evs\\r.example.com\" is not usable: endpoint host \"evs\\r.example.com\" is not a valid HTTP header value"
        ),
    );
}
