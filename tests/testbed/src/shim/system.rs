//! Kernel-facing shims: `swapoff`/`swapon` (on `proc/swaps` and `etc/fstab`), `modprobe`/`lsmod`
//! (on `proc/modules`; loading `br_netfilter` makes `proc/sys/net/bridge/*` appear, as on a real
//! kernel), `sysctl` (on `proc/sys`, reading `etc/sysctl.d` like procps), `containerd config
//! default` (version 2 for containerd 1.x, version 3 for 2.x, from the installed package), and
//! `crictl`/`ctr` checking the CRI the running containerd serves.

use std::fs;

use super::{Ctx, apt};
use crate::roots::{PROC_SWAPS_HEADER, escape_octal, proc_swaps_line, unescape_octal};

const KERNEL: &str = "6.8.0-79-generic";

fn active_swaps(ctx: &Ctx) -> Vec<(String, String)> {
    ctx.read("proc/swaps")
        .unwrap_or_default()
        .lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .filter_map(|l| {
            l.split_whitespace()
                .next()
                .map(|p| (unescape_octal(p), l.to_string()))
        })
        .collect()
}

fn write_swaps(ctx: &mut Ctx, lines: &[String]) -> i32 {
    let mut text = PROC_SWAPS_HEADER.to_string();
    for l in lines {
        text.push_str(l);
        text.push('\n');
    }
    match ctx.write("proc/swaps", text) {
        Ok(()) => {
            let total: u64 = lines
                .iter()
                .filter_map(|l| l.split_whitespace().nth(2)?.parse::<u64>().ok())
                .sum();
            set_meminfo_swap(ctx, total);
            let mut units = crate::shim::systemctl::Units::load(ctx);
            units.sync_swaps(ctx);
            units.save(ctx);
            0
        }
        Err(e) => {
            eprintln!("swapoff: {e}");
            255
        }
    }
}

fn set_meminfo_swap(ctx: &mut Ctx, kib: u64) {
    let Some(text) = ctx.read("proc/meminfo") else {
        return;
    };
    let out: String = text
        .lines()
        .map(|l| match l.split_once(':') {
            Some((k, _)) if k == "SwapTotal" || k == "SwapFree" => format!("{k}:{kib:>16} kB\n"),
            _ => format!("{l}\n"),
        })
        .collect();
    let _ = ctx.write("proc/meminfo", out);
}

fn fstab_swaps(ctx: &Ctx) -> Vec<String> {
    ctx.read("etc/fstab")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 3 && !f[0].starts_with('#') && f[2] == "swap").then(|| unescape_octal(f[0]))
        })
        .collect()
}

/// `swapoff -a | swapoff PATH...`.
pub fn swapoff(ctx: &mut Ctx) -> i32 {
    let args = ctx.args.clone();
    let all = args.iter().any(|a| a == "-a" || a == "--all");
    let paths: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    if !all && paths.is_empty() {
        eprintln!("swapoff: bad usage\nTry 'swapoff --help' for more information.");
        return 1;
    }
    let active = active_swaps(ctx);
    let mut rc = 0;
    let mut keep = Vec::new();
    for (path, line) in &active {
        if all || paths.contains(&path) {
            continue;
        }
        keep.push(line.clone());
    }
    for p in &paths {
        if !active.iter().any(|(a, _)| a == *p) {
            if !ctx.path(p.as_str()).exists() {
                eprintln!("swapoff: cannot open {p}: No such file or directory");
            } else {
                eprintln!("swapoff: {p}: swapoff failed: Invalid argument");
            }
            rc = 4;
        }
    }
    if keep.len() != active.len() {
        let w = write_swaps(ctx, &keep);
        if w != 0 {
            return w;
        }
    }
    rc
}

