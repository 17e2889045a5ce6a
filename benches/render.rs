//! `cargo bench --bench render`: how long a cached-mode scrape takes to render N jobs.
//!
//! The fleet comes from the simulator's generator and goes through the real decoder and poller,
//! so the text is what `/metrics` serves. For comparison, the same per-job series are rendered
//! through the `prometheus` crate's GaugeVecs (metric objects kept between scrapes, as a
//! long-running exporter would), which is the alternative the hand-written writer replaces.
//! Prints medians and p99 over repeated runs; no timing is asserted anywhere. Then the bytes of
//! rendered text held for the same jobs against the bytes of exposition they write.
//!
//! First, the cost of the largest hostile job bodies the size limit admits (`BENCH_PART=decode`
//! for that table alone, `BENCH_PART=render` to skip it).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::FutureExt as _;
use huaweicloud_job_exporter::cloud::{self, Job, model};
use huaweicloud_job_exporter::config::Mode;
use huaweicloud_job_exporter::poller::{Fetch, JobSource, Poller, Settings, Target, TargetJobs};
use huaweicloud_job_exporter::scope::Scope;
use huaweicloud_job_exporter::simulator::{self, FleetShape};
use huaweicloud_job_exporter::telemetry::Telemetry;

struct Fixed(HashMap<String, Job>);

impl JobSource for Fixed {
    fn fetch<'a>(
        &'a self,
        id: &'a str,
        _: Option<cloud::BodyDigest>,
        _: &'a cloud::FetchContext,
    ) -> Fetch<'a> {
        async move {
            let job = self.0.get(id).cloned().ok_or(cloud::FetchError::Timeout)?;
            Ok(cloud::Fetched::Job(job, None))
        }
        .boxed()
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn fleet(n: usize) -> (HashMap<String, Job>, TargetJobs) {
    let scripts =
        simulator::fleet::generate(n, 7, simulator::DEMO_PROJECT_ID, &FleetShape::default());
    let mut jobs = HashMap::new();
    let mut by_service: HashMap<String, Vec<String>> = HashMap::new();
    for s in &scripts {
        let body = s.render(0.0, 1_700_000_000.0).to_string();
        let job = model::decode_job(body.as_bytes()).expect("simulator bodies decode");
        jobs.insert(s.job_id.clone(), job);
        by_service
            .entry(s.service.clone())
            .or_default()
            .push(s.job_id.clone());
    }
    let source: Arc<dyn JobSource> = Arc::new(Fixed(jobs.clone()));
    let targets = by_service
        .into_iter()
        .map(|(svc, ids)| {
            let t = Target {
                account: "bench".into(),
                scope: Scope::new(&svc, "cn-north-4", simulator::DEMO_PROJECT_ID),
                endpoint_key: "127.0.0.1:1".into(),
                source: Arc::clone(&source),
            };
            (Arc::new(t), ids)
        })
        .collect();
    (jobs, targets)
}

/// The per-job families through the `prometheus` crate, metric objects built once.
fn prometheus_crate(jobs: &HashMap<String, Job>) -> prometheus::Registry {
    use prometheus::{GaugeVec, Opts, Registry};
    let reg = Registry::new();
    let common = [
        "cloud_service",
        "cloud_region",
        "project_id",
        "job_id",
        "job_type",
    ];
    let status = GaugeVec::new(
        Opts::new("huaweicloud_job_status", "status"),
        &[
            "cloud_service",
            "cloud_region",
            "project_id",
            "job_id",
            "job_type",
            "status",
        ],
    )
    .expect("metric");
    let begin = GaugeVec::new(
        Opts::new("huaweicloud_job_begin_timestamp_seconds", "b"),
        &common,
    )
    .expect("metric");
    let duration =
        GaugeVec::new(Opts::new("huaweicloud_job_duration_seconds", "d"), &common).expect("metric");
    let fetch = GaugeVec::new(
        Opts::new("huaweicloud_job_fetch_success", "f"),
        &["cloud_service", "cloud_region", "project_id", "job_id"],
    )
    .expect("metric");
    let last = GaugeVec::new(
        Opts::new("huaweicloud_job_last_fetch_success_timestamp_seconds", "l"),
        &["cloud_service", "cloud_region", "project_id", "job_id"],
    )
    .expect("metric");
    for (id, j) in jobs {
        let jt = j.job_type.as_deref().unwrap_or("unknown");
        let cur = huaweicloud_job_exporter::exposition::status_label(j);
        for s in cloud::Status::DOCUMENTED.iter().map(cloud::Status::as_str) {
            status
                .with_label_values(&["evs", "cn-north-4", simulator::DEMO_PROJECT_ID, id, jt, s])
                .set(f64::from(u8::from(s == cur)));
        }
        let l = ["evs", "cn-north-4", simulator::DEMO_PROJECT_ID, id, jt];
        begin.with_label_values(&l).set(j.begin.unwrap_or(0.0));
        duration.with_label_values(&l).set(100.0);
        fetch.with_label_values(&l[..4]).set(1.0);
        last.with_label_values(&l[..4]).set(1.7e9);
    }
    for c in [status, begin, duration, fetch, last] {
        reg.register(Box::new(c)).expect("register");
    }
    reg
}

