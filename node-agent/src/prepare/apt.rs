//! apt helpers shared by the container-runtime and Kubernetes-packages steps: a signed
//! repository (key in `etc/apt/keyrings`, a `.list` line with `signed-by`), installed versions
//! (`dpkg-query`), holds (`apt-mark`), and non-interactive installs.

use std::collections::{BTreeMap, BTreeSet};

use super::{Host, StepError, fsx};
use crate::exec::Cmd;

/// Where apt keys live (Ubuntu ≥ 22.04 creates it; so do we).
pub const KEYRINGS: &str = "/etc/apt/keyrings";

/// An `apt-get` command run non-interactively (no debconf prompt can block a daemon).
pub fn apt_get<I, S>(args: I) -> Cmd
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    Cmd::new("apt-get")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .args(args)
}

/// A third-party apt repository signed by its own key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repo {
    /// Short name for messages, e.g. `Docker`.
    pub name: &'static str,
    /// Host path of the key file, e.g. `/etc/apt/keyrings/docker.asc`.
    pub keyring: &'static str,
    /// Where the key is downloaded from (`curl`; `file://` works too).
    pub key_url: String,
    /// Whether the downloaded (armored) key is converted with `gpg --dearmor`.
    pub dearmor: bool,
    /// Host path of the sources list, e.g. `/etc/apt/sources.list.d/docker.list`.
    pub list: &'static str,
    /// The `deb [signed-by=…] URL SUITE COMPONENTS` line.
    pub line: String,
}

impl Repo {
    fn list_content(&self) -> String {
        format!("{}\n", self.line)
    }

    /// What must change: the key is fetched when missing or when the repository line changes.
    pub fn check(&self, host: &Host) -> Result<Vec<String>, StepError> {
        let list_ok = fsx::has_content(&host.path(self.list), self.list_content().as_bytes())?;
        let key_ok = std::fs::metadata(host.path(self.keyring)).is_ok_and(|m| m.len() > 0);
        let mut changes = Vec::new();
        if !key_ok || !list_ok {
            changes.push(format!("fetch the {} apt key {}", self.name, self.key_url));
        }
        if !list_ok {
            changes.push(format!("write {} ({})", self.list, self.line));
        }
        Ok(changes)
    }

    /// Installs the key and the list; returns whether anything changed.
    pub async fn apply(&self, host: &Host) -> Result<bool, StepError> {
        if self.check(host)?.is_empty() {
            return Ok(false);
        }
        let keyring = host.path(self.keyring);
        let dir = host.path(KEYRINGS);
        std::fs::create_dir_all(&dir).map_err(|e| StepError::file(&dir, "create directory", e))?;
        let file = keyring
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let download = dir.join(format!(".{file}.download"));
        let dearmored = dir.join(format!(".{file}.dearmored"));
        let result = async {
            host.run(Cmd::new("curl").args([
                "-fsSL",
                "-o",
                &download.to_string_lossy(),
                &self.key_url,
            ]))
            .await?;
            let key_file = if self.dearmor {
                host.run(Cmd::new("gpg").args([
                    "--batch",
                    "--yes",
                    "--dearmor",
                    "-o",
                    &dearmored.to_string_lossy(),
                    &download.to_string_lossy(),
                ]))
                .await?;
                &dearmored
            } else {
                &download
            };
            let key = std::fs::read(key_file).map_err(|e| StepError::file(key_file, "read", e))?;
            if key.is_empty() {
                return Err(StepError::unfit(format!(
                    "the {} key from {} is empty: check packages key URL in cluster.yaml",
                    self.name, self.key_url
                )));
            }
            fsx::write_if_changed(&keyring, &key, 0o644)
        }
        .await;
        let _ = std::fs::remove_file(&download);
        let _ = std::fs::remove_file(&dearmored);
        result?;
        fsx::write_if_changed(&host.path(self.list), self.list_content().as_bytes(), 0o644)?;
        Ok(true)
    }
}

/// Installed versions of `pkgs` (packages not installed are absent).
pub async fn installed(host: &Host, pkgs: &[&str]) -> Result<BTreeMap<String, String>, StepError> {
    let out = host
        .output(
            Cmd::new("dpkg-query")
                .args(["-W", "--showformat=${Package}\\t${Status}\\t${Version}\\n"])
                .args(pkgs.iter().copied()),
        )
        .await?;
    Ok(parse_dpkg_query(&out.stdout_str()))
}

/// Parses `Package\tStatus\tVersion` lines, keeping installed packages.
pub fn parse_dpkg_query(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.split('\t');
            let (pkg, status, version) = (f.next()?, f.next()?, f.next()?);
            (status.trim().ends_with(" installed") && !version.trim().is_empty())
                .then(|| (pkg.trim().to_string(), version.trim().to_string()))
        })
        .collect()
}

/// Packages on hold.
pub async fn held(host: &Host) -> Result<BTreeSet<String>, StepError> {
    let out = host.run(Cmd::new("apt-mark").arg("showhold")).await?;
    Ok(out
        .stdout_str()
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect())
}

/// `apt-get update`, then installs `specs` (`name` or `name=version`), keeping changed
/// configuration files of ours and allowing a pinned downgrade or a held package to move.
pub async fn install(host: &Host, specs: &[String]) -> Result<(), StepError> {
    host.run(apt_get(["update", "-q"])).await?;
    host.run(
        apt_get([
            "install",
            "-y",
            "-q",
            "--allow-downgrades",
            "--allow-change-held-packages",
            "-o",
            "Dpkg::Options::=--force-confold",
        ])
        .args(specs.iter().cloned()),
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dpkg_query_keeps_only_installed_packages() {
        let m = parse_dpkg_query(
            "kubelet\tinstall ok installed\t1.35.0-1.1\nkubeadm\tdeinstall ok config-files\t1.34.1-1.1\nkubectl\tunknown ok not-installed\t\n",
        );
        assert_eq!(m.len(), 1);
        assert_eq!(m["kubelet"], "1.35.0-1.1");
    }
}
