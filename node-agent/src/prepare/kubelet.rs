//! Kubelet node IP: `KUBELET_EXTRA_ARGS=--node-ip=<ip>` in `etc/default/kubelet` (read by
//! kubeadm's kubelet drop-in), so a two-NIC Vagrant VM registers its private-network address and
//! not its NAT one. An existing `KUBELET_EXTRA_ARGS` keeps its other flags and gets `--node-ip`
//! replaced in place; other lines stay as they are. `systemctl daemon-reload` and
//! `systemctl restart kubelet` only when the file changed.

use std::net::Ipv4Addr;

use super::{Check, Host, Step, StepError, fsx};
use crate::exec::Cmd;

/// The kubelet's environment file on Debian/Ubuntu.
pub const DEFAULTS: &str = "/etc/default/kubelet";

/// `text` with `--node-ip=<ip>` in its (last) `KUBELET_EXTRA_ARGS`, added if missing.
pub fn with_node_ip(text: &str, ip: Ipv4Addr) -> String {
    let flag = format!("--node-ip={ip}");
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let target = lines
        .iter()
        .rposition(|l| l.trim_start().starts_with("KUBELET_EXTRA_ARGS="));
    match target {
        Some(i) => {
            let line = &lines[i];
            let indent = &line[..line.len() - line.trim_start().len()];
            let value = line.trim_start()["KUBELET_EXTRA_ARGS=".len()..].trim();
            let unquoted = value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .or_else(|| value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
                .unwrap_or(value);
            let mut args: Vec<String> = Vec::new();
            let mut replaced = false;
            let mut words = unquoted.split_whitespace();
            while let Some(w) = words.next() {
                if w == "--node-ip" {
                    words.next();
                } else if !w.starts_with("--node-ip=") {
                    args.push(w.to_string());
                    continue;
                }
                if !replaced {
                    args.push(flag.clone());
                    replaced = true;
                }
            }
            if !replaced {
                args.push(flag);
            }
            let joined = args.join(" ");
            lines[i] = if args.len() > 1 {
                format!("{indent}KUBELET_EXTRA_ARGS=\"{joined}\"")
            } else {
                format!("{indent}KUBELET_EXTRA_ARGS={joined}")
            };
        }
        None => lines.push(format!("KUBELET_EXTRA_ARGS={flag}")),
    }
    let mut out = lines.join("\n");
    out.push('\n');
    out
}

/// The kubelet node-IP step.
#[derive(Debug, Clone, Copy)]
pub struct KubeletNodeIp;

fn wanted(host: &Host) -> Result<(Option<String>, String), StepError> {
    let old = fsx::read_text_opt(&host.path(DEFAULTS))?;
    let new = with_node_ip(old.as_deref().unwrap_or(""), host.spec.ip);
    Ok((old, new))
}

#[tonic::async_trait]
impl Step for KubeletNodeIp {
    fn name(&self) -> &'static str {
        "kubelet-node-ip"
    }

    async fn check(&self, host: &Host) -> Result<Check, StepError> {
        let (old, new) = wanted(host)?;
        let mut changes = Vec::new();
        if old.as_deref() != Some(new.as_str()) {
            changes.push(format!(
                "set --node-ip={} in {DEFAULTS}, restart kubelet",
                host.spec.ip
            ));
        }
        Ok(Check {
            changes,
            state: format!("kubelet runs with --node-ip={}", host.spec.ip),
        })
    }

    async fn apply(&self, host: &Host, _check: &Check) -> Result<(), StepError> {
        let (_, new) = wanted(host)?;
        if fsx::write_if_changed(&host.path(DEFAULTS), new.as_bytes(), 0o644)? {
            host.run(Cmd::new("systemctl").arg("daemon-reload")).await?;
            host.run(Cmd::new("systemctl").args(["restart", "kubelet"]))
                .await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prepare::testutil::World;

    const IP: Ipv4Addr = Ipv4Addr::new(192, 168, 50, 11);

    #[test]
    fn empty_package_default_gets_the_flag() {
        assert_eq!(
            with_node_ip("KUBELET_EXTRA_ARGS=\n", IP),
            "KUBELET_EXTRA_ARGS=--node-ip=192.168.50.11\n"
        );
        assert_eq!(
            with_node_ip("", IP),
            "KUBELET_EXTRA_ARGS=--node-ip=192.168.50.11\n"
        );
    }

    #[test]
    fn existing_value_is_replaced_in_place_keeping_other_flags_and_lines() {
        let text = "# kubelet settings\nKUBELET_EXTRA_ARGS=\"--max-pods=50 --node-ip=10.0.2.15 --v=2\"\nOTHER=1\n";
        assert_eq!(
            with_node_ip(text, IP),
            "# kubelet settings\nKUBELET_EXTRA_ARGS=\"--max-pods=50 --node-ip=192.168.50.11 --v=2\"\nOTHER=1\n"
        );
        assert_eq!(
            with_node_ip("KUBELET_EXTRA_ARGS=--node-ip 10.0.2.15\n", IP),
            "KUBELET_EXTRA_ARGS=--node-ip=192.168.50.11\n"
        );
    }

    #[tokio::test]
    async fn restarts_kubelet_only_when_the_file_changed() {
        let w = World::new();
        w.write("etc/default/kubelet", b"KUBELET_EXTRA_ARGS=\n");
        let host = w.host_master();
        let c = KubeletNodeIp.check(&host).await.unwrap();
        assert!(!c.is_ok());
        KubeletNodeIp.apply(&host, &c).await.unwrap();
        KubeletNodeIp.verify(&host).await.unwrap();
        assert_eq!(
            w.runner.lines(),
            vec!["systemctl daemon-reload", "systemctl restart kubelet"]
        );
        assert!(KubeletNodeIp.check(&host).await.unwrap().is_ok());
        assert_eq!(w.runner.lines().len(), 2);
    }
}
