//! Host facts: OS from `etc/os-release`, swap from `proc/swaps`, memory from `proc/meminfo`,
//! CPUs from `proc/cpuinfo` — all under the host root; `sysinfo` for what has no file there
//! (and for the kernel release).

use std::path::Path;

use agent_proto::v1;

/// One active swap area from `/proc/swaps`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwapArea {
    /// Device or file path, with `\040` and friends unescaped.
    pub path: String,
    /// Size in bytes.
    pub size_bytes: u64,
    /// Used bytes.
    pub used_bytes: u64,
}

/// Parses `/proc/swaps` (header line, then `Filename Type Size Used Priority`, sizes in KiB).
/// The kernel escapes space, tab, newline and backslash in the file name as octal (`\040`).
pub fn parse_proc_swaps(text: &str) -> Vec<SwapArea> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let mut f = line.split_whitespace();
            let path = unescape_octal(f.next()?);
            let _kind = f.next()?;
            let size: u64 = f.next()?.parse().ok()?;
            let used: u64 = f.next()?.parse().ok()?;
            Some(SwapArea {
                path,
                size_bytes: size * 1024,
                used_bytes: used * 1024,
            })
        })
        .collect()
}

/// Undoes the kernel's octal escaping (`\040` → space) used in `/proc/swaps` and `/proc/mounts`.
pub fn unescape_octal(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..=i + 3]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let v = (bytes[i + 1] - b'0') as u32 * 64
                + (bytes[i + 2] - b'0') as u32 * 8
                + (bytes[i + 3] - b'0') as u32;
            if let Ok(b) = u8::try_from(v) {
                out.push(b);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Fields of `os-release`: `ID`, `VERSION_ID`, `PRETTY_NAME`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OsRelease {
    /// e.g. `ubuntu`.
    pub id: String,
    /// e.g. `24.04`.
    pub version_id: String,
    /// e.g. `Ubuntu 24.04.1 LTS`.
    pub pretty_name: String,
}

/// Parses os-release (`KEY=value`, values optionally quoted).
pub fn parse_os_release(text: &str) -> OsRelease {
    let mut os = OsRelease::default();
    for line in text.lines() {
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let v = v.trim().trim_matches('"').trim_matches('\'').to_string();
        match k.trim() {
            "ID" => os.id = v,
            "VERSION_ID" => os.version_id = v,
            "PRETTY_NAME" => os.pretty_name = v,
            _ => {}
        }
    }
    os
}

/// `MemTotal` from `/proc/meminfo`, in bytes.
pub fn parse_meminfo_total(text: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let rest = l.strip_prefix("MemTotal:")?;
        let kb: u64 = rest.split_whitespace().next()?.parse().ok()?;
        Some(kb * 1024)
    })
}

/// The number of `processor` entries in `/proc/cpuinfo`.
pub fn parse_cpuinfo_count(text: &str) -> Option<u32> {
    let n = text
        .lines()
        .filter(|l| l.split(':').next().is_some_and(|k| k.trim() == "processor"))
        .count();
    (n > 0).then_some(n as u32)
}

fn read_opt(root: &Path, rel: &str) -> Option<String> {
    std::fs::read_to_string(root.join(rel)).ok()
}

/// Everything `Facts` reports, gathered from `root` and sysinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostFacts {
    /// OS identification.
    pub os: OsRelease,
    /// Kernel release.
    pub kernel: String,
    /// Logical CPUs.
    pub cpus: u32,
    /// Total memory in bytes.
    pub memory_total_bytes: u64,
    /// Active swap areas.
    pub swaps: Vec<SwapArea>,
}

/// Gathers the facts of the host rooted at `root`.
pub fn gather(root: &Path) -> HostFacts {
    let os = read_opt(root, "etc/os-release")
        .or_else(|| read_opt(root, "usr/lib/os-release"))
        .map(|t| parse_os_release(&t))
        .unwrap_or_default();
    let swaps = read_opt(root, "proc/swaps")
        .map(|t| parse_proc_swaps(&t))
        .unwrap_or_default();
    let mem_file = read_opt(root, "proc/meminfo").and_then(|t| parse_meminfo_total(&t));
    let cpu_file = read_opt(root, "proc/cpuinfo").and_then(|t| parse_cpuinfo_count(&t));
    let kernel_file = read_opt(root, "proc/sys/kernel/osrelease").map(|s| s.trim().to_string());
    let needs_sysinfo = mem_file.is_none() || cpu_file.is_none();
    let sys = needs_sysinfo
        .then(|| {
            let mut s = sysinfo::System::new().ok()?;
            s.refresh_memory();
            s.refresh_cpu_list(sysinfo::CpuRefreshKind::nothing());
            Some(s)
        })
        .flatten();
    let memory_total_bytes = mem_file
        .or_else(|| sys.as_ref().map(|s| s.total_memory()))
        .unwrap_or(0);
    let cpus = cpu_file
        .or_else(|| sys.as_ref().map(|s| s.cpus().len() as u32))
        .unwrap_or(0);
    let kernel = kernel_file
        .or_else(|| sysinfo::System::kernel_version().ok())
        .unwrap_or_else(|| "unknown".into());
    HostFacts {
        os,
        kernel,
        cpus,
        memory_total_bytes,
        swaps,
    }
}

