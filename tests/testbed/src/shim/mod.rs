//! Shim host tools: ONE multi-call binary (`hostshim`) symlinked into each simulated host's shim
//! directory as `systemctl`, `apt-get`, `kubeadm`, ... It dispatches on the name it was called by,
//! acts on that host's root (never on this machine), and appends argv, working directory, exit
//! code and whether it changed anything to the host's shim log (JSON lines), so tests can assert
//! what ran and that a second run changed nothing.
//!
//! The host context comes from environment variables set by the harness on the agent (whose
//! children inherit them): see [`host_env`]. Tools of packages that are not installed are not on
//! the PATH (the apt shim adds and removes their links), so running them fails like on a VM.

pub mod apt;
pub mod kubeadm;
pub mod net;
pub mod system;
pub mod systemctl;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde::{Deserialize, Serialize};

/// Host name.
pub const ENV_HOST: &str = "TESTBED_HOST";
/// Host IP from cluster.yaml.
pub const ENV_HOST_IP: &str = "TESTBED_HOST_IP";
/// Host root.
pub const ENV_ROOT: &str = "TESTBED_ROOT";
/// Shim directory (the PATH).
pub const ENV_BIN: &str = "TESTBED_BIN";
/// Shim call log.
pub const ENV_LOG: &str = "TESTBED_SHIM_LOG";
/// State directory of the harness (holds `control.sock`).
pub const ENV_STATE: &str = "TESTBED_STATE";
/// Simulated durations of the slow host steps, passed from the harness's environment to the
/// shims (benchmarks): `apt-install=3s,kubeadm-init=5s,kubeadm-join=2s` (`s` or `ms`). Unset:
/// no delay.
pub const ENV_DELAYS: &str = "TESTBED_DELAYS";

/// Sleeps as long as [`ENV_DELAYS`] says step `name` takes.
pub fn simulated_delay(name: &str) {
    let Ok(spec) = std::env::var(ENV_DELAYS) else {
        return;
    };
    let delay = spec.split(',').find_map(|item| {
        let (k, v) = item.split_once('=')?;
        if k.trim() != name {
            return None;
        }
        let v = v.trim();
        match v.strip_suffix("ms") {
            Some(ms) => ms.parse().ok().map(std::time::Duration::from_millis),
            None => v
                .strip_suffix('s')
                .unwrap_or(v)
                .parse()
                .ok()
                .map(std::time::Duration::from_secs_f64),
        }
    });
    if let Some(d) = delay {
        std::thread::sleep(d);
    }
}

/// Tools every Ubuntu host has.
pub const BASE_TOOLS: &[&str] = &[
    "apt",
    "apt-get",
    "apt-cache",
    "apt-mark",
    "dpkg",
    "dpkg-query",
    "systemctl",
    "swapoff",
    "swapon",
    "modprobe",
    "lsmod",
    "sysctl",
    "curl",
    "gpg",
    "ip",
    "ss",
];

/// The tools a package puts on the PATH.
pub fn package_tools(package: &str) -> &'static [&'static str] {
    match package {
        "containerd.io" | "containerd" => &["containerd", "ctr"],
        "kubeadm" => &["kubeadm"],
        "kubelet" => &["kubelet"],
        "kubectl" => &["kubectl"],
        "cri-tools" => &["crictl"],
        "docker-ce" => &["dockerd"],
        "docker-ce-cli" => &["docker"],
        _ => &[],
    }
}

/// One recorded shim call.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ShimCall {
    /// Tool name then arguments.
    pub argv: Vec<String>,
    /// Working directory.
    pub cwd: String,
    /// Exit code.
    pub exit: i32,
    /// Whether the call changed the host (files, unit states, packages, cluster).
    pub changed: bool,
}

impl ShimCall {
    /// The tool name.
    pub fn tool(&self) -> &str {
        self.argv.first().map(String::as_str).unwrap_or("")
    }
}

