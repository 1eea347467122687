//! Kernel prerequisites: the `overlay` and `br_netfilter` modules, loaded now (`modprobe`) and at
//! boot (`etc/modules-load.d/k8s.conf`); IPv4 forwarding and bridged traffic through iptables,
//! set now (`sysctl --system`) and at boot (`etc/sysctl.d/k8s.conf`).
//!
//! A module counts as loaded when `sys/module/<name>` exists (also true for built-in modules) or
//! `proc/modules` lists it; a sysctl's live value is read from `proc/sys/...`.

use super::{Check, Host, Step, StepError, fsx};
use crate::exec::Cmd;

/// The modules-load.d file this step owns.
pub const MODULES_CONF: &str = "/etc/modules-load.d/k8s.conf";
/// The sysctl.d file this step owns.
pub const SYSCTL_CONF: &str = "/etc/sysctl.d/k8s.conf";
/// Modules the container runtime and CNIs need.
pub const MODULES: &[&str] = &["overlay", "br_netfilter"];
/// Sysctls (name, value) Kubernetes networking needs.
pub const SYSCTLS: &[(&str, &str)] = &[
    ("net.bridge.bridge-nf-call-iptables", "1"),
    ("net.bridge.bridge-nf-call-ip6tables", "1"),
    ("net.ipv4.ip_forward", "1"),
];

fn modules_conf() -> String {
    let mut s = String::from("# Written by the k8s host preparation: modules Kubernetes needs.\n");
    for m in MODULES {
        s.push_str(m);
        s.push('\n');
    }
    s
}

fn sysctl_conf() -> String {
    let mut s = String::from("# Written by the k8s host preparation: Kubernetes networking.\n");
    for (k, v) in SYSCTLS {
        s.push_str(&format!("{k} = {v}\n"));
    }
    s
}

/// The kernel step.
#[derive(Debug, Clone, Copy)]
pub struct Kernel;

fn module_loaded(host: &Host, name: &str, proc_modules: &str) -> bool {
    host.path(&format!("/sys/module/{name}")).exists()
        || proc_modules
            .lines()
            .any(|l| l.split_whitespace().next() == Some(name))
}

fn live_sysctl(host: &Host, name: &str) -> Result<Option<String>, StepError> {
    let path = host.path(&format!("/proc/sys/{}", name.replace('.', "/")));
    Ok(fsx::read_text_opt(&path)?.map(|v| v.trim().to_string()))
}

struct Found {
    missing_modules: Vec<&'static str>,
    modules_file: bool,
    sysctl_file: bool,
    wrong_sysctls: Vec<String>,
}

fn survey(host: &Host) -> Result<Found, StepError> {
    let proc_modules = fsx::read_text_opt(&host.path("/proc/modules"))?.unwrap_or_default();
    let missing_modules = MODULES
        .iter()
        .copied()
        .filter(|m| !module_loaded(host, m, &proc_modules))
        .collect();
    let mut wrong_sysctls = Vec::new();
    for (k, v) in SYSCTLS {
        let live = live_sysctl(host, k)?;
        if live.as_deref() != Some(*v) {
            wrong_sysctls.push(format!(
                "{k} = {v} (now {})",
                live.as_deref().unwrap_or("unset")
            ));
        }
    }
    Ok(Found {
        missing_modules,
        modules_file: !fsx::has_content(&host.path(MODULES_CONF), modules_conf().as_bytes())?,
        sysctl_file: !fsx::has_content(&host.path(SYSCTL_CONF), sysctl_conf().as_bytes())?,
        wrong_sysctls,
    })
}