impl HostFacts {
    /// The wire form, for host `name` with `role` and `ip`.
    pub fn into_proto(self, name: &str, role: v1::Role, ip: String) -> v1::FactsResponse {
        v1::FactsResponse {
            host: name.to_string(),
            role: role as i32,
            os_id: self.os.id,
            os_version_id: self.os.version_id,
            os_pretty_name: self.os.pretty_name,
            kernel: self.kernel,
            cpus: self.cpus,
            memory_total_bytes: self.memory_total_bytes,
            swap_total_bytes: self.swaps.iter().map(|s| s.size_bytes).sum(),
            swap_used_bytes: self.swaps.iter().map(|s| s.used_bytes).sum(),
            swaps: self
                .swaps
                .into_iter()
                .map(|s| v1::SwapDevice {
                    path: s.path,
                    size_bytes: s.size_bytes,
                    used_bytes: s.used_bytes,
                })
                .collect(),
            agent_version: env!("CARGO_PKG_VERSION").to_string(),
            ip,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_swaps_unescapes_spaces_and_converts_kib() {
        let text = "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n\
                    /swap.img                               file\t\t2097148\t\t0\t\t-2\n\
                    /var/my\\040swap                        file\t\t1024\t\t512\t\t-3\n";
        let swaps = parse_proc_swaps(text);
        assert_eq!(swaps.len(), 2);
        assert_eq!(swaps[0].path, "/swap.img");
        assert_eq!(swaps[0].size_bytes, 2097148 * 1024);
        assert_eq!(swaps[1].path, "/var/my swap");
        assert_eq!(swaps[1].used_bytes, 512 * 1024);
    }

    #[test]
    fn empty_proc_swaps_means_no_swap() {
        assert!(parse_proc_swaps("Filename Type Size Used Priority\n").is_empty());
    }

    #[test]
    fn os_release_quoted_values() {
        let os = parse_os_release(
            "PRETTY_NAME=\"Ubuntu 24.04.1 LTS\"\nID=ubuntu\nVERSION_ID=\"24.04\"\n",
        );
        assert_eq!(os.id, "ubuntu");
        assert_eq!(os.version_id, "24.04");
        assert_eq!(os.pretty_name, "Ubuntu 24.04.1 LTS");
    }

    #[test]
    fn meminfo_and_cpuinfo() {
        assert_eq!(
            parse_meminfo_total("MemTotal:        2014232 kB\nMemFree: 1 kB\n"),
            Some(2014232 * 1024)
        );
        assert_eq!(
            parse_cpuinfo_count("processor\t: 0\nmodel\t: x\n\nprocessor\t: 1\n"),
            Some(2)
        );
        assert_eq!(parse_cpuinfo_count(""), None);
    }

    #[test]
    fn facts_come_from_files_under_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::create_dir_all(root.join("proc")).unwrap();
        std::fs::write(
            root.join("etc/os-release"),
            "ID=ubuntu\nVERSION_ID=\"24.04\"\n",
        )
        .unwrap();
        std::fs::write(
            root.join("proc/swaps"),
            "Filename Type Size Used Priority\n/swap.img file 100 0 -2\n",
        )
        .unwrap();
        std::fs::write(root.join("proc/meminfo"), "MemTotal: 4000 kB\n").unwrap();
        std::fs::write(
            root.join("proc/cpuinfo"),
            "processor : 0\nprocessor : 1\nprocessor : 2\n",
        )
        .unwrap();
        let f = gather(root);
        assert_eq!(f.os.version_id, "24.04");
        assert_eq!(f.cpus, 3);
        assert_eq!(f.memory_total_bytes, 4000 * 1024);
        assert_eq!(f.swaps.len(), 1);
    }
}
