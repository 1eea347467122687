//! The container runtime: containerd from Docker's apt repository, configured for the kubelet.
//!
//! Docker's `containerd.io` ships `etc/containerd/config.toml` with `disabled_plugins = ["cri"]`,
//! so kubeadm fails `[ERROR CRI]`. We regenerate the file from `containerd config default` and
//! set `SystemdCgroup = true` on the runc runtime by editing the TOML (config version 2:
//! `io.containerd.grpc.v1.cri`; version 3, containerd 2.x: `io.containerd.cri.v1.runtime`) —
//! a `sed` silently does nothing on builds that omit the key. containerd is restarted only when
//! the file changed (or it is not running), then the CRI plugin must answer on the socket.

use std::time::Duration;

use toml_edit::{DocumentMut, Item, value};

use super::apt::{self, Repo};
use super::preflight::os_release;
use super::{Check, Host, Step, StepError, fsx};
use crate::exec::Cmd;

/// The containerd configuration file.
pub const CONFIG: &str = "/etc/containerd/config.toml";
/// How long containerd may take to answer after a restart.
const CRI_WAIT: Duration = Duration::from_secs(20);

/// The Docker apt repository for this host's Ubuntu release.
pub fn docker_repo(host: &Host) -> Result<Repo, StepError> {
    let os = os_release(host)?;
    let codename = os
        .get("VERSION_CODENAME")
        .or_else(|| os.get("UBUNTU_CODENAME"))
        .filter(|c| !c.is_empty())
        .ok_or_else(|| {
            StepError::unfit(
                "etc/os-release has no VERSION_CODENAME: cannot pick Docker's repository suite",
            )
        })?;
    Ok(Repo {
        name: "Docker",
        keyring: "/etc/apt/keyrings/docker.asc",
        key_url: host.config.packages.docker_key_url.clone(),
        dearmor: false,
        list: "/etc/apt/sources.list.d/docker.list",
        line: format!(
            "deb [signed-by=/etc/apt/keyrings/docker.asc] {} {codename} stable",
            host.config.packages.docker_repo.trim_end_matches('/')
        ),
    })
}

/// The packages to install: containerd, and Docker itself when cluster.yaml asks.
pub fn runtime_packages(host: &Host) -> Vec<&'static str> {
    let mut p = vec!["containerd.io"];
    if host.config.packages.install_docker {
        p.extend(["docker-ce", "docker-ce-cli"]);
    }
    p
}

/// `containerd config default` output with `SystemdCgroup = true` on the runc runtime.
pub fn with_systemd_cgroup(default: &str) -> Result<String, String> {
    let mut doc: DocumentMut = default
        .parse()
        .map_err(|e| format!("`containerd config default` printed invalid TOML: {e}"))?;
    let version = doc.get("version").and_then(Item::as_integer).unwrap_or(1);
    let cri = match version {
        2 => "io.containerd.grpc.v1.cri",
        3 => "io.containerd.cri.v1.runtime",
        v => {
            return Err(format!(
                "containerd config version {v} is not supported (want 2 or 3): install a current containerd.io"
            ));
        }
    };
    let path = ["plugins", cri, "containerd", "runtimes", "runc", "options"];
    let mut table = doc.as_table_mut();
    for key in path {
        let item = table.entry(key).or_insert_with(|| {
            let mut t = toml_edit::Table::new();
            t.set_implicit(true);
            Item::Table(t)
        });
        if let Some(inline) = item.as_inline_table().cloned() {
            *item = Item::Table(inline.into_table());
        }
        table = item
            .as_table_mut()
            .ok_or_else(|| format!("containerd config: {key} is not a table"))?;
    }
    table.set_implicit(false);
    match table.get_mut("SystemdCgroup").and_then(Item::as_value_mut) {
        Some(v) => {
            // Keep the line's layout; only the value changes.
            let decor = v.decor().clone();
            *v = true.into();
            *v.decor_mut() = decor;
        }
        None => {
            // Indent like the other keys of the table.
            let indent = table
                .iter()
                .next()
                .and_then(|(k, _)| table.key(k))
                .and_then(|k| k.leaf_decor().prefix().and_then(|p| p.as_str()))
                .map(str::to_string);
            table.insert("SystemdCgroup", value(true));
            if let (Some(indent), Some(mut key)) = (indent, table.key_mut("SystemdCgroup")) {
                key.leaf_decor_mut().set_prefix(indent);
            }
        }
    }
    Ok(doc.to_string())
}

