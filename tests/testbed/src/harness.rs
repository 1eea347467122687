//! The multi-host harness: builds a host root per cluster.yaml host under `STATE/<host>/root`,
//! installs the shim tools in `STATE/<host>/bin`, starts the REAL `master-agent`/`node-agent`
//! binaries with `--root` and a `PATH` holding only that shim directory (so no real `apt-get` or
//! `systemctl` ever runs here), serves the control socket the short-lived shims use to reach the
//! long-running simulated cluster ([`crate::world`]), and cleans everything up on drop.
//!
//! Without `netns`, hosts share the loopback (127.x IPs). With `netns` (root only), each host gets
//! its own network namespace on a bridge with its cluster.yaml IP; [`Testbed::cut_off`] and
//! [`Testbed::restore`] take its link down and up.
//!
//! ```text
//! STATE/control.sock          the shims' line-JSON requests to the harness
//! STATE/<host>/root/          the host root (agent --root)
//! STATE/<host>/bin/           shim symlinks → hostshim (the agent's only PATH entry)
//! STATE/<host>/shim.log       one JSON line per shim call: argv, cwd, exit, changed
//! STATE/<host>/agent.log      the agent's stdout and stderr
//! ```

use std::collections::HashMap;
use std::fs;
use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cluster_common::config::{ClusterConfig, HostRole, HostSpec};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::netns::Network;
use crate::roots::{self, HostInfo, Variant};
use crate::shim::{self, ShimCall};
use crate::world::World;

/// Errors from bringing the test world up.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// cluster.yaml is invalid.
    #[error(transparent)]
    Config(#[from] cluster_common::config::ConfigError),
    /// A file operation in the state directory failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The I/O error.
        source: io::Error,
    },
    /// A binary the harness needs was not found.
    #[error("cannot find the {0} binary next to this executable or in the workspace target dir")]
    MissingBinary(String),
    /// An agent exited or never served.
    #[error("agent on {host} {problem}; last lines of {log}:\n{tail}")]
    Agent {
        /// The host.
        host: String,
        /// What happened.
        problem: String,
        /// The agent log file.
        log: String,
        /// Its last lines.
        tail: String,
    },
    /// No host of that name.
    #[error("no host {0:?} in this testbed")]
    UnknownHost(String),
    /// Network namespaces could not be set up or changed.
    #[error("network namespaces: {0}")]
    Netns(String),
}

/// Result alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> Error {
    let what = what.into();
    move |source| Error::Io { what, source }
}

/// How to bring the test world up.
#[derive(Debug, Clone)]
pub struct UpOptions {
    /// One network namespace per host on a bridge (root only; cluster.yaml IPs must not be
    /// loopback addresses).
    pub netns: bool,
    /// Template for every host (default `ubuntu-24.04`).
    pub template: String,
    /// Per-host template overrides.
    pub host_templates: HashMap<String, String>,
    /// Variations applied to a host's root after it is built (`"*"` = every host).
    pub variants: Vec<(String, Variant)>,
    /// Start the agents (false: roots, shims and the control socket only).
    pub start_agents: bool,
    /// How long an agent may take to serve.
    pub ready_timeout: Duration,
}

impl Default for UpOptions {
    fn default() -> Self {
        Self {
            netns: false,
            template: roots::DEFAULT_TEMPLATE.into(),
            host_templates: HashMap::new(),
            variants: Vec::new(),
            start_agents: true,
            ready_timeout: Duration::from_secs(30),
        }
    }
}

impl UpOptions {
    /// Adds a variation for `host` (`"*"` for all).
    pub fn variant(mut self, host: &str, v: Variant) -> Self {
        self.variants.push((host.into(), v));
        self
    }
}

/// Per-host paths.
#[derive(Debug, Clone)]
pub struct SimHost {
    /// cluster.yaml entry.
    pub spec: HostSpec,
    /// `STATE/<host>`.
    pub dir: PathBuf,
}

