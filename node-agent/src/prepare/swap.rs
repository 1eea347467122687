//! Swap off, for good: the kubelet refuses to start with swap on (kubeadm only warns, then times
//! out after 4 minutes).
//!
//! - `etc/fstab`: entries whose third whitespace-separated field is `swap` are commented out
//!   with [`MARKER`]; every other byte stays as it was (comments, tabs, CRLF, a missing final
//!   newline, non-UTF-8 bytes). Written atomically; the previous file is kept as
//!   `etc/fstab.k8s-prep.bak`.
//! - Every swap unit systemd knows, and the unit of every active swap area, is masked
//!   (`systemctl mask`), so neither the fstab generator nor a `.swap` unit brings swap back.
//! - Every active swap area in `proc/swaps` (`\040` unescaped) is turned off with `swapoff PATH`.

use std::collections::BTreeSet;

use super::{Check, Host, Step, StepError, fsx};
use crate::exec::Cmd;
use crate::facts::parse_proc_swaps;

/// Prefix put in front of each swap entry commented out in fstab.
pub const MARKER: &[u8] = b"# swap disabled for Kubernetes (the kubelet needs swap off): ";
/// The fstab.
pub const FSTAB: &str = "/etc/fstab";
/// The copy of fstab as it was before the last change.
pub const FSTAB_BACKUP: &str = "/etc/fstab.k8s-prep.bak";
/// The kernel's list of active swap areas.
pub const PROC_SWAPS: &str = "/proc/swaps";

/// Whether an fstab line (without its `\n`) is an active swap entry: not a comment, and its
/// third whitespace-separated field is `swap`.
pub fn is_swap_entry(line: &[u8]) -> bool {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let mut fields = line
        .split(|b| *b == b' ' || *b == b'\t')
        .filter(|f| !f.is_empty());
    match fields.next() {
        None => false,
        Some(first) if first.starts_with(b"#") => false,
        Some(_) => fields.nth(1) == Some(b"swap".as_slice()),
    }
}

/// Comments out the swap entries of an fstab; returns the new text and the entries (as text).
/// Only swap entry lines change, by gaining [`MARKER`] in front.
pub fn comment_swap_entries(fstab: &[u8]) -> (Vec<u8>, Vec<String>) {
    let mut out = Vec::with_capacity(fstab.len() + MARKER.len());
    let mut entries = Vec::new();
    for line in fstab.split_inclusive(|b| *b == b'\n') {
        let body = line.strip_suffix(b"\n").unwrap_or(line);
        if is_swap_entry(body) {
            out.extend_from_slice(MARKER);
            let first = body
                .strip_suffix(b"\r")
                .unwrap_or(body)
                .split(|b| *b == b' ' || *b == b'\t')
                .find(|f| !f.is_empty())
                .unwrap_or_default();
            entries.push(String::from_utf8_lossy(first).into_owned());
        }
        out.extend_from_slice(line);
    }
    (out, entries)
}

