//! `systemctl`: unit files from `lib/systemd/system`, `etc/systemd/system` and
//! `run/systemd/generator` under the root; enablement as the real `wants` symlinks; masking as a
//! `/dev/null` symlink; runtime states in `run/testbed/units.json`. Starting a unit whose files
//! changed since the last `daemon-reload` warns like systemd. Starting `containerd` snapshots the
//! config it loaded (so kubeadm sees the CRI of the *running* containerd). Starting `kubelet`
//! crash-loops (`activating`) until the host is initialised or joined, then asks the harness to
//! run that node's kubelet simulation; swap still active makes it fail as the real kubelet does.

use std::collections::BTreeMap;
use std::fs;

use super::Ctx;

const LOADED_CONTAINERD: &str = "run/testbed/containerd-loaded.toml";
const RELOAD_STAMP: &str = "run/testbed/daemon-reload.json";

/// Runtime unit states.
#[derive(Debug, Default)]
pub struct Units {
    states: BTreeMap<String, String>,
    dirty: bool,
}

impl Units {
    /// Loads the unit states of the host.
    pub fn load(ctx: &Ctx) -> Self {
        let states = ctx
            .read(crate::roots::UNIT_STATE_FILE)
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default();
        Self {
            states,
            dirty: false,
        }
    }

    /// `active`, `inactive`, `failed`, `activating`.
    pub fn state(&self, unit: &str) -> &str {
        self.states
            .get(&canonical(unit))
            .map(String::as_str)
            .unwrap_or("inactive")
    }

    /// Sets a unit's state.
    pub fn set(&mut self, unit: &str, state: &str) {
        let u = canonical(unit);
        if self.states.get(&u).map(String::as_str) != Some(state) {
            self.states.insert(u, state.into());
            self.dirty = true;
        }
    }

    /// Makes `.swap` unit states follow `proc/swaps`.
    pub fn sync_swaps(&mut self, ctx: &Ctx) {
        let active: Vec<String> = ctx
            .read("proc/swaps")
            .unwrap_or_default()
            .lines()
            .skip(1)
            .filter_map(|l| {
                l.split_whitespace()
                    .next()
                    .map(crate::roots::unescape_octal)
            })
            .collect();
        let swaps: Vec<String> = self
            .states
            .keys()
            .filter(|u| u.ends_with(".swap"))
            .cloned()
            .collect();
        for u in swaps {
            let what = format!("/{}", unescape_unit(u.trim_end_matches(".swap")));
            let s = if active.contains(&what) {
                "active"
            } else {
                "inactive"
            };
            self.set(&u, s);
        }
    }

    /// Writes the states back when they changed.
    pub fn save(&self, ctx: &mut Ctx) {
        if self.dirty {
            let _ = ctx.write(
                crate::roots::UNIT_STATE_FILE,
                serde_json::to_string_pretty(&self.states).unwrap_or_default(),
            );
        }
    }
}

fn unescape_unit(s: &str) -> String {
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1] == b'x'
            && let Ok(v) = u8::from_str_radix(&s[i + 2..i + 4], 16)
        {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(if b[i] == b'-' { b'/' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `kubelet` → `kubelet.service`.
pub fn canonical(unit: &str) -> String {
    if unit.contains('.')
        && [
            ".service", ".swap", ".socket", ".target", ".mount", ".timer",
        ]
        .iter()
        .any(|s| unit.ends_with(s))
    {
        unit.to_string()
    } else {
        format!("{unit}.service")
    }
}

const UNIT_DIRS: &[&str] = &[
    "etc/systemd/system",
    "run/systemd/generator",
    "lib/systemd/system",
    "usr/lib/systemd/system",
];

fn is_masked(ctx: &Ctx, unit: &str) -> bool {
    fs::read_link(ctx.path(format!("etc/systemd/system/{unit}")))
        .map(|t| t.as_os_str() == "/dev/null")
        .unwrap_or(false)
}

fn unit_file(ctx: &Ctx, unit: &str) -> Option<std::path::PathBuf> {
    UNIT_DIRS
        .iter()
        .map(|d| ctx.path(format!("{d}/{unit}")))
        .find(|p| p.exists() || fs::read_link(p).is_ok())
}

fn is_enabled(ctx: &Ctx, unit: &str) -> bool {
    [
        "multi-user.target.wants",
        "swap.target.wants",
        "sockets.target.wants",
    ]
    .iter()
    .any(|w| {
        ctx.path(format!("etc/systemd/system/{w}/{unit}"))
            .symlink_metadata()
            .is_ok()
    })
}

/// Fingerprint of every unit file and drop-in (for the daemon-reload warning).
fn unit_fingerprint(ctx: &Ctx) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for d in UNIT_DIRS {
        walk(&ctx.path(d), &mut |p| {
            if let Ok(text) = fs::read(p) {
                out.insert(
                    p.display().to_string(),
                    format!("{:x}", text.len() as u64 ^ hash(&text)),
                );
            }
        });
    }
    out
}

fn hash(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf29ce484222325u64, |h, x| {
        (h ^ *x as u64).wrapping_mul(0x100000001b3)
    })
}

fn walk(dir: &std::path::Path, f: &mut dyn FnMut(&std::path::Path)) {
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, f);
            } else {
                f(&p);
            }
        }
    }
}

