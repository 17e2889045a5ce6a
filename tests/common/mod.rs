//! Helpers shared by the integration tests: a simulator and an exporter on 127.0.0.1:0.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use huaweicloud_job_exporter::config::Config;
use huaweicloud_job_exporter::simulator::{self, JobScript, Outcome, Simulator, SubJobScript};
use huaweicloud_job_exporter::{Exporter, WebOptions};
use serde_json::{Map, Value, json};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub const PROJECT: &str = simulator::DEMO_PROJECT_ID;

pub struct Running {
    pub addr: SocketAddr,
    pub stop: CancellationToken,
    pub task: JoinHandle<huaweicloud_job_exporter::Result<()>>,
}

impl Running {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub async fn get(&self, path: &str) -> (u16, String) {
        let r = reqwest::get(self.url(path)).await.expect("request");
        let status = r.status().as_u16();
        (status, r.text().await.expect("body"))
    }

    pub async fn metrics(&self) -> String {
        let (status, body) = self.get("/metrics").await;
        assert_eq!(status, 200);
        body
    }

    pub async fn wait_ready(&self) {
        for _ in 0..200 {
            if self.get("/-/ready").await.0 == 200 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("exporter never became ready");
    }

    pub async fn shutdown(self) {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("stops in time")
            .expect("task")
            .expect("clean exit");
    }
}

pub async fn simulator(jobs: Vec<JobScript>) -> (Simulator, String, CancellationToken) {
    // A fixed start makes every begin_time and end_time of a scenario deterministic.
    let sim = Simulator::with_start(1_700_000_000.0);
    sim.add_jobs(jobs);
    let stop = CancellationToken::new();
    let addr = sim
        .spawn("127.0.0.1:0", stop.clone())
        .await
        .expect("simulator");
    (sim, format!("http://{addr}"), stop)
}

pub fn config(yaml: &str) -> Config {
    let env = |_: &str| None;
    Config::parse(yaml, "test.yml", Path::new("."), &env).expect("valid config")
}

pub async fn exporter(config: Config) -> Running {
    exporter_with(config, WebOptions::default()).await
}

/// An exporter on 127.0.0.1:0 with these web options (the listen address is overridden).
pub async fn exporter_with(config: Config, web: WebOptions) -> Running {
    let exporter = Exporter::bind(
        config,
        WebOptions {
            listen_address: "127.0.0.1:0".into(),
            ..web
        },
    )
    .await
    .expect("binds");
    let addr = exporter.local_addr();
    let stop = CancellationToken::new();
    let s = stop.clone();
    let task = tokio::spawn(exporter.run(async move { s.cancelled().await }));
    Running { addr, stop, task }
}

pub fn entities(pairs: &[(&str, Value)]) -> Map<String, Value> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

/// A job that is already over (or, with `run_secs` huge, running for ever) at any test time.
pub fn script(
    id: &str,
    service: &str,
    job_type: &str,
    start_secs: f64,
    run_secs: f64,
    outcome: Outcome,
) -> JobScript {
    JobScript {
        job_id: id.into(),
        project_id: PROJECT.into(),
        service: service.into(),
        job_type: job_type.into(),
        start_secs,
        init_secs: 0.0,
        run_secs,
        outcome,
        entities: Map::new(),
        sub_jobs: vec![],
    }
}

pub fn fail(code: &str, reason: &str) -> Outcome {
    Outcome::Fail {
        error_code: code.into(),
        fail_reason: reason.into(),
    }
}

pub fn sub(
    id: &str,
    job_type: &str,
    run_secs: f64,
    outcome: Outcome,
    ents: Map<String, Value>,
) -> SubJobScript {
    SubJobScript {
        job_id: id.into(),
        job_type: job_type.into(),
        delay_secs: 0.0,
        run_secs,
        outcome,
        entities: ents,
    }
}

pub fn json_entities(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

pub fn volume(id: &str) -> Map<String, Value> {
    json_entities(json!({"volume_id": id}))
}

/// Lines of the job families (self-metrics removed), with values that depend on the wall clock
/// replaced by `<now>`.
pub fn job_families(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        if line.contains("huaweicloud_job_exporter_")
            || line.contains(" process_")
            || line.starts_with("process_")
        {
            continue;
        }
        let clocked = line.starts_with("huaweicloud_job_last_fetch_success_timestamp_seconds{")
            || (line.starts_with("huaweicloud_job_duration_seconds{") && line.contains("running"));
        if clocked {
            let (series, _) = line.rsplit_once(' ').expect("sample line");
            out.push_str(series);
            out.push_str(" <now>\n");
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// The job ids of `/metrics` text (each job has one `huaweicloud_job_fetch_success`), sorted.
pub fn tracked_ids(text: &str) -> Vec<String> {
    let mut ids: Vec<String> = text
        .lines()
        .filter(|l| l.starts_with("huaweicloud_job_fetch_success{"))
        .filter_map(|l| l.split("job_id=\"").nth(1))
        .filter_map(|l| l.split('"').next())
        .map(str::to_string)
        .collect();
    ids.sort();
    ids
}

/// The value of the first sample whose line starts with `series`.
pub fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit_once(' '))
        .and_then(|(_, v)| v.parse().ok())
}
