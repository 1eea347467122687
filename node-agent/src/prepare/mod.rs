//! Host preparation: the ordered, idempotent steps that make a fresh Ubuntu VM ready for
//! `kubeadm init` / `kubeadm join` (they replace the seed's Ansible playbooks).
//!
//! Each [`Step`] is a small named unit: `check` reads the host and lists what must change
//! (nothing: the step is `unchanged`), `apply` makes those changes, `verify` checks again. Every
//! step reports through an [`EventSink`] (`running`, then `unchanged` | `changed` | `failed`, with
//! its duration). A failed step stops the run; its event carries the failed command's argv, exit
//! code and stderr. With `plan`, only `check` runs and `changed` means "would change".
//!
//! On the host the steps touch, all below the host root: `etc/fstab` (+ backup),
//! `etc/modules-load.d/k8s.conf`, `etc/sysctl.d/k8s.conf`, `etc/apt/keyrings/`,
//! `etc/apt/sources.list.d/{docker,kubernetes}.list`, `etc/containerd/config.toml`,
//! `etc/default/kubelet`; and they run `swapoff`, `systemctl`, `modprobe`, `sysctl`, `curl`,
//! `gpg`, `apt-get`, `apt-mark`, `dpkg-query`, `containerd`, `ctr` through the
//! [`CommandRunner`].

pub mod apt;
pub mod fsx;
pub mod kernel;
pub mod kubelet;
pub mod packages;
pub mod preflight;
pub mod runtime;
pub mod swap;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use agent_proto::{CommandFailure, StepState};
use cluster_common::config::{ClusterConfig, HostSpec};

use crate::events::EventSink;
use crate::exec::{Cmd, CommandRunner, ExecError, Output};

/// Everything a step may touch: the host root, the command runner, cluster.yaml and this host.
#[derive(Debug, Clone)]
pub struct Host {
    /// The host root every path is joined onto.
    pub root: PathBuf,
    /// Runs every command.
    pub runner: Arc<dyn CommandRunner>,
    /// The validated cluster.yaml.
    pub config: Arc<ClusterConfig>,
    /// This host.
    pub spec: HostSpec,
}

impl Host {
    /// `abs` (a host path like `/etc/fstab`) below the host root.
    pub fn path(&self, abs: &str) -> PathBuf {
        self.root.join(abs.trim_start_matches('/'))
    }

    /// Runs `cmd`; a non-zero exit is an error.
    pub async fn run(&self, cmd: Cmd) -> Result<Output, StepError> {
        Ok(self.runner.run(&cmd).await?)
    }

    /// Runs `cmd` and returns its output whatever the exit code.
    pub async fn output(&self, cmd: Cmd) -> Result<Output, StepError> {
        Ok(self.runner.output(&cmd).await?)
    }
}

