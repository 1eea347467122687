//! The harness on its own: host roots built from the template, `Testbed::up` and `testbed up`
//! start the real agents on the simulated hosts and stop them leaving no process (and, with
//! `--netns`, no namespace) behind; a netns host cut off cannot reach the master until restored.
//! Addresses: 127.70.x.y (loopback) and 10.77.x.y (netns), unique per test.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cluster_common::config::ClusterConfig;
use testbed::roots::{self, HostInfo, Variant};
use testbed::{Testbed, UpOptions};

/// Writes a cluster.yaml with hosts on `prefix`.10/.11/.12 and agent port `port`, plus its PKI.
fn cluster(dir: &Path, prefix: &str, port: u16) -> std::path::PathBuf {
    let path = dir.join("cluster.yaml");
    std::fs::write(
        &path,
        format!(
            "master: {{name: k8s-master, ip: {prefix}.10}}\nnodes:\n  - {{name: node-1, ip: {prefix}.11}}\n  - {{name: node-2, ip: {prefix}.12}}\npodCIDR: 10.244.0.0/16\nagentPort: {port}\n"
        ),
    )
    .unwrap();
    let config = ClusterConfig::load(&path).unwrap();
    ctl::pki::init(&config, false).unwrap();
    path
}

/// Processes whose command line mentions `needle` (e.g. a state directory).
fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.chars().all(|c| c.is_ascii_digit()) || name == std::process::id().to_string() {
            continue;
        }
        if let Ok(cmd) = std::fs::read(e.path().join("cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            let state = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
            let zombie = state.split_whitespace().nth(2) == Some("Z");
            if cmd.contains(needle) && !zombie {
                out.push(format!("{name}: {cmd}"));
            }
        }
    }
    out
}

#[test]
fn root_is_built_from_the_ubuntu_template() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    roots::build_root(
        &roots::template("ubuntu-24.04"),
        &root,
        &HostInfo {
            name: "node-7".into(),
        },
    )
    .unwrap();
    let read = |p: &str| std::fs::read_to_string(root.join(p)).unwrap();
    assert!(read("etc/os-release").contains("VERSION_ID=\"24.04\""));
    let fstab = read("etc/fstab");
    assert!(
        fstab.contains("/swap.img\tnone\tswap\tsw\t0\t0\n"),
        "{fstab}"
    );
    assert!(fstab.lines().any(|l| l.starts_with('#')));
    assert!(
        fstab
            .lines()
            .any(|l| l.split_whitespace().nth(1) == Some("/"))
    );
    assert!(
        read("proc/swaps")
            .lines()
            .nth(1)
            .unwrap()
            .starts_with("/swap.img")
    );
    assert_eq!(read("proc/sys/net/ipv4/ip_forward").trim(), "0");
    assert_eq!(read("proc/cpuinfo").matches("processor\t:").count(), 2);
    assert!(read("proc/meminfo").contains("MemTotal:        2014216 kB"));
    assert!(read("etc/containerd/config.toml").contains("disabled_plugins = [\"cri\"]"));
    assert_eq!(read("etc/hostname").trim(), "node-7");
    assert!(read("var/lib/dpkg/status").contains("Package: containerd.io"));
    assert!(root.join("etc/apt/keyrings").is_dir());
    assert!(read("run/systemd/generator/swap.img.swap").contains("What=/swap.img"));
    assert!(read(roots::UNIT_STATE_FILE).contains("\"swap.img.swap\": \"active\""));
    assert!(
        root.join("srv/mirror/pkgs.k8s.io").is_dir(),
        "package mirror copied in"
    );
}

#[test]
fn variants_change_swap_os_and_size() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    roots::build_root(
        &roots::template("ubuntu-24.04"),
        &root,
        &HostInfo { name: "h".into() },
    )
    .unwrap();
    let read = |p: &str| std::fs::read_to_string(root.join(p)).unwrap();
    Variant::SwapFile("/swap file.img".into())
        .apply(&root)
        .unwrap();
    assert!(read("etc/fstab").contains("/swap\\040file.img\tnone\tswap"));
    assert!(read("proc/swaps").contains("/swap\\040file.img"));
    assert!(root.join("swap file.img").exists());
    assert!(read(roots::UNIT_STATE_FILE).contains("swap\\\\x20file.img.swap"));
    Variant::NoSwap.apply(&root).unwrap();
    assert_eq!(read("proc/swaps").lines().count(), 1);
    assert!(
        !read("etc/fstab")
            .lines()
            .any(|l| l.contains("swap") && !l.starts_with('#'))
    );
    Variant::Cpus(1).apply(&root).unwrap();
    assert_eq!(read("proc/cpuinfo").matches("processor\t:").count(), 1);
    Variant::MemoryMb(1024).apply(&root).unwrap();
    assert!(read("proc/meminfo").contains("MemTotal:         1048576 kB"));
    Variant::Os {
        id: "debian".into(),
        version_id: "12".into(),
        pretty_name: "Debian GNU/Linux 12 (bookworm)".into(),
    }
    .apply(&root)
    .unwrap();
    assert!(read("etc/os-release").contains("ID=debian"));
}

