//! Host preparation end to end: the real agent binaries prepare simulated hosts (testbed
//! harness, shim tools), driven in-process through `ctl::prepare`. Every file the steps own is
//! checked, a second prepare must run nothing that mutates (from the shim logs), a host whose
//! template fails preflight stops with every problem listed and nothing changed, and an agent
//! killed in the middle of prepare converges after a restart; a plan changes nothing.
//! Addresses 127.86.n.x, agent port 50800+n, unique per test.

use std::time::Duration;

use agent_proto::{StepEvent, StepState};
use cluster_common::config::ClusterConfig;
use ctl::output::Format;
use ctl::progress::Progress;
use futures::StreamExt;
use node_agent::prepare::{is_mutating, swap};
use testbed::roots::{self, Variant};
use testbed::{Testbed, UpOptions};

/// Fields drop in order: the testbed stops before its state directory goes.
struct World {
    tb: Testbed,
    config: ClusterConfig,
    agents: ctl::agents::Agents,
    _dir: tempfile::TempDir,
}

/// tests/clusters/local.yaml on 127.86.n.0, agent port 50800+n, its PKI, the hosts up.
fn up(n: u8, opts: UpOptions) -> World {
    cluster_common::telemetry::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let sample = concat!(env!("CARGO_MANIFEST_DIR"), "/../clusters/local.yaml");
    let text = std::fs::read_to_string(sample)
        .unwrap()
        .replace("127.50.0.", &format!("127.86.{n}."));
    let path = dir.path().join("cluster.yaml");
    std::fs::write(
        &path,
        format!("{text}\nagentPort: {}\n", 50800 + u16::from(n)),
    )
    .unwrap();
    let config = ClusterConfig::load(&path).unwrap();
    ctl::pki::init(&config, false).unwrap();
    let tb = Testbed::up(&path, &dir.path().join("state"), opts).unwrap();
    let agents = ctl::agents::Agents::new(&config).unwrap();
    World {
        tb,
        config,
        agents,
        _dir: dir,
    }
}

impl World {
    /// Prepares `hosts` (all when empty) in parallel; every event, in arrival order per host.
    async fn prepare(&self, hosts: &[&str]) -> Vec<StepEvent> {
        let specs: Vec<_> = self
            .config
            .hosts()
            .filter(|h| hosts.is_empty() || hosts.contains(&h.name.as_str()))
            .cloned()
            .collect();
        let runs = specs.iter().map(|h| async move {
            let mut s = ctl::prepare::stream(&self.agents, h, false).await.unwrap();
            let mut events = Vec::new();
            while let Some(e) = s.next().await {
                events.push(e.unwrap());
            }
            events
        });
        futures::future::join_all(runs)
            .await
            .into_iter()
            .flatten()
            .collect()
    }

    fn read(&self, host: &str, rel: &str) -> Vec<u8> {
        std::fs::read(self.tb.root(host).join(rel)).unwrap_or_default()
    }

    fn text(&self, host: &str, rel: &str) -> String {
        String::from_utf8_lossy(&self.read(host, rel)).into_owned()
    }