/// Bodies as large as the default size limit admits, packed with ids.
fn huge_bodies() -> Vec<(&'static str, Vec<u8>)> {
    let ids = |n: usize| -> Vec<String> { (0..n).map(|i| format!("{i:x}")).collect() };
    let volume_ids = format!(
        r#"{{"job_id":"j","status":"RUNNING","entities":{{"volume_ids":"{}"}}}}"#,
        ids(150_000).join(",")
    );
    let entities: Vec<String> = ids(22_000)
        .iter()
        .map(|i| format!(r#"{{"entities":{{"volume_id":"{i}"}}}}"#))
        .collect();
    let sub_jobs = format!(
        r#"{{"job_id":"j","status":"RUNNING","entities":{{"sub_jobs":[{}]}}}}"#,
        entities.join(",")
    );
    vec![
        ("150,000 volume_ids", volume_ids.into_bytes()),
        ("22,000 sub-jobs, one entity each", sub_jobs.into_bytes()),
    ]
}

/// Decoding, capping and rendering one hostile body: the work a refresh does with it. The
/// decoder caps as it reads (`decode_job_capped`, what the cloud client calls), so the decode
/// column includes capping; the poller's own cap then finds nothing left to cut.
fn decode_huge(runs: usize) {
    println!(
        "| body | bytes | decode + cap p50 | decode + cap p99 | render p50 | render p99 | total p50 |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (name, body) in huge_bodies() {
        let mut decode = Vec::with_capacity(runs);
        let mut render = Vec::with_capacity(runs);
        let mut total = Vec::with_capacity(runs);
        for _ in 0..runs {
            let started = Instant::now();
            let (mut job, cut) =
                model::decode_job_capped(&body, model::Limits::default()).expect("decodes");
            std::hint::black_box(cut);
            let decoded = started.elapsed();
            decode.push(decoded);
            let started = Instant::now();
            job.cap(model::Limits::default());
            let text = huaweicloud_job_exporter::exposition::render_job(
                &huaweicloud_job_exporter::exposition::JobView {
                    target_labels: "cloud_service=\"evs\"",
                    job_id: "j",
                    job: Some(&job),
                    fetch_ok: true,
                    last_success: Some(1.7e9),
                    families: Default::default(),
                },
            );
            std::hint::black_box(text);
            let rendered = started.elapsed();
            render.push(rendered);
            total.push(decoded + rendered);
        }
        decode.sort();
        render.sort();
        total.sort();
        println!(
            "| {name} | {} | {:.1?} | {:.1?} | {:.1?} | {:.1?} | {:.1?} |",
            body.len(),
            percentile(&decode, 0.5),
            percentile(&decode, 0.99),
            percentile(&render, 0.5),
            percentile(&render, 0.99),
            percentile(&total, 0.5),
        );
    }
}

fn main() {
    let part = std::env::var("BENCH_PART").unwrap_or_default();
    if part != "render" {
        decode_huge(21);
        if part == "decode" {
            return;
        }
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let sizes: Vec<usize> = std::env::var("BENCH_JOBS")
        .ok()
        .map(|v| v.split(',').filter_map(|s| s.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1_000, 10_000, 100_000]);
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(41);
    println!(
        "| jobs | series | bytes | render p50 | render p99 | in 64 KiB pieces p50 | prometheus crate p50 | ratio |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut held = Vec::new();
    for n in sizes {
        let (jobs, targets) = fleet(n);
        held.push((n, held_text(&jobs)));
        let poller = Poller::new(
            targets,
            Settings {
                mode: Mode::Cached,
                refresh_interval: Duration::from_secs(30),
                scrape_timeout: Duration::from_secs(10),
                max_concurrency: 256,
                max_requests_per_second: 1e9,
                terminal_retention: Duration::from_secs(86400),
                shard: Default::default(),
                job_limits: Default::default(),
                families: Default::default(),
            },
            Arc::new(Telemetry::new()),
        );
        rt.block_on(poller.collect(None));
        let snapshot = poller.current();
        let mut times = Vec::with_capacity(runs);
        let mut bytes = 0;
        let mut series = 0;
        for i in 0..=runs {
            let started = Instant::now();
            let mut out = Vec::new();
            snapshot.write(&mut out);
            let took = started.elapsed();
            if i == 0 {
                bytes = out.len();
                series = out
                    .split(|b| *b == b'\n')
                    .filter(|l| !l.is_empty() && l[0] != b'#')
                    .count();
                continue; // warm-up
            }
            std::hint::black_box(&out);
            times.push(took);
        }
        times.sort();
        // What a scrape does before the socket: the text in 64 KiB pieces, each dropped once
        // written (src/http/mod.rs), so no buffer the size of the whole text is ever touched.
        let mut chunked = Vec::with_capacity(runs);
        for _ in 0..runs {
            let started = Instant::now();
            for piece in Arc::clone(&snapshot).chunks(64 * 1024) {
                std::hint::black_box(&piece);
            }
            chunked.push(started.elapsed());
        }
        chunked.sort();
        let crate_p50 = if n <= 10_000 {
            let reg = prometheus_crate(&jobs);
            let mut t = Vec::new();
            for _ in 0..5 {
                let started = Instant::now();
                let mut out = Vec::new();
                prometheus::Encoder::encode(
                    &prometheus::TextEncoder::new(),
                    &reg.gather(),
                    &mut out,
                )
                .expect("encode");
                t.push(started.elapsed());
                std::hint::black_box(&out);
            }
            t.sort();
            Some(percentile(&t, 0.5))
        } else {
            None
        };
        let p50 = percentile(&times, 0.5);
        println!(
            "| {n} | {series} | {bytes} | {:.2} ms | {:.2} ms | {:.2} ms | {} | {} |",
            p50.as_secs_f64() * 1e3,
            percentile(&times, 0.99).as_secs_f64() * 1e3,
            percentile(&chunked, 0.5).as_secs_f64() * 1e3,
            crate_p50.map_or("-".into(), |d| format!("{:.1} ms", d.as_secs_f64() * 1e3)),
            crate_p50.map_or("-".into(), |d| format!(
                "{:.0}x",
                d.as_secs_f64() / p50.as_secs_f64()
            )),
        );
    }
    println!("\n| jobs | text held | per job | text exported | held / exported |");
    println!("|---:|---:|---:|---:|---:|");
    for (n, (held, exported)) in held {
        println!(
            "| {n} | {held} | {:.0} B | {exported} | {:.3} |",
            held as f64 / n as f64,
            held as f64 / exported as f64
        );
    }
}

/// Bytes of rendered text the exporter holds for `jobs` (each fetched once, every family
/// exported), and bytes of exposition that text writes.
fn held_text(jobs: &HashMap<String, Job>) -> (usize, usize) {
    let target_labels = huaweicloud_job_exporter::exposition::labels(&[
        ("cloud_service", "evs"),
        ("cloud_region", "cn-north-4"),
        ("project_id", simulator::DEMO_PROJECT_ID),
    ]);
    jobs.iter()
        .map(|(id, job)| {
            let text = huaweicloud_job_exporter::exposition::render_job(
                &huaweicloud_job_exporter::exposition::JobView {
                    target_labels: &target_labels,
                    job_id: id,
                    job: Some(job),
                    fetch_ok: true,
                    last_success: Some(1_700_000_000.5),
                    families: Default::default(),
                },
            );
            (text.held_bytes(), text.len())
        })
        .fold((0, 0), |(h, e), (th, te)| (h + th, e + te))
}