/// Whether `ctr plugins ls` shows the CRI service plugin `ok`.
pub fn cri_ok(plugins_ls: &str) -> bool {
    plugins_ls.lines().any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.len() >= 3 && f[0] == "io.containerd.grpc.v1" && f[1] == "cri" && f.last() == Some(&"ok")
    })
}

/// The container-runtime step.
#[derive(Debug, Clone, Copy)]
pub struct ContainerRuntime;

struct Found {
    repo: Repo,
    repo_changes: Vec<String>,
    missing: Vec<&'static str>,
    config: Option<String>,
    enabled: bool,
    active: bool,
    /// `None` when the CRI plugin answers `ok`; else what `ctr plugins ls` said.
    cri: Option<String>,
}

async fn desired_config(host: &Host) -> Result<String, StepError> {
    let out = host
        .run(Cmd::new("containerd").args(["config", "default"]))
        .await?;
    with_systemd_cgroup(&out.stdout_str()).map_err(StepError::unfit)
}

async fn unit_enabled(host: &Host) -> Result<bool, StepError> {
    let out = host
        .output(Cmd::new("systemctl").args(["is-enabled", "containerd"]))
        .await?;
    Ok(out.stdout_str().trim() == "enabled")
}

async fn unit_active(host: &Host) -> Result<bool, StepError> {
    let out = host
        .output(Cmd::new("systemctl").args(["is-active", "containerd"]))
        .await?;
    Ok(out.code == 0)
}

async fn survey(host: &Host) -> Result<Found, StepError> {
    let repo = docker_repo(host)?;
    let repo_changes = repo.check(host)?;
    let wanted = runtime_packages(host);
    let have = apt::installed(host, &wanted).await?;
    let missing: Vec<&str> = wanted
        .into_iter()
        .filter(|p| !have.contains_key(*p))
        .collect();
    if !have.contains_key("containerd.io") {
        return Ok(Found {
            repo,
            repo_changes,
            missing,
            config: None,
            enabled: false,
            active: false,
            cri: Some("containerd is not installed".into()),
        });
    }
    let want = desired_config(host).await?;
    let config = (!fsx::has_content(&host.path(CONFIG), want.as_bytes())?).then_some(want);
    let enabled = unit_enabled(host).await?;
    let active = unit_active(host).await?;
    let cri = if active {
        let out = host.output(Cmd::new("ctr").args(["plugins", "ls"])).await?;
        if out.code == 0 && cri_ok(&out.stdout_str()) {
            None
        } else {
            let said = String::from_utf8_lossy(&out.stderr);
            let row = out
                .stdout_str()
                .lines()
                .find(|l| l.contains(" cri "))
                .map(str::to_string);
            Some(format!(
                "`ctr plugins ls` exit {}: {}",
                out.code,
                row.unwrap_or_else(|| said
                    .trim()
                    .lines()
                    .last()
                    .unwrap_or("no cri plugin listed")
                    .to_string())
            ))
        }
    } else {
        Some("containerd is not active".into())
    };
    Ok(Found {
        repo,
        repo_changes,
        missing,
        config,
        enabled,
        active,
        cri,
    })
}

