//! `cargo bench --bench scale --
//! [latency|concurrent|prometheus|upstream|ondemand|memory|idle|families|profile|all]`: figures at scale,
//! measured end to end over loopback.
//!
//! The simulator runs in this process (on 127.0.0.1, port 0) with a generated fleet whose
//! terminal share is fixed; the exporter runs as a separate process (the crate's own binary,
//! built by cargo for this bench), so its RSS (`/proc/PID/status` VmRSS) and CPU time
//! (`/proc/PID/stat` utime + stime) are its own. Scrapes use reqwest over loopback and read the
//! body as it arrives, counting bytes; with `Accept-Encoding: gzip` the bytes are the compressed
//! ones (reqwest here has no decoder). The Python peer (`../shared/peers/python_peer.py serve N
//! PORT`, official prometheus_client) is scraped by the same client in the same run when
//! `BENCH_PYTHON` names an interpreter that has prometheus_client (`scripts/bench-scale` sets
//! one up).
//!
//! Knobs (environment): `BENCH_JOBS` (latency sizes, default 1000,10000,100000), `BENCH_RUNS`
//! (scrapes per size, default 41; 100,000-job sizes use a fifth of it, at least 9),
//! `BENCH_ROUNDS` (memory: refreshes, default 120 = an hour at 30 s), `BENCH_MEMORY_RESTART`
//! (memory: `1` keeps a state file, then restarts the exporter on it and measures again),
//! `BENCH_IDLE_SECS` (default
//! 60), `BENCH_IDLE_SHARES` (finished shares for idle, default 0.9,0.0), `BENCH_PYTHON`, `BENCH_PEER` (the peer script), `BENCH_EXPORTER` (another
//! build of the binary), `BENCH_BASELINE` (an earlier build run beside this one, for before/after
//! ratios from one run), `BENCH_SCRAPERS`, `BENCH_CONCURRENT_JOBS`, `BENCH_CONCURRENT_ROUNDS`
//! (`concurrent`), `BENCH_PROM_JOBS`, `BENCH_PROM_SECS`, `BENCH_PROM_INTERVAL`,
//! `BENCH_PROMETHEUS` (`prometheus`: a real Prometheus, default the one on the PATH), `BENCH_FAMILY_JOBS` (`families`), `BENCH_METRIC_DENYLIST` (families every exporter started here leaves out, comma-separated), `BENCH_WRAPPER` (a command put before the exporter, e.g. valgrind for
//! `profile`). Everything is bounded in time and count and only 127.0.0.1 is contacted. No timing
//! is asserted: the figures are printed as Markdown tables.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use huaweicloud_job_exporter::simulator::{self, Fault, FleetShape, JobScript, Simulator};
use tokio_util::sync::CancellationToken;

const EXPORTER: &str = env!("CARGO_BIN_EXE_huaweicloud-job-exporter");

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