/// Why a step failed.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// A command failed or could not run.
    #[error(transparent)]
    Command(#[from] ExecError),
    /// A host file could not be read or written.
    #[error("{}: cannot {action}: {source}", path.display())]
    File {
        /// The file (below the host root).
        path: PathBuf,
        /// What was being done, e.g. "write".
        action: &'static str,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The host is not fit and the step cannot fix it: every problem, each with what to do.
    #[error("{}", problems.join("; "))]
    Unfit {
        /// Each problem with its remedy.
        problems: Vec<String>,
    },
    /// `apply` ran but a re-check still finds differences.
    #[error("still not as wanted after applying: {}", .0.join("; "))]
    NotConverged(Vec<String>),
}

impl StepError {
    /// A file error for `path`.
    pub fn file(path: &Path, action: &'static str, source: std::io::Error) -> Self {
        StepError::File {
            path: path.to_path_buf(),
            action,
            source,
        }
    }

    /// One problem the operator must fix.
    pub fn unfit(problem: impl Into<String>) -> Self {
        StepError::Unfit {
            problems: vec![problem.into()],
        }
    }

    /// What the operator should do about a failed command or file (preflight problems already
    /// carry their own remedy).
    pub fn remedy(&self) -> Option<String> {
        let again = "then run prepare again: it resumes where it stopped";
        match self {
            StepError::Command(ExecError::NotFound { .. }) => None,
            StepError::Command(ExecError::Failed { argv, .. } | ExecError::Spawn { argv, .. }) => {
                let program = argv.first().map(String::as_str).unwrap_or("");
                Some(match program {
                    "apt-get" | "apt-mark" | "dpkg-query" => format!(
                        "check the host's network access to the package repositories and the repository lines in /etc/apt/sources.list.d (cluster.yaml packages.*), {again}"
                    ),
                    "curl" | "gpg" => format!(
                        "check the key URL (cluster.yaml packages.*KeyUrl) and the host's network access, {again}"
                    ),
                    "systemctl" => {
                        format!("see `systemctl status` and `journalctl -u` of the unit, {again}")
                    }
                    _ => format!("fix the cause shown above, {again}"),
                })
            }
            StepError::File { .. } => Some(format!(
                "check that the file system is writable and not full (the original file was left as it was), {again}"
            )),
            StepError::Unfit { .. } | StepError::NotConverged(_) => None,
        }
    }

    /// The failed command for the wire, when a command failed.
    pub fn command_failure(&self) -> Option<CommandFailure> {
        match self {
            StepError::Command(e) => Some(e.to_failure()),
            StepError::File { .. } | StepError::Unfit { .. } | StepError::NotConverged(_) => None,
        }
    }
}

/// What `check` found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Check {
    /// The changes `apply` would make, one phrase each; empty when the host is as wanted.
    pub changes: Vec<String>,
    /// What is already right, for the `unchanged` message.
    pub state: String,
}

impl Check {
    /// Nothing to do; `state` says what holds.
    pub fn ok(state: impl Into<String>) -> Self {
        Self {
            changes: Vec::new(),
            state: state.into(),
        }
    }

    /// True when nothing must change.
    pub fn is_ok(&self) -> bool {
        self.changes.is_empty()
    }
}

/// One named preparation step.
#[tonic::async_trait]
pub trait Step: Send + Sync + std::fmt::Debug {
    /// Short stable name, e.g. `swap`.
    fn name(&self) -> &'static str;

    /// Reads the host and lists what must change. Runs no mutating command.
    async fn check(&self, host: &Host) -> Result<Check, StepError>;

    /// Makes the changes `check` listed.
    async fn apply(&self, host: &Host, check: &Check) -> Result<(), StepError>;

    /// After `apply`: the host must now be as wanted. By default `check` must find nothing.
    async fn verify(&self, host: &Host) -> Result<(), StepError> {
        let again = self.check(host).await?;
        if again.is_ok() {
            Ok(())
        } else {
            Err(StepError::NotConverged(again.changes))
        }
    }
}

/// Every step, in order.
pub fn steps() -> Vec<Box<dyn Step>> {
    vec![
        Box::new(preflight::Preflight),
        Box::new(swap::SwapOff),
        Box::new(kernel::Kernel),
        Box::new(runtime::ContainerRuntime),
        Box::new(packages::KubernetesPackages),
        Box::new(kubelet::KubeletNodeIp),
    ]
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Steps that changed (or, in a plan, would change) something.
    pub changed: Vec<&'static str>,
    /// The step that failed, if any (the run stopped there).
    pub failed: Option<&'static str>,
}

/// Runs `steps` in order on `host`, reporting each through `sink`; stops at the first failure.
/// With `plan`, only checks run and nothing changes.
pub async fn run(host: &Host, steps: &[Box<dyn Step>], sink: &EventSink, plan: bool) -> Summary {
    let mut summary = Summary {
        changed: Vec::new(),
        failed: None,
    };
    for step in steps {
        let name = step.name();
        let started = sink.start(name, "checking").await;
        match run_step(host, step.as_ref(), plan).await {
            Ok(check) if check.is_ok() => {
                sink.send(
                    name,
                    StepState::Unchanged,
                    check.state,
                    started.elapsed(),
                    None,
                )
                .await;
            }
            Ok(check) => {
                summary.changed.push(name);
                let verb = if plan { "would " } else { "" };
                let message = format!("{verb}{}", check.changes.join("; "));
                sink.send(name, StepState::Changed, message, started.elapsed(), None)
                    .await;
            }
            Err(e) => {
                summary.failed = Some(name);
                let message = match e.remedy() {
                    Some(r) => format!("{e}; {r}"),
                    None => e.to_string(),
                };
                sink.send(
                    name,
                    StepState::Failed,
                    message,
                    started.elapsed(),
                    e.command_failure(),
                )
                .await;
                break;
            }
        }
    }
    summary
}