/// `swapon --show [--noheadings] [--raw] | swapon -a | swapon PATH`.
pub fn swapon(ctx: &mut Ctx) -> i32 {
    let args = ctx.args.clone();
    let active = active_swaps(ctx);
    if args.is_empty() || args.iter().any(|a| a.starts_with("--show") || a == "-s") {
        let headings = !args.iter().any(|a| a == "--noheadings" || a == "-n");
        let summary = args.iter().any(|a| a == "-s" || a == "--summary");
        if summary {
            print!("{}", ctx.read("proc/swaps").unwrap_or_default());
            return 0;
        }
        if headings && !active.is_empty() {
            println!("NAME      TYPE SIZE USED PRIO");
        }
        for (path, line) in &active {
            let f: Vec<&str> = line.split_whitespace().collect();
            let size = f.get(2).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
            println!("{} file {}M 0B -2", escape_octal(path), size / 1024);
        }
        return 0;
    }
    let all = args.iter().any(|a| a == "-a" || a == "--all");
    let wanted: Vec<String> = if all {
        fstab_swaps(ctx)
    } else {
        args.iter()
            .filter(|a| !a.starts_with('-'))
            .cloned()
            .collect()
    };
    let mut lines: Vec<String> = active.iter().map(|(_, l)| l.clone()).collect();
    let mut rc = 0;
    for p in wanted {
        if active.iter().any(|(a, _)| *a == p) {
            if !all {
                eprintln!("swapon: {p}: swapon failed: Device or resource busy");
                rc = 4;
            }
            continue;
        }
        if !ctx.path(&p).exists() {
            eprintln!("swapon: cannot open {p}: No such file or directory");
            rc = 4;
            continue;
        }
        lines.push(proc_swaps_line(&p, 2097148).trim_end().to_string());
    }
    if lines.len() != active.len() {
        write_swaps(ctx, &lines);
    }
    rc
}

/// Modules the simulated kernel has, and the sysctls loading them creates.
fn module_effects(name: &str) -> Option<&'static [(&'static str, &'static str)]> {
    match name {
        "br_netfilter" => Some(&[
            ("net/bridge/bridge-nf-call-iptables", "1"),
            ("net/bridge/bridge-nf-call-ip6tables", "1"),
            ("net/bridge/bridge-nf-call-arptables", "1"),
        ]),
        "overlay" | "bridge" | "ip_vs" | "ip_vs_rr" | "ip_vs_wrr" | "ip_vs_sh" | "nf_conntrack"
        | "ip_tables" | "x_tables" | "iptable_nat" | "iptable_filter" | "vxlan" | "ipip" => {
            Some(&[])
        }
        _ => None,
    }
}

fn loaded_modules(ctx: &Ctx) -> Vec<String> {
    ctx.read("proc/modules")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

fn load_module(ctx: &mut Ctx, name: &str) -> Result<(), String> {
    let name = name.replace('-', "_");
    let Some(effects) = module_effects(&name) else {
        return Err(format!(
            "modprobe: FATAL: Module {name} not found in directory /lib/modules/{KERNEL}"
        ));
    };
    if loaded_modules(ctx).contains(&name) {
        return Ok(());
    }
    let mut text = ctx.read("proc/modules").unwrap_or_default();
    text.push_str(&format!("{name} 32768 0 - Live 0x0000000000000000\n"));
    ctx.write("proc/modules", text).map_err(|e| e.to_string())?;
    for (key, value) in effects {
        let p = format!("proc/sys/{key}");
        if !ctx.path(&p).exists() {
            ctx.write(&p, format!("{value}\n"))
                .map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

/// `modprobe [-a] MODULE...` (and `-r` to unload).
pub fn modprobe(ctx: &mut Ctx) -> i32 {
    let args = ctx.args.clone();
    let remove = args.iter().any(|a| a == "-r" || a == "--remove");
    let mods: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    if mods.is_empty() {
        eprintln!("modprobe: ERROR: missing parameters. See -h.");
        return 1;
    }
    for m in mods {
        if remove {
            let text = ctx.read("proc/modules").unwrap_or_default();
            let kept: String = text
                .lines()
                .filter(|l| l.split_whitespace().next() != Some(m.as_str()))
                .map(|l| format!("{l}\n"))
                .collect();
            let _ = ctx.write("proc/modules", kept);
            continue;
        }
        if let Err(e) = load_module(ctx, m) {
            eprintln!("{e}");
            return 1;
        }
    }
    0
}

/// `lsmod`.
pub fn lsmod(ctx: &mut Ctx) -> i32 {
    println!("Module                  Size  Used by");
    for l in ctx.read("proc/modules").unwrap_or_default().lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() >= 3 {
            println!("{:<24}{:>6}  {}", f[0], f[1], f[2]);
        }
    }
    0
}

fn sysctl_path(key: &str) -> String {
    format!("proc/sys/{}", key.trim().replace('.', "/"))
}

fn sysctl_set(ctx: &mut Ctx, key: &str, value: &str, quiet: bool) -> Result<(), String> {
    let p = sysctl_path(key);
    if !ctx.path(&p).exists() {
        return Err(format!(
            "sysctl: cannot stat /{p}: No such file or directory"
        ));
    }
    ctx.write(&p, format!("{}\n", value.trim()))
        .map_err(|e| format!("sysctl: setting key \"{key}\": {e}"))?;
    if !quiet {
        println!("{} = {}", key.trim(), value.trim());
    }
    Ok(())
}

fn apply_file(ctx: &mut Ctx, file: &str, quiet: bool, rc: &mut i32) {
    let Some(text) = ctx.read(file) else {
        eprintln!("sysctl: cannot open \"{file}\": No such file or directory");
        *rc = 255;
        return;
    };
    if !quiet {
        println!("* Applying {file} ...");
    }
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        let (ignore, line) = match line.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, line),
        };
        let Some((k, v)) = line.split_once('=') else {
            eprintln!("sysctl: {file}: line without '=': {line}");
            *rc = 255;
            continue;
        };
        if let Err(e) = sysctl_set(ctx, k, v, quiet)
            && !ignore
        {
            eprintln!("{e}");
            *rc = 255;
        }
    }
}

