//! `Host.Reset`: undo `kubeadm init`/`join` on this host and keep it prepared. Runs
//! `kubeadm reset -f` when kubeadm left anything, then removes what `kubeadm reset` leaves
//! behind: the CNI configuration in `etc/cni/net.d`, kubeconfigs (`etc/kubernetes/*.conf`,
//! `root/.kube/config`) and the agents' private kubeadm config directory. Host preparation
//! (swap, kernel, runtime, packages, kubelet node IP) stays. A reset host reports `unchanged`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use agent_proto::StepState;

use crate::events::EventSink;
use crate::exec::{Cmd, CommandRunner, ExecError};
use crate::kubeadm::{self, host_path};

/// Step names reported by Reset.
pub mod steps {
    /// `kubeadm reset -f`.
    pub const KUBEADM_RESET: &str = "kubeadm-reset";
    /// Removing what kubeadm reset leaves.
    pub const LEFTOVERS: &str = "reset-leftovers";
}

/// Files whose presence means kubeadm has run here.
const KUBEADM_MARKERS: &[&str] = &[
    kubeadm::ADMIN_CONF,
    kubeadm::KUBELET_CONF,
    kubeadm::BOOTSTRAP_KUBELET_CONF,
    kubeadm::CA_CERT,
    "etc/kubernetes/manifests/kube-apiserver.yaml",
    "var/lib/kubelet/config.yaml",
    "var/lib/etcd/member",
];

/// Files removed after `kubeadm reset`.
const LEFTOVER_FILES: &[&str] = &[
    kubeadm::ADMIN_CONF,
    kubeadm::SUPER_ADMIN_CONF,
    kubeadm::KUBELET_CONF,
    kubeadm::BOOTSTRAP_KUBELET_CONF,
    "root/.kube/config",
];

/// Whether kubeadm has left anything on the host under `root`.
pub fn kubeadm_state_present(root: &Path) -> bool {
    KUBEADM_MARKERS.iter().any(|p| host_path(root, p).exists())
}

/// What [`leftovers`] would remove, in order.
pub fn leftovers(root: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = LEFTOVER_FILES
        .iter()
        .map(|p| host_path(root, p))
        .filter(|p| p.symlink_metadata().is_ok())
        .collect();
    if let Ok(entries) = std::fs::read_dir(host_path(root, kubeadm::CNI_NET_D)) {
        let mut cni: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        cni.sort();
        out.extend(cni);
    }
    let private = host_path(root, kubeadm::PRIVATE_DIR);
    if private.exists() {
        out.push(private);
    }
    out
}

/// Runs the reset, reporting on `sink`. Returns whether the host changed.
pub async fn run(
    root: &Path,
    runner: &dyn CommandRunner,
    sink: &EventSink,
) -> Result<bool, String> {
    let t = sink.start(steps::KUBEADM_RESET, "kubeadm reset -f").await;
    let ran = if kubeadm_state_present(root) {
        if let Err(e) = reset(runner).await {
            let msg = e.to_string();
            sink.send(
                steps::KUBEADM_RESET,
                StepState::Failed,
                msg.clone(),
                t.elapsed(),
                Some(e.to_failure()),
            )
            .await;
            return Err(msg);
        }
        sink.send(
            steps::KUBEADM_RESET,
            StepState::Changed,
            "kubeadm reset",
            t.elapsed(),
            None,
        )
        .await;
        true
    } else {
        sink.send(
            steps::KUBEADM_RESET,
            StepState::Unchanged,
            "nothing of kubeadm on this host",
            t.elapsed(),
            None,
        )
        .await;
        false
    };
    let t: Instant = sink
        .start(steps::LEFTOVERS, "removing CNI config and kubeconfigs")
        .await;
    let paths = leftovers(root);
    for p in &paths {
        let removed = if p.is_dir() && !p.is_symlink() {
            std::fs::remove_dir_all(p)
        } else {
            std::fs::remove_file(p)
        };
        if let Err(e) = removed
            && e.kind() != std::io::ErrorKind::NotFound
        {
            let msg = format!("cannot remove {}: {e}", p.display());
            sink.send(
                steps::LEFTOVERS,
                StepState::Failed,
                msg.clone(),
                t.elapsed(),
                None,
            )
            .await;
            return Err(msg);
        }
    }
    if paths.is_empty() {
        sink.send(
            steps::LEFTOVERS,
            StepState::Unchanged,
            "nothing left behind",
            t.elapsed(),
            None,
        )
        .await;
    } else {
        let names: Vec<String> = paths
            .iter()
            .map(|p| {
                p.strip_prefix(root)
                    .map(|r| format!("/{}", r.display()))
                    .unwrap_or_else(|_| p.display().to_string())
            })
            .collect();
        sink.send(
            steps::LEFTOVERS,
            StepState::Changed,
            format!("removed {}", names.join(", ")),
            t.elapsed(),
            None,
        )
        .await;
    }
    Ok(ran || !paths.is_empty())
}

async fn reset(runner: &dyn CommandRunner) -> Result<(), ExecError> {
    runner
        .run(&Cmd::new("kubeadm").args(["reset", "-f"]))
        .await
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::RecordingRunner;
    use futures::StreamExt;

    fn touch(root: &Path, rel: &str) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, "x").unwrap();
    }

    #[tokio::test]
    async fn reset_runs_kubeadm_and_removes_what_it_leaves_then_is_unchanged() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        touch(r, kubeadm::KUBELET_CONF);
        touch(r, "etc/cni/net.d/10-calico.conflist");
        touch(r, "etc/fstab");
        let runner = RecordingRunner::new();
        let (sink, stream) = EventSink::new("node-1", false);
        let changed = run(r, &runner, &sink).await.unwrap();
        drop(sink);
        assert!(changed);
        assert_eq!(runner.lines(), vec!["kubeadm reset -f"]);
        assert!(!r.join(kubeadm::KUBELET_CONF).exists());
        assert!(!r.join("etc/cni/net.d/10-calico.conflist").exists());
        assert!(
            r.join("etc/cni/net.d").exists(),
            "the directory itself stays"
        );
        assert!(r.join("etc/fstab").exists(), "preparation is kept");
        let events: Vec<_> = stream.collect().await;
        assert!(events.iter().all(|e| e.is_ok()));

        let runner = RecordingRunner::new();
        let (sink, _stream) = EventSink::new("node-1", false);
        let changed = run(r, &runner, &sink).await.unwrap();
        assert!(!changed, "a reset host stays unchanged");
        assert!(runner.lines().is_empty(), "no kubeadm on a clean host");
    }

    #[tokio::test]
    async fn failed_kubeadm_reset_keeps_its_exit_code_and_removes_nothing() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        touch(r, kubeadm::ADMIN_CONF);
        let runner = RecordingRunner::new();
        runner.respond(|_| {
            Some(crate::exec::Output {
                code: 2,
                stderr: b"boom".to_vec(),
                ..Default::default()
            })
        });
        let (sink, _stream) = EventSink::new("k8s-master", false);
        let err = run(r, &runner, &sink).await.unwrap_err();
        assert!(err.contains("exited with 2"), "{err}");
        assert!(r.join(kubeadm::ADMIN_CONF).exists());
    }
}
