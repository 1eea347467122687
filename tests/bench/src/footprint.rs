//! `bench footprint`: stripped release binary sizes, time from start to serving, idle RSS and
//! idle CPU of both agents on loopback addresses with an empty host root.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use cluster_common::config::ClusterConfig;

use crate::util::{Proc, cpu_time, mib, ms, percentile, proc_status_kib};

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

/// Starts an agent binary with its output discarded.
pub fn spawn_agent(bin: &Path, config: &Path, host: &str, root: &Path) -> Result<Proc> {
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

/// Waits until `addr` accepts a TCP connection.
pub fn wait_port(addr: SocketAddr, start: Instant, timeout: Duration) -> Result<Duration> {
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(50)).is_ok() {
            return Ok(start.elapsed());
        }
        if start.elapsed() > timeout {
            bail!("nothing serves on {addr} after {timeout:?}");
        }
        std::thread::sleep(Duration::from_micros(500));
    }
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
    let t = wait_port(addr, start, Duration::from_secs(10))
        .with_context(|| format!("{} did not serve", bin.display()))?;
    Ok((t, proc))
}

/// Size of `bin` after `strip` (a stripped copy in `dir`), or the size as built when `strip`
/// is not installed.
fn stripped_size(bin: &Path, dir: &Path) -> Result<(u64, bool)> {
    let copy = dir.join(format!(
        "{}.stripped",
        bin.file_name().and_then(|n| n.to_str()).unwrap_or("bin")
    ));
    let ok = Command::new("strip")
        .arg("-o")
        .arg(&copy)
        .arg(bin)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        Ok((std::fs::metadata(&copy)?.len(), true))
    } else {
        Ok((std::fs::metadata(bin)?.len(), false))
    }
}

/// Runs the footprint benchmark and prints its table.
pub fn run(idle_secs: u64, runs: usize) -> Result<()> {
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
    println!("## Agent footprint");
    println!();
    println!(
        "{profile} binaries in {}; {}, {}",
        bins.display(),
        crate::util::now_utc(),
        crate::util::machine_load()
    );
    println!();
    println!(
        "| binary | size (stripped) | start → serving p50 | p90 | max | idle RSS | peak RSS | idle CPU over {idle_secs} s |"
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
        let size = stripped_size(&bin, dir.path())?;
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
    let before: Vec<Duration> = idle
        .iter()
        .map(|(_, _, _, p)| cpu_time(p.pid()))
        .collect::<Result<_>>()?;
    std::thread::sleep(Duration::from_secs(idle_secs));
    for ((name, (size, stripped), times, p), before) in idle.iter().zip(before) {
        let pid = p.pid();
        let cpu = cpu_time(pid)? - before;
        println!(
            "| {name} | {:.1} MiB{} | {} | {} | {} | {} | {} | {} ms ({:.3} %) |",
            *size as f64 / 1048576.0,
            if *stripped { "" } else { " (not stripped)" },
            ms(percentile(times, 0.5)),
            ms(percentile(times, 0.9)),
            ms(*times.last().expect("runs > 0")),
            mib(proc_status_kib(pid, "VmRSS:")?),
            mib(proc_status_kib(pid, "VmHWM:")?),
            cpu.as_millis(),
            cpu.as_secs_f64() / idle_secs as f64 * 100.0,
        );
    }
    let (ctl_size, stripped) = stripped_size(&bins.join("ctl"), dir.path())?;
    println!(
        "| ctl | {:.1} MiB{} | | | | | | |",
        ctl_size as f64 / 1048576.0,
        if stripped { "" } else { " (not stripped)" }
    );
    println!();
    println!(
        "Targets: idle RSS < 15 MB, start → serving < 50 ms, idle CPU ≈ 0. Start → serving is from spawn() until the agent port accepts TCP ({runs} runs each)."
    );
    Ok(())
}