impl SimHost {
    /// The host root.
    pub fn root(&self) -> PathBuf {
        self.dir.join("root")
    }
    /// The shim directory (the agent's PATH).
    pub fn bin(&self) -> PathBuf {
        self.dir.join("bin")
    }
    /// The shim call log.
    pub fn shim_log(&self) -> PathBuf {
        self.dir.join("shim.log")
    }
    /// The agent's output.
    pub fn agent_log(&self) -> PathBuf {
        self.dir.join("agent.log")
    }
}

/// A running test world. Dropping it stops every agent, API server and kubelet.
pub struct Testbed {
    config: Arc<ClusterConfig>,
    state: PathBuf,
    hosts: Vec<SimHost>,
    agents: Mutex<HashMap<String, Child>>,
    world: Arc<World>,
    control: Option<ControlServer>,
    network: Option<Network>,
    ready_timeout: Duration,
}

impl std::fmt::Debug for Testbed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Testbed")
            .field("state", &self.state)
            .field("hosts", &self.hosts.len())
            .finish()
    }
}

impl Testbed {
    /// Builds the roots and shims, starts the control socket and (unless told not to) the
    /// agents, and returns once every agent serves.
    pub fn up(config_path: &Path, state_dir: &Path, opts: UpOptions) -> Result<Testbed> {
        let config_path = std::path::absolute(config_path).map_err(io_err("config path"))?;
        let config = Arc::new(ClusterConfig::load(&config_path)?);
        fs::create_dir_all(state_dir).map_err(io_err(format!("create {}", state_dir.display())))?;
        let state = state_dir
            .canonicalize()
            .map_err(io_err(format!("resolve {}", state_dir.display())))?;
        let hostshim = find_bin("hostshim")?;
        let mut hosts = Vec::new();
        for spec in config.hosts() {
            let name = spec.name.to_string();
            let host = SimHost {
                spec: spec.clone(),
                dir: state.join(&name),
            };
            if host.dir.exists() {
                fs::remove_dir_all(&host.dir)
                    .map_err(io_err(format!("clean {}", host.dir.display())))?;
            }
            let template = opts.host_templates.get(&name).unwrap_or(&opts.template);
            roots::build_root(
                &roots::template(template),
                &host.root(),
                &HostInfo { name: name.clone() },
            )
            .map_err(io_err(format!(
                "build the root of {name} from template {template}"
            )))?;
            for (h, v) in &opts.variants {
                if h == "*" || *h == name {
                    v.apply(&host.root())
                        .map_err(io_err(format!("apply {v:?} to {name}")))?;
                }
            }
            shim::install(&hostshim, &host.bin(), &host.root())
                .map_err(io_err(format!("install the shims of {name}")))?;
            hosts.push(host);
        }
        let network = if opts.netns {
            Some(Network::create(&config).map_err(Error::Netns)?)
        } else {
            None
        };
        let world = Arc::new(World::new(
            config.clone(),
            state.clone(),
            network.as_ref().map(Network::names),
        ));
        let control = ControlServer::start(&state.join("control.sock"), world.clone())
            .map_err(io_err("start the control socket"))?;
        let tb = Testbed {
            config,
            state,
            hosts,
            agents: Mutex::new(HashMap::new()),
            world,
            control: Some(control),
            network,
            ready_timeout: opts.ready_timeout,
        };
        if opts.start_agents {
            for h in tb
                .hosts
                .iter()
                .map(|h| h.spec.name.to_string())
                .collect::<Vec<_>>()
            {
                tb.spawn_agent(&h)?;
            }
            for h in tb
                .hosts
                .iter()
                .map(|h| h.spec.name.to_string())
                .collect::<Vec<_>>()
            {
                tb.wait_serving(&h)?;
            }
        }
        Ok(tb)
    }

    /// The loaded cluster.yaml.
    pub fn config(&self) -> &ClusterConfig {
        &self.config
    }

    /// The state directory.
    pub fn state_dir(&self) -> &Path {
        &self.state
    }

    /// The simulated cluster behind the shims.
    pub fn world(&self) -> &Arc<World> {
        &self.world
    }

    /// The simulated host called `name`.
    pub fn host(&self, name: &str) -> Result<&SimHost> {
        self.hosts
            .iter()
            .find(|h| h.spec.name.as_str() == name)
            .ok_or_else(|| Error::UnknownHost(name.into()))
    }