/// The systemd unit name of a swap area at `path` (`systemd-escape --suffix=swap --path`).
pub fn swap_unit_name(path: &str) -> String {
    let trimmed = path.trim_matches('/');
    let mut out = String::new();
    for (i, b) in trimmed.bytes().enumerate() {
        match b {
            b'/' => out.push('-'),
            b'.' if i == 0 => out.push_str("\\x2e"),
            b if b.is_ascii_alphanumeric() || b == b':' || b == b'_' || b == b'.' => {
                out.push(b as char)
            }
            b => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    if out.is_empty() {
        out.push('-');
    }
    out + ".swap"
}

/// The swap-off step.
#[derive(Debug, Clone, Copy)]
pub struct SwapOff;

struct Found {
    fstab: Option<(Vec<u8>, Vec<u8>)>,
    entries: Vec<String>,
    active: Vec<String>,
    unmasked: Vec<String>,
}

async fn survey(host: &Host) -> Result<Found, StepError> {
    let (fstab, entries) = match fsx::read_opt(&host.path(FSTAB))? {
        Some(old) => {
            let (new, entries) = comment_swap_entries(&old);
            if entries.is_empty() {
                (None, entries)
            } else {
                (Some((old, new)), entries)
            }
        }
        None => (None, Vec::new()),
    };
    let active: Vec<String> = fsx::read_text_opt(&host.path(PROC_SWAPS))?
        .map(|t| parse_proc_swaps(&t).into_iter().map(|s| s.path).collect())
        .unwrap_or_default();
    let listed = host
        .run(Cmd::new("systemctl").args([
            "list-units",
            "--type=swap",
            "--all",
            "--plain",
            "--no-legend",
            "--no-pager",
        ]))
        .await?
        .stdout_str();
    let mut units: BTreeSet<String> = listed
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|u| u.ends_with(".swap"))
        .map(str::to_string)
        .collect();
    units.extend(active.iter().map(|p| swap_unit_name(p)));
    let mut unmasked = Vec::new();
    for unit in units {
        let out = host
            .output(Cmd::new("systemctl").args(["is-enabled", &unit]))
            .await?;
        if out.stdout_str().trim() != "masked" {
            unmasked.push(unit);
        }
    }
    Ok(Found {
        fstab,
        entries,
        active,
        unmasked,
    })
}

#[tonic::async_trait]
impl Step for SwapOff {
    fn name(&self) -> &'static str {
        "swap"
    }

    async fn check(&self, host: &Host) -> Result<Check, StepError> {
        let f = survey(host).await?;
        let mut changes = Vec::new();
        if f.fstab.is_some() {
            changes.push(format!(
                "comment out swap in {FSTAB}: {} (backup {FSTAB_BACKUP})",
                f.entries.join(", ")
            ));
        }
        changes.extend(f.unmasked.iter().map(|u| format!("mask {u}")));
        changes.extend(f.active.iter().map(|p| format!("swapoff {p}")));
        Ok(Check {
            changes,
            state: "swap is off, not in fstab, swap units masked".into(),
        })
    }

    async fn apply(&self, host: &Host, _check: &Check) -> Result<(), StepError> {
        let f = survey(host).await?;
        if let Some((old, new)) = &f.fstab {
            fsx::write_if_changed(&host.path(FSTAB_BACKUP), old, 0o644)?;
            fsx::write_if_changed(&host.path(FSTAB), new, 0o644)?;
        }
        for unit in &f.unmasked {
            host.run(Cmd::new("systemctl").args(["mask", unit])).await?;
        }
        for path in &f.active {
            host.run(Cmd::new("swapoff").arg(path)).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prepare::testutil::World;

    const UBUNTU_FSTAB: &[u8] = b"# /etc/fstab: static file system information.\n\
        /dev/disk/by-uuid/5f8e / ext4 defaults 0 1\n\
        /swap.img\tnone\tswap\tsw\t0\t0\n";

    #[test]
    fn only_the_swap_line_gains_the_marker() {
        let (out, entries) = comment_swap_entries(UBUNTU_FSTAB);
        assert_eq!(entries, vec!["/swap.img"]);
        let mut want = b"# /etc/fstab: static file system information.\n\
            /dev/disk/by-uuid/5f8e / ext4 defaults 0 1\n"
            .to_vec();
        want.extend_from_slice(MARKER);
        want.extend_from_slice(b"/swap.img\tnone\tswap\tsw\t0\t0\n");
        assert_eq!(out, want);
        let (again, none) = comment_swap_entries(&out);
        assert_eq!(again, out, "commenting is idempotent");
        assert!(none.is_empty());
    }

    #[test]
    fn crlf_uuid_label_escaped_names_and_no_final_newline() {
        let input = b"UUID=abc none swap sw 0 0\r\nLABEL=sw\tnone  swap defaults\r\n\
            /var/my\\040swap none swap sw 0 0\n  # /x none swap sw\n/a /b\n/dev/sdb1 none swap sw";
        let (out, entries) = comment_swap_entries(input);
        assert_eq!(
            entries,
            vec!["UUID=abc", "LABEL=sw", "/var/my\\040swap", "/dev/sdb1"]
        );
        let text = String::from_utf8(out).unwrap();
        let m = std::str::from_utf8(MARKER).unwrap();
        assert_eq!(
            text,
            format!(
                "{m}UUID=abc none swap sw 0 0\r\n{m}LABEL=sw\tnone  swap defaults\r\n\
                 {m}/var/my\\040swap none swap sw 0 0\n  # /x none swap sw\n/a /b\n{m}/dev/sdb1 none swap sw"
            )
        );
    }

    #[test]
    fn unit_names_are_systemd_escaped() {
        assert_eq!(swap_unit_name("/swap.img"), "swap.img.swap");
        assert_eq!(swap_unit_name("/var/my swap"), "var-my\\x20swap.swap");
        assert_eq!(swap_unit_name("/dev/sdb2"), "dev-sdb2.swap");
    }

    #[tokio::test]
    async fn swap_step_comments_fstab_masks_and_swaps_off_then_is_unchanged() {
        let w = World::new();
        w.write("etc/fstab", UBUNTU_FSTAB);
        w.write(
            "proc/swaps",
            b"Filename\tType\tSize\tUsed\tPriority\n/var/my\\040swap file 100 0 -2\n",
        );
        let fixed = w.clone();
        w.runner.respond(move |c| {
            let line = c.argv().join(" ");
            if line.starts_with("swapoff ") {
                fixed.write("proc/swaps", b"Filename\tType\tSize\tUsed\tPriority\n");
            }
            if line.starts_with("systemctl list-units") {
                return Some(World::ok("swap.img.swap loaded active active /swap.img\n"));
            }
            if line.starts_with("systemctl is-enabled") {
                let masked = fixed.marked(&line);
                return Some(World::ok(if masked { "masked\n" } else { "generated\n" }));
            }
            if line.starts_with("systemctl mask ") {
                fixed.mark(&line.replace(" mask ", " is-enabled "));
            }
            None
        });
        let host = w.host_master();
        let c = SwapOff.check(&host).await.unwrap();
        assert_eq!(c.changes.len(), 4, "{:?}", c.changes);
        assert!(w.runner.lines().iter().all(|l| !w.is_mutating(l)));
        SwapOff.apply(&host, &c).await.unwrap();
        SwapOff.verify(&host).await.unwrap();
        assert_eq!(w.read("etc/fstab.k8s-prep.bak"), UBUNTU_FSTAB);
        assert!(w.read("etc/fstab").starts_with(b"# /etc/fstab"));
        let lines = w.runner.lines();
        assert!(
            lines.contains(&"swapoff /var/my swap".to_string()),
            "{lines:?}"
        );
        assert!(lines.contains(&"systemctl mask swap.img.swap".to_string()));
        assert!(lines.contains(&"systemctl mask var-my\\x20swap.swap".to_string()));
        let before = w.runner.lines().len();
        assert!(SwapOff.check(&host).await.unwrap().is_ok());
        assert!(w.runner.lines()[before..].iter().all(|l| !w.is_mutating(l)));
    }
}