fn changed_on_disk(ctx: &Ctx, unit: &str) -> bool {
    let Some(stamp) = ctx
        .read(RELOAD_STAMP)
        .and_then(|t| serde_json::from_str::<BTreeMap<String, String>>(&t).ok())
    else {
        return false;
    };
    let now = unit_fingerprint(ctx);
    now.iter()
        .filter(|(p, _)| p.contains(unit))
        .any(|(p, v)| stamp.get(p) != Some(v))
}

/// Whether the kubelet on this host has what it needs to run: a kubeconfig from init or join.
fn kubelet_configured(ctx: &Ctx) -> bool {
    ctx.path("etc/kubernetes/kubelet.conf").exists()
        && ctx.path("var/lib/kubelet/config.yaml").exists()
}

fn swap_active(ctx: &Ctx) -> bool {
    ctx.read("proc/swaps")
        .unwrap_or_default()
        .lines()
        .skip(1)
        .any(|l| !l.trim().is_empty())
}

/// Starts a unit; returns the state it reaches.
pub fn start(ctx: &mut Ctx, units: &mut Units, unit: &str) -> Result<String, String> {
    let unit = canonical(unit);
    if is_masked(ctx, &unit) {
        return Err(format!("Failed to start {unit}: Unit {unit} is masked."));
    }
    if unit_file(ctx, &unit).is_none() {
        return Err(format!("Failed to start {unit}: Unit {unit} not found."));
    }
    if changed_on_disk(ctx, &unit) {
        eprintln!(
            "Warning: The unit file, source configuration file or drop-ins of {unit} changed on disk. Run 'systemctl daemon-reload' to reload units."
        );
    }
    let state = match unit.as_str() {
        "containerd.service" => {
            let cfg = ctx.read("etc/containerd/config.toml").unwrap_or_default();
            if cfg.contains("version = 3") && super::system::containerd_major(ctx).unwrap_or(1) < 2
            {
                units.set(&unit, "failed");
                return Err(format!(
                    "Job for {unit} failed because the control process exited with error code.\nSee \"systemctl status {unit}\" and \"journalctl -xeu {unit}\" for details."
                ));
            }
            let _ = ctx.write(LOADED_CONTAINERD, cfg);
            "active".to_string()
        }
        "kubelet.service" => {
            if !kubelet_configured(ctx) || swap_active(ctx) {
                // The real kubelet exits (no config yet, or "running with swap on is not
                // supported") and systemd restarts it every 10 s.
                let _ = ctx.control(serde_json::json!({"op": "kubelet_stop", "host": ctx.host}));
                "activating".to_string()
            } else {
                ctx.control(
                    serde_json::json!({"op": "kubelet_start", "host": ctx.host, "root": ctx.root}),
                )
                .map_err(|e| format!("Job for {unit} failed: {e}"))?;
                "active".to_string()
            }
        }
        u if u.ends_with(".swap") => {
            let what = format!("/{}", unescape_unit(u.trim_end_matches(".swap")));
            let mut sub = Ctx {
                tool: "swapon".into(),
                args: vec![what],
                host: ctx.host.clone(),
                ip: ctx.ip.clone(),
                root: ctx.root.clone(),
                bin: ctx.bin.clone(),
                state: ctx.state.clone(),
                changed: false,
            };
            super::system::swapon(&mut sub);
            ctx.changed |= sub.changed;
            "active".to_string()
        }
        _ => "active".to_string(),
    };
    units.set(&unit, &state);
    Ok(state)
}

fn stop(ctx: &mut Ctx, units: &mut Units, unit: &str) {
    let unit = canonical(unit);
    if unit == "kubelet.service" && units.state(&unit) != "inactive" {
        let _ = ctx.control(serde_json::json!({"op": "kubelet_stop", "host": ctx.host}));
    }
    if unit.ends_with(".swap") && units.state(&unit) == "active" {
        let what = format!("/{}", unescape_unit(unit.trim_end_matches(".swap")));
        let mut sub = Ctx {
            tool: "swapoff".into(),
            args: vec![what],
            host: ctx.host.clone(),
            ip: ctx.ip.clone(),
            root: ctx.root.clone(),
            bin: ctx.bin.clone(),
            state: ctx.state.clone(),
            changed: false,
        };
        super::system::swapoff(&mut sub);
        ctx.changed |= sub.changed;
    }
    units.set(&unit, "inactive");
}