/// `sysctl KEY | -n KEY | -w KEY=VALUE | -p [FILE] | --system`.
pub fn sysctl(ctx: &mut Ctx) -> i32 {
    let args = ctx.args.clone();
    let quiet = args.iter().any(|a| a == "-q" || a == "--quiet");
    let values_only = args.iter().any(|a| a == "-n" || a == "--values");
    let mut rc = 0;
    if args.iter().any(|a| a == "--system") {
        let mut files: Vec<(String, String)> = Vec::new();
        for dir in ["usr/lib/sysctl.d", "run/sysctl.d", "etc/sysctl.d"] {
            if let Ok(rd) = fs::read_dir(ctx.path(dir)) {
                for e in rd.flatten() {
                    let n = e.file_name().to_string_lossy().into_owned();
                    if n.ends_with(".conf") {
                        files.retain(|(name, _)| *name != n);
                        files.push((n.clone(), format!("/{dir}/{n}")));
                    }
                }
            }
        }
        files.sort();
        for (_, f) in files {
            apply_file(ctx, &f, quiet, &mut rc);
        }
        if ctx.path("etc/sysctl.conf").exists() {
            apply_file(ctx, "/etc/sysctl.conf", quiet, &mut rc);
        }
        return rc;
    }
    if let Some(i) = args
        .iter()
        .position(|a| a == "-p" || a.starts_with("--load"))
    {
        let file = args
            .get(i + 1)
            .filter(|a| !a.starts_with('-'))
            .cloned()
            .unwrap_or_else(|| "/etc/sysctl.conf".into());
        apply_file(ctx, &file, true, &mut rc);
        return rc;
    }
    for a in args.iter().filter(|a| !a.starts_with('-')) {
        if let Some((k, v)) = a.split_once('=') {
            if let Err(e) = sysctl_set(ctx, k, v, quiet) {
                eprintln!("{e}");
                rc = 255;
            }
        } else {
            match ctx.read(sysctl_path(a)) {
                Some(v) if values_only => println!("{}", v.trim()),
                Some(v) => println!("{a} = {}", v.trim()),
                None => {
                    eprintln!(
                        "sysctl: cannot stat /{}: No such file or directory",
                        sysctl_path(a)
                    );
                    rc = 255;
                }
            }
        }
    }
    rc
}

/// The installed containerd major version, from the dpkg status.
pub fn containerd_major(ctx: &Ctx) -> Option<u32> {
    let v = apt::installed_version(&ctx.root, "containerd.io")?;
    v.split('.').next()?.parse().ok()
}