#[tonic::async_trait]
impl Step for ContainerRuntime {
    fn name(&self) -> &'static str {
        "container-runtime"
    }

    async fn check(&self, host: &Host) -> Result<Check, StepError> {
        let f = survey(host).await?;
        let mut changes = f.repo_changes.clone();
        if !f.missing.is_empty() {
            changes.push(format!("install {}", f.missing.join(" ")));
        }
        let installed = !f.missing.contains(&"containerd.io");
        if f.config.is_some() || !installed {
            changes.push(format!(
                "write {CONFIG} from `containerd config default` with SystemdCgroup = true"
            ));
        }
        if installed && !f.enabled {
            changes.push("enable containerd".into());
        }
        if f.config.is_some() || !installed || !f.active {
            changes.push("restart containerd".into());
        } else if let Some(why) = &f.cri {
            changes.push(format!(
                "restart containerd (the CRI plugin does not answer: {why})"
            ));
        }
        Ok(Check {
            changes,
            state: "containerd installed, CRI enabled with systemd cgroups, answering".into(),
        })
    }

    async fn apply(&self, host: &Host, _check: &Check) -> Result<(), StepError> {
        let f = survey(host).await?;
        f.repo.apply(host).await?;
        if !f.missing.is_empty() {
            let specs: Vec<String> = f.missing.iter().map(|p| p.to_string()).collect();
            apt::install(host, &specs).await?;
        }
        let want = desired_config(host).await?;
        let wrote = fsx::write_if_changed(&host.path(CONFIG), want.as_bytes(), 0o644)?;
        if !unit_enabled(host).await? {
            host.run(Cmd::new("systemctl").args(["enable", "containerd"]))
                .await?;
        }
        if wrote || !unit_active(host).await? || f.cri.is_some() {
            host.run(Cmd::new("systemctl").args(["restart", "containerd"]))
                .await?;
        }
        Ok(())
    }

    async fn verify(&self, host: &Host) -> Result<(), StepError> {
        let deadline = tokio::time::Instant::now() + CRI_WAIT;
        loop {
            let again = self.check(host).await?;
            if again.is_ok() {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(StepError::NotConverged(vec![format!(
                    "{} (see `journalctl -u containerd`)",
                    again.changes.join("; ")
                )]));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prepare::testutil::World;

    const V2_DEFAULT: &str = r#"disabled_plugins = []
version = 2

[plugins]
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "registry.k8s.io/pause:3.8"
    [plugins."io.containerd.grpc.v1.cri".containerd]
      default_runtime_name = "runc"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes]
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
          runtime_type = "io.containerd.runc.v2"
          [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
            BinaryName = ""
            SystemdCgroup = false
"#;

    const V3_DEFAULT_WITHOUT_KEY: &str = r#"version = 3
root = '/var/lib/containerd'

[plugins]
  [plugins.'io.containerd.cri.v1.runtime']
    enable_selinux = false
    [plugins.'io.containerd.cri.v1.runtime'.containerd]
      default_runtime_name = 'runc'
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes]
        [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
          runtime_type = 'io.containerd.runc.v2'
"#;

    #[test]
    fn version_2_config_gets_systemd_cgroup_in_place() {
        let out = with_systemd_cgroup(V2_DEFAULT).unwrap();
        assert!(out.contains("SystemdCgroup = true"), "{out}");
        assert!(!out.contains("SystemdCgroup = false"), "{out}");
        assert!(out.contains("BinaryName = \"\""), "other keys kept: {out}");
        assert!(
            out.contains("\n            SystemdCgroup = true\n"),
            "layout kept: {out}"
        );
        let doc: DocumentMut = out.parse().unwrap();
        assert_eq!(
            doc["plugins"]["io.containerd.grpc.v1.cri"]["containerd"]["runtimes"]["runc"]["options"]
                ["SystemdCgroup"]
                .as_bool(),
            Some(true)
        );
    }

    #[test]
    fn version_3_config_without_the_key_gets_it_added() {
        let out = with_systemd_cgroup(V3_DEFAULT_WITHOUT_KEY).unwrap();
        let doc: DocumentMut = out.parse().unwrap();
        assert_eq!(
            doc["plugins"]["io.containerd.cri.v1.runtime"]["containerd"]["runtimes"]["runc"]
                ["options"]["SystemdCgroup"]
                .as_bool(),
            Some(true),
            "{out}"
        );
        assert_eq!(with_systemd_cgroup(&out).unwrap(), out, "idempotent");
    }

    #[test]
    fn old_config_versions_are_refused() {
        let e = with_systemd_cgroup("root = \"/var/lib/containerd\"\n").unwrap_err();
        assert!(e.contains("version 1 is not supported"), "{e}");
    }

    #[test]
    fn cri_plugin_status_is_read_from_ctr() {
        assert!(cri_ok(
            "TYPE ID PLATFORMS STATUS\nio.containerd.grpc.v1   cri   -   ok\n"
        ));
        assert!(!cri_ok(
            "TYPE ID PLATFORMS STATUS\nio.containerd.grpc.v1   cri   -   skip\n"
        ));
    }

    /// A fake host where apt, systemctl and ctr keep state like the real tools.
    pub(crate) fn runtime_world() -> World {
        let w = World::new();
        w.write(
            "etc/os-release",
            b"ID=ubuntu\nVERSION_ID=\"24.04\"\nVERSION_CODENAME=noble\n",
        );
        w.fake_downloads();
        let s = w.clone();
        w.runner.respond(move |c| {
            let line = c.argv().join(" ");
            let installed = s.marked("containerd.io");
            if line.starts_with("dpkg-query") {
                let out = if installed {
                    "containerd.io\tinstall ok installed\t1.7.28-1\n"
                } else {
                    ""
                };
                return Some(World::ok(out));
            } else if line.contains("apt-get install") {
                s.mark("containerd.io");
                s.mark("active");
                s.write(
                    "etc/containerd/config.toml",
                    b"disabled_plugins = [\"cri\"]\n",
                );
            } else if line == "containerd config default" {
                return Some(World::ok(V2_DEFAULT));
            } else if line == "systemctl is-enabled containerd" {
                return Some(World::ok("enabled\n"));
            } else if line == "systemctl is-active containerd" {
                return Some(if s.marked("active") {
                    World::ok("active\n")
                } else {
                    World::fail(3, "")
                });
            } else if line == "systemctl restart containerd" {
                s.mark("active");
                s.mark("restarted");
            } else if line.starts_with("ctr ") {
                let cfg = String::from_utf8(s.read("etc/containerd/config.toml")).unwrap();
                let status = if cfg.contains("\"cri\"") {
                    "error"
                } else {
                    "ok"
                };
                return Some(World::ok(&format!(
                    "TYPE ID PLATFORMS STATUS\nio.containerd.grpc.v1 cri - {status}\n"
                )));
            }
            None
        });
        w
    }

    #[tokio::test]
    async fn fresh_host_gets_repo_containerd_config_and_one_restart() {
        let w = runtime_world();
        let host = w.host_master();
        let c = ContainerRuntime.check(&host).await.unwrap();
        assert!(!c.is_ok());
        assert!(w.runner.lines().iter().all(|l| !w.is_mutating(l)));
        ContainerRuntime.apply(&host, &c).await.unwrap();
        ContainerRuntime.verify(&host).await.unwrap();
        let list = String::from_utf8(w.read("etc/apt/sources.list.d/docker.list")).unwrap();
        assert_eq!(
            list,
            "deb [signed-by=/etc/apt/keyrings/docker.asc] https://download.docker.com/linux/ubuntu noble stable\n"
        );
        assert!(w.exists("etc/apt/keyrings/docker.asc"));
        assert!(!w.exists("etc/apt/keyrings/.docker.asc.download"));
        let cfg = String::from_utf8(w.read("etc/containerd/config.toml")).unwrap();
        assert!(cfg.contains("SystemdCgroup = true"));
        let lines = w.runner.lines();
        let restarts = lines.iter().filter(|l| l.contains("restart")).count();
        assert_eq!(restarts, 1, "{lines:?}");
        let update = lines.iter().position(|l| l.contains("apt-get update"));
        let install = lines.iter().position(|l| l.contains("apt-get install"));
        assert!(update < install && update.is_some(), "{lines:?}");

        let before = w.runner.lines().len();
        assert!(ContainerRuntime.check(&host).await.unwrap().is_ok());
        assert!(w.runner.lines()[before..].iter().all(|l| !w.is_mutating(l)));
    }

    #[tokio::test]
    async fn apt_failure_fails_with_argv_and_stderr() {
        let w = World::new();
        w.write("etc/os-release", b"ID=ubuntu\nVERSION_CODENAME=noble\n");
        w.fake_downloads();
        w.runner.respond(|c| {
            c.argv()
                .contains(&"update".to_string())
                .then(|| World::fail(100, "E: The repository is not signed."))
        });
        let host = w.host_master();
        let c = ContainerRuntime.check(&host).await.unwrap();
        let err = ContainerRuntime.apply(&host, &c).await.unwrap_err();
        let f = err.command_failure().expect("a command failure");
        assert_eq!(f.exit_code, 100);
        assert!(f.argv.contains(&"apt-get".to_string()), "{:?}", f.argv);
        assert!(f.stderr.contains("not signed"));
    }
}