async fn run_step(host: &Host, step: &dyn Step, plan: bool) -> Result<Check, StepError> {
    let t = Instant::now();
    let check = step.check(host).await?;
    if check.is_ok() || plan {
        return Ok(check);
    }
    tracing::debug!(step = step.name(), changes = ?check.changes, "applying");
    step.apply(host, &check).await?;
    step.verify(host).await?;
    tracing::debug!(step = step.name(), elapsed = ?t.elapsed(), "applied");
    Ok(check)
}

#[cfg(test)]
pub(crate) mod testutil;

/// Whether a command line the steps run can change the host. A second prepare on a prepared
/// host runs only commands for which this is false (`dpkg-query`, `apt-mark showhold`,
/// `systemctl is-active|is-enabled|list-units`, `containerd config default`, `ctr … plugins ls`).
pub fn is_mutating(argv: &[String]) -> bool {
    let rest: Vec<&str> = argv.iter().map(String::as_str).collect();
    let program = rest.first().map(|p| p.rsplit('/').next().unwrap_or(p));
    let sub = rest.get(1).copied().unwrap_or("");
    let read_only = match program {
        Some("dpkg-query" | "apt-cache") => true,
        Some("apt-mark") => sub == "showhold",
        Some("systemctl") => matches!(
            sub,
            "is-active" | "is-enabled" | "list-units" | "show" | "status" | "cat"
        ),
        Some("containerd") => rest.get(1..3) == Some(&["config", "default"]),
        Some("ctr") => rest.windows(2).any(|w| w == ["plugins", "ls"]),
        _ => false,
    };
    !read_only
}

#[cfg(test)]
mod tests {
    use super::testutil::World;
    use super::*;
    use agent_proto::StepEvent;
    use futures::StreamExt;

    async fn prepare(w: &World, plan: bool) -> (Summary, Vec<StepEvent>) {
        let host = w.host_master();
        let (sink, stream) = EventSink::new("k8s-master", plan);
        let summary = run(&host, &steps(), &sink, plan).await;
        drop(sink);
        let events = stream
            .map(|e| StepEvent::try_from(e.unwrap()).unwrap())
            .collect()
            .await;
        (summary, events)
    }

    fn finals(events: &[StepEvent]) -> Vec<(String, StepState)> {
        events
            .iter()
            .filter(|e| e.state != StepState::Running)
            .map(|e| (e.step.clone(), e.state))
            .collect()
    }

    #[tokio::test]
    async fn fresh_host_is_prepared_then_a_second_run_changes_and_mutates_nothing() {
        let w = World::fake_ubuntu();
        let (first, events) = prepare(&w, false).await;
        assert_eq!(first.failed, None, "{events:#?}");
        assert_eq!(
            first.changed,
            vec![
                "swap",
                "kernel",
                "container-runtime",
                "kubernetes-packages",
                "kubelet-node-ip"
            ]
        );
        assert!(events.iter().all(|e| e.host == "k8s-master" && !e.planned));
        let fstab = w.read("etc/fstab");
        let mut want = b"# /etc/fstab\r\nUUID=1 / ext4 defaults 0 1\r\n".to_vec();
        want.extend_from_slice(swap::MARKER);
        want.extend_from_slice(b"/swap.img\tnone\tswap\tsw\t0\t0");
        assert_eq!(fstab, want);
        assert_eq!(
            w.read("etc/default/kubelet"),
            b"KUBELET_EXTRA_ARGS=--node-ip=127.0.0.2\n"
        );

        let before = w.runner.lines().len();
        let (second, events) = prepare(&w, false).await;
        assert_eq!(second.failed, None);
        assert!(second.changed.is_empty(), "{events:#?}");
        assert_eq!(finals(&events).len(), 6);
        assert!(
            finals(&events)
                .iter()
                .all(|(_, s)| *s == StepState::Unchanged)
        );
        let mutating: Vec<String> = w.runner.lines()[before..]
            .iter()
            .filter(|l| w.is_mutating(l))
            .cloned()
            .collect();
        assert!(mutating.is_empty(), "second run mutated: {mutating:?}");
    }