/// `containerd config default` as the installed containerd prints it.
pub fn containerd(ctx: &mut Ctx) -> i32 {
    let args: Vec<&str> = ctx.args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["config", "default"] => {
            match containerd_major(ctx) {
                Some(2..) => print!("{}", CONTAINERD_V3_DEFAULT),
                _ => print!("{}", CONTAINERD_V2_DEFAULT),
            }
            0
        }
        ["--version"] | ["-v"] => {
            let v = apt::installed_version(&ctx.root, "containerd.io").unwrap_or_default();
            println!(
                "containerd containerd.io {} 05044ec0a9a75232cad458027ca83437aae3f4da",
                v.split('-').next().unwrap_or("")
            );
            0
        }
        _ => {
            eprintln!("containerd: only `config default` and `--version` are simulated");
            1
        }
    }
}

/// What the CRI of the running containerd answers: `Ok` or the error crictl prints.
pub fn cri_status(ctx: &Ctx) -> Result<(), String> {
    let units = crate::shim::systemctl::Units::load(ctx);
    const SOCK: &str = "unix:///var/run/containerd/containerd.sock";
    if units.state("containerd.service") != "active" {
        return Err(format!(
            "validate service connection: validate CRI v1 runtime API for endpoint \"{SOCK}\": rpc error: code = Unavailable desc = connection error: desc = \"transport: Error while dialing: dial unix /var/run/containerd/containerd.sock: connect: no such file or directory\""
        ));
    }
    // The config containerd loaded when it last started, not the file on disk now.
    let loaded = ctx
        .read("run/testbed/containerd-loaded.toml")
        .unwrap_or_default();
    if cri_disabled(&loaded) {
        return Err(format!(
            "validate service connection: validate CRI v1 runtime API for endpoint \"{SOCK}\": rpc error: code = Unimplemented desc = unknown service runtime.v1.RuntimeService"
        ));
    }
    Ok(())
}

/// Whether a containerd config disables the CRI plugin (`disabled_plugins = ["cri"]` or the
/// 2.x plugin ids).
pub fn cri_disabled(config: &str) -> bool {
    config.lines().any(|l| {
        let l = l.trim();
        !l.starts_with('#')
            && l.starts_with("disabled_plugins")
            && (l.contains("\"cri\"")
                || l.contains("'cri'")
                || l.contains("io.containerd.grpc.v1.cri")
                || l.contains("io.containerd.cri.v1"))
    })
}

/// Whether a containerd config sets `SystemdCgroup = true` for runc.
pub fn systemd_cgroup(config: &str) -> bool {
    config.lines().any(|l| {
        let l = l.trim().replace(' ', "");
        !l.starts_with('#') && l == "SystemdCgroup=true"
    })
}

/// `ctr plugins ls` / `ctr version`: asks the running containerd; a plugin disabled in the config
/// it loaded is not listed (as in containerd).
pub fn ctr(ctx: &mut Ctx) -> i32 {
    let units = crate::shim::systemctl::Units::load(ctx);
    if units.state("containerd.service") != "active" {
        eprintln!(
            "ctr: failed to dial \"/run/containerd/containerd.sock\": connection error: desc = \"transport: error while dialing: dial unix:///run/containerd/containerd.sock: timeout\""
        );
        return 1;
    }
    let loaded = ctx
        .read("run/testbed/containerd-loaded.toml")
        .unwrap_or_default();
    let args: Vec<&str> = ctx.args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["plugins", "ls", ..] | ["plugin", "ls", ..] | ["plugins", "list", ..] => {
            let v2 = containerd_major(ctx).unwrap_or(1) >= 2;
            let mut rows = vec![
                ("io.containerd.content.v1", "content", "-"),
                ("io.containerd.snapshotter.v1", "overlayfs", "linux/amd64"),
                ("io.containerd.runtime.v2", "task", "linux/amd64"),
                ("io.containerd.grpc.v1", "containers", "-"),
                ("io.containerd.grpc.v1", "version", "-"),
            ];
            if !cri_disabled(&loaded) {
                if v2 {
                    rows.push(("io.containerd.cri.v1", "images", "-"));
                    rows.push(("io.containerd.cri.v1", "runtime", "linux/amd64"));
                }
                rows.push(("io.containerd.grpc.v1", "cri", "-"));
            }
            println!("{:<39}{:<25}{:<15}STATUS", "TYPE", "ID", "PLATFORMS");
            for (t, id, p) in rows {
                println!("{t:<39}{id:<25}{p:<15}ok");
            }
            0
        }
        ["version"] => {
            let v = apt::installed_version(&ctx.root, "containerd.io").unwrap_or_default();
            let v = v.split('-').next().unwrap_or("");
            println!("Client:\n  Version:  v{v}\n\nServer:\n  Version:  v{v}");
            0
        }
        _ => {
            eprintln!("ctr: only `plugins ls` and `version` are simulated");
            1
        }
    }
}