/// Reads a shim log; missing file → no calls.
pub fn read_log(path: &Path) -> Vec<ShimCall> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// The environment a host's agent and shims run with.
pub fn host_env(
    host: &str,
    ip: &str,
    root: &Path,
    bin: &Path,
    log: &Path,
    state: &Path,
) -> Vec<(String, String)> {
    let s = |p: &Path| p.display().to_string();
    vec![
        ("PATH".into(), s(bin)),
        ("HOME".into(), s(&root.join("root"))),
        ("LANG".into(), "C.UTF-8".into()),
        (ENV_HOST.into(), host.into()),
        (ENV_HOST_IP.into(), ip.into()),
        (ENV_ROOT.into(), s(root)),
        (ENV_BIN.into(), s(bin)),
        (ENV_LOG.into(), s(log)),
        (ENV_STATE.into(), s(state)),
    ]
    .into_iter()
    .chain(
        std::env::var(ENV_DELAYS)
            .ok()
            .map(|d| (ENV_DELAYS.into(), d)),
    )
    .collect()
}

/// Creates the shim directory: base tools, plus the tools of packages already installed in the
/// root's dpkg status.
pub fn install(hostshim: &Path, bin: &Path, root: &Path) -> std::io::Result<()> {
    fs::create_dir_all(bin)?;
    // A copy of the multi-call binary inside the shim dir keeps the links valid if the build
    // directory changes while the testbed runs.
    let me = bin.join(".hostshim");
    fs::copy(hostshim, &me)?;
    for t in BASE_TOOLS {
        link_tool(bin, t)?;
    }
    for p in apt::installed_packages(root) {
        for t in package_tools(&p) {
            link_tool(bin, t)?;
        }
    }
    Ok(())
}

/// Puts tool `name` on the shim PATH.
pub fn link_tool(bin: &Path, name: &str) -> std::io::Result<()> {
    let link = bin.join(name);
    if link.symlink_metadata().is_ok() {
        return Ok(());
    }
    if name == "kubectl" {
        // The real kubectl (a version dispatcher on this machine) against the simulated cluster.
        if let Some(real) = ["/usr/local/bin/kubectl", "/usr/bin/kubectl"]
            .iter()
            .map(Path::new)
            .find(|p| p.exists())
        {
            return std::os::unix::fs::symlink(real, link);
        }
    }
    std::os::unix::fs::symlink(".hostshim", link)
}

/// Takes tool `name` off the shim PATH.
pub fn unlink_tool(bin: &Path, name: &str) {
    let _ = fs::remove_file(bin.join(name));
}

/// What a running shim knows.
#[derive(Debug)]
pub struct Ctx {
    /// Tool name (argv[0] basename).
    pub tool: String,
    /// Arguments after the tool name.
    pub args: Vec<String>,
    /// Host name.
    pub host: String,
    /// Host IP.
    pub ip: String,
    /// Host root.
    pub root: PathBuf,
    /// Shim dir.
    pub bin: PathBuf,
    /// Harness state dir.
    pub state: PathBuf,
    /// Set when the call changes anything.
    pub changed: bool,
}

impl Ctx {
    /// A path under the host root (`/etc/fstab` → `ROOT/etc/fstab`).
    /// A path that already lies under the root (an agent passes root-joined paths) is kept.
    pub fn path(&self, p: impl AsRef<Path>) -> PathBuf {
        let p = p.as_ref();
        if p.starts_with(&self.root) {
            return p.to_path_buf();
        }
        self.root.join(p.strip_prefix("/").unwrap_or(p))
    }

    /// Reads a host file as text.
    pub fn read(&self, p: impl AsRef<Path>) -> Option<String> {
        fs::read_to_string(self.path(p)).ok()
    }

    /// Writes a host file if its content differs, marking the call as changing the host.
    pub fn write(&mut self, p: impl AsRef<Path>, content: impl AsRef<[u8]>) -> std::io::Result<()> {
        let path = self.path(p);
        if fs::read(&path).ok().as_deref() == Some(content.as_ref()) {
            return Ok(());
        }
        if let Some(d) = path.parent() {
            fs::create_dir_all(d)?;
        }
        let tmp = path.with_extension("testbed-tmp");
        fs::write(&tmp, content)?;
        fs::rename(tmp, path)?;
        self.changed = true;
        Ok(())
    }

    /// Removes a host file (marking a change when it existed).
    pub fn remove(&mut self, p: impl AsRef<Path>) {
        let path = self.path(p);
        if path.symlink_metadata().is_ok() {
            let r = if path.is_dir() && !path.is_symlink() {
                fs::remove_dir_all(&path)
            } else {
                fs::remove_file(&path)
            };
            if r.is_ok() {
                self.changed = true;
            }
        }
    }

