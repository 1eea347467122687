//! Measuring helpers shared by the benchmarks: child processes killed on drop, /proc readings
//! (RSS, CPU time per process and per thread), percentiles, formatting, the machine's load.

use std::process::Child;
use std::time::Duration;

use anyhow::{Context, Result};

/// A child process killed on drop.
pub struct Proc(pub Child);

impl Proc {
    /// The process id.
    pub fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A `kB` field of `/proc/<pid>/status` (VmRSS:, VmHWM:, …), in KiB.
pub fn proc_status_kib(pid: u32, field: &str) -> Result<u64> {
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

/// utime + stime from a `stat` file's text, in clock ticks (USER_HZ = 100 on Linux), and the
/// command (thread) name.
fn parse_stat(stat: &str) -> Result<(String, u64)> {
    let (head, rest) = stat.rsplit_once(')').context("malformed stat")?;
    let comm = head
        .split_once('(')
        .map(|(_, c)| c)
        .unwrap_or("")
        .to_string();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime is field 14, stime field 15.
    Ok((comm, f[11].parse::<u64>()? + f[12].parse::<u64>()?))
}

/// CPU time (user + system) of a process so far.
pub fn cpu_time(pid: u32) -> Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    Ok(ticks(parse_stat(&stat)?.1))
}

/// Clock ticks → time.
pub fn ticks(t: u64) -> Duration {
    Duration::from_millis(t * 10)
}

/// CPU time of this process's threads whose name starts with `prefix`.
pub fn own_threads_cpu(prefix: &str) -> Result<Duration> {
    let mut total = 0;
    for entry in std::fs::read_dir("/proc/self/task")? {
        let Ok(stat) = std::fs::read_to_string(entry?.path().join("stat")) else {
            continue;
        };
        let (comm, t) = parse_stat(&stat)?;
        if comm.starts_with(prefix) {
            total += t;
        }
    }
    Ok(ticks(total))
}

/// The `p` quantile (0..=1) of sorted samples.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

/// `12.3 ms` (`0.12 ms` below a millisecond).
pub fn ms(d: Duration) -> String {
    let m = d.as_secs_f64() * 1000.0;
    if m < 1.0 {
        format!("{m:.2} ms")
    } else {
        format!("{m:.1} ms")
    }
}

/// `1.23 s`.
pub fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

/// `12.3 MiB` from KiB.
pub fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// The 1-minute load average and the number of CPUs, for the line under each table.
pub fn machine_load() -> String {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let one = load.split_whitespace().next().unwrap_or("?");
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("loadavg (1 min) {one} on {cpus} CPUs")
}

/// The date and time (UTC) now, `YYYY-MM-DD HH:MM UTC`.
pub fn now_utc() -> String {
    let out = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output();
    match out {
        Ok(o) => String::from_utf8_lossy(&o.stdout).trim().to_string(),
        Err(_) => "?".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_spaces_in_the_name_is_parsed() {
        let line = "42 (tokio runtime) S 1 42 42 0 -1 4194560 100 0 0 0 7 3 0 0 20 0 1 0 1 1 1";
        let (comm, t) = parse_stat(line).unwrap();
        assert_eq!(comm, "tokio runtime");
        assert_eq!(t, 10);
    }

    #[test]
    fn percentile_picks_the_nearest_rank() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&v, 0.5), Duration::from_millis(51));
        assert_eq!(percentile(&v, 0.99), Duration::from_millis(99));
        assert_eq!(percentile(&v, 1.0), Duration::from_millis(100));
    }
}