    #[tokio::test]
    async fn plan_reports_what_would_change_and_changes_nothing() {
        let w = World::fake_ubuntu();
        let fstab = w.read("etc/fstab");
        let (summary, events) = prepare(&w, true).await;
        assert_eq!(summary.failed, None, "{events:#?}");
        assert_eq!(summary.changed.len(), 5);
        let swap = events
            .iter()
            .find(|e| e.step == "swap" && e.state == StepState::Changed)
            .unwrap();
        assert!(swap.planned);
        assert!(
            swap.message.starts_with("would comment out swap"),
            "{}",
            swap.message
        );
        assert_eq!(w.read("etc/fstab"), fstab);
        assert!(!w.exists("etc/sysctl.d/k8s.conf"));
        assert!(!w.exists("etc/default/kubelet"));
        let mutating: Vec<String> = w
            .runner
            .lines()
            .into_iter()
            .filter(|l| w.is_mutating(l))
            .collect();
        assert!(mutating.is_empty(), "plan mutated: {mutating:?}");
    }

    #[tokio::test]
    async fn a_failed_command_stops_the_run_and_its_event_carries_argv_code_stderr() {
        let w = World::fake_ubuntu_with(|c| {
            (c.program == "modprobe")
                .then(|| World::fail(1, "modprobe: FATAL: Module br_netfilter not found"))
        });
        let (summary, events) = prepare(&w, false).await;
        assert_eq!(summary.failed, Some("kernel"));
        let last = events.last().unwrap();
        assert_eq!(last.state, StepState::Failed);
        let cmd = last.command.as_ref().unwrap();
        assert_eq!(cmd.argv, vec!["modprobe", "overlay"]);
        assert_eq!(cmd.exit_code, 1);
        assert!(cmd.stderr.contains("FATAL"));
        assert!(
            last.message.contains("run prepare again"),
            "{}",
            last.message
        );
        assert!(
            !events.iter().any(|e| e.step == "container-runtime"),
            "the run stopped"
        );
    }

    #[tokio::test]
    async fn unfit_host_fails_preflight_listing_everything_and_changes_nothing() {
        let w = World::fake_ubuntu();
        w.write("proc/self/status", b"Uid:\t1000\t1000\t1000\t1000\n");
        w.write("proc/cpuinfo", b"processor\t: 0\n");
        let fstab = w.read("etc/fstab");
        let (summary, events) = prepare(&w, false).await;
        assert_eq!(summary.failed, Some("preflight"));
        let last = events.last().unwrap();
        assert!(
            last.message.contains("not root") && last.message.contains("1 CPU"),
            "{}",
            last.message
        );
        assert_eq!(w.read("etc/fstab"), fstab);
        assert!(w.runner.lines().is_empty());
    }

    #[test]
    fn read_only_commands_are_told_apart() {
        let m = |s: &str| is_mutating(&s.split(' ').map(str::to_string).collect::<Vec<_>>());
        assert!(!m("dpkg-query -W kubelet"));
        assert!(!m("systemctl is-active containerd"));
        assert!(!m("containerd config default"));
        assert!(!m("apt-mark showhold"));
        assert!(m("apt-mark hold kubelet"));
        assert!(m("systemctl restart kubelet"));
        assert!(m("apt-get update -q"));
        assert!(m("swapoff /swap.img"));
    }
}