/// `systemctl COMMAND [UNIT...]`.
pub fn main(ctx: &mut Ctx) -> i32 {
    let args = ctx.args.clone();
    let quiet = args.iter().any(|a| a == "-q" || a == "--quiet");
    let now = args.iter().any(|a| a == "--now");
    let opts: Vec<&String> = args.iter().filter(|a| a.starts_with('-')).collect();
    let pos: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    let Some(cmd) = pos.first().map(|s| s.as_str()) else {
        return list_units(ctx, &opts);
    };
    let names: Vec<String> = pos[1..].iter().map(|u| canonical(u)).collect();
    let mut units = Units::load(ctx);
    let mut rc = 0;
    match cmd {
        "daemon-reload" | "daemon-reexec" => {
            let fp = unit_fingerprint(ctx);
            let _ = ctx.write(RELOAD_STAMP, serde_json::to_string(&fp).unwrap_or_default());
        }
        "start" | "restart" | "reload-or-restart" | "try-restart" => {
            for u in &names {
                if cmd == "try-restart" && units.state(u) != "active" {
                    continue;
                }
                if cmd != "start" {
                    stop(ctx, &mut units, u);
                } else if units.state(u) == "active" {
                    continue;
                }
                if let Err(e) = start(ctx, &mut units, u) {
                    eprintln!("{e}");
                    rc = if e.contains("not found") { 5 } else { 1 };
                }
            }
            // A restart always changes the host (the process is new) even if the state is the same.
            ctx.changed = true;
        }
        "reload" => {
            for u in &names {
                if units.state(u) != "active" {
                    eprintln!("Failed to reload {u}: Unit {u} is not active.");
                    rc = 1;
                }
            }
        }
        "stop" => {
            for u in &names {
                stop(ctx, &mut units, u);
            }
        }
        "enable" | "disable" => {
            for u in &names {
                if is_masked(ctx, u) && cmd == "enable" {
                    eprintln!(
                        "Failed to enable unit: Unit file /etc/systemd/system/{u} is masked."
                    );
                    rc = 1;
                    continue;
                }
                let Some(file) = unit_file(ctx, u) else {
                    eprintln!("Failed to {cmd} unit: Unit file {u} does not exist.");
                    rc = 1;
                    continue;
                };
                let link = ctx.path(format!("etc/systemd/system/multi-user.target.wants/{u}"));
                if cmd == "enable" && link.symlink_metadata().is_err() {
                    let target = format!(
                        "/{}",
                        file.strip_prefix(&ctx.root).unwrap_or(&file).display()
                    );
                    let _ = fs::create_dir_all(link.parent().expect("parent"));
                    if std::os::unix::fs::symlink(&target, &link).is_ok() {
                        ctx.changed = true;
                        if !quiet {
                            eprintln!(
                                "Created symlink /etc/systemd/system/multi-user.target.wants/{u} → {target}."
                            );
                        }
                    }
                } else if cmd == "disable" && link.symlink_metadata().is_ok() {
                    let _ = fs::remove_file(&link);
                    ctx.changed = true;
                    if !quiet {
                        eprintln!("Removed \"/etc/systemd/system/multi-user.target.wants/{u}\".");
                    }
                }
                if now {
                    if cmd == "enable" {
                        if units.state(u) != "active"
                            && let Err(e) = start(ctx, &mut units, u)
                        {
                            eprintln!("{e}");
                            rc = 1;
                        }
                    } else {
                        stop(ctx, &mut units, u);
                    }
                }
            }
        }
        "mask" | "unmask" => {
            for u in &names {
                let p = ctx.path(format!("etc/systemd/system/{u}"));
                if cmd == "mask" {
                    if !is_masked(ctx, u) {
                        let _ = fs::create_dir_all(p.parent().expect("parent"));
                        let _ = fs::remove_file(&p);
                        if std::os::unix::fs::symlink("/dev/null", &p).is_ok() {
                            ctx.changed = true;
                            if !quiet {
                                eprintln!("Created symlink /etc/systemd/system/{u} → /dev/null.");
                            }
                        }
                    }
                    if now {
                        stop(ctx, &mut units, u);
                    }
                } else if is_masked(ctx, u) {
                    let _ = fs::remove_file(&p);
                    ctx.changed = true;
                    if !quiet {
                        eprintln!("Removed \"/etc/systemd/system/{u}\".");
                    }
                }
            }
        }
        "is-active" => {
            rc = 3;
            for u in &names {
                let s = units.state(u).to_string();
                if !quiet {
                    println!("{s}");
                }
                if s == "active" {
                    rc = 0;
                }
            }
        }
        "is-enabled" => {
            rc = 1;
            for u in &names {
                let s = if is_masked(ctx, u) {
                    "masked"
                } else if unit_file(ctx, u).is_none() {
                    eprintln!("Failed to get unit file state for {u}: No such file or directory");
                    "not-found"
                } else if is_enabled(ctx, u) {
                    rc = 0;
                    "enabled"
                } else if u.ends_with(".swap") {
                    rc = 0;
                    "generated"
                } else {
                    "disabled"
                };
                if !quiet && s != "not-found" {
                    println!("{s}");
                }
            }
        }
        "is-failed" => {
            rc = 1;
            for u in &names {
                let s = units.state(u);
                if !quiet {
                    println!("{s}");
                }
                if s == "failed" {
                    rc = 0;
                }
            }
        }
        "status" => {
            for u in &names {
                let s = units.state(u).to_string();
                match unit_file(ctx, u) {
                    None if !is_masked(ctx, u) => {
                        eprintln!("Unit {u} could not be found.");
                        rc = 4;
                    }
                    file => {
                        let loaded = if is_masked(ctx, u) {
                            "masked (Reason: Unit {u} is masked.)".to_string()
                        } else {
                            format!(
                                "loaded ({}; {})",
                                file.map(|f| format!(
                                    "/{}",
                                    f.strip_prefix(&ctx.root).unwrap_or(&f).display()
                                ))
                                .unwrap_or_default(),
                                if is_enabled(ctx, u) {
                                    "enabled"
                                } else {
                                    "disabled"
                                }
                            )
                        };
                        let active = match s.as_str() {
                            "activating" => {
                                "activating (auto-restart) (Result: exit-code)".to_string()
                            }
                            "active" => "active (running)".to_string(),
                            other => format!("{other} (dead)"),
                        };
                        println!("● {u}\n     Loaded: {loaded}\n     Active: {active}");
                        if s != "active" {
                            rc = 3;
                        }
                    }
                }
            }
        }
        "show" => {
            for u in &names {
                let prop = opts
                    .iter()
                    .find_map(|o| o.strip_prefix("--property="))
                    .or_else(|| {
                        args.iter()
                            .position(|a| a == "-p")
                            .and_then(|i| args.get(i + 1))
                            .map(String::as_str)
                    });
                let s = units.state(u);
                let load = if is_masked(ctx, u) {
                    "masked"
                } else if unit_file(ctx, u).is_some() {
                    "loaded"
                } else {
                    "not-found"
                };
                let all = [
                    ("ActiveState", s.to_string()),
                    ("LoadState", load.to_string()),
                    (
                        "UnitFileState",
                        if is_enabled(ctx, u) {
                            "enabled".into()
                        } else {
                            "disabled".into()
                        },
                    ),
                ];
                for (k, v) in all {
                    if prop.is_none_or(|p| p.split(',').any(|x| x == k)) {
                        if args.iter().any(|a| a == "--value") {
                            println!("{v}");
                        } else {
                            println!("{k}={v}");
                        }
                    }
                }
            }
        }
        "list-units" | "list-unit-files" => return list_units(ctx, &opts),
        other => {
            eprintln!("Unknown command verb '{other}'.");
            rc = 1;
        }
    }
    units.save(ctx);
    rc
}

fn list_units(ctx: &mut Ctx, opts: &[&String]) -> i32 {
    let units = Units::load(ctx);
    let ty = opts
        .iter()
        .find_map(|o| o.strip_prefix("--type="))
        .or_else(|| {
            ctx.args
                .iter()
                .position(|a| a == "--type" || a == "-t")
                .and_then(|i| ctx.args.get(i + 1))
                .map(String::as_str)
        });
    let all = opts.iter().any(|o| *o == "--all" || *o == "-a");
    let legend = !opts.iter().any(|o| *o == "--no-legend");
    if legend {
        println!("  UNIT LOAD ACTIVE SUB DESCRIPTION");
    }
    for (u, s) in &units.states {
        if ty.is_some_and(|t| !u.ends_with(&format!(".{t}"))) {
            continue;
        }
        if !all && s != "active" {
            continue;
        }
        let load = if is_masked(ctx, u) {
            "masked"
        } else {
            "loaded"
        };
        let sub = match s.as_str() {
            "active" if u.ends_with(".swap") => "active",
            "active" => "running",
            "activating" => "auto-restart",
            _ => "dead",
        };
        println!("  {u} {load} {s} {sub} {u}");
    }
    0
}