    fn tool(&self, host: &str, tool: &str, args: &[&str]) -> String {
        let out = self.tb.run_tool(host, tool, args).unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

fn finals(events: &[StepEvent]) -> Vec<&StepEvent> {
    events
        .iter()
        .filter(|e| e.state != StepState::Running)
        .collect()
}

fn describe(events: &[StepEvent]) -> String {
    finals(events)
        .iter()
        .map(|e| format!("{} {} {}: {}", e.host, e.step, e.state, e.message))
        .collect::<Vec<_>>()
        .join("\n")
}

fn template_fstab() -> Vec<u8> {
    std::fs::read(roots::template(roots::DEFAULT_TEMPLATE).join("etc/fstab")).unwrap()
}

/// fstab lines that differ from the template's (same count required).
fn changed_lines(template: &[u8], now: &[u8]) -> Vec<(String, String)> {
    let a: Vec<&[u8]> = template.split(|b| *b == b'\n').collect();
    let b: Vec<&[u8]> = now.split(|b| *b == b'\n').collect();
    assert_eq!(a.len(), b.len(), "fstab gained or lost lines");
    a.iter()
        .zip(&b)
        .filter(|(x, y)| x != y)
        .map(|(x, y)| {
            (
                String::from_utf8_lossy(x).into_owned(),
                String::from_utf8_lossy(y).into_owned(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_hosts_are_prepared_and_a_second_prepare_mutates_nothing() {
    let w = tokio::task::spawn_blocking(|| up(1, UpOptions::default()))
        .await
        .unwrap();
    let first = w.prepare(&[]).await;
    let done = finals(&first);
    assert!(
        done.iter().all(|e| e.state != StepState::Failed),
        "{}",
        describe(&first)
    );
    assert_eq!(
        done.len(),
        18,
        "six steps on three hosts:\n{}",
        describe(&first)
    );
    assert!(done.iter().any(|e| e.state == StepState::Changed));

    let template = template_fstab();
    for h in w.config.hosts() {
        let name = h.name.as_str();
        // swap: only the swap entry changed, by gaining the marker; backup kept; swap off
        let fstab = w.read(name, "etc/fstab");
        let diff = changed_lines(&template, &fstab);
        assert_eq!(diff.len(), 1, "{name}: {diff:?}");
        let marker = String::from_utf8_lossy(swap::MARKER);
        assert_eq!(diff[0].1, format!("{marker}{}", diff[0].0));
        assert!(diff[0].0.contains("\tswap\t"));
        assert_eq!(w.read(name, "etc/fstab.k8s-prep.bak"), template);
        assert_eq!(
            w.text(name, "proc/swaps").lines().count(),
            1,
            "{name}: swap still on"
        );
        // kernel
        assert_eq!(
            w.text(name, "etc/modules-load.d/k8s.conf")
                .lines()
                .filter(|l| !l.starts_with('#'))
                .collect::<Vec<_>>(),
            vec!["overlay", "br_netfilter"]
        );
        let sysctl = w.text(name, "etc/sysctl.d/k8s.conf");
        assert!(sysctl.contains("net.ipv4.ip_forward = 1"), "{sysctl}");
        assert_eq!(w.text(name, "proc/sys/net/ipv4/ip_forward").trim(), "1");
        // container runtime
        let cfg = w.text(name, "etc/containerd/config.toml");
        assert!(cfg.contains("SystemdCgroup = true"), "{name}: {cfg}");
        assert!(
            !cfg.contains("disabled_plugins = [\"cri\"]"),
            "{name}: {cfg}"
        );
        assert!(
            w.text(name, "etc/apt/sources.list.d/docker.list")
                .starts_with("deb [signed-by=/etc/apt/keyrings/docker.asc] ")
        );
        assert!(!w.read(name, "etc/apt/keyrings/docker.asc").is_empty());
        // kubernetes packages: installed at the minor, held
        assert!(
            w.text(name, "etc/apt/sources.list.d/kubernetes.list")
                .starts_with("deb [signed-by=/etc/apt/keyrings/kubernetes-apt-keyring.gpg] ")
        );
        assert!(
            !w.read(name, "etc/apt/keyrings/kubernetes-apt-keyring.gpg")
                .is_empty()
        );
        let versions = w.tool(
            name,
            "dpkg-query",
            &[
                "-W",
                "--showformat=${Package} ${Version}\\n",
                "kubelet",
                "kubeadm",
                "kubectl",
            ],
        );
        assert_eq!(versions.lines().count(), 3, "{versions}");
        assert!(versions.lines().all(|l| l.contains(" 1.35.")), "{versions}");
        let held = w.tool(name, "apt-mark", &["showhold"]);
        for p in ["kubelet", "kubeadm", "kubectl"] {
            assert!(held.lines().any(|l| l == p), "{name}: {p} not held: {held}");
        }
        // kubelet node IP
        assert!(
            w.text(name, "etc/default/kubelet")
                .lines()
                .any(|l| l == format!("KUBELET_EXTRA_ARGS=--node-ip={}", h.ip)),
            "{}",
            w.text(name, "etc/default/kubelet")
        );
    }

    let before: Vec<usize> = w
        .config
        .hosts()
        .map(|h| w.tb.shim_log(h.name.as_str()).len())
        .collect();
    // The second run through what `ctl prepare -o json` runs.
    let hosts: Vec<_> = w.config.hosts().cloned().collect();
    let names: Vec<String> = hosts.iter().map(|h| h.name.to_string()).collect();
    let mut progress = Progress::with_terminal(&names, Format::Json, false);
    let outcomes = ctl::prepare::run(&w.agents, &hosts, false, &mut progress).await;
    assert!(progress.finish().is_empty());
    for o in &outcomes {
        assert_eq!((o.changed, o.unchanged, o.failed), (0, 6, false), "{o:?}");
    }
    for (h, n) in w.config.hosts().zip(before) {
        let calls = w.tb.shim_log(h.name.as_str());
        let mutating: Vec<String> = calls[n..]
            .iter()
            .filter(|c| c.changed || is_mutating(&c.argv))
            .map(|c| c.argv.join(" "))
            .collect();
        assert!(mutating.is_empty(), "{}: {mutating:?}", h.name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn host_failing_preflight_lists_every_problem_and_changes_nothing() {
    let opts = UpOptions::default()
        .variant("k8s-master", Variant::Cpus(1))
        .variant("k8s-master", Variant::MemoryMb(1024))
        .variant(
            "k8s-master",
            Variant::Os {
                id: "ubuntu".into(),
                version_id: "16.04".into(),
                pretty_name: "Ubuntu 16.04.7 LTS".into(),
            },
        );
    let w = tokio::task::spawn_blocking(move || up(2, opts))
        .await
        .unwrap();
    // The agent runs unprivileged: what its /proc/self/status says.
    std::fs::create_dir_all(w.tb.root("k8s-master").join("proc/self")).unwrap();
    std::fs::write(
        w.tb.root("k8s-master").join("proc/self/status"),
        "Name:\tmaster-agent\nUid:\t1000\t1000\t1000\t1000\n",
    )
    .unwrap();
    let fstab = w.read("k8s-master", "etc/fstab");
    let calls_before = w.tb.shim_log("k8s-master").len();
    let events = w.prepare(&["k8s-master"]).await;
    let done = finals(&events);
    assert_eq!(done.len(), 1, "stops at preflight: {}", describe(&events));
    assert_eq!(done[0].step, "preflight");
    assert_eq!(done[0].state, StepState::Failed);
    for want in [
        "UID 1000, not root",
        "Ubuntu 16.04.7 LTS is not supported",
        "1 CPU(s)",
        "1024 MiB of memory",
    ] {
        assert!(
            done[0].message.contains(want),
            "{want:?} missing: {}",
            done[0].message
        );
    }
    assert_eq!(w.read("k8s-master", "etc/fstab"), fstab);
    assert!(
        !w.tb
            .root("k8s-master")
            .join("etc/sysctl.d/k8s.conf")
            .exists()
    );
    assert_eq!(
        w.tb.shim_log("k8s-master").len(),
        calls_before,
        "no tool ran"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn plan_changes_nothing_and_an_agent_killed_mid_prepare_converges_after_restart() {
    let w = tokio::task::spawn_blocking(|| up(3, UpOptions::default()))
        .await
        .unwrap();
    // A plan on node-2 reports what would change and changes nothing.
    let fstab = w.read("node-2", "etc/fstab");
    let mut plan = ctl::prepare::stream(&w.agents, w.config.host("node-2").unwrap(), true)
        .await
        .unwrap();
    let mut planned = Vec::new();
    while let Some(e) = plan.next().await {
        planned.push(e.unwrap());
    }
    let would: Vec<&StepEvent> = finals(&planned)
        .into_iter()
        .filter(|e| e.state == StepState::Changed)
        .collect();
    assert_eq!(would.len(), 5, "{}", describe(&planned));
    assert!(
        would
            .iter()
            .all(|e| e.planned && e.message.starts_with("would "))
    );
    assert_eq!(w.read("node-2", "etc/fstab"), fstab);
    assert!(
        w.tb.shim_log("node-2").iter().all(|c| !c.changed),
        "a plan changed something"
    );

    let node = w.config.host("node-1").unwrap().clone();
    let mut s = ctl::prepare::stream(&w.agents, &node, false).await.unwrap();
    let mut seen = Vec::new();
    while let Some(Ok(e)) = s.next().await {
        let stop = e.step == "container-runtime" && e.state == StepState::Running;
        seen.push(e);
        if stop {
            break;
        }
    }
    assert!(
        seen.iter()
            .any(|e| e.step == "swap" && e.state == StepState::Changed),
        "{}",
        describe(&seen)
    );
    w.tb.kill_agent("node-1").unwrap();
    assert!(
        tokio::time::timeout(Duration::from_secs(5), s.next())
            .await
            .unwrap()
            .is_none_or(|r| r.is_err()),
        "the stream ends with the agent"
    );
    tokio::task::block_in_place(|| w.tb.start_agent("node-1")).unwrap();

    let again = w.prepare(&["node-1"]).await;
    assert!(
        finals(&again).iter().all(|e| e.state != StepState::Failed),
        "{}",
        describe(&again)
    );
    assert_eq!(finals(&again).len(), 6);
    let third = w.prepare(&["node-1"]).await;
    assert!(
        finals(&third)
            .iter()
            .all(|e| e.state == StepState::Unchanged),
        "{}",
        describe(&third)
    );
    let template = template_fstab();
    assert_eq!(
        changed_lines(&template, &w.read("node-1", "etc/fstab")).len(),
        1
    );
    let leftovers: Vec<String> = std::fs::read_dir(w.tb.root("node-1").join("etc"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}
