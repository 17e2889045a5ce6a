//! `demo`: the built-in simulator with a mixed EVS, SDRS and ECS fleet, and the exporter on it.
//!
//! The fleet is seeded, so every run shows the same story: some jobs already finished (a few
//! failed, with error codes), some running with sub-jobs, and the rest finishing over the next
//! fifteen minutes, a handful of them failing.
//!
//! Only a third of the jobs are listed in the demo's configuration; the others are discovered
//! while it runs, as in production: EVS, ECS and SDRS jobs through the simulator's Cloud Trace
//! Service (once their trace is recorded, a minute after they start), failed SDRS jobs through
//! its task centre. The landing page's Discovery table and `GET /api/v1/jobs`'s `source` show
//! which is which.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::config::{Config, CtsDiscovery, Discover, FailureJobsDiscovery, Target};
use crate::scope::Scope;
use crate::secret::{Account, AccountAuth, SecretRef};
use crate::simulator::{self, Fault, FleetShape, GlobalFault, JobScript, Simulator};
use crate::{Exporter, Result, WebOptions};

/// Region the demo's targets claim.
pub(crate) const DEMO_REGION: &str = "cn-north-4";

/// The demo's jobs.
pub fn fleet() -> Vec<JobScript> {
    simulator::fleet::generate(
        45,
        2026,
        simulator::DEMO_PROJECT_ID,
        &FleetShape {
            spread_secs: 600.0,
            min_secs: 30.0,
            max_secs: 900.0,
            fail_ratio: 0.25,
        },
    )
}

/// IAM user the demo's SDRS target signs in as (simulator only).
pub(crate) const DEMO_IAM_USER: (&str, &str, &str) = (
    "demo-domain",
    "job-exporter",
    "demo-password-for-the-simulator-only",
);

/// Loads the demo fleet and IAM user into `sim`; returns the jobs.
pub fn setup(sim: &Simulator) -> Vec<JobScript> {
    let jobs = fleet();
    sim.add_jobs(jobs.clone());
    let (domain, user, password) = DEMO_IAM_USER;
    sim.set_iam_user(domain, user, password);
    jobs
}

/// The upstream trouble the demo shows: a little throttling, a few 5xx and a rare request that
/// outlasts the timeout, so the health panels and alerts have something to show.
pub fn faults() -> Vec<GlobalFault> {
    vec![
        GlobalFault {
            fault: Fault::Throttle { retry_after: None },
            probability: 0.03,
        },
        GlobalFault {
            fault: Fault::Status { status: 503 },
            probability: 0.02,
        },
        GlobalFault {
            fault: Fault::Latency { ms: 6_000 },
            probability: 0.01,
        },
    ]
}

/// How often the demo's targets ask CTS and the task centre: the shortest interval allowed, so
/// discovered jobs show up within seconds of their trace.
pub(crate) const DEMO_DISCOVERY_INTERVAL: Duration = crate::config::MIN_DISCOVERY_INTERVAL;

/// True for the jobs the demo lists in its configuration (one in three); the rest are left to
/// discovery.
pub fn listed(index: usize) -> bool {
    index.is_multiple_of(3)
}