fn env_list<T: std::str::FromStr + Clone>(name: &str, default: &[T]) -> Vec<T> {
    std::env::var(name)
        .ok()
        .map(|v| v.split(',').filter_map(|s| s.trim().parse().ok()).collect())
        .unwrap_or_else(|| default.to_vec())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    // Nearest rank.
    let rank = ((sorted.len() as f64) * p).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

fn ms(d: Duration) -> String {
    let v = d.as_secs_f64() * 1000.0;
    if v < 10.0 {
        format!("{v:.2} ms")
    } else if v < 100.0 {
        format!("{v:.1} ms")
    } else {
        format!("{v:.0} ms")
    }
}

fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

/// `n` generated jobs; `terminal_share` of them finished long ago, the rest RUNNING for good.
fn fleet(n: usize, terminal_share: f64, seed: u64) -> Vec<JobScript> {
    let mut scripts =
        simulator::fleet::generate(n, seed, simulator::DEMO_PROJECT_ID, &FleetShape::default());
    let terminal = (n as f64 * terminal_share).round() as usize;
    for (i, s) in scripts.iter_mut().enumerate() {
        // Spread the terminal ones evenly over services and shapes.
        let is_terminal = (i * terminal) / n.max(1) != ((i + 1) * terminal) / n.max(1);
        if is_terminal {
            s.start_secs = -86_400.0 + (i % 3600) as f64;
        } else {
            s.start_secs = -((i % 600) as f64) - 1.0;
            s.init_secs = 0.0;
            s.run_secs = 1e9;
            for sub in &mut s.sub_jobs {
                sub.run_secs = 1e9;
            }
        }
    }
    scripts
}

struct Sim {
    sim: Simulator,
    addr: std::net::SocketAddr,
    stop: CancellationToken,
}

impl Sim {
    async fn start(scripts: Vec<JobScript>) -> Self {
        let sim = Simulator::new();
        sim.add_jobs(scripts);
        let stop = CancellationToken::new();
        let addr = sim
            .spawn("127.0.0.1:0", stop.clone())
            .await
            .expect("simulator binds");
        Self { sim, addr, stop }
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

struct Settings {
    mode: &'static str,
    refresh_interval: &'static str,
    max_concurrency: usize,
}

fn write_config(dir: &std::path::Path, sim: &Sim, scripts: &[JobScript], s: &Settings) -> PathBuf {
    let mut by_service: std::collections::BTreeMap<&str, Vec<&str>> = Default::default();
    for j in scripts {
        by_service.entry(&j.service).or_default().push(&j.job_id);
    }
    let mut y = String::new();
    y.push_str(&format!(
        "mode: {}\nrefresh_interval: {}\nscrape_timeout: 120s\nrequest_timeout: 30s\n\
         max_concurrency: {}\nmax_requests_per_second: 1000000\nterminal_retention: 30d\n\
         accounts:\n  - name: bench\n    access_key: {}\n    secret_key: {}\ntargets:\n",
        s.mode,
        s.refresh_interval,
        s.max_concurrency,
        simulator::DEMO_ACCESS_KEY,
        simulator::DEMO_SECRET_KEY
    ));
    for (svc, ids) in by_service {
        y.push_str(&format!(
            "  - account: bench\n    cloud_service: {svc}\n    cloud_region: cn-north-4\n    \
             project_id: {}\n    endpoint: http://{}/{svc}\n    jobs:\n",
            simulator::DEMO_PROJECT_ID,
            sim.addr
        ));
        for id in ids {
            y.push_str("      - ");
            y.push_str(id);
            y.push('\n');
        }
    }
    if let Ok(deny) = std::env::var("BENCH_METRIC_DENYLIST")
        && !deny.trim().is_empty()
    {
        y.push_str(&format!("metric_denylist: [{deny}]\n"));
    }
    let path = dir.join("exporter.yml");
    std::fs::write(&path, y).expect("write config");
    path
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A process we started, killed (by its own pid) when dropped.
struct Proc {
    child: Child,
    base: String,
}

impl Proc {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn rss_kib(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    }

    /// utime + stime in clock ticks (USER_HZ, 100 on Linux).
    fn cpu_ticks(&self) -> u64 {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap_or_default();
        // Fields after the command name, which is in parentheses and may hold spaces.
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let f: Vec<&str> = rest.split_whitespace().collect();
        // rest starts at field 3 (state); utime is field 14, stime 15.
        let get = |i: usize| {
            f.get(i - 3)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        get(14) + get(15)
    }

    fn terminate(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(120);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The exporter binary: cargo's build of this crate, or `BENCH_EXPORTER` (another build, to
/// compare two versions in one run).
fn exporter_path() -> String {
    std::env::var("BENCH_EXPORTER")
        .ok()
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| EXPORTER.to_string())
}

fn start_exporter(config: &std::path::Path) -> Proc {
    start_exporter_bin(&exporter_path(), config)
}

/// `BENCH_BASELINE`: an earlier build of the binary, run beside this one (interleaved scrapes)
/// in `latency`, `concurrent` and `prometheus`, so that before/after ratios come from one run.
fn baseline() -> Option<String> {
    std::env::var("BENCH_BASELINE")
        .ok()
        .filter(|p| !p.is_empty())
}

fn start_exporter_bin(bin: &str, config: &std::path::Path) -> Proc {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let wrapper = std::env::var("BENCH_WRAPPER").unwrap_or_default();
    let mut words: Vec<String> = wrapper.split_whitespace().map(str::to_string).collect();
    words.push(bin.to_string());
    let mut cmd = Command::new(&words[0]);
    cmd.args(&words[1..])
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--web.listen-address={listen}"))
        .arg("--log.level=error")
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    let child = cmd.spawn().expect("start the exporter");
    Proc {
        child,
        base: format!("http://{listen}"),
    }
}

fn start_python(python: &str, n: usize) -> Proc {
    let port = free_port();
    let peer = std::env::var("BENCH_PEER").unwrap_or_else(|_| {
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../shared/peers/python_peer.py"
        )
        .to_string()
    });
    let child = Command::new(python)
        .args([peer.as_str(), "serve", &n.to_string(), &port.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("start the python peer");
    Proc {
        child,
        base: format!("http://127.0.0.1:{port}"),
    }
}

fn client() -> reqwest::Client {
    huaweicloud_job_exporter::install_crypto_provider();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(600))
        .pool_max_idle_per_host(4)
        .build()
        .expect("client")
}

/// Waits until `url` answers 200 (bounded); gives up if the process has exited.
async fn wait_ok(c: &reqwest::Client, p: &mut Proc, url: &str, limit: Duration) -> Duration {
    let started = Instant::now();
    while started.elapsed() < limit {
        if let Ok(Some(status)) = p.child.try_wait() {
            panic!("{url}: the process exited ({status})");
        }
        if let Ok(r) = c.get(url).send().await
            && r.status().is_success()
        {
            return started.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{url} not ready within {limit:?}");
}

/// One scrape: time to the last body byte, bytes received.
async fn scrape(c: &reqwest::Client, url: &str, gzip: bool) -> (Duration, u64) {
    let started = Instant::now();
    let mut req = c
        .get(url)
        .header("x-prometheus-scrape-timeout-seconds", "120");
    if gzip {
        req = req.header("accept-encoding", "gzip");
    }
    let mut resp = req.send().await.expect("scrape");
    assert!(resp.status().is_success(), "{}", resp.status());
    if gzip {
        assert_eq!(
            resp.headers()
                .get("content-encoding")
                .and_then(|v| v.to_str().ok()),
            Some("gzip")
        );
    }
    let mut bytes = 0u64;
    while let Some(chunk) = resp.chunk().await.expect("body") {
        bytes += chunk.len() as u64;
    }
    (started.elapsed(), bytes)
}

/// The body of one scrape, as sent (compressed when `gzip`).
async fn scrape_body(c: &reqwest::Client, url: &str, gzip: bool) -> bytes::Bytes {
    let mut req = c.get(url);
    if gzip {
        req = req.header("accept-encoding", "gzip");
    }
    let resp = req.send().await.expect("scrape");
    assert!(resp.status().is_success(), "{}", resp.status());
    resp.bytes().await.expect("body")
}

struct Series {
    p50: Duration,
    p99: Duration,
    bytes: u64,
    /// The scraped process's CPU time (user and system) per scrape, on average.
    cpu: Duration,
}

/// CPU time from clock ticks (USER_HZ, 100 on Linux) over `scrapes` scrapes.
fn cpu_per(ticks: u64, scrapes: usize) -> Duration {
    Duration::from_millis(ticks * 10) / scrapes.max(1) as u32
}

async fn scrapes(c: &reqwest::Client, p: &Proc, gzip: bool, runs: usize) -> Series {
    scrapes_interleaved(c, &[p], gzip, runs)
        .await
        .pop()
        .expect("one series a process")
}

/// `runs` scrapes of each of `procs`' `/metrics`, taken in turn (one of each, then again), so
/// that the machine's mood weighs on all of them alike.
async fn scrapes_interleaved(
    c: &reqwest::Client,
    procs: &[&Proc],
    gzip: bool,
    runs: usize,
) -> Vec<Series> {
    let urls: Vec<String> = procs
        .iter()
        .map(|p| format!("{}/metrics", p.base))
        .collect();
    let mut bytes = Vec::new();
    for url in &urls {
        bytes.push(scrape(c, url, gzip).await.1); // warm-up
    }
    let mut times = vec![Vec::with_capacity(runs); urls.len()];
    let mut ticks = vec![0; urls.len()];
    for _ in 0..runs {
        for ((url, t), (p, cpu)) in urls
            .iter()
            .zip(&mut times)
            .zip(procs.iter().zip(&mut ticks))
        {
            let before = p.cpu_ticks();
            t.push(scrape(c, url, gzip).await.0);
            *cpu += p.cpu_ticks().saturating_sub(before);
        }
    }
    times
        .into_iter()
        .zip(bytes)
        .zip(ticks)
        .map(|((mut t, bytes), ticks)| {
            t.sort();
            Series {
                p50: percentile(&t, 0.5),
                p99: percentile(&t, 0.99),
                bytes,
                cpu: cpu_per(ticks, runs),
            }
        })
        .collect()
}

async fn exporter_for(
    dir: &std::path::Path,
    sim: &Sim,
    scripts: &[JobScript],
    s: &Settings,
    c: &reqwest::Client,
) -> (Proc, Duration) {
    let config = write_config(dir, sim, scripts, s);
    let mut exp = start_exporter(&config);
    let url = format!("{}/-/ready", exp.base);
    let ready = wait_ok(c, &mut exp, &url, Duration::from_secs(1800)).await;
    (exp, ready)
}

fn python() -> Option<String> {
    std::env::var("BENCH_PYTHON").ok().filter(|p| !p.is_empty())
}

/// Point 1: cached-mode /metrics latency, with and without gzip, beside the Python peer.
async fn latency(dir: &std::path::Path, c: &reqwest::Client) {
    let runs: usize = env_or("BENCH_RUNS", 41);
    println!("\n## Cached-mode /metrics over loopback\n");
    println!(
        "| exporter | jobs | gzip | bytes | p50 | p99 | CPU a scrape | runs | RSS after |\n|---|---:|---|---:|---:|---:|---:|---:|---:|"
    );
    for n in env_list("BENCH_JOBS", &[1_000, 10_000, 100_000]) {
        let runs_n = if n >= 100_000 {
            (runs / 5).max(9)
        } else {
            runs
        };
        let scripts = fleet(n, 0.9, 7);
        let sim = Sim::start(scripts.clone()).await;
        let settings = Settings {
            mode: "cached",
            refresh_interval: "1h",
            max_concurrency: 64,
        };
        let (exp, _) = exporter_for(dir, &sim, &scripts, &settings, c).await;
        let mut exps = vec![("this", exp)];
        if let Some(bin) = baseline() {
            let config = write_config(dir, &sim, &scripts, &settings);
            let mut before = start_exporter_bin(&bin, &config);
            let url = format!("{}/-/ready", before.base);
            wait_ok(c, &mut before, &url, Duration::from_secs(1800)).await;
            exps.push(("before", before));
        }
        let procs: Vec<&Proc> = exps.iter().map(|(_, e)| e).collect();
        let mut p50s = vec![Vec::new(); exps.len()];
        for gzip in [false, true] {
            let series = scrapes_interleaved(c, &procs, gzip, runs_n).await;
            for (((name, exp), s), p50) in exps.iter().zip(&series).zip(&mut p50s) {
                p50.push(s.p50);
                println!(
                    "| {name} | {n} | {} | {} | {} | {} | {} | {runs_n} | {} MiB |",
                    if gzip { "yes" } else { "no" },
                    mb(s.bytes),
                    ms(s.p50),
                    ms(s.p99),
                    ms(s.cpu),
                    exp.rss_kib() / 1024
                );
            }
        }
        for ((name, _), p50) in exps.iter().zip(&p50s) {
            if let [plain, gz] = p50[..] {
                println!(
                    "| {name} | {n} | gzip p50 / plain p50 | {:.2}× | | | | | |",
                    gz.as_secs_f64() / plain.as_secs_f64()
                );
            }
        }
        for (_, mut exp) in exps {
            exp.terminate();
        }
        drop(sim);
        if let Some(py) = python() {
            let mut peer = start_python(&py, n);
            let url = format!("{}/metrics", peer.base);
            wait_ok(c, &mut peer, &url, Duration::from_secs(600)).await;
            let py_runs = if n >= 100_000 {
                3
            } else if n >= 10_000 {
                (runs / 4).max(5)
            } else {
                runs
            };
            for gzip in [false, true] {
                let s = scrapes(c, &peer, gzip, py_runs).await;
                println!(
                    "| python_peer | {n} | {} | {} | {} | {} | {} | {py_runs} | {} MiB |",
                    if gzip { "yes" } else { "no" },
                    mb(s.bytes),
                    ms(s.p50),
                    ms(s.p99),
                    ms(s.cpu),
                    peer.rss_kib() / 1024
                );
            }
        }
    }
}

/// Samples the simulator's request total until it has not moved for `quiet`; returns it.
async fn settle(sim: &Simulator, quiet: Duration, limit: Duration) -> u64 {
    let started = Instant::now();
    let mut last = sim.requests_total();
    let mut since = Instant::now();
    while started.elapsed() < limit {
        tokio::time::sleep(Duration::from_millis(10)).await;
        let now = sim.requests_total();
        if now != last {
            last = now;
            since = Instant::now();
        } else if since.elapsed() >= quiet {
            return now;
        }
    }
    last
}

/// Waits for the next burst of requests, then for it to end; returns the new total.
async fn next_round(sim: &Simulator, from: u64, quiet: Duration, limit: Duration) -> u64 {
    let started = Instant::now();
    while sim.requests_total() == from && started.elapsed() < limit {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    settle(sim, quiet, limit).await
}

/// Point 2: upstream calls per refresh for a fleet where 90% of the jobs are finished.
async fn upstream(dir: &std::path::Path, c: &reqwest::Client) {
    let n = 10_000;
    let scripts = fleet(n, 0.9, 11);
    let sim = Sim::start(scripts.clone()).await;
    let t = sim.sim.now_secs();
    let active = scripts
        .iter()
        .filter(|s| !matches!(s.status(t), "SUCCESS" | "FAIL"))
        .count();
    let settings = Settings {
        mode: "cached",
        refresh_interval: "2s",
        max_concurrency: 64,
    };
    let (mut exp, _) = exporter_for(dir, &sim, &scripts, &settings, c).await;
    let quiet = Duration::from_millis(700);
    let limit = Duration::from_secs(60);
    let first = settle(&sim.sim, quiet, limit).await;
    let mut rounds = Vec::new();
    let mut total = first;
    for _ in 0..5 {
        let next = next_round(&sim.sim, total, quiet, limit).await;
        rounds.push(next - total);
        total = next;
    }
    exp.terminate();
    let terminal_requests: u64 = scripts
        .iter()
        .filter(|s| matches!(s.status(t), "SUCCESS" | "FAIL"))
        .map(|s| sim.sim.requests_for(&s.job_id))
        .sum();
    println!("\n## Upstream calls per refresh\n");
    println!(
        "| tracked | active | terminal | first refresh | refreshes 2–6 | requests to terminal jobs after 6 refreshes |\n|---:|---:|---:|---:|---|---:|"
    );
    println!(
        "| {n} | {active} | {} | {first} | {} | {terminal_requests} |",
        n - active,
        rounds
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    );
}

/// Point 3: on-demand collection time against ceil(n / concurrency) × latency.
async fn ondemand(dir: &std::path::Path, c: &reqwest::Client) {
    let latency_ms = 50u64;
    let conc = 50usize;
    println!("\n## On-demand scrape, {latency_ms} ms upstream latency, concurrency {conc}\n");
    println!(
        "| active jobs | ideal ceil(n/{conc})×{latency_ms} ms | p50 | p99 | runs | p50 / ideal |\n|---:|---:|---:|---:|---:|---:|"
    );
    for n in env_list("BENCH_ONDEMAND_JOBS", &[100, 1_000, 10_000]) {
        let scripts = fleet(n, 0.0, 13);
        let sim = Sim::start(scripts.clone()).await;
        for s in &scripts {
            sim.sim
                .set_job_fault(&s.job_id, Some(Fault::Latency { ms: latency_ms }));
        }
        let settings = Settings {
            mode: "on_demand",
            refresh_interval: "30s",
            max_concurrency: conc,
        };
        let (mut exp, _) = exporter_for(dir, &sim, &scripts, &settings, c).await;
        let runs = if n >= 10_000 { 3 } else { 11 };
        let s = scrapes(c, &exp, false, runs).await;
        let ideal = Duration::from_millis(n.div_ceil(conc) as u64 * latency_ms);
        println!(
            "| {n} | {} | {} | {} | {runs} | {:.2}× |",
            ms(ideal),
            ms(s.p50),
            ms(s.p99),
            s.p50.as_secs_f64() / ideal.as_secs_f64()
        );
        exp.terminate();
    }
}

/// Point 4: RSS after an hour of refreshes (fast-forwarded: a short interval, many rounds).
async fn memory(dir: &std::path::Path, c: &reqwest::Client) {
    let rounds: u64 = env_or("BENCH_ROUNDS", 120);
    println!(
        "\n## Memory: RSS of the exporter, 90% of jobs finished, {rounds} refreshes at a 250 ms interval\n"
    );
    println!(
        "| tracked | ready | after 1 scrape | after {} refreshes | after {rounds} refreshes | after 5 more scrapes |\n|---:|---:|---:|---:|---:|---:|",
        rounds / 2
    );
    let restart = env_or("BENCH_MEMORY_RESTART", 0u8) == 1;
    let mut restarts = Vec::new();
    let mut per = Vec::new();
    for n in env_list("BENCH_MEMORY_JOBS", &[10_000, 100_000]) {
        let scripts = fleet(n, 0.9, 17);
        let sim = Sim::start(scripts.clone()).await;
        let t = sim.sim.now_secs();
        let active = scripts
            .iter()
            .filter(|s| !matches!(s.status(t), "SUCCESS" | "FAIL"))
            .count() as u64;
        let settings = Settings {
            mode: "cached",
            refresh_interval: "250ms",
            max_concurrency: 64,
        };
        let config = write_config(dir, &sim, &scripts, &settings);
        let state = dir.join(format!("state-{n}.json"));
        if restart {
            let mut y = std::fs::read_to_string(&config).expect("read the config");
            y.push_str(&format!("state_file: {}\n", state.display()));
            std::fs::write(&config, y).expect("write the config");
        }
        let mut exp = start_exporter(&config);
        let ready_url = format!("{}/-/ready", exp.base);
        wait_ok(c, &mut exp, &ready_url, Duration::from_secs(1800)).await;
        let url = format!("{}/metrics", exp.base);
        let ready = exp.rss_kib();
        scrape(c, &url, false).await;
        let scraped = exp.rss_kib();
        let wait_for = |k: u64| n as u64 + (k - 1) * active;
        let limit = Instant::now() + Duration::from_secs(1800);
        while sim.sim.requests_total() < wait_for(rounds / 2) && Instant::now() < limit {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let half = exp.rss_kib();
        while sim.sim.requests_total() < wait_for(rounds) && Instant::now() < limit {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let full = exp.rss_kib();
        for _ in 0..5 {
            scrape(c, &url, false).await;
        }
        let after = exp.rss_kib();
        println!(
            "| {n} | {} MiB | {} MiB | {} MiB | {} MiB | {} MiB |",
            ready / 1024,
            scraped / 1024,
            half / 1024,
            full / 1024,
            after / 1024
        );
        per.push((n, after));
        exp.terminate();
        if restart {
            restarts.push(restarted(c, &sim, &config, &state, n, active, rounds / 2).await);
        }
    }
    if !restarts.is_empty() {
        println!(
            "\n### Restarted on the state file the run above kept\n\n\
             | tracked | state file | ready after | upstream requests until ready | ready | after 1 scrape | after {} refreshes |\n\
             |---:|---:|---:|---:|---:|---:|---:|",
            rounds / 2
        );
        for r in restarts {
            println!("{r}");
        }
    }
    if let [(n1, r1), (n2, r2)] = per[..] {
        println!(
            "\nMarginal bytes per tracked job ({n1} → {n2}): {:.0}",
            (r2 as f64 - r1 as f64) * 1024.0 / (n2 - n1) as f64
        );
    }
}

/// The exporter started again on `config`, whose state file (`state`) a stopped one left: how long until
/// ready, what it asked the cloud for meanwhile (the finished jobs it remembers should not be
/// fetched again) and its RSS, at ready and after `rounds` refreshes of the `active` jobs. One
/// row of the restart table.
async fn restarted(
    c: &reqwest::Client,
    sim: &Sim,
    config: &std::path::Path,
    state: &std::path::Path,
    n: usize,
    active: u64,
    rounds: u64,
) -> String {
    let size = |p: PathBuf| std::fs::metadata(p).map_or(0, |m| m.len());
    let journal = format!("{}.journal", state.display());
    let state = size(state.to_path_buf()) + size(journal.into());
    let before = sim.sim.requests_total();
    let mut exp = start_exporter(config);
    let ready_url = format!("{}/-/ready", exp.base);
    let ready_after = wait_ok(c, &mut exp, &ready_url, Duration::from_secs(1800)).await;
    let asked = sim.sim.requests_total() - before;
    let ready = exp.rss_kib();
    scrape(c, &format!("{}/metrics", exp.base), false).await;
    let scraped = exp.rss_kib();
    let limit = Instant::now() + Duration::from_secs(1800);
    while sim.sim.requests_total() < before + asked + rounds * active && Instant::now() < limit {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let full = exp.rss_kib();
    exp.terminate();
    format!(
        "| {n} | {} | {:.1} s | {asked} | {} MiB | {} MiB | {} MiB |",
        mb(state),
        ready_after.as_secs_f64(),
        ready / 1024,
        scraped / 1024,
        full / 1024
    )
}

/// Point 5: CPU of an idle cached exporter (no scrapes), 30 s refresh.
async fn idle(dir: &std::path::Path, c: &reqwest::Client) {
    let secs: u64 = env_or("BENCH_IDLE_SECS", 60);
    println!("\n## Idle CPU, cached, 30 s refresh, no scrapes, {secs} s window\n");
    println!(
        "| tracked | finished | CPU time in window | share of one core | upstream requests in window | CPU per request |\n|---:|---:|---:|---:|---:|---:|"
    );
    for share in env_list("BENCH_IDLE_SHARES", &[0.9, 0.0]) {
        let n = 10_000;
        let scripts = fleet(n, share, 19);
        let sim = Sim::start(scripts.clone()).await;
        let settings = Settings {
            mode: "cached",
            refresh_interval: "30s",
            max_concurrency: 16,
        };
        let (mut exp, _) = exporter_for(dir, &sim, &scripts, &settings, c).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let t0 = exp.cpu_ticks();
        let r0 = sim.sim.requests_total();
        let started = Instant::now();
        tokio::time::sleep(Duration::from_secs(secs)).await;
        let ticks = exp.cpu_ticks() - t0;
        let requests = sim.sim.requests_total() - r0;
        let wall = started.elapsed().as_secs_f64();
        let cpu = ticks as f64 / 100.0;
        println!(
            "| {n} | {:.0}% | {cpu:.2} s | {:.2}% | {requests} | {} |",
            share * 100.0,
            cpu / wall * 100.0,
            if requests > 0 {
                format!("{:.0} µs", cpu * 1e6 / requests as f64)
            } else {
                "–".into()
            }
        );
        exp.terminate();
    }
}

/// Many scrapers at once, all asking for gzip as Prometheus does: `BENCH_SCRAPERS` (50) tasks
/// each scraping `BENCH_CONCURRENT_ROUNDS` (4) times a cached exporter of
/// `BENCH_CONCURRENT_JOBS` (10,000) jobs, 90% finished. This build, then `BENCH_BASELINE`'s.
async fn concurrent(dir: &std::path::Path, c: &reqwest::Client) {
    let n: usize = env_or("BENCH_CONCURRENT_JOBS", 10_000);
    let scrapers: usize = env_or("BENCH_SCRAPERS", 50);
    let rounds: usize = env_or("BENCH_CONCURRENT_ROUNDS", 4);
    println!("\n## {scrapers} concurrent gzip scrapers, {n} jobs, {rounds} scrapes each\n");
    println!(
        "| exporter | scrapes | p50 | p99 | max | gzip bytes | exporter CPU per scrape |\n|---|---:|---:|---:|---:|---:|---:|"
    );
    let scripts = fleet(n, 0.9, 7);
    let sim = Sim::start(scripts.clone()).await;
    let settings = Settings {
        mode: "cached",
        refresh_interval: "1h",
        max_concurrency: 64,
    };
    let mut bins = vec![("this", exporter_path())];
    bins.extend(baseline().map(|b| ("before", b)));
    for (name, bin) in bins {
        let config = write_config(dir, &sim, &scripts, &settings);
        let mut exp = start_exporter_bin(&bin, &config);
        let ready = format!("{}/-/ready", exp.base);
        wait_ok(c, &mut exp, &ready, Duration::from_secs(1800)).await;
        let url = format!("{}/metrics", exp.base);
        let (_, bytes) = scrape(c, &url, true).await;
        let t0 = exp.cpu_ticks();
        let tasks: Vec<_> = (0..scrapers)
            .map(|_| {
                let c = client();
                let url = url.clone();
                tokio::spawn(async move {
                    let mut t = Vec::new();
                    for _ in 0..rounds {
                        t.push(scrape(&c, &url, true).await.0);
                    }
                    t
                })
            })
            .collect();
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.expect("scraper"));
        }
        let cpu = (exp.cpu_ticks() - t0) as f64 / 100.0;
        all.sort();
        println!(
            "| {name} | {} | {} | {} | {} | {} | {} |",
            all.len(),
            ms(percentile(&all, 0.5)),
            ms(percentile(&all, 0.99)),
            ms(*all.last().unwrap_or(&Duration::ZERO)),
            mb(bytes),
            ms(Duration::from_secs_f64(cpu / all.len().max(1) as f64))
        );
        exp.terminate();
    }
}

/// A real Prometheus (`BENCH_PROMETHEUS`, default `prometheus` on the PATH) scraping one target.
struct Prom {
    proc: Proc,
}

impl Prom {
    fn start(dir: &std::path::Path, name: &str, target: &str, interval: &str) -> Prom {
        let port = free_port();
        let data = dir.join(format!("prom-{name}-{port}"));
        std::fs::create_dir_all(&data).expect("prometheus dir");
        let cfg = data.join("prometheus.yml");
        std::fs::write(
            &cfg,
            format!(
                "global:\n  scrape_interval: {interval}\n  scrape_timeout: {interval}\n\
                 scrape_configs:\n  - job_name: {name}\n    static_configs:\n      - targets: [\"{target}\"]\n"
            ),
        )
        .expect("prometheus config");
        let bin = std::env::var("BENCH_PROMETHEUS").unwrap_or_else(|_| "prometheus".into());
        let child = Command::new(bin)
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                data.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--enable-feature=extra-scrape-metrics")
            .arg("--log.level=error")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prometheus (set BENCH_PROMETHEUS)");
        Prom {
            proc: Proc {
                child,
                base: format!("http://127.0.0.1:{port}"),
            },
        }
    }

    /// The first value of an instant query, if any.
    async fn value(&self, c: &reqwest::Client, expr: &str) -> Option<f64> {
        let q = percent_encoding::utf8_percent_encode(expr, percent_encoding::NON_ALPHANUMERIC);
        let url = format!("{}/api/v1/query?query={q}", self.proc.base);
        let bytes = c.get(url).send().await.ok()?.bytes().await.ok()?;
        let body: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
        body["data"]["result"][0]["value"][1].as_str()?.parse().ok()
    }
}

/// What Prometheus pays: a real Prometheus per target, side by side, scraping this exporter and
/// the Python peer over `BENCH_PROM_SECS` (default 120) at `BENCH_PROM_INTERVAL` (default 10s),
/// for `BENCH_PROM_JOBS` (default 1000,10000) jobs. Reported from each Prometheus' own series:
/// `scrape_duration_seconds` (median over the window), `scrape_samples_scraped`,
/// `scrape_body_size_bytes` (the uncompressed body), and the Prometheus process' CPU time
/// (`/proc`, the same as its `process_cpu_seconds_total`) over the window divided by the
/// scrapes in it. Bytes on the wire, plain and gzip, come from one scrape by this bench.
async fn prometheus(dir: &std::path::Path, c: &reqwest::Client) {
    let secs: u64 = env_or("BENCH_PROM_SECS", 120);
    let interval: String = env_or("BENCH_PROM_INTERVAL", "10s".to_string());
    println!(
        "\n## What Prometheus pays: one Prometheus 2 per target, scrape interval {interval}, {secs} s window\n"
    );
    println!(
        "| target | jobs | scrapes | scrape_duration p50 | samples per scrape | body (uncompressed) | bytes plain | bytes gzip | Prometheus CPU per scrape | per 1,000 samples |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for n in env_list("BENCH_PROM_JOBS", &[1_000, 10_000]) {
        let scripts = fleet(n, 0.9, 7);
        let sim = Sim::start(scripts.clone()).await;
        let settings = Settings {
            mode: "cached",
            refresh_interval: "30s",
            max_concurrency: 64,
        };
        let (exp, _) = exporter_for(dir, &sim, &scripts, &settings, c).await;
        let mut targets = vec![("this", exp)];
        if let Some(bin) = baseline() {
            let config = write_config(dir, &sim, &scripts, &settings);
            let mut before = start_exporter_bin(&bin, &config);
            let url = format!("{}/-/ready", before.base);
            wait_ok(c, &mut before, &url, Duration::from_secs(1800)).await;
            targets.push(("before", before));
        }
        if let Some(py) = python() {
            let mut peer = start_python(&py, n);
            let url = format!("{}/metrics", peer.base);
            wait_ok(c, &mut peer, &url, Duration::from_secs(600)).await;
            targets.push(("python_peer", peer));
        }
        let mut proms = Vec::new();
        for (name, t) in &targets {
            let prom = Prom::start(dir, name, t.base.trim_start_matches("http://"), &interval);
            proms.push(prom);
        }
        for p in &mut proms {
            let url = format!("{}/-/ready", p.proc.base);
            wait_ok(c, &mut p.proc, &url, Duration::from_secs(120)).await;
        }
        // Past the first scrape, which also creates every series.
        tokio::time::sleep(Duration::from_secs(15)).await;
        let t0: Vec<u64> = proms.iter().map(|p| p.proc.cpu_ticks()).collect();
        tokio::time::sleep(Duration::from_secs(secs)).await;
        let cpu: Vec<f64> = proms
            .iter()
            .zip(&t0)
            .map(|(p, t)| (p.proc.cpu_ticks() - t) as f64 / 100.0)
            .collect();
        for (((name, t), p), cpu) in targets.iter().zip(&proms).zip(cpu) {
            let w = format!("{secs}s");
            let scrapes = p
                .value(c, &format!("count_over_time(scrape_duration_seconds[{w}])"))
                .await
                .unwrap_or(0.0);
            let p50 = p
                .value(
                    c,
                    &format!("quantile_over_time(0.5, scrape_duration_seconds[{w}])"),
                )
                .await
                .unwrap_or(f64::NAN);
            let samples = p
                .value(c, "scrape_samples_scraped")
                .await
                .unwrap_or(f64::NAN);
            let body = p
                .value(c, "scrape_body_size_bytes")
                .await
                .unwrap_or(f64::NAN);
            let url = format!("{}/metrics", t.base);
            let (_, plain) = scrape(c, &url, false).await;
            let (_, gz) = scrape(c, &url, true).await;
            let per_scrape = cpu / scrapes.max(1.0);
            println!(
                "| {name} | {n} | {scrapes:.0} | {} | {samples:.0} | {} | {} | {} | {} | {:.2} ms |",
                ms(Duration::from_secs_f64(p50.max(0.0))),
                mb(body.max(0.0) as u64),
                mb(plain),
                mb(gz),
                ms(Duration::from_secs_f64(per_scrape)),
                per_scrape * 1e6 / samples.max(1.0)
            );
        }
        for mut p in proms {
            p.proc.terminate();
        }
        for (_, mut t) in targets {
            t.terminate();
        }
    }
}

/// What each job family costs: one plain scrape of a cached exporter of `BENCH_FAMILY_JOBS`
/// (10,000) jobs, 90% finished, its samples and bytes counted per family (the exporter's own
/// families together). The figures behind the allowlist and denylist documentation.
async fn families(dir: &std::path::Path, c: &reqwest::Client) {
    let n: usize = env_or("BENCH_FAMILY_JOBS", 10_000);
    let scripts = fleet(n, 0.9, 7);
    let sim = Sim::start(scripts.clone()).await;
    let settings = Settings {
        mode: "cached",
        refresh_interval: "1h",
        max_concurrency: 64,
    };
    let (mut exp, _) = exporter_for(dir, &sim, &scripts, &settings, c).await;
    let text = c
        .get(format!("{}/metrics", exp.base))
        .send()
        .await
        .expect("scrape")
        .text()
        .await
        .expect("body");
    // What serving a plain scrape from the stored deflate blocks alone would cost: inflating
    // the whole body (best of 5, in this process).
    let gz = scrape_body(c, &format!("{}/metrics", exp.base), true).await;
    let mut best = Duration::MAX;
    let mut inflated = Vec::with_capacity(text.len() + 1024 * 1024);
    for _ in 0..5 {
        inflated.clear();
        let started = Instant::now();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&gz[..]), &mut inflated)
            .expect("valid gzip");
        best = best.min(started.elapsed());
    }
    exp.terminate();
    println!(
        "\nInflating the stored gzip body of {n} jobs ({} → {}): {} (best of 5), {:.0} MB/s",
        mb(gz.len() as u64),
        mb(inflated.len() as u64),
        ms(best),
        inflated.len() as f64 / 1e6 / best.as_secs_f64()
    );
    let own = "the exporter's own (`huaweicloud_job_exporter_*`, `process_*`)";
    let mut order: Vec<String> = Vec::new();
    let mut per: std::collections::HashMap<String, (u64, u64)> = Default::default();
    let mut family = String::new();
    for line in text.lines() {
        let bytes = line.len() as u64 + 1;
        if let Some(rest) = line.strip_prefix("# ") {
            let name = rest.split(' ').nth(1).unwrap_or("");
            family = if name.starts_with("huaweicloud_job_exporter_")
                || !name.starts_with("huaweicloud_job")
            {
                own.to_string()
            } else {
                format!("`{name}`")
            };
            if !per.contains_key(&family) {
                order.push(family.clone());
            }
            per.entry(family.clone()).or_default().1 += bytes;
            continue;
        }
        let e = per.entry(family.clone()).or_default();
        e.0 += 1;
        e.1 += bytes;
    }
    let total: (u64, u64) = per.values().fold((0, 0), |a, v| (a.0 + v.0, a.1 + v.1));
    println!("\n## Samples and bytes per family, {n} jobs, 90% finished\n");
    println!(
        "| family | samples | per job | bytes per job | share of bytes |\n|---|---:|---:|---:|---:|"
    );
    for f in &order {
        let (samples, bytes) = per[f];
        println!(
            "| {f} | {samples} | {:.2} | {:.0} | {:.1}% |",
            samples as f64 / n as f64,
            bytes as f64 / n as f64,
            bytes as f64 * 100.0 / total.1 as f64
        );
    }
    println!(
        "| all | {} | {:.2} | {:.0} | 100% |",
        total.0,
        total.0 as f64 / n as f64,
        total.1 as f64 / n as f64
    );
}

/// Point 6: the exporter under `BENCH_WRAPPER` (callgrind): first refresh of 10,000 jobs (all
/// active), one more refresh, then 5 scrapes; then a clean stop so the profile is written.
async fn profile(dir: &std::path::Path, c: &reqwest::Client) {
    let n: usize = env_or("BENCH_PROFILE_JOBS", 10_000);
    let scripts = fleet(n, 0.0, 23);
    let sim = Sim::start(scripts.clone()).await;
    let settings = Settings {
        mode: "cached",
        refresh_interval: "60s",
        max_concurrency: 16,
    };
    let (mut exp, ready) = exporter_for(dir, &sim, &scripts, &settings, c).await;
    let url = format!("{}/metrics", exp.base);
    for gzip in [false, false, false, false, true] {
        scrape(c, &url, gzip).await;
    }
    let requests = settle(
        &sim.sim,
        Duration::from_millis(500),
        Duration::from_secs(60),
    )
    .await;
    let _ = next_round(
        &sim.sim,
        requests,
        Duration::from_secs(2),
        Duration::from_secs(600),
    )
    .await;
    exp.terminate();
    println!(
        "profiled: first refresh ready after {:.1} s, 5 scrapes, 2 refreshes; {} upstream requests",
        ready.as_secs_f64(),
        sim.sim.requests_total()
    );
}

fn main() {
    let what: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let all = what.is_empty() || what.iter().any(|w| w == "all");
    let wants = |w: &str| all && w != "profile" && w != "discovery" || what.iter().any(|x| x == w);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let c = client();
    println!(
        "exporter: {}\npython peer: {}",
        exporter_path(),
        python().unwrap_or_else(|| "not run (set BENCH_PYTHON)".into())
    );
    let _ = std::io::stdout().flush();
    rt.block_on(async {
        if wants("latency") {
            latency(dir.path(), &c).await;
        }
        if wants("upstream") {
            upstream(dir.path(), &c).await;
        }
        if wants("ondemand") {
            ondemand(dir.path(), &c).await;
        }
        if wants("concurrent") {
            concurrent(dir.path(), &c).await;
        }
        if wants("prometheus") {
            prometheus(dir.path(), &c).await;
        }
        if wants("memory") {
            memory(dir.path(), &c).await;
        }
        if wants("idle") {
            idle(dir.path(), &c).await;
        }
        if wants("families") {
            families(dir.path(), &c).await;
        }
        if wants("profile") {
            profile(dir.path(), &c).await;
        }
        if wants("discovery") {
            discovery(dir.path(), &c).await;
        }
    });
}

/// A value of one series on /metrics (0 when absent).
async fn metric(c: &reqwest::Client, base: &str, prefix: &str) -> f64 {
    let Ok(r) = c.get(format!("{base}/metrics")).send().await else {
        return 0.0;
    };
    let text = r.text().await.unwrap_or_default();
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// EVS traces that name no job (purchases and failed calls), `n` of them, stamped over
/// `[from_ms, to_ms)`.
fn evs_noise(n: usize, from_ms: i64, to_ms: i64, tag: &str) -> Vec<serde_json::Value> {
    let span = (to_ms - from_ms).max(1);
    (0..n)
        .map(|i| {
            let time = from_ms + (i as i64 * span) / n.max(1) as i64;
            let (code, response) = if i % 2 == 0 {
                (200, serde_json::json!({"order_id": format!("CS{i:012}")}))
            } else {
                (400, serde_json::json!({"error": {"code": "EVS.2024"}}))
            };
            serde_json::json!({"trace_id": format!("{tag}-{i}"), "trace_name": "createVolume",
                "trace_type": "ApiCall", "service_type": "EVS", "time": time, "code": code,
                "response": response})
        })
        .collect()
}

/// `discovery`: one EVS project making 10,000 traces an hour (a tenth of them from jobs),
/// discovered through the simulator's CTS every 10 s: requests and CPU per cycle in steady state,
/// and the memory a discovered job costs (5,000 jobs appearing at once).
async fn discovery(dir: &std::path::Path, c: &reqwest::Client) {
    const HOUR_MS: i64 = 3_600_000;
    const INTERVAL_SECS: u64 = 10;
    let per_hour: usize = env_or("BENCH_TRACES_PER_HOUR", 10_000);
    let burst: usize = env_or("BENCH_DISCOVERY_BURST", 5_000);
    let job = |id: String, start: f64| JobScript {
        job_id: id,
        project_id: simulator::DEMO_PROJECT_ID.into(),
        service: "evs".into(),
        job_type: "createVolume".into(),
        start_secs: start,
        init_secs: 0.0,
        run_secs: 30.0,
        outcome: simulator::Outcome::Success,
        entities: Default::default(),
        sub_jobs: vec![],
    };
    // The last hour: a tenth of the traces from jobs (two each), the rest noise.
    let jobs_hour = per_hour / 20;
    let scripts: Vec<JobScript> = (0..jobs_hour)
        .map(|i| {
            job(
                format!("h{i:06}"),
                -3600.0 + 3400.0 * i as f64 / jobs_hour as f64,
            )
        })
        .collect();
    let sim = Sim::start(scripts).await;
    let now_ms = || chrono::Utc::now().timestamp_millis();
    let noise_hour = per_hour - 2 * jobs_hour;
    sim.sim.add_traces(
        simulator::DEMO_PROJECT_ID,
        evs_noise(noise_hour, now_ms() - HOUR_MS, now_ms() - 60_000, "n0"),
    );
    let y = format!(
        "refresh_interval: 30s\nmax_requests_per_second: 1000000\nterminal_retention: 30d\n\
         accounts:\n  - name: bench\n    access_key: {}\n    secret_key: {}\ntargets:\n  \
         - account: bench\n    cloud_service: evs\n    cloud_region: cn-north-4\n    \
         project_id: {}\n    endpoint: http://{addr}/evs\n    discover:\n      cts: \
         {{endpoint: \"http://{addr}\", interval: {INTERVAL_SECS}s, lookback: 1h}}\n",
        simulator::DEMO_ACCESS_KEY,
        simulator::DEMO_SECRET_KEY,
        simulator::DEMO_PROJECT_ID,
        addr = sim.addr
    );
    let cfg = dir.join("discovery.yml");
    std::fs::write(&cfg, y).expect("write config");
    let mut p = start_exporter(&cfg);
    let ready = format!("{}/-/ready", p.base);
    wait_ok(c, &mut p, &ready, Duration::from_secs(60)).await;
    let found = "huaweicloud_job_exporter_discovered_jobs_total{";
    let started = Instant::now();
    while metric(c, &p.base, found).await < jobs_hour as f64 {
        assert!(started.elapsed() < Duration::from_secs(60), "first cycle");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let first_requests = sim.sim.cts_requests().len();
    println!(
        "\n### Discovery: one project, {per_hour} CTS traces an hour, `interval: {INTERVAL_SECS}s`\n"
    );
    println!(
        "- first cycle (`lookback: 1h`, {per_hour} traces): {first_requests} CTS requests, {jobs_hour} jobs found in {:.2} s",
        started.elapsed().as_secs_f64()
    );

    // Steady state: the traces keep coming at the same rate, stamped now.
    let cycles = env_or("BENCH_DISCOVERY_CYCLES", 6u64);
    let (req0, cpu0) = (sim.sim.cts_requests().len(), p.cpu_ticks());
    let per_cycle = per_hour * INTERVAL_SECS as usize / 3600;
    for k in 0..cycles {
        let t = now_ms();
        sim.sim.add_traces(
            simulator::DEMO_PROJECT_ID,
            evs_noise(per_cycle, t - 10_000, t, &format!("s{k}")),
        );
        tokio::time::sleep(Duration::from_secs(INTERVAL_SECS)).await;
    }
    let requests = (sim.sim.cts_requests().len() - req0) as f64 / cycles as f64;
    let cpu_ms = (p.cpu_ticks() - cpu0) as f64 * 10.0 / cycles as f64;
    println!(
        "- steady state over {cycles} cycles: {requests:.1} CTS requests per cycle (window = interval + 5 min overlap, about {} traces), {cpu_ms:.1} ms CPU per cycle (whole exporter process, its 30 s refresh included)",
        per_hour * (INTERVAL_SECS as usize + 300) / 3600
    );

    // A burst: jobs begun a few minutes ago appear at once, found by the next cycle.
    let rss0 = p.rss_kib();
    let found0 = metric(c, &p.base, found).await;
    let burst_scripts: Vec<JobScript> = (0..burst)
        .map(|i| {
            job(
                format!("b{i:06}"),
                sim.sim.now_secs() - 240.0 + 150.0 * i as f64 / burst as f64,
            )
        })
        .collect();
    let (req1, cpu1) = (sim.sim.cts_requests().len(), p.cpu_ticks());
    sim.sim.add_jobs(burst_scripts);
    let started = Instant::now();
    while metric(c, &p.base, found).await < found0 + burst as f64 {
        assert!(started.elapsed() < Duration::from_secs(120), "burst");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let tracked = "huaweicloud_job_exporter_tracked_jobs{";
    while metric(c, &p.base, tracked).await < found0 + burst as f64 {
        assert!(started.elapsed() < Duration::from_secs(180), "tracked");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Let the poller fetch them once (they are finished) and settle.
    tokio::time::sleep(Duration::from_secs(35)).await;
    let rss1 = p.rss_kib();
    println!(
        "- burst of {burst} jobs ({} traces): found in {:.1} s with {} CTS requests and {:.0} ms CPU (fetching them included); RSS {} -> {} KiB, {:.2} KiB per discovered and tracked job",
        2 * burst,
        started.elapsed().as_secs_f64(),
        sim.sim.cts_requests().len() - req1,
        (p.cpu_ticks() - cpu1) as f64 * 10.0,
        rss0,
        rss1,
        (rss1 as f64 - rss0 as f64) / burst as f64
    );
    p.terminate();
}
