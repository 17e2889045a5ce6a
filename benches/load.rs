//! `cargo bench --bench load`: many concurrent scrapers on a large cached fleet, first with a
//! healthy cloud, then while the simulator injects a mix of faults (BENCHMARKS.md).
//!
//! The simulator and the exporter run in this process, on 127.0.0.1 port 0, with every job
//! RUNNING so that each refresh fetches all of them (and meets the faults). Scrapers loop on
//! `GET /metrics` without gzip for a fixed time and read each body to the end; a request fails
//! if it errors or answers anything but 200. Every loop is bounded in time and only 127.0.0.1
//! is contacted. No timing is asserted: the figures are printed as a Markdown table.
//!
//! Knobs (environment): `BENCH_JOBS` (default 10000), `BENCH_SCRAPERS` (50), `BENCH_SECS`
//! (seconds per phase, 60), `BENCH_REFRESH` (refresh_interval, `15s`).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use huaweicloud_job_exporter::config::Config;
use huaweicloud_job_exporter::simulator::{self, Fault, FleetShape, GlobalFault, Simulator};
use huaweicloud_job_exporter::{Exporter, WebOptions};
use tokio_util::sync::CancellationToken;

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

fn value(text: &str, prefix: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

struct Phase {
    name: &'static str,
    ok: u64,
    failed: u64,
    latencies: Vec<Duration>,
    bytes: u64,
    secs: f64,
    refreshes: f64,
    fetch_errors: f64,
}

async fn scrape_for(url: &str, scrapers: usize, secs: u64) -> (u64, u64, Vec<Duration>, u64, f64) {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(scrapers)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");
    let failed = Arc::new(AtomicU64::new(0));
    let bytes = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let until = started + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for _ in 0..scrapers {
        let client = client.clone();
        let url = url.to_string();
        let failed = Arc::clone(&failed);
        let bytes = Arc::clone(&bytes);
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while Instant::now() < until {
                let t = Instant::now();
                let ok = match client.get(&url).send().await {
                    Ok(r) if r.status() == 200 => match r.bytes().await {
                        Ok(b) => {
                            bytes.fetch_add(b.len() as u64, Ordering::Relaxed);
                            true
                        }
                        Err(_) => false,
                    },
                    _ => false,
                };
                if ok {
                    lat.push(t.elapsed());
                } else {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
            lat
        }));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await.expect("scraper"));
    }
    latencies.sort();
    (
        latencies.len() as u64,
        failed.load(Ordering::Relaxed),
        latencies,
        bytes.load(Ordering::Relaxed),
        started.elapsed().as_secs_f64(),
    )
}