/// The configuration the demo runs with: one target per service, all on the simulator; EVS and
/// ECS sign with AK/SK, SDRS uses an IAM password token. Every target discovers through CTS,
/// and SDRS also through the task centre.
pub fn config(simulator_base: &str, jobs: &[JobScript], refresh_interval: Duration) -> Config {
    let mut targets: Vec<Target> = Vec::new();
    for service in ["evs", "sdrs", "ecs"] {
        targets.push(Target {
            account: if service == "sdrs" {
                "demo-iam"
            } else {
                "demo"
            }
            .into(),
            scope: Scope::new(service, DEMO_REGION, simulator::DEMO_PROJECT_ID),
            endpoint: format!("{simulator_base}/{service}"),
            jobs: jobs
                .iter()
                .enumerate()
                .filter(|(i, j)| j.service == service && listed(*i))
                .map(|(_, j)| j.job_id.clone())
                .collect(),
            discover: Discover {
                cts: Some(CtsDiscovery {
                    endpoint: simulator_base.to_string(),
                    interval: DEMO_DISCOVERY_INTERVAL,
                    lookback: Duration::from_secs(3600),
                    trace_names: Vec::new(),
                    max_pages: crate::config::DEFAULT_MAX_PAGES,
                }),
                failure_jobs: (service == "sdrs").then(|| FailureJobsDiscovery {
                    endpoint: format!("{simulator_base}/{service}"),
                    interval: DEMO_DISCOVERY_INTERVAL,
                    max_pages: crate::config::DEFAULT_MAX_PAGES,
                }),
            },
        });
    }
    let mut accounts = BTreeMap::new();
    accounts.insert(
        "demo".to_string(),
        Account::aksk(
            "demo",
            simulator::DEMO_ACCESS_KEY,
            simulator::DEMO_SECRET_KEY,
        ),
    );
    let (domain, user, password) = DEMO_IAM_USER;
    accounts.insert(
        "demo-iam".to_string(),
        Account {
            name: "demo-iam".into(),
            auth: AccountAuth::Iam {
                endpoint: simulator_base.to_string(),
                domain: domain.into(),
                user: user.into(),
                password: SecretRef::value(password),
                refresh_margin: crate::config::TOKEN_REFRESH_MARGIN,
            },
        },
    );
    Config {
        refresh_interval,
        accounts,
        targets,
        ..Config::default()
    }
}

/// Starts the simulator and the exporter, prints where they are, and runs until `shutdown`.
pub async fn run(
    web: WebOptions,
    simulator_address: &str,
    refresh_interval: Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let sim = Simulator::new();
    let jobs = setup(&sim);
    sim.set_global_faults(faults());
    let stop_sim = CancellationToken::new();
    let sim_addr = sim.spawn(simulator_address, stop_sim.clone()).await?;
    let config = config(&format!("http://{sim_addr}"), &jobs, refresh_interval);
    let exporter = Exporter::bind(config, web.clone()).await?;
    let addr = exporter.local_addr();
    let host = if addr.ip().is_unspecified() {
        format!("localhost:{}", addr.port())
    } else {
        addr.to_string()
    };
    let listed = (0..jobs.len()).filter(|i| listed(*i)).count();
    println!(
        "huaweicloud-job-exporter demo: {} jobs (EVS, SDRS, ECS) on the built-in simulator; {listed} listed in the configuration, the rest discovered through CTS and the SDRS task centre as their traces appear",
        jobs.len()
    );
    println!("  exporter:  http://{host}/");
    println!("  metrics:   http://{host}{}", web.telemetry_path);
    println!("  simulator: http://{sim_addr}/_sim/jobs (injects a few 429s, 503s and timeouts)");
    println!("Press Ctrl-C to stop.");
    let result = exporter.run(shutdown).await;
    stop_sim.cancel();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_fleet_has_every_state_now_and_moves_within_minutes() {
        let jobs = fleet();
        let statuses_at = |t: f64| -> Vec<&str> { jobs.iter().map(|j| j.status(t)).collect() };
        let now = statuses_at(0.0);
        for s in ["RUNNING", "SUCCESS", "FAIL"] {
            assert!(now.contains(&s), "no {s} job at start");
        }
        assert!(
            jobs.iter()
                .any(|j| j.status(0.0) == "RUNNING" && !j.sub_jobs.is_empty())
        );
        let later = statuses_at(300.0);
        let changed = now.iter().zip(&later).filter(|(a, b)| a != b).count();
        assert!(changed >= 5, "only {changed} jobs change in 5 minutes");
        let new_failures = now
            .iter()
            .zip(statuses_at(600.0))
            .filter(|(a, b)| **a != "FAIL" && *b == "FAIL")
            .count();
        assert!(new_failures >= 1);
    }
}