/// `crictl info`: asks the CRI of the running containerd.
pub fn crictl(ctx: &mut Ctx) -> i32 {
    match cri_status(ctx) {
        Ok(()) => {
            let loaded = ctx
                .read("run/testbed/containerd-loaded.toml")
                .unwrap_or_default();
            println!(
                "{{\n  \"status\": {{\n    \"conditions\": [\n      {{\"type\": \"RuntimeReady\", \"status\": true}},\n      {{\"type\": \"NetworkReady\", \"status\": {}}}\n    ]\n  }},\n  \"config\": {{\"systemdCgroup\": {}}}\n}}",
                ctx.path("etc/cni/net.d")
                    .read_dir()
                    .map(|mut d| d.next().is_some())
                    .unwrap_or(false),
                systemd_cgroup(&loaded)
            );
            0
        }
        Err(e) => {
            eprintln!(
                "time=\"2026-01-01T00:00:00Z\" level=fatal msg=\"{}\"",
                e.replace('"', "\\\"")
            );
            1
        }
    }
}

/// containerd 1.7 `config default` (config version 2), abridged to the parts that matter.
pub const CONTAINERD_V2_DEFAULT: &str = r#"disabled_plugins = []
imports = []
oom_score = 0
plugin_dir = ""
required_plugins = []
root = "/var/lib/containerd"
state = "/run/containerd"
temp = ""
version = 2

[cgroup]
  path = ""

[debug]
  address = ""
  format = ""
  gid = 0
  level = ""
  uid = 0

[grpc]
  address = "/run/containerd/containerd.sock"
  gid = 0
  max_recv_message_size = 16777216
  max_send_message_size = 16777216
  tcp_address = ""
  tcp_tls_ca = ""
  tcp_tls_cert = ""
  tcp_tls_key = ""
  uid = 0

