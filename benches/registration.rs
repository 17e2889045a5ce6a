//! `cargo bench --bench registration`: acknowledged registrations per second, and their
//! latency, from concurrent clients over loopback HTTP, with 0, 10,000 and 100,000 jobs already
//! stored in the state file.
//!
//! Each level starts an exporter in this process (on_demand mode, so nothing is fetched; the
//! target's endpoint is never contacted) over a state file pre-filled with that many
//! registrations, then `BENCH_CLIENTS` clients each POST new registrations one after another
//! for `BENCH_SECS` seconds. Every registration is fsynced before its 201, so the figures
//! include the disk. Only 127.0.0.1 is contacted; no timing is asserted, the figures are printed
//! as a Markdown table.
//!
//! Knobs (environment): `BENCH_CLIENTS` (16), `BENCH_SECS` (10), `BENCH_STORED`
//! (`0,10000,100000`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use huaweicloud_job_exporter::config::Config;
use huaweicloud_job_exporter::simulator::{DEMO_ACCESS_KEY, DEMO_PROJECT_ID, DEMO_SECRET_KEY};
use huaweicloud_job_exporter::{Exporter, WebOptions};
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "bench-token-0123456789";

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((sorted.len() as f64) * p).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// A state file of the first format holding `stored` registrations, as an upgrade finds it.
fn prefill(path: &std::path::Path, stored: usize) {
    let jobs: Vec<serde_json::Value> = (0..stored)
        .map(|i| {
            serde_json::json!({"cloud_service": "evs", "cloud_region": "r",
                "project_id": DEMO_PROJECT_ID, "job_id": format!("stored-{i}")})
        })
        .collect();
    let body = serde_json::json!({"version": 1, "jobs": jobs});
    std::fs::write(path, body.to_string()).expect("state file");
}

struct Level {
    stored: usize,
    ok: u64,
    failed: u64,
    latencies: Vec<Duration>,
    secs: f64,
}

async fn level(stored: usize, clients: usize, secs: u64) -> Level {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state.json");
    prefill(&state, stored);
    std::fs::write(dir.path().join("token"), TOKEN).expect("token");
    let yaml = format!(
        "mode: on_demand\napi: {{token_file: {dir}/token}}\nstate_file: {dir}/state.json\n\
         accounts: [{{name: a, access_key: {DEMO_ACCESS_KEY}, secret_key: {DEMO_SECRET_KEY}}}]\n\
         targets: [{{account: a, cloud_service: evs, cloud_region: r, project_id: {DEMO_PROJECT_ID}, \
         endpoint: \"http://127.0.0.1:9\", jobs: []}}]\n",
        dir = dir.path().display()
    );
    let config = Config::parse(&yaml, "bench.yml", dir.path(), &|_: &str| None).expect("config");
    let exporter = Exporter::bind(
        config,
        WebOptions {
            listen_address: "127.0.0.1:0".into(),
            ..WebOptions::default()
        },
    )
    .await
    .expect("bind");
    let url = format!("http://{}/api/v1/jobs", exporter.local_addr());
    let stop = CancellationToken::new();
    let s = stop.clone();
    let task = tokio::spawn(exporter.run(async move { s.cancelled().await }));

    let client = reqwest::Client::new();
    let started = Instant::now();
    let until = started + Duration::from_secs(secs);
    let workers: Vec<_> = (0..clients)
        .map(|c| {
            let client = client.clone();
            let url = url.clone();
            tokio::spawn(async move {
                let (mut ok, mut failed, mut lat) = (0u64, 0u64, Vec::new());
                let mut i = 0u64;
                while Instant::now() < until {
                    let body = format!(
                        r#"{{"cloud_service":"evs","cloud_region":"r","project_id":"{DEMO_PROJECT_ID}","job_id":"new-{c}-{i}"}}"#
                    );
                    i += 1;
                    let t = Instant::now();
                    let res = client
                        .post(&url)
                        .bearer_auth(TOKEN)
                        .header("content-type", "application/json")
                        .body(body)
                        .send()
                        .await;
                    match res {
                        Ok(r) if r.status().as_u16() == 201 => {
                            let _ = r.bytes().await;
                            ok += 1;
                            lat.push(t.elapsed());
                        }
                        _ => failed += 1,
                    }
                }
                (ok, failed, lat)
            })
        })
        .collect();
    let mut out = Level {
        stored,
        ok: 0,
        failed: 0,
        latencies: Vec::new(),
        secs: 0.0,
    };
    for w in workers {
        let (ok, failed, lat) = w.await.expect("client");
        out.ok += ok;
        out.failed += failed;
        out.latencies.extend(lat);
    }
    out.secs = started.elapsed().as_secs_f64();
    out.latencies.sort();
    stop.cancel();
    let _ = task.await;
    out
}

fn main() {
    huaweicloud_job_exporter::install_crypto_provider();
    let clients: usize = env_or("BENCH_CLIENTS", 16);
    let secs: u64 = env_or("BENCH_SECS", 10);
    let levels: Vec<usize> = std::env::var("BENCH_STORED")
        .unwrap_or_else(|_| "0,10000,100000".into())
        .split(',')
        .filter_map(|v| v.trim().parse().ok())
        .collect();
    let rt = Arc::new(
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("runtime"),
    );
    println!("| stored jobs | registrations/s | p50 | p99 | failed |");
    println!("|---:|---:|---:|---:|---:|");
    for stored in levels {
        let l = rt.block_on(level(stored, clients, secs));
        println!(
            "| {} | {:.0} | {} | {} | {} |",
            l.stored,
            l.ok as f64 / l.secs,
            ms(percentile(&l.latencies, 0.50)),
            ms(percentile(&l.latencies, 0.99)),
            l.failed
        );
    }
}