    /// Every simulated host, master first.
    pub fn hosts(&self) -> &[SimHost] {
        &self.hosts
    }

    /// The root of host `name`.
    pub fn root(&self, name: &str) -> PathBuf {
        self.host(name).expect("known host").root()
    }

    /// Every shim call made on host `name` so far.
    pub fn shim_log(&self, name: &str) -> Vec<ShimCall> {
        shim::read_log(&self.host(name).expect("known host").shim_log())
    }

    /// The environment a shim on host `name` runs with (also the agent's environment).
    pub fn host_env(&self, name: &str) -> Result<Vec<(String, String)>> {
        let h = self.host(name)?;
        Ok(shim::host_env(
            h.spec.name.as_str(),
            &h.spec.ip.to_string(),
            &h.root(),
            &h.bin(),
            &h.shim_log(),
            &self.state,
        ))
    }

    /// Runs shim `tool` on host `name` as the agent would (for tests of the shims themselves).
    pub fn run_tool(&self, name: &str, tool: &str, args: &[&str]) -> Result<std::process::Output> {
        let h = self.host(name)?;
        let mut cmd = Command::new(h.bin().join(tool));
        cmd.args(args)
            .env_clear()
            .envs(self.host_env(name)?)
            .current_dir(h.root());
        cmd.output()
            .map_err(io_err(format!("run {tool} on {name}")))
    }

    /// Starts the agent of host `name` (after [`Testbed::kill_agent`]) and waits until it serves.
    pub fn start_agent(&self, name: &str) -> Result<()> {
        self.spawn_agent(name)?;
        self.wait_serving(name)
    }

    /// Kills the agent of host `name` with SIGKILL, as a crash would.
    pub fn kill_agent(&self, name: &str) -> Result<()> {
        self.host(name)?;
        if let Some(mut child) = self.agents.lock().expect("agents lock").remove(name) {
            let _ = child.kill();
            let _ = child.wait();
        }
        Ok(())
    }

    /// Takes host `name` off the network (netns mode only).
    pub fn cut_off(&self, name: &str) -> Result<()> {
        self.host(name)?;
        let net = self
            .network
            .as_ref()
            .ok_or_else(|| Error::Netns("cut_off needs --netns".into()))?;
        net.set_link(name, false).map_err(Error::Netns)
    }

    /// Puts host `name` back on the network (netns mode only).
    pub fn restore(&self, name: &str) -> Result<()> {
        self.host(name)?;
        let net = self
            .network
            .as_ref()
            .ok_or_else(|| Error::Netns("restore needs --netns".into()))?;
        net.set_link(name, true).map_err(Error::Netns)
    }

    /// Whether a TCP connection from host `from` to `addr` succeeds within `timeout` (from that
    /// host's network namespace in netns mode).
    pub fn can_connect(&self, from: &str, addr: SocketAddr, timeout: Duration) -> bool {
        match &self.network {
            Some(net) => net.can_connect(from, addr, timeout),
            None => TcpStream::connect_timeout(&addr, timeout).is_ok(),
        }
    }

    /// The network namespace name of host `name` (netns mode).
    pub fn netns_name(&self, name: &str) -> Option<String> {
        self.network.as_ref().map(|n| n.ns_name(name))
    }

