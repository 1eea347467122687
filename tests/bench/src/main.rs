//! `bench`: benchmarks that print tables of measured figures. Run from a release build:
//!
//! ```sh
//! cargo run --release -p bench -- footprint [--idle-secs 60] [--runs 20]
//! ```
//!
//! Method and results are recorded in docs/BENCHMARKS.md. Figures are measured, never asserted:
//! these machines are shared and noisy, so timing belongs here, not in tests.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use cluster_common::config::ClusterConfig;

/// Benchmarks of the agents and ctl, printed as tables.
#[derive(Debug, Parser)]
#[command(about)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Agent footprint: stripped binary sizes, time from start to serving, idle RSS, idle CPU.
    Footprint {
        /// How long to watch an idle agent's CPU time, in seconds.
        #[arg(long, default_value_t = 60)]
        idle_secs: u64,
        /// How many start-to-serving measurements per agent.
        #[arg(long, default_value_t = 20)]
        runs: usize,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Footprint { idle_secs, runs } => footprint(idle_secs, runs),
    }
}

/// A child process killed on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn write_cluster(dir: &Path) -> Result<ClusterConfig> {
    let path = dir.join("cluster.yaml");
    std::fs::write(
        &path,
        "master: {name: k8s-master, ip: 127.90.0.10}\nnodes:\n  - {name: node-1, ip: 127.90.0.11}\npodCIDR: 10.244.0.0/16\nagentPort: 50190\n",
    )?;
    let config = ClusterConfig::load(&path)?;
    ctl::pki::init(&config, false)?;
    Ok(config)
}

fn spawn_agent(bin: &Path, config: &Path, host: &str, root: &Path) -> Result<Proc> {
    let child = Command::new(bin)
        .args(["--config".as_ref(), config.as_os_str()])
        .args(["--host", host])
        .args(["--root".as_ref(), root.as_os_str()])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    Ok(Proc(child))
}

/// Spawns the agent and waits until its port accepts a TCP connection.
fn time_to_serving(
    bin: &Path,
    config: &Path,
    host: &str,
    root: &Path,
    addr: SocketAddr,
) -> Result<(Duration, Proc)> {
    let start = Instant::now();
    let proc = spawn_agent(bin, config, host, root)?;
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(50)).is_ok() {
            return Ok((start.elapsed(), proc));
        }
        if start.elapsed() > Duration::from_secs(10) {
            bail!("{} did not serve on {addr} within 10 s", bin.display());
        }
        std::thread::sleep(Duration::from_micros(500));
    }
}

fn proc_status_kib(pid: u32, field: &str) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| {
            l.strip_prefix(field)?
                .trim()
                .strip_suffix("kB")?
                .trim()
                .parse()
                .ok()
        })
        .with_context(|| format!("no {field} in /proc/{pid}/status"))
}

/// utime + stime of a process, in clock ticks (USER_HZ = 100 on Linux).
fn cpu_ticks(pid: u32) -> Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("malformed stat")?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime is field 14, stime field 15.
    Ok(f[11].parse::<u64>()? + f[12].parse::<u64>()?)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn footprint(idle_secs: u64, runs: usize) -> Result<()> {
    let bins = testbed::bins::bin_dir().to_path_buf();
    let profile = if bins.ends_with("release") {
        "release"
    } else {
        "debug (numbers not representative)"
    };
    let dir = tempfile::tempdir()?;
    let config = write_cluster(dir.path())?;
    let roots: Vec<PathBuf> = ["m", "n"].iter().map(|r| dir.path().join(r)).collect();
    for r in &roots {
        std::fs::create_dir_all(r)?;
    }
    println!("agent footprint ({profile} binaries in {})", bins.display());
    println!();
    println!(
        "| agent | binary size | start → serving p50 | p90 | max | idle RSS | peak RSS | idle CPU over {idle_secs} s |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let agents = [
        (
            "master-agent",
            "k8s-master",
            &roots[0],
            config.agent_endpoint(&config.master),
        ),
        (
            "node-agent",
            "node-1",
            &roots[1],
            config.agent_endpoint(&config.nodes[0]),
        ),
    ];
    let mut idle = Vec::new();
    for (name, host, root, addr) in agents {
        let bin = bins.join(name);
        let size = std::fs::metadata(&bin)?.len();
        let mut times = Vec::with_capacity(runs);
        for _ in 0..runs {
            let (t, p) = time_to_serving(&bin, &config.path, host, root, addr)?;
            times.push(t);
            drop(p);
        }
        times.sort();
        let (_, p) = time_to_serving(&bin, &config.path, host, root, addr)?;
        idle.push((name, size, times, p));
    }
    // Let both settle, then watch CPU while idle (both at once: one wait for the two).
    std::thread::sleep(Duration::from_secs(1));
    let before: Vec<u64> = idle
        .iter()
        .map(|(_, _, _, p)| cpu_ticks(p.0.id()))
        .collect::<Result<_>>()?;
    std::thread::sleep(Duration::from_secs(idle_secs));
    for ((name, size, times, p), before) in idle.iter().zip(before) {
        let pid = p.0.id();
        let ticks = cpu_ticks(pid)? - before;
        println!(
            "| {name} | {:.1} MiB | {} | {} | {} | {:.1} MiB | {:.1} MiB | {} ms ({:.3} %) |",
            *size as f64 / 1048576.0,
            ms(percentile(times, 0.5)),
            ms(percentile(times, 0.9)),
            ms(*times.last().expect("runs > 0")),
            proc_status_kib(pid, "VmRSS:")? as f64 / 1024.0,
            proc_status_kib(pid, "VmHWM:")? as f64 / 1024.0,
            ticks * 10,
            ticks as f64 * 10.0 / (idle_secs as f64 * 1000.0) * 100.0,
        );
    }
    let ctl_size = std::fs::metadata(bins.join("ctl"))?.len();
    println!();
    println!("ctl binary size: {:.1} MiB", ctl_size as f64 / 1048576.0);
    Ok(())
}
