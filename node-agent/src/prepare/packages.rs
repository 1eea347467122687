//! Kubernetes packages: the pkgs.k8s.io repository of the configured minor (the old
//! apt.kubernetes.io is gone since 2024), its key dearmored into
//! `etc/apt/keyrings/kubernetes-apt-keyring.gpg`, and `kubelet kubeadm kubectl` at the pinned
//! version (`kubernetes.packageVersion`, else the newest of the minor), held so an
//! `apt upgrade` cannot move them.

use super::apt::{self, Repo};
use super::{Check, Host, Step, StepError};
use crate::exec::Cmd;

/// The packages this step installs and holds.
pub const PACKAGES: &[&str] = &["kubelet", "kubeadm", "kubectl"];

/// The pkgs.k8s.io repository for the configured minor.
pub fn kubernetes_repo(host: &Host) -> Repo {
    let p = &host.config.packages;
    Repo {
        name: "Kubernetes",
        keyring: "/etc/apt/keyrings/kubernetes-apt-keyring.gpg",
        key_url: p.kubernetes_key_url.clone(),
        dearmor: true,
        list: "/etc/apt/sources.list.d/kubernetes.list",
        line: format!(
            "deb [signed-by=/etc/apt/keyrings/kubernetes-apt-keyring.gpg] {} /",
            p.kubernetes_repo
        ),
    }
}

/// Whether an installed `version` is the one cluster.yaml asks for.
pub fn version_matches(host: &Host, version: &str) -> bool {
    match &host.config.kubernetes_package_version {
        Some(pinned) => version == pinned,
        None => version.starts_with(&format!("{}.", host.config.kubernetes_version)),
    }
}

/// The kubernetes-packages step.
#[derive(Debug, Clone, Copy)]
pub struct KubernetesPackages;

struct Found {
    repo: Repo,
    repo_changes: Vec<String>,
    install: Vec<String>,
    unheld: Vec<&'static str>,
}

async fn survey(host: &Host) -> Result<Found, StepError> {
    let repo = kubernetes_repo(host);
    let repo_changes = repo.check(host)?;
    let have = apt::installed(host, PACKAGES).await?;
    let install = PACKAGES
        .iter()
        .filter(|p| !have.get(**p).is_some_and(|v| version_matches(host, v)))
        .map(|p| match &host.config.kubernetes_package_version {
            Some(v) => format!("{p}={v}"),
            None => p.to_string(),
        })
        .collect();
    let held = apt::held(host).await?;
    let unheld = PACKAGES
        .iter()
        .copied()
        .filter(|p| !held.contains(*p))
        .collect();
    Ok(Found {
        repo,
        repo_changes,
        install,
        unheld,
    })
}

#[tonic::async_trait]
impl Step for KubernetesPackages {
    fn name(&self) -> &'static str {
        "kubernetes-packages"
    }

    async fn check(&self, host: &Host) -> Result<Check, StepError> {
        let f = survey(host).await?;
        let mut changes = f.repo_changes;
        if !f.install.is_empty() {
            changes.push(format!("install {}", f.install.join(" ")));
        }
        if !f.unheld.is_empty() {
            changes.push(format!("hold {}", f.unheld.join(" ")));
        }
        let version = host
            .config
            .kubernetes_package_version
            .clone()
            .unwrap_or_else(|| format!("{}.x", host.config.kubernetes_version));
        Ok(Check {
            changes,
            state: format!("kubelet kubeadm kubectl {version} installed and held"),
        })
    }

    async fn apply(&self, host: &Host, _check: &Check) -> Result<(), StepError> {
        let f = survey(host).await?;
        f.repo.apply(host).await?;
        if !f.install.is_empty() {
            apt::install(host, &f.install).await?;
        }
        let held = apt::held(host).await?;
        if PACKAGES.iter().any(|p| !held.contains(*p)) {
            host.run(
                Cmd::new("apt-mark")
                    .arg("hold")
                    .args(PACKAGES.iter().copied()),
            )
            .await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prepare::testutil::World;

    fn k8s_world() -> World {
        let w = World::new();
        w.fake_downloads();
        let s = w.clone();
        w.runner.respond(move |c| {
            let line = c.argv().join(" ");
            if line.starts_with("dpkg-query") {
                let v = if s.marked("installed") {
                    "kubelet\tinstall ok installed\t1.35.0-1.1\nkubeadm\tinstall ok installed\t1.35.0-1.1\nkubectl\tinstall ok installed\t1.35.0-1.1\n"
                } else {
                    "kubelet\tinstall ok installed\t1.34.2-1.1\n"
                };
                return Some(World::ok(v));
            } else if line.contains("apt-get install") {
                s.mark("installed");
            } else if line == "apt-mark showhold" {
                return Some(World::ok(if s.marked("held") {
                    "kubeadm\nkubectl\nkubelet\n"
                } else {
                    ""
                }));
            } else if line.starts_with("apt-mark hold") {
                s.mark("held");
            }
            None
        });
        w
    }

    #[tokio::test]
    async fn installs_pinned_versions_from_pkgs_k8s_io_and_holds_them() {
        let w = k8s_world();
        let host = w.host_master();
        let c = KubernetesPackages.check(&host).await.unwrap();
        assert!(
            c.changes
                .iter()
                .any(|c| c == "install kubelet=1.35.0-1.1 kubeadm=1.35.0-1.1 kubectl=1.35.0-1.1"),
            "{:?}",
            c.changes
        );
        KubernetesPackages.apply(&host, &c).await.unwrap();
        KubernetesPackages.verify(&host).await.unwrap();
        let list = String::from_utf8(w.read("etc/apt/sources.list.d/kubernetes.list")).unwrap();
        assert_eq!(
            list,
            "deb [signed-by=/etc/apt/keyrings/kubernetes-apt-keyring.gpg] https://pkgs.k8s.io/core:/stable:/v1.35/deb/ /\n"
        );
        assert_eq!(
            w.read("etc/apt/keyrings/kubernetes-apt-keyring.gpg"),
            b"-----BEGIN PGP PUBLIC KEY BLOCK-----\n"
        );
        let lines = w.runner.lines();
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("gpg --batch --yes --dearmor -o "))
        );
        assert!(lines.contains(&"apt-mark hold kubelet kubeadm kubectl".to_string()));
        assert!(
            lines.iter().any(|l| l.ends_with(
                "install -y -q --allow-downgrades --allow-change-held-packages -o Dpkg::Options::=--force-confold kubelet=1.35.0-1.1 kubeadm=1.35.0-1.1 kubectl=1.35.0-1.1"
            )),
            "{lines:?}"
        );
        let before = lines.len();
        assert!(KubernetesPackages.check(&host).await.unwrap().is_ok());
        assert!(w.runner.lines()[before..].iter().all(|l| !w.is_mutating(l)));
    }

    #[tokio::test]
    async fn a_missing_tool_fails_with_what_to_do() {
        let w = World::new();
        w.runner.respond(|c| {
            (c.program == "curl").then(|| World::fail(127, "curl: command not found"))
        });
        let host = w.host_master();
        let c = KubernetesPackages.check(&host).await.unwrap();
        let err = KubernetesPackages.apply(&host, &c).await.unwrap_err();
        assert_eq!(err.command_failure().unwrap().exit_code, 127);
        assert!(!w.exists("etc/apt/sources.list.d/kubernetes.list"));
    }
}