    fn spawn_agent(&self, name: &str) -> Result<()> {
        let h = self.host(name)?;
        let binary = match h.spec.role {
            HostRole::Master => "master-agent",
            HostRole::Node => "node-agent",
        };
        let exe = find_bin(binary)?;
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(h.agent_log())
            .map_err(io_err(format!("open {}", h.agent_log().display())))?;
        let mut cmd = match &self.network {
            Some(net) => {
                let mut c = Command::new("/usr/sbin/ip");
                c.args(["netns", "exec", &net.ns_name(name)]).arg(&exe);
                c
            }
            None => Command::new(&exe),
        };
        cmd.arg("--config")
            .arg(&self.config.path)
            .arg("--host")
            .arg(name)
            .arg("--root")
            .arg(h.root())
            .env_clear()
            .envs(self.host_env(name)?)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .current_dir(h.root())
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(io_err("dup agent log"))?)
            .stderr(log);
        let child = cmd
            .spawn()
            .map_err(io_err(format!("start {}", exe.display())))?;
        self.agents
            .lock()
            .expect("agents lock")
            .insert(name.to_string(), child);
        Ok(())
    }

    fn wait_serving(&self, name: &str) -> Result<()> {
        let h = self.host(name)?;
        let addr = self.config.agent_endpoint(&h.spec);
        let deadline = Instant::now() + self.ready_timeout;
        loop {
            if let Some(child) = self.agents.lock().expect("agents lock").get_mut(name)
                && let Ok(Some(status)) = child.try_wait()
            {
                return Err(
                    self.agent_error(h, format!("exited with {status} before serving on {addr}"))
                );
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(self.agent_error(
                    h,
                    format!("did not serve on {addr} within {:?}", self.ready_timeout),
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn agent_error(&self, h: &SimHost, problem: String) -> Error {
        let text = fs::read_to_string(h.agent_log()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(5)..].join("\n");
        Error::Agent {
            host: h.spec.name.to_string(),
            problem,
            log: h.agent_log().display().to_string(),
            tail,
        }
    }

    /// Stops everything now (also done on drop): agents with SIGTERM (SIGKILL after 5 s), the
    /// simulated API servers and kubelets, the control socket, the namespaces.
    pub fn shutdown(&mut self) {
        let children: Vec<(String, Child)> =
            self.agents.lock().expect("agents lock").drain().collect();
        for (_, child) in &children {
            if let Ok(pid) = i32::try_from(child.id()) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        for (_, mut child) in children {
            loop {
                match child.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if Instant::now() > deadline => {
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        }
        self.world.shutdown();
        if let Some(c) = self.control.take() {
            c.stop();
        }
        if let Some(net) = self.network.take() {
            net.destroy();
        }
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Finds a workspace binary: next to the running executable (for `testbed up` in
/// `target/<profile>/`), else through [`crate::bins`] (tests, which build it if needed).
pub fn find_bin(name: &str) -> Result<PathBuf> {
    // In a test (target/<profile>/deps/...), build first so no stale binary runs; otherwise
    // (`testbed up` in target/<profile>/) take the binary next to this one.
    let exe = std::env::current_exe().ok();
    let dir = exe.as_deref().and_then(Path::parent);
    if let Some(dir) = dir.filter(|d| !d.ends_with("deps")) {
        let p = dir.join(name);
        if p.is_file() {
            return Ok(p);
        }
    }
    let p = crate::bins::bin_dir().join(name);
    if p.is_file() {
        Ok(p)
    } else {
        Err(Error::MissingBinary(name.into()))
    }
}

/// The harness end of the shims' control socket: one JSON request line, one JSON reply line.
struct ControlServer {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ControlServer {
    fn start(path: &Path, world: Arc<World>) -> io::Result<Self> {
        let _ = fs::remove_file(path);
        let listener = UnixListener::bind(path)?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::Builder::new()
            .name("testbed-control".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    if stop2.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let world = world.clone();
                    std::thread::spawn(move || serve_control(conn, &world));
                }
            })?;
        Ok(Self {
            path: path.to_path_buf(),
            stop,
            thread: Some(thread),
        })
    }

    fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = UnixStream::connect(&self.path);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = fs::remove_file(&self.path);
    }
}

fn serve_control(conn: UnixStream, world: &World) {
    let mut reader = BufReader::new(match conn.try_clone() {
        Ok(c) => c,
        Err(_) => return,
    });
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() || line.trim().is_empty() {
        return;
    }
    let reply = match serde_json::from_str::<serde_json::Value>(&line) {
        Ok(req) => match world.handle_request(&req) {
            Ok(v) => serde_json::json!({"ok": v}),
            Err(e) => serde_json::json!({"error": e}),
        },
        Err(e) => serde_json::json!({"error": format!("bad request: {e}")}),
    };
    let mut conn = conn;
    let _ = writeln!(conn, "{reply}");
}