    /// Sends a request to the harness over the control socket.
    pub fn control(&self, req: serde_json::Value) -> Result<serde_json::Value, String> {
        control_request(&self.state, &req)
    }
}

/// Sends one request line to the harness and reads its reply.
pub fn control_request(state: &Path, req: &serde_json::Value) -> Result<serde_json::Value, String> {
    use std::io::BufRead;
    let sock = state.join("control.sock");
    let mut conn = std::os::unix::net::UnixStream::connect(&sock).map_err(|e| {
        format!(
            "cannot reach the testbed harness at {}: {e}",
            sock.display()
        )
    })?;
    writeln!(conn, "{req}").map_err(|e| e.to_string())?;
    let mut line = String::new();
    std::io::BufReader::new(conn)
        .read_line(&mut line)
        .map_err(|e| e.to_string())?;
    let v: serde_json::Value =
        serde_json::from_str(&line).map_err(|e| format!("bad harness reply {line:?}: {e}"))?;
    if let Some(e) = v.get("error") {
        return Err(e.as_str().unwrap_or("harness error").to_string());
    }
    Ok(v.get("ok").cloned().unwrap_or(serde_json::Value::Null))
}

/// Entry point of the `hostshim` binary.
pub fn main() -> ExitCode {
    let mut argv: Vec<String> = std::env::args().collect();
    let tool = argv
        .first()
        .and_then(|a| Path::new(a).file_name())
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    if argv.is_empty() {
        argv.push(tool.clone());
    }
    let env = |k: &str| std::env::var(k).ok();
    let (Some(host), Some(root)) = (env(ENV_HOST), env(ENV_ROOT)) else {
        eprintln!(
            "{tool}: testbed shim run outside a simulated host ({ENV_HOST}/{ENV_ROOT} unset)"
        );
        return ExitCode::from(127);
    };
    let mut ctx = Ctx {
        tool: tool.clone(),
        args: argv[1..].to_vec(),
        host,
        ip: env(ENV_HOST_IP).unwrap_or_default(),
        root: PathBuf::from(root),
        bin: PathBuf::from(env(ENV_BIN).unwrap_or_default()),
        state: PathBuf::from(env(ENV_STATE).unwrap_or_default()),
        changed: false,
    };
    let code = dispatch(&mut ctx);
    let call = ShimCall {
        argv: std::iter::once(tool)
            .chain(ctx.args.iter().cloned())
            .collect(),
        cwd: std::env::current_dir()
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
        exit: code,
        changed: ctx.changed,
    };
    if let Some(log) = env(ENV_LOG)
        && let Ok(mut f) = fs::OpenOptions::new().create(true).append(true).open(log)
    {
        let _ = writeln!(f, "{}", serde_json::to_string(&call).unwrap_or_default());
    }
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

fn dispatch(ctx: &mut Ctx) -> i32 {
    match ctx.tool.as_str() {
        "apt-get" | "apt" => apt::apt_get(ctx),
        "apt-mark" => apt::apt_mark(ctx),
        "apt-cache" => apt::apt_cache(ctx),
        "dpkg-query" => apt::dpkg_query(ctx),
        "dpkg" => apt::dpkg(ctx),
        "systemctl" => systemctl::main(ctx),
        "swapoff" => system::swapoff(ctx),
        "swapon" => system::swapon(ctx),
        "modprobe" => system::modprobe(ctx),
        "lsmod" => system::lsmod(ctx),
        "sysctl" => system::sysctl(ctx),
        "containerd" => system::containerd(ctx),
        "ctr" => system::ctr(ctx),
        "crictl" => system::crictl(ctx),
        "curl" => net::curl(ctx),
        "gpg" => net::gpg(ctx),
        "ip" => net::ip(ctx),
        "ss" => net::ss(ctx),
        "kubeadm" => kubeadm::main(ctx),
        "kubelet" => {
            println!("Kubernetes v1.35.0");
            0
        }
        other => {
            eprintln!("{other}: command not simulated by the testbed shims");
            127
        }
    }
}
