//! `bench cluster`: time to a cluster vs size. For each N, a test world with 1 master + N nodes
//! (simulated hosts, the real agents, shim tools with simulated step durations passed through
//! `TESTBED_DELAYS`), then the real `ctl bootstrap -o json`; every event line is read as it
//! comes. Per host, the step durations the agents report give its prepare, init and join
//! times; from them the critical path (slowest prepare + init + slowest join) and the serial
//! sum (the seed's flow: every VM prepared, then init, then every join, one after another).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use cluster_common::config::ClusterConfig;

use crate::util::secs;

/// Steps of ControlPlane.Init (master_agent::init::steps).
const INIT_STEPS: &[&str] = &["kubeadm-init", "cni", "control-plane-ready"];
/// Steps of Worker.Join (node_agent::join::steps).
const JOIN_STEPS: &[&str] = &["join-ticket", "kubeadm-join"];
/// ctl's own steps and RPC-level failures (not agent work).
const CTL_STEPS: &[&str] = &["admin-kubeconfig", "node-ready", "prepare", "init", "join"];

/// The simulated durations (scaled down from a real VM).
pub const DELAYS: &str = "apt-install=3s,kubeadm-init=5s,kubeadm-join=2s";

#[derive(Debug, Default, Clone, Copy)]
struct Phases {
    prepare: Duration,
    init: Duration,
    join: Duration,
}

/// One row of the table.
struct Row {
    n: usize,
    wall: Duration,
    critical: Duration,
    serial: Duration,
    up: Duration,
    cpu: Duration,
    load: String,
}

fn cluster_yaml(n: usize, subnet: u8, port: u16) -> Result<String> {
    let local = Path::new(env!("CARGO_MANIFEST_DIR")).join("../clusters/local.yaml");
    let text =
        std::fs::read_to_string(&local).with_context(|| format!("read {}", local.display()))?;
    // Keep everything but the hosts (package mirror, CNI fixtures).
    let mut out = String::new();
    let mut skipping = false;
    for line in text.lines() {
        if line.starts_with("master:") || line.starts_with("nodes:") {
            skipping = true;
            continue;
        }
        if skipping && line.starts_with("  ") {
            continue;
        }
        skipping = false;
        out.push_str(line);
        out.push('\n');
    }
    out.push_str(&format!(
        "agentPort: {port}\nmaster: {{name: k8s-master, ip: 127.92.{subnet}.10}}\nnodes:\n"
    ));
    for i in 0..n {
        out.push_str(&format!(
            "  - {{name: node-{}, ip: 127.92.{subnet}.{}}}\n",
            i + 1,
            11 + i
        ));
    }
    Ok(out)
}

/// utime + stime of this process's waited-for children (agents and their commands, ctl).
fn children_cpu() -> Result<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    let rest = stat.rsplit_once(')').context("stat")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // cutime, cstime: fields 16 and 17 (rest starts at field 3).
    Ok(crate::util::ticks(
        f[13].parse::<u64>()? + f[14].parse::<u64>()?,
    ))
}

fn one(n: usize, subnet: u8) -> Result<Row> {
    let dir = tempfile::tempdir()?;
    let cfg_path = dir.path().join("cluster.yaml");
    std::fs::write(
        &cfg_path,
        cluster_yaml(n, subnet, 50200 + u16::from(subnet))?,
    )?;
    let config = ClusterConfig::load(&cfg_path)?;
    ctl::pki::init(&config, false)?;
    let cpu0 = children_cpu()? + crate::util::cpu_time(std::process::id())?;
    let t = Instant::now();
    let mut tb = testbed::Testbed::up(
        &cfg_path,
        &dir.path().join("state"),
        testbed::UpOptions {
            ready_timeout: Duration::from_secs(120),
            ..Default::default()
        },
    )?;
    let up = t.elapsed();
    let ctl = testbed::bins::bin_dir().join("ctl");
    let start = Instant::now();
    let mut child = Command::new(&ctl)
        .arg("--config")
        .arg(&cfg_path)
        .args(["bootstrap", "-o", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("start ctl bootstrap")?;
    let stdout = child.stdout.take().context("ctl stdout")?;
    let mut phases: BTreeMap<String, Phases> = BTreeMap::new();
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        let state = v["state"].as_str().unwrap_or("");
        if state == "running" {
            continue;
        }
        let host = v["host"].as_str().unwrap_or("").to_string();
        let step = v["step"].as_str().unwrap_or("");
        let d = Duration::from_millis(v["durationMs"].as_u64().unwrap_or(0));
        let p = phases.entry(host).or_default();
        if INIT_STEPS.contains(&step) {
            p.init += d;
        } else if JOIN_STEPS.contains(&step) {
            p.join += d;
        } else if !CTL_STEPS.contains(&step) {
            p.prepare += d;
        }
    }
    let out = child.wait_with_output()?;
    let wall = start.elapsed();
    let load = crate::util::machine_load();
    if !out.status.success() {
        bail!(
            "ctl bootstrap with {n} nodes failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    tb.shutdown();
    let cpu = children_cpu()? + crate::util::cpu_time(std::process::id())? - cpu0;
    let max = |f: fn(&Phases) -> Duration| phases.values().map(f).max().unwrap_or_default();
    let sum = |f: fn(&Phases) -> Duration| phases.values().map(f).sum::<Duration>();
    let critical = max(|p| p.prepare) + max(|p| p.init) + max(|p| p.join);
    let serial = sum(|p| p.prepare) + sum(|p| p.init) + sum(|p| p.join);
    Ok(Row {
        n,
        wall,
        critical,
        serial,
        up,
        cpu,
        load,
    })
}

/// Runs `ctl bootstrap` for each size and prints the table.
pub fn run(sizes: &[usize]) -> Result<()> {
    // Builds the agents, ctl and the shims if they are stale (Testbed::up finds them next to us).
    testbed::bins::bin_dir();
    let mut rows = Vec::new();
    for (i, n) in sizes.iter().enumerate() {
        if *n > 200 {
            bail!("at most 200 nodes");
        }
        eprintln!("bench cluster: 1 master + {n} nodes …");
        rows.push(one(*n, i as u8 + 1)?);
    }
    println!("## Time to a cluster");
    println!();
    println!(
        "`ctl bootstrap` in the test world, simulated step durations `{}` (every apt-get install, kubeadm init, kubeadm join); {}",
        std::env::var(testbed::shim::ENV_DELAYS).unwrap_or_default(),
        crate::util::now_utc()
    );
    println!();
    println!(
        "| nodes | wall time | critical path | serial sum (seed) | wall / critical path | serial / wall | CPU (all processes) | load at end |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| 1 + {} | {} | {} | {} | {:.2} | {:.1}× | {} | {} |",
            r.n,
            secs(r.wall),
            secs(r.critical),
            secs(r.serial),
            r.wall.as_secs_f64() / r.critical.as_secs_f64(),
            r.serial.as_secs_f64() / r.wall.as_secs_f64(),
            secs(r.cpu),
            r.load
        );
    }
    println!();
    println!(
        "Wall time: `ctl bootstrap` start → exit (every node Ready, kubeconfig written). Critical path: slowest host's prepare + the master's init (kubeadm init, Calico, control plane Ready) + slowest join, from the durations the agents report. Target: wall / critical path ≤ 1.15. Testbed start (not included): {}.",
        rows.iter()
            .map(|r| format!("{} for 1 + {}", secs(r.up), r.n))
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(())
}