async fn run() {
    let jobs: usize = env_or("BENCH_JOBS", 10_000);
    let scrapers: usize = env_or("BENCH_SCRAPERS", 50);
    let secs: u64 = env_or("BENCH_SECS", 60);
    let refresh: String = env_or("BENCH_REFRESH", "15s".to_string());

    let mut scripts =
        simulator::fleet::generate(jobs, 7, simulator::DEMO_PROJECT_ID, &FleetShape::default());
    for s in &mut scripts {
        s.start_secs = -60.0;
        s.init_secs = 0.0;
        s.run_secs = 1e9;
        for sub in &mut s.sub_jobs {
            sub.run_secs = 1e9;
        }
    }
    let sim = Simulator::new();
    sim.add_jobs(scripts.clone());
    let sim_stop = CancellationToken::new();
    let sim_addr = sim
        .spawn("127.0.0.1:0", sim_stop.clone())
        .await
        .expect("simulator");

    let mut by_service: std::collections::BTreeMap<&str, Vec<&str>> = Default::default();
    for j in &scripts {
        by_service.entry(&j.service).or_default().push(&j.job_id);
    }
    let mut yaml = format!(
        "mode: cached\nrefresh_interval: {refresh}\nrequest_timeout: 2s\nmax_concurrency: 16\nmax_requests_per_second: 100000\naccounts: [{{name: load, access_key: {}, secret_key: {}}}]\ntargets:\n",
        simulator::DEMO_ACCESS_KEY,
        simulator::DEMO_SECRET_KEY
    );
    for (svc, ids) in by_service {
        yaml.push_str(&format!(
            "  - {{account: load, cloud_service: {svc}, cloud_region: cn-north-4, project_id: {}, endpoint: \"http://{sim_addr}/{svc}\", jobs: {ids:?}}}\n",
            simulator::DEMO_PROJECT_ID
        ));
    }
    let config =
        Config::parse(&yaml, "load.yml", Path::new("."), &|_: &str| None).expect("valid config");
    let exporter = Exporter::bind(
        config,
        WebOptions {
            listen_address: "127.0.0.1:0".into(),
            ..WebOptions::default()
        },
    )
    .await
    .expect("exporter");
    let addr = exporter.local_addr();
    let stop = CancellationToken::new();
    let s = stop.clone();
    let server = tokio::spawn(exporter.run(async move { s.cancelled().await }));
    let base = format!("http://{addr}");
    let http = reqwest::Client::new();
    let ready_by = Instant::now() + Duration::from_secs(300);
    while Instant::now() < ready_by {
        if let Ok(r) = http.get(format!("{base}/-/ready")).send().await
            && r.status() == 200
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let counters = |text: &str| {
        (
            value(
                text,
                "huaweicloud_job_exporter_refresh_duration_seconds_count",
            ),
            value(text, "huaweicloud_job_fetch_errors_total{"),
        )
    };
    let metrics = || async {
        http.get(format!("{base}/metrics"))
            .send()
            .await
            .expect("scrape")
            .text()
            .await
            .expect("body")
    };

    let mut phases = Vec::new();
    for (name, faults) in [
        ("healthy cloud", vec![]),
        (
            "faults injected",
            vec![
                GlobalFault {
                    fault: Fault::Status { status: 503 },
                    probability: 0.05,
                },
                GlobalFault {
                    fault: Fault::Throttle {
                        retry_after: Some(1),
                    },
                    probability: 0.05,
                },
                GlobalFault {
                    fault: Fault::Reset,
                    probability: 0.02,
                },
                GlobalFault {
                    fault: Fault::MalformedJson,
                    probability: 0.02,
                },
                GlobalFault {
                    fault: Fault::Latency { ms: 3000 },
                    probability: 0.01,
                },
            ],
        ),
    ] {
        // Through the control API, as an out-of-process test would.
        let r = http
            .put(format!("http://{sim_addr}/_sim/faults"))
            .header("content-type", "application/json")
            .body(serde_json::to_string(&faults).expect("json"))
            .send()
            .await
            .expect("set faults");
        assert!(r.status().is_success());
        let (r0, e0) = counters(&metrics().await);
        let (ok, failed, latencies, bytes, took) =
            scrape_for(&format!("{base}/metrics"), scrapers, secs).await;
        let (r1, e1) = counters(&metrics().await);
        phases.push(Phase {
            name,
            ok,
            failed,
            latencies,
            bytes,
            secs: took,
            refreshes: r1 - r0,
            fetch_errors: e1 - e0,
        });
    }
    stop.cancel();
    let _ = server.await;
    sim_stop.cancel();

    println!("\n{jobs} cached jobs, {scrapers} concurrent scrapers, {secs} s per phase, no gzip\n");
    println!(
        "| phase | scrapes | failed | p50 | p99 | max | scrapes/s | MB/s | refreshes | upstream fetch errors |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for p in &phases {
        println!(
            "| {} | {} | {} | {} | {} | {} | {:.1} | {:.0} | {} | {} |",
            p.name,
            p.ok + p.failed,
            p.failed,
            ms(percentile(&p.latencies, 0.50)),
            ms(percentile(&p.latencies, 0.99)),
            ms(p.latencies.last().copied().unwrap_or_default()),
            p.ok as f64 / p.secs,
            p.bytes as f64 / p.secs / 1e6,
            p.refreshes,
            p.fetch_errors,
        );
    }
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` would pass other flags: run only
    // when benchmarking.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run());
}