#[tonic::async_trait]
impl Step for Kernel {
    fn name(&self) -> &'static str {
        "kernel"
    }

    async fn check(&self, host: &Host) -> Result<Check, StepError> {
        let f = survey(host)?;
        let mut changes = Vec::new();
        if f.modules_file {
            changes.push(format!("write {MODULES_CONF}"));
        }
        changes.extend(f.missing_modules.iter().map(|m| format!("modprobe {m}")));
        if f.sysctl_file {
            changes.push(format!("write {SYSCTL_CONF}"));
        }
        if !f.wrong_sysctls.is_empty() {
            changes.push(format!("set {}", f.wrong_sysctls.join(", ")));
        }
        Ok(Check {
            changes,
            state: "overlay and br_netfilter loaded, ip_forward and bridge-nf-call sysctls = 1"
                .into(),
        })
    }

    async fn apply(&self, host: &Host, _check: &Check) -> Result<(), StepError> {
        let f = survey(host)?;
        fsx::write_if_changed(&host.path(MODULES_CONF), modules_conf().as_bytes(), 0o644)?;
        for m in &f.missing_modules {
            host.run(Cmd::new("modprobe").arg(*m)).await?;
        }
        fsx::write_if_changed(&host.path(SYSCTL_CONF), sysctl_conf().as_bytes(), 0o644)?;
        if f.sysctl_file || !f.wrong_sysctls.is_empty() {
            host.run(Cmd::new("sysctl").arg("--system")).await?;
        }
        Ok(())
    }

    async fn verify(&self, host: &Host) -> Result<(), StepError> {
        let f = survey(host)?;
        let mut left: Vec<String> = f
            .missing_modules
            .iter()
            .map(|m| format!("module {m} still not loaded after modprobe"))
            .collect();
        if !f.wrong_sysctls.is_empty() {
            left.push(format!(
                "after sysctl --system still not {}: a later file in /etc/sysctl.d or /etc/sysctl.conf overrides {SYSCTL_CONF}; remove that setting",
                f.wrong_sysctls.join(", ")
            ));
        }
        if left.is_empty() {
            Ok(())
        } else {
            Err(StepError::NotConverged(left))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prepare::testutil::World;

    fn kernel_world() -> World {
        let w = World::new();
        w.write("proc/modules", b"ip_tables 32768 0 - Live 0x0\n");
        w.write("proc/sys/net/ipv4/ip_forward", b"0\n");
        let s = w.clone();
        w.runner.respond(move |c| {
            match c.argv().join(" ").as_str() {
                "modprobe br_netfilter" => {
                    s.write("sys/module/br_netfilter/refcnt", b"0\n");
                    s.write("proc/sys/net/bridge/bridge-nf-call-iptables", b"0\n");
                    s.write("proc/sys/net/bridge/bridge-nf-call-ip6tables", b"0\n");
                }
                "modprobe overlay" => s.write("sys/module/overlay/refcnt", b"0\n"),
                "sysctl --system" => {
                    for (k, _) in SYSCTLS {
                        let p = format!("proc/sys/{}", k.replace('.', "/"));
                        if s.exists(&p) {
                            s.write(&p, b"1\n");
                        }
                    }
                }
                _ => {}
            }
            None
        });
        w
    }

    #[tokio::test]
    async fn loads_modules_before_applying_sysctls_and_persists_both() {
        let w = kernel_world();
        let host = w.host_master();
        let c = Kernel.check(&host).await.unwrap();
        assert_eq!(c.changes.len(), 5, "{:?}", c.changes);
        assert!(w.runner.lines().is_empty(), "check runs nothing");
        Kernel.apply(&host, &c).await.unwrap();
        Kernel.verify(&host).await.unwrap();
        assert_eq!(
            w.runner.lines(),
            vec![
                "modprobe overlay",
                "modprobe br_netfilter",
                "sysctl --system"
            ]
        );
        let conf = String::from_utf8(w.read("etc/sysctl.d/k8s.conf")).unwrap();
        assert!(conf.contains("net.ipv4.ip_forward = 1\n"), "{conf}");
        let mods = String::from_utf8(w.read("etc/modules-load.d/k8s.conf")).unwrap();
        assert!(mods.ends_with("overlay\nbr_netfilter\n"), "{mods}");
        assert!(Kernel.check(&host).await.unwrap().is_ok());
        assert_eq!(w.runner.lines().len(), 3, "second check runs nothing");
    }

    #[tokio::test]
    async fn an_overriding_sysctl_file_fails_verify_with_what_to_do() {
        let w = kernel_world();
        w.runner.respond(|_| None);
        let host = w.host_master();
        // sysctl --system "applies" but a later file keeps ip_forward at 0.
        let stubborn = w.clone();
        let host2 = host.clone();
        let c = Kernel.check(&host2).await.unwrap();
        Kernel.apply(&host, &c).await.unwrap();
        stubborn.write("proc/sys/net/ipv4/ip_forward", b"0\n");
        let err = Kernel.verify(&host).await.unwrap_err().to_string();
        assert!(err.contains("overrides /etc/sysctl.d/k8s.conf"), "{err}");
    }
}