[plugins]

  [plugins."io.containerd.grpc.v1.cri"]
    device_ownership_from_security_context = false
    disable_apparmor = false
    disable_cgroup = false
    enable_selinux = false
    max_container_log_line_size = 16384
    sandbox_image = "registry.k8s.io/pause:3.8"
    selinux_category_range = 1024

    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "/opt/cni/bin"
      conf_dir = "/etc/cni/net.d"
      max_conf_num = 1

    [plugins."io.containerd.grpc.v1.cri".containerd]
      default_runtime_name = "runc"
      snapshotter = "overlayfs"

      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes]

        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
          base_runtime_spec = ""
          cni_conf_dir = ""
          cni_max_conf_num = 0
          container_annotations = []
          pod_annotations = []
          privileged_without_host_devices = false
          runtime_engine = ""
          runtime_path = ""
          runtime_root = ""
          runtime_type = "io.containerd.runc.v2"
          sandbox_mode = "podsandbox"

          [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
            BinaryName = ""
            CriuImagePath = ""
            CriuPath = ""
            CriuWorkPath = ""
            IoGid = 0
            IoUid = 0
            NoNewKeyring = false
            NoPivotRoot = false
            Root = ""
            ShimCgroup = ""
            SystemdCgroup = false

    [plugins."io.containerd.grpc.v1.cri".registry]
      config_path = ""

  [plugins."io.containerd.internal.v1.opt"]
    path = "/opt/containerd"

[timeouts]
  "io.containerd.timeout.bolt.open" = "0s"
  "io.containerd.timeout.shim.cleanup" = "5s"
  "io.containerd.timeout.shim.load" = "5s"
  "io.containerd.timeout.shim.shutdown" = "3s"
  "io.containerd.timeout.task.state" = "2s"
"#;

/// containerd 2.x `config default` (config version 3), abridged; like some 2.x builds it has no
/// `SystemdCgroup` key under the runc options, so a `sed` on it silently does nothing.
pub const CONTAINERD_V3_DEFAULT: &str = r#"version = 3
root = '/var/lib/containerd'
state = '/run/containerd'
temp = ''
disabled_plugins = []
required_plugins = []
oom_score = 0
imports = []

[grpc]
  address = '/run/containerd/containerd.sock'
  tcp_address = ''
  tcp_tls_ca = ''
  tcp_tls_cert = ''
  tcp_tls_key = ''
  uid = 0
  gid = 0
  max_recv_message_size = 16777216
  max_send_message_size = 16777216

[debug]
  address = ''
  uid = 0
  gid = 0
  level = ''
  format = ''

[plugins]
  [plugins.'io.containerd.cri.v1.images']
    snapshotter = 'overlayfs'
    disable_snapshot_annotations = true
    discard_unpacked_layers = false
    max_concurrent_downloads = 3
    image_pull_progress_timeout = '5m0s'
    image_pull_with_sync_fs = false
    stats_collect_period = 10

    [plugins.'io.containerd.cri.v1.images'.pinned_images]
      sandbox = 'registry.k8s.io/pause:3.10'

    [plugins.'io.containerd.cri.v1.images'.registry]
      config_path = ''

  [plugins.'io.containerd.cri.v1.runtime']
    enable_selinux = false
    selinux_category_range = 1024
    max_container_log_line_size = 16384
    disable_apparmor = false
    restrict_oom_score_adj = false
    disable_proc_mount = false
    unset_seccomp_profile = ''
    tolerate_missing_hugetlb_controller = true
    disable_hugetlb_controller = true
    device_ownership_from_security_context = false
    ignore_image_defined_volumes = false
    netns_mounts_under_state_dir = false
    enable_unprivileged_ports = true
    enable_unprivileged_icmp = true
    enable_cdi = true
    cdi_spec_dirs = ['/etc/cdi', '/var/run/cdi']
    drain_exec_sync_io_timeout = '0s'
    ignore_deprecation_warnings = []

    [plugins.'io.containerd.cri.v1.runtime'.containerd]
      default_runtime_name = 'runc'
      ignore_blockio_not_enabled_errors = false
      ignore_rdt_not_enabled_errors = false

      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes]
        [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
          runtime_type = 'io.containerd.runc.v2'
          runtime_path = ''
          pod_annotations = []
          container_annotations = []
          privileged_without_host_devices = false
          privileged_without_host_devices_all_devices_allowed = false
          base_runtime_spec = ''
          cni_conf_dir = ''
          cni_max_conf_num = 0
          snapshotter = ''
          sandboxer = 'podsandbox'
          io_type = ''

          [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
            BinaryName = ''
            CriuImagePath = ''
            CriuWorkPath = ''
            IoGid = 0
            IoUid = 0
            NoNewKeyring = false
            Root = ''
            ShimCgroup = ''

    [plugins.'io.containerd.cri.v1.runtime'.cni]
      bin_dir = ''
      conf_dir = '/etc/cni/net.d'
      max_conf_num = 1
      setup_serially = false
      conf_template = ''
      ip_pref = ''
      use_internal_loopback = false

  [plugins.'io.containerd.grpc.v1.cri']
    disable_tcp_service = true
    stream_server_address = '127.0.0.1'
    stream_server_port = '0'
    stream_idle_timeout = '4h0m0s'
    enable_tls_streaming = false

  [plugins.'io.containerd.internal.v1.opt']
    path = '/opt/containerd'

[cgroup]
  path = ''

[timeouts]
  'io.containerd.timeout.bolt.open' = '0s'
  'io.containerd.timeout.cri.defercleanup' = '1m0s'
  'io.containerd.timeout.metrics.shimstats' = '2s'
  'io.containerd.timeout.shim.cleanup' = '5s'
  'io.containerd.timeout.shim.load' = '5s'
  'io.containerd.timeout.shim.shutdown' = '3s'
  'io.containerd.timeout.task.state' = '2s'
"#;