#[test]
fn testbed_serves_agents_then_leaves_no_process_behind() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = cluster(dir.path(), "127.70.0", 50170);
    let state = dir.path().join("state");
    let tb = Testbed::up(&cfg, &state, UpOptions::default()).unwrap();
    for h in tb.hosts() {
        let addr = tb.config().agent_endpoint(&h.spec);
        assert!(std::net::TcpStream::connect(addr).is_ok(), "{addr} serves");
        assert!(h.root().join("etc/fstab").exists());
        assert!(h.bin().join("apt-get").exists() && h.bin().join("systemctl").exists());
        assert!(
            !h.bin().join("kubeadm").exists(),
            "kubeadm is not installed yet"
        );
    }
    let needle = state.display().to_string();
    assert_eq!(
        processes_mentioning(&needle).len(),
        3,
        "{:?}",
        processes_mentioning(&needle)
    );
    tb.kill_agent("node-1").unwrap();
    let addr = tb.config().agent_endpoint(&tb.host("node-1").unwrap().spec);
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "killed agent no longer serves"
    );
    tb.start_agent("node-1").unwrap();
    assert!(
        std::net::TcpStream::connect(addr).is_ok(),
        "restarted agent serves"
    );
    drop(tb);
    assert!(
        processes_mentioning(&needle).is_empty(),
        "{:?}",
        processes_mentioning(&needle)
    );
}

#[test]
fn testbed_up_prints_ready_and_stops_everything_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = cluster(dir.path(), "127.70.1", 50171);
    let state = dir.path().join("state");
    let mut child = Command::new(testbed::bins::bin("testbed"))
        .args(["up", "--config"])
        .arg(&cfg)
        .arg("--state")
        .arg(&state)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    struct Guard(std::process::Child);
    impl Drop for Guard {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let stdout = child.stdout.take().unwrap();
    let mut guard = Guard(child);
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "READY");
    let needle = state.display().to_string();
    assert!(
        processes_mentioning(&needle).len() >= 4,
        "testbed and 3 agents run"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(guard.0.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while guard.0.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "testbed up did not exit on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(guard.0.try_wait().unwrap().unwrap().success());
    assert!(
        processes_mentioning(&needle).is_empty(),
        "{:?}",
        processes_mentioning(&needle)
    );
    assert!(!state.join("control.sock").exists());
}

#[test]
fn netns_host_cut_off_cannot_reach_the_master_until_restored() {
    if !testbed::netns::available() {
        println!("SKIP: netns test needs root and the ip tool");
        return;
    }
    // Leftovers of a killed run (owner pid gone) are removed when a testbed comes up.
    let stale = "tb-9999999x0-ghost";
    Command::new("ip")
        .args(["netns", "add", stale])
        .status()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = cluster(dir.path(), "10.77.0", 50172);
    let state = dir.path().join("state");
    let tb = Testbed::up(
        &cfg,
        &state,
        UpOptions {
            netns: true,
            ..Default::default()
        },
    )
    .unwrap();
    let master = tb.config().agent_endpoint(&tb.config().master);
    let t = Duration::from_secs(2);
    assert!(
        tb.can_connect("node-1", master, t),
        "node-1 reaches the master"
    );
    tb.cut_off("node-1").unwrap();
    assert!(
        !tb.can_connect("node-1", master, Duration::from_millis(500)),
        "cut off"
    );
    assert!(
        tb.can_connect("node-2", master, t),
        "node-2 still reaches the master"
    );
    tb.restore("node-1").unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !tb.can_connect("node-1", master, t) {
        assert!(Instant::now() < deadline, "node-1 reaches the master again");
        std::thread::sleep(Duration::from_millis(100));
    }
    let listed = Command::new("ip").args(["netns", "list"]).output().unwrap();
    assert!(
        !String::from_utf8_lossy(&listed.stdout).contains(stale),
        "stale namespace removed"
    );
    let ns = tb.netns_name("node-1").unwrap();
    let needle = state.display().to_string();
    drop(tb);
    assert!(
        processes_mentioning(&needle).is_empty(),
        "{:?}",
        processes_mentioning(&needle)
    );
    let list = Command::new("ip").args(["netns", "list"]).output().unwrap();
    assert!(
        !String::from_utf8_lossy(&list.stdout).contains(&ns),
        "namespace {ns} removed"
    );
}
