//! apt and dpkg shims on the host root's real files: repositories from `etc/apt/sources.list`,
//! `sources.list.d/*.list` (one-line) and `*.sources` (deb822); `apt-get update` fetches each
//! repository's signed index through [`super::net::fetch`] and refuses it, like apt, when its key
//! is not in the `signed-by` keyring (or an armored key sits in a `.gpg` file); indexes land in
//! `var/lib/apt/lists`, so installing without an update after adding a repository fails as on a
//! VM. Installed packages, versions and holds live in `var/lib/dpkg/status` (dpkg's own format),
//! which `dpkg-query` answers from. Installing a package runs its simulated maintainer scripts
//! (unit files, default configs, tools on the PATH).

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::path::Path;

use super::{Ctx, link_tool, net, package_tools, systemctl, unlink_tool};

const STATUS: &str = "var/lib/dpkg/status";
const LISTS: &str = "var/lib/apt/lists";

/// One deb822 paragraph.
pub type Stanza = BTreeMap<String, String>;

/// Parses deb822 paragraphs (dpkg status, Packages indexes).
pub fn parse_stanzas(text: &str) -> Vec<Stanza> {
    let mut out = Vec::new();
    let mut cur = Stanza::new();
    let mut last = String::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            continue;
        }
        if line.starts_with(' ') || line.starts_with('\t') {
            if let Some(v) = cur.get_mut(&last) {
                v.push('\n');
                v.push_str(line);
            }
            continue;
        }
        if let Some((k, v)) = line.split_once(':') {
            last = k.trim().to_string();
            cur.insert(last.clone(), v.trim().to_string());
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

fn render_stanzas(stanzas: &[Stanza]) -> String {
    const ORDER: &[&str] = &[
        "Package",
        "Status",
        "Priority",
        "Section",
        "Installed-Size",
        "Maintainer",
        "Architecture",
        "Version",
        "Depends",
        "Description",
    ];
    let mut out = String::new();
    for s in stanzas {
        for k in ORDER {
            if let Some(v) = s.get(*k) {
                out.push_str(&format!("{k}: {v}\n"));
            }
        }
        for (k, v) in s {
            if !ORDER.contains(&k.as_str()) {
                out.push_str(&format!("{k}: {v}\n"));
            }
        }
        out.push('\n');
    }
    out
}

fn status(root: &Path) -> Vec<Stanza> {
    parse_stanzas(&fs::read_to_string(root.join(STATUS)).unwrap_or_default())
}

fn is_installed(s: &Stanza) -> bool {
    s.get("Status").is_some_and(|st| st.ends_with(" installed"))
}

/// Names of the installed packages of a root.
pub fn installed_packages(root: &Path) -> Vec<String> {
    status(root)
        .into_iter()
        .filter(is_installed)
        .filter_map(|s| s.get("Package").cloned())
        .collect()
}

/// The installed version of `pkg`, if installed.
pub fn installed_version(root: &Path, pkg: &str) -> Option<String> {
    status(root)
        .into_iter()
        .find(|s| s.get("Package").map(String::as_str) == Some(pkg) && is_installed(s))
        .and_then(|s| s.get("Version").cloned())
}

/// Whether `pkg` is on hold.
pub fn is_held(root: &Path, pkg: &str) -> bool {
    status(root).iter().any(|s| {
        s.get("Package").map(String::as_str) == Some(pkg)
            && s.get("Status").is_some_and(|st| st.starts_with("hold "))
    })
}

/// Debian version comparison (epoch, upstream, revision; `~` sorts before everything).
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    fn split(v: &str) -> (u64, &str, &str) {
        let (epoch, rest) = match v.split_once(':') {
            Some((e, r)) if e.chars().all(|c| c.is_ascii_digit()) => (e.parse().unwrap_or(0), r),
            _ => (0, v),
        };
        match rest.rsplit_once('-') {
            Some((u, r)) => (epoch, u, r),
            None => (epoch, rest, ""),
        }
    }
    fn order(c: Option<char>) -> i32 {
        match c {
            None => 0,
            Some('~') => -1,
            Some(c) if c.is_ascii_digit() => 0,
            Some(c) if c.is_ascii_alphabetic() => c as i32,
            Some(c) => c as i32 + 256,
        }
    }
    fn part(a: &str, b: &str) -> Ordering {
        let (mut a, mut b) = (a.chars().peekable(), b.chars().peekable());
        loop {
            // non-digit prefix
            loop {
                let (ca, cb) = (
                    a.peek().copied().filter(|c| !c.is_ascii_digit()),
                    b.peek().copied().filter(|c| !c.is_ascii_digit()),
                );
                if ca.is_none() && cb.is_none() {
                    break;
                }
                let (oa, ob) = (order(ca), order(cb));
                if oa != ob {
                    return oa.cmp(&ob);
                }
                a.next();
                b.next();
            }
            let mut na = String::new();
            while let Some(c) = a.peek().copied().filter(char::is_ascii_digit) {
                na.push(c);
                a.next();
            }
            let mut nb = String::new();
            while let Some(c) = b.peek().copied().filter(char::is_ascii_digit) {
                nb.push(c);
                b.next();
            }
            let (x, y) = (
                na.parse::<u128>().unwrap_or(0),
                nb.parse::<u128>().unwrap_or(0),
            );
            if x != y {
                return x.cmp(&y);
            }
            if a.peek().is_none() && b.peek().is_none() {
                return Ordering::Equal;
            }
        }
    }
    let (ea, ua, ra) = split(a);
    let (eb, ub, rb) = split(b);
    ea.cmp(&eb)
        .then_with(|| part(ua, ub))
        .then_with(|| part(ra, rb))
}

/// A configured repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// Base URI.
    pub uri: String,
    /// Suite (`noble`, or `/` for a flat repository).
    pub suite: String,
    /// Components (empty for a flat repository).
    pub components: Vec<String>,
    /// `signed-by` keyring path, if set.
    pub signed_by: Option<String>,
    /// The file it came from.
    pub file: String,
}

impl Source {
    fn base(&self) -> String {
        let u = self.uri.trim_end_matches('/');
        if self.suite.ends_with('/') {
            format!(
                "{u}/{}",
                self.suite.trim_start_matches('/').trim_start_matches("./")
            )
        } else {
            format!("{u}/dists/{}/", self.suite)
        }
    }
    fn release_url(&self) -> String {
        format!("{}InRelease", self.base())
    }
    fn index_urls(&self) -> Vec<String> {
        if self.suite.ends_with('/') {
            vec![format!("{}Packages", self.base())]
        } else {
            self.components
                .iter()
                .map(|c| format!("{}{c}/binary-amd64/Packages", self.base()))
                .collect()
        }
    }
    fn display(&self) -> String {
        format!("{} {}", self.uri, self.suite)
    }
}

/// Reads every configured repository of the root.
pub fn sources(ctx: &Ctx) -> Result<Vec<Source>, String> {
    let mut out = Vec::new();
    let mut files = vec!["etc/apt/sources.list".to_string()];
    if let Ok(rd) = fs::read_dir(ctx.path("etc/apt/sources.list.d")) {
        let mut names: Vec<String> = rd
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        files.extend(
            names
                .into_iter()
                .map(|n| format!("etc/apt/sources.list.d/{n}")),
        );
    }
    for f in files {
        let Some(text) = ctx.read(&f) else { continue };
        if f.ends_with(".sources") {
            for s in parse_stanzas(&text) {
                if s.get("Enabled").is_some_and(|e| e == "no")
                    || !s
                        .get("Types")
                        .is_some_and(|t| t.split_whitespace().any(|x| x == "deb"))
                {
                    continue;
                }
                for uri in s
                    .get("URIs")
                    .map(|u| u.split_whitespace().map(str::to_string).collect::<Vec<_>>())
                    .unwrap_or_default()
                {
                    for suite in s
                        .get("Suites")
                        .map(|u| u.split_whitespace().map(str::to_string).collect::<Vec<_>>())
                        .unwrap_or_default()
                    {
                        out.push(Source {
                            uri: uri.clone(),
                            suite,
                            components: s
                                .get("Components")
                                .map(|c| c.split_whitespace().map(str::to_string).collect())
                                .unwrap_or_default(),
                            signed_by: s.get("Signed-By").cloned(),
                            file: format!("/{f}"),
                        });
                    }
                }
            }
        } else if f.ends_with(".list") {
            for (n, line) in text.lines().enumerate() {
                let line = line.split('#').next().unwrap_or("").trim();
                if line.is_empty() {
                    continue;
                }
                let mut rest = line;
                let kind = rest.split_whitespace().next().unwrap_or("");
                rest = rest[kind.len()..].trim_start();
                if kind == "deb-src" {
                    continue;
                }
                if kind != "deb" {
                    return Err(format!(
                        "E: Malformed entry {} in list file /{f} (Component)\nE: The list of sources could not be read.",
                        n + 1
                    ));
                }
                let mut signed_by = None;
                if rest.starts_with('[') {
                    let Some(end) = rest.find(']') else {
                        return Err(format!(
                            "E: Malformed entry {} in list file /{f} ([option] unparsable)\nE: The list of sources could not be read.",
                            n + 1
                        ));
                    };
                    for opt in rest[1..end].split_whitespace() {
                        if let Some(v) = opt.strip_prefix("signed-by=") {
                            signed_by = Some(v.to_string());
                        }
                    }
                    rest = rest[end + 1..].trim_start();
                }
                let parts: Vec<&str> = rest.split_whitespace().collect();
                if parts.len() < 2 {
                    return Err(format!(
                        "E: Malformed entry {} in list file /{f} (Suite)\nE: The list of sources could not be read.",
                        n + 1
                    ));
                }
                if !parts[1].ends_with('/') && parts.len() < 3 {
                    return Err(format!(
                        "E: Malformed entry {} in list file /{f} (Component)\nE: The list of sources could not be read.",
                        n + 1
                    ));
                }
                out.push(Source {
                    uri: parts[0].to_string(),
                    suite: parts[1].to_string(),
                    components: parts[2..].iter().map(|s| s.to_string()).collect(),
                    signed_by,
                    file: format!("/{f}"),
                });
            }
        }
    }
    let mut seen: BTreeMap<String, (Option<String>, String)> = BTreeMap::new();
    for s in &out {
        let key = format!("{} {}", s.uri.trim_end_matches('/'), s.suite);
        if let Some((other, file)) = seen.get(&key)
            && *other != s.signed_by
        {
            return Err(format!(
                "E: Conflicting values set for option Signed-By regarding source {} {}: {} != {} (in {} and {})\nE: The list of sources could not be read.",
                s.uri,
                s.suite,
                other.clone().unwrap_or_default(),
                s.signed_by.clone().unwrap_or_default(),
                file,
                s.file
            ));
        }
        seen.insert(key, (s.signed_by.clone(), s.file.clone()));
    }
    Ok(out)
}

/// The fingerprint of a keyring file as apt reads it (armored only in `.asc`, binary only in
/// `.gpg`), or why it is ignored.
pub fn keyring_fingerprints(bytes: &[u8], path: &str) -> Result<Vec<String>, String> {
    let armored = bytes.starts_with(b"-----BEGIN PGP PUBLIC KEY BLOCK-----");
    let binary = bytes.first() == Some(&0x99);
    let ok = (path.ends_with(".asc") && armored)
        || (path.ends_with(".gpg") && binary)
        || (!path.ends_with(".asc") && !path.ends_with(".gpg") && binary);
    if !ok {
        return Err(format!(
            "W: The key(s) in the keyring {path} are ignored as the file has an unsupported filetype."
        ));
    }
    let raw = if armored {
        net::dearmor(bytes).unwrap_or_default()
    } else {
        bytes.to_vec()
    };
    Ok(String::from_utf8_lossy(&raw)
        .lines()
        .filter_map(|l| {
            l.strip_prefix("fingerprint: ")
                .map(|f| f.trim().to_string())
        })
        .collect())
}

fn list_name(url: &str) -> String {
    let s = url
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .trim_start_matches("file://")
        .trim_start_matches("file:");
    s.trim_start_matches('/').replace('/', "_")
}

fn update(ctx: &mut Ctx) -> i32 {
    let srcs = match sources(ctx) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return 100;
        }
    };
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    let mut n = 0;
    let mut lists: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for s in &srcs {
        n += 1;
        let release = match net::fetch(ctx, &s.release_url()) {
            Ok(r) => r,
            Err(net::FetchError::NoHost(h)) => {
                println!(
                    "Ign:{n} {} InRelease\n  Could not resolve '{h}'",
                    s.display()
                );
                warnings.push(format!(
                    "W: Failed to fetch {}  Could not resolve '{h}'",
                    s.release_url()
                ));
                continue;
            }
            Err(_) => {
                println!("Err:{n} {} InRelease\n  404  Not Found", s.display());
                errors.push(format!(
                    "E: The repository '{} Release' does not have a Release file.",
                    s.display()
                ));
                continue;
            }
        };
        let text = String::from_utf8_lossy(&release);
        let signer = text
            .lines()
            .find_map(|l| l.strip_prefix("testbed-signature key="))
            .unwrap_or("")
            .trim()
            .to_string();
        let keyrings: Vec<String> = match &s.signed_by {
            Some(p) => vec![p.clone()],
            None => {
                let mut v = Vec::new();
                if let Ok(rd) = fs::read_dir(ctx.path("etc/apt/trusted.gpg.d")) {
                    for e in rd.flatten() {
                        v.push(format!(
                            "/etc/apt/trusted.gpg.d/{}",
                            e.file_name().to_string_lossy()
                        ));
                    }
                }
                v.push("/etc/apt/trusted.gpg".into());
                v
            }
        };
        let mut trusted = false;
        for k in &keyrings {
            let Ok(bytes) = fs::read(ctx.path(k)) else {
                continue;
            };
            match keyring_fingerprints(&bytes, k) {
                Ok(fps) => trusted |= fps.contains(&signer),
                Err(w) => warnings.push(w),
            }
        }
        if !trusted {
            let keyid = &signer[signer.len().saturating_sub(16)..];
            println!(
                "Err:{n} {} InRelease\n  The following signatures couldn't be verified because the public key is not available: NO_PUBKEY {keyid}",
                s.display()
            );
            warnings.push(format!("W: GPG error: {} InRelease: The following signatures couldn't be verified because the public key is not available: NO_PUBKEY {keyid}", s.display()));
            errors.push(format!("E: The repository '{} InRelease' is not signed.\nN: Updating from such a repository can't be done securely, and is therefore disabled by default.", s.display()));
            continue;
        }
        println!("Get:{n} {} InRelease [{} B]", s.display(), release.len());
        for url in s.index_urls() {
            match net::fetch(ctx, &url) {
                Ok(idx) => {
                    lists.insert(list_name(&url), idx);
                }
                Err(_) => {
                    errors.push(format!("E: Failed to fetch {url}  404  Not Found"));
                }
            }
        }
    }
    println!("Reading package lists...");
    // Replace the lists directory content with what this update fetched.
    let dir = ctx.path(LISTS);
    let old: HashSet<String> = fs::read_dir(&dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    for name in old.iter().filter(|n| n.ends_with("_Packages")) {
        if !lists.contains_key(name) {
            ctx.remove(format!("{LISTS}/{name}"));
        }
    }
    for (name, data) in lists {
        let _ = ctx.write(format!("{LISTS}/{name}"), data);
    }
    for w in warnings {
        eprintln!("{w}");
    }
    if errors.is_empty() {
        0
    } else {
        for e in errors {
            eprintln!("{e}");
        }
        100
    }
}

/// Every package version available from the fetched lists.
fn available(ctx: &Ctx) -> Vec<Stanza> {
    let mut out = Vec::new();
    if let Ok(rd) = fs::read_dir(ctx.path(LISTS)) {
        for e in rd.flatten() {
            if e.file_name().to_string_lossy().ends_with("_Packages") {
                out.extend(parse_stanzas(
                    &fs::read_to_string(e.path()).unwrap_or_default(),
                ));
            }
        }
    }
    out
}

fn candidates(avail: &[Stanza], pkg: &str) -> Vec<String> {
    let mut v: Vec<String> = avail
        .iter()
        .filter(|s| s.get("Package").map(String::as_str) == Some(pkg))
        .filter_map(|s| s.get("Version").cloned())
        .collect();
    v.sort_by(|a, b| compare_versions(b, a));
    v.dedup();
    v
}

fn stanza<'a>(avail: &'a [Stanza], pkg: &str, version: &str) -> Option<&'a Stanza> {
    avail.iter().find(|s| {
        s.get("Package").map(String::as_str) == Some(pkg)
            && s.get("Version").map(String::as_str) == Some(version)
    })
}

fn depends(s: &Stanza) -> Vec<String> {
    s.get("Depends")
        .map(|d| {
            d.split(',')
                .filter_map(|alt| alt.split('|').next())
                .map(|p| p.split('(').next().unwrap_or("").trim().to_string())
                .filter(|p| !p.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

fn print_reading() {
    println!("Reading package lists...\nBuilding dependency tree...\nReading state information...");
}

fn install(ctx: &mut Ctx, pkgs: &[String], flags: &Flags) -> i32 {
    super::simulated_delay("apt-install");
    print_reading();
    let avail = available(ctx);
    let mut plan: Vec<(String, String)> = Vec::new();
    let mut queue: Vec<(String, Option<String>, bool)> = pkgs
        .iter()
        .map(|p| match p.split_once('=') {
            Some((n, v)) => (n.to_string(), Some(v.to_string()), true),
            None => (p.clone(), None, true),
        })
        .collect();
    let mut seen = HashSet::new();
    let mut held_changed = Vec::new();
    let mut downgraded = Vec::new();
    while let Some((name, version, explicit)) = queue.pop() {
        if !seen.insert(name.clone()) {
            continue;
        }
        let cands = candidates(&avail, &name);
        let installed = installed_version(&ctx.root, &name);
        if cands.is_empty() {
            if installed.is_some() && !explicit {
                continue;
            }
            if installed.is_some() && version.is_none() {
                println!(
                    "{name} is already the newest version ({}).",
                    installed.unwrap_or_default()
                );
                continue;
            }
            eprintln!("E: Unable to locate package {name}");
            return 100;
        }
        let target = match &version {
            Some(v) if !cands.contains(v) => {
                eprintln!("E: Version '{v}' for '{name}' was not found");
                return 100;
            }
            Some(v) => v.clone(),
            None if !explicit && installed.is_some() => continue,
            None => cands[0].clone(),
        };
        if installed.as_deref() == Some(target.as_str()) {
            if explicit {
                println!("{name} is already the newest version ({target}).");
            }
            continue;
        }
        if is_held(&ctx.root, &name) {
            held_changed.push(name.clone());
        }
        if installed
            .as_ref()
            .is_some_and(|i| compare_versions(&target, i) == Ordering::Less)
        {
            downgraded.push(name.clone());
        }
        if let Some(s) = stanza(&avail, &name, &target) {
            for d in depends(s) {
                queue.push((d, None, false));
            }
        }
        plan.push((name, target));
    }
    if !held_changed.is_empty() && !flags.allow_held {
        eprintln!(
            "E: Held packages were changed and -y was used without --allow-change-held-packages."
        );
        return 100;
    }
    if !downgraded.is_empty() && !flags.allow_downgrades {
        eprintln!("E: Packages were downgraded and -y was used without --allow-downgrades.");
        return 100;
    }
    let upgrades = plan
        .iter()
        .filter(|(n, _)| installed_version(&ctx.root, n).is_some())
        .count();
    println!(
        "{upgrades} upgraded, {} newly installed, 0 to remove and 0 not upgraded.",
        plan.len() - upgrades
    );
    if plan.is_empty() {
        return 0;
    }
    if !flags.yes {
        println!("Do you want to continue? [Y/n] Abort.");
        return 1;
    }
    plan.reverse();
    for (name, version) in &plan {
        let s = stanza(&avail, name, version).cloned().unwrap_or_default();
        set_status(ctx, name, Some((version, &s)), None);
        println!("Setting up {name} ({version}) ...");
        postinst(ctx, name);
    }
    0
}

fn set_status(ctx: &mut Ctx, name: &str, install: Option<(&str, &Stanza)>, hold: Option<bool>) {
    let mut st = status(&ctx.root);
    let idx = st
        .iter()
        .position(|s| s.get("Package").map(String::as_str) == Some(name));
    match (idx, install) {
        (Some(i), Some((v, _))) => {
            st[i].insert("Version".into(), v.into());
            let held = st[i].get("Status").is_some_and(|s| s.starts_with("hold"));
            st[i].insert(
                "Status".into(),
                format!("{} ok installed", if held { "hold" } else { "install" }),
            );
        }
        (None, Some((v, s))) => {
            let mut n = Stanza::new();
            n.insert("Package".into(), name.into());
            n.insert("Status".into(), "install ok installed".into());
            for k in [
                "Priority",
                "Section",
                "Maintainer",
                "Architecture",
                "Depends",
                "Description",
            ] {
                if let Some(x) = s.get(k) {
                    n.insert(k.into(), x.clone());
                }
            }
            n.insert("Version".into(), v.into());
            st.push(n);
        }
        (Some(i), None) if hold.is_none() => {
            st.remove(i);
        }
        _ => {}
    }
    if let Some(h) = hold
        && let Some(s) = st
            .iter_mut()
            .find(|s| s.get("Package").map(String::as_str) == Some(name))
    {
        let rest = s
            .get("Status")
            .and_then(|x| x.split_once(' ').map(|(_, r)| r.to_string()))
            .unwrap_or_else(|| "ok installed".into());
        s.insert(
            "Status".into(),
            format!("{} {rest}", if h { "hold" } else { "install" }),
        );
    }
    let _ = ctx.write(STATUS, render_stanzas(&st));
}

/// The conffile Docker's containerd.io ships.
pub const CONTAINERD_IO_CONFIG: &str =
    include_str!("../../templates/ubuntu-24.04/etc/containerd/config.toml");

fn postinst(ctx: &mut Ctx, name: &str) {
    for t in package_tools(name) {
        let _ = link_tool(&ctx.bin, t);
    }
    let unit = |ctx: &mut Ctx, file: &str, body: &str| {
        let _ = ctx.write(file, body);
    };
    let enable_start = |ctx: &mut Ctx, u: &str| {
        let link = ctx.path(format!("etc/systemd/system/multi-user.target.wants/{u}"));
        if link.symlink_metadata().is_err() {
            let _ = fs::create_dir_all(link.parent().expect("parent"));
            let _ = std::os::unix::fs::symlink(format!("/lib/systemd/system/{u}"), &link);
        }
        let mut units = systemctl::Units::load(ctx);
        let _ = systemctl::start(ctx, &mut units, u);
        units.save(ctx);
    };
    match name {
        "containerd.io" => {
            if !ctx.path("etc/containerd/config.toml").exists() {
                let _ = ctx.write("etc/containerd/config.toml", CONTAINERD_IO_CONFIG);
            }
            unit(
                ctx,
                "lib/systemd/system/containerd.service",
                "[Unit]\nDescription=containerd container runtime\n\n[Service]\nExecStart=/usr/bin/containerd\n\n[Install]\nWantedBy=multi-user.target\n",
            );
            enable_start(ctx, "containerd.service");
        }
        "kubelet" => {
            unit(
                ctx,
                "lib/systemd/system/kubelet.service",
                "[Unit]\nDescription=kubelet: The Kubernetes Node Agent\nDocumentation=https://kubernetes.io/docs/\nWants=network-online.target\nAfter=network-online.target\n\n[Service]\nExecStart=/usr/bin/kubelet\nRestart=always\nStartLimitInterval=0\nRestartSec=10\n\n[Install]\nWantedBy=multi-user.target\n",
            );
            enable_start(ctx, "kubelet.service");
        }
        "kubeadm" => {
            unit(
                ctx,
                "lib/systemd/system/kubelet.service.d/10-kubeadm.conf",
                "# Note: This dropin only works with kubeadm and kubelet v1.11+\n[Service]\nEnvironment=\"KUBELET_KUBECONFIG_ARGS=--bootstrap-kubeconfig=/etc/kubernetes/bootstrap-kubelet.conf --kubeconfig=/etc/kubernetes/kubelet.conf\"\nEnvironment=\"KUBELET_CONFIG_ARGS=--config=/var/lib/kubelet/config.yaml\"\nEnvironmentFile=-/var/lib/kubelet/kubeadm-flags.env\nEnvironmentFile=-/etc/default/kubelet\nExecStart=\nExecStart=/usr/bin/kubelet $KUBELET_KUBECONFIG_ARGS $KUBELET_CONFIG_ARGS $KUBELET_KUBEADM_ARGS $KUBELET_EXTRA_ARGS\n",
            );
        }
        "docker-ce" => {
            unit(
                ctx,
                "lib/systemd/system/docker.service",
                "[Unit]\nDescription=Docker Application Container Engine\nAfter=containerd.service\n\n[Service]\nExecStart=/usr/bin/dockerd -H fd:// --containerd=/run/containerd/containerd.sock\n\n[Install]\nWantedBy=multi-user.target\n",
            );
            enable_start(ctx, "docker.service");
        }
        _ => {}
    }
}

fn remove(ctx: &mut Ctx, pkgs: &[String], flags: &Flags, purge: bool) -> i32 {
    print_reading();
    let mut todo = Vec::new();
    for p in pkgs {
        if installed_version(&ctx.root, p).is_none() {
            println!("Package '{p}' is not installed, so not removed");
            continue;
        }
        if is_held(&ctx.root, p) && !flags.allow_held {
            eprintln!(
                "E: Held packages were changed and -y was used without --allow-change-held-packages."
            );
            return 100;
        }
        todo.push(p.clone());
    }
    println!(
        "0 upgraded, 0 newly installed, {} to remove and 0 not upgraded.",
        todo.len()
    );
    if !todo.is_empty() && !flags.yes {
        println!("Do you want to continue? [Y/n] Abort.");
        return 1;
    }
    for p in todo {
        set_status(ctx, &p, None, None);
        for t in package_tools(&p) {
            unlink_tool(&ctx.bin, t);
        }
        if purge && p == "containerd.io" {
            ctx.remove("etc/containerd/config.toml");
        }
        println!("Removing {p} ...");
    }
    0
}

#[derive(Debug, Default)]
struct Flags {
    yes: bool,
    allow_held: bool,
    allow_downgrades: bool,
}

fn parse_flags(args: &[String]) -> (Flags, Vec<String>) {
    let mut f = Flags::default();
    let mut pos = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        match a.as_str() {
            "-y" | "--yes" | "--assume-yes" | "-qy" | "-yq" => f.yes = true,
            "--allow-change-held-packages" => f.allow_held = true,
            "--allow-downgrades" => f.allow_downgrades = true,
            "-o" | "-c" | "-t" => i += 1,
            a if a.starts_with('-') => {
                if a.starts_with("-") && !a.starts_with("--") && a.contains('y') {
                    f.yes = true;
                }
            }
            _ => pos.push(a.clone()),
        }
        i += 1;
    }
    if std::env::var("APT_ASSUME_YES").is_ok() {
        f.yes = true;
    }
    (f, pos)
}

/// `apt-get update | install | remove | purge`.
pub fn apt_get(ctx: &mut Ctx) -> i32 {
    let (flags, pos) = parse_flags(&ctx.args.clone());
    let Some(cmd) = pos.first() else {
        eprintln!("E: Invalid operation");
        return 100;
    };
    match cmd.as_str() {
        "update" => update(ctx),
        "install" => install(ctx, &pos[1..], &flags),
        "remove" | "autoremove" => remove(ctx, &pos[1..], &flags, false),
        "purge" => remove(ctx, &pos[1..], &flags, true),
        "upgrade" | "dist-upgrade" | "full-upgrade" => {
            print_reading();
            println!("0 upgraded, 0 newly installed, 0 to remove and 0 not upgraded.");
            0
        }
        "clean" | "autoclean" => 0,
        other => {
            eprintln!("E: Invalid operation {other}");
            100
        }
    }
}

/// `apt-mark hold | unhold | showhold PKG...`.
pub fn apt_mark(ctx: &mut Ctx) -> i32 {
    let pos: Vec<String> = ctx
        .args
        .iter()
        .filter(|a| !a.starts_with('-'))
        .cloned()
        .collect();
    let Some(cmd) = pos.first().cloned() else {
        eprintln!("E: No operation specified");
        return 100;
    };
    match cmd.as_str() {
        "showhold" => {
            let mut held: Vec<String> = status(&ctx.root)
                .into_iter()
                .filter(|s| s.get("Status").is_some_and(|x| x.starts_with("hold")))
                .filter_map(|s| s.get("Package").cloned())
                .collect();
            held.sort();
            for p in held {
                println!("{p}");
            }
            0
        }
        "hold" | "unhold" => {
            let hold = cmd == "hold";
            for p in &pos[1..] {
                let known = status(&ctx.root)
                    .iter()
                    .any(|s| s.get("Package") == Some(p));
                if !known {
                    eprintln!("E: Unable to locate package {p}");
                    return 100;
                }
                if is_held(&ctx.root, p) == hold {
                    println!(
                        "{p} was already {}.",
                        if hold { "set on hold" } else { "not on hold" }
                    );
                    continue;
                }
                set_status(ctx, p, None, Some(hold));
                println!(
                    "{p} {}.",
                    if hold { "set on hold" } else { "canceled hold" }
                );
            }
            0
        }
        "manual" | "auto" | "showmanual" | "showauto" => 0,
        other => {
            eprintln!("E: Invalid operation {other}");
            100
        }
    }
}

/// `apt-cache policy | madison PKG`.
pub fn apt_cache(ctx: &mut Ctx) -> i32 {
    let pos: Vec<String> = ctx
        .args
        .iter()
        .filter(|a| !a.starts_with('-'))
        .cloned()
        .collect();
    let avail = available(ctx);
    match pos.first().map(String::as_str) {
        Some("policy") => {
            for p in &pos[1..] {
                let c = candidates(&avail, p);
                println!(
                    "{p}:\n  Installed: {}\n  Candidate: {}\n  Version table:",
                    installed_version(&ctx.root, p).unwrap_or_else(|| "(none)".into()),
                    c.first().cloned().unwrap_or_else(|| "(none)".into())
                );
                for v in c {
                    println!("     {v} 500");
                }
            }
            0
        }
        Some("madison") => {
            for p in &pos[1..] {
                for v in candidates(&avail, p) {
                    println!("{p:>10} | {v} | testbed-mirror");
                }
            }
            0
        }
        Some("show") => {
            for p in &pos[1..] {
                for s in avail.iter().filter(|s| s.get("Package") == Some(p)) {
                    print!("{}", render_stanzas(std::slice::from_ref(s)));
                }
            }
            0
        }
        _ => {
            eprintln!("E: Invalid operation");
            100
        }
    }
}

fn dpkg_format(fmt: &str, s: &Stanza) -> String {
    let mut out = fmt.replace("\\n", "\n").replace("\\t", "\t");
    let abbrev = match s.get("Status").map(String::as_str) {
        Some(st) if st.ends_with("installed") && st.starts_with("hold") => "hi ",
        Some(st) if st.ends_with("installed") => "ii ",
        _ => "un ",
    };
    out = out.replace("${db:Status-Abbrev}", abbrev);
    out = out.replace(
        "${binary:Package}",
        s.get("Package").map(String::as_str).unwrap_or(""),
    );
    out = out.replace(
        "${db:Status-Status}",
        s.get("Status")
            .and_then(|x| x.rsplit(' ').next())
            .unwrap_or("not-installed"),
    );
    while let Some(start) = out.find("${") {
        let Some(end) = out[start..].find('}') else {
            break;
        };
        let key = out[start + 2..start + end].to_string();
        let key = key.split(';').next().unwrap_or("").to_string();
        out.replace_range(
            start..start + end + 1,
            s.get(&key).map(String::as_str).unwrap_or(""),
        );
    }
    out
}

/// `dpkg-query -W [-f=FORMAT] PKG... | -s PKG | -l [PKG...]`.
pub fn dpkg_query(ctx: &mut Ctx) -> i32 {
    let args = ctx.args.clone();
    let mut fmt = None;
    let mut mode = "";
    let mut names = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        if let Some(f) = a
            .strip_prefix("-f=")
            .or_else(|| a.strip_prefix("--showformat="))
        {
            fmt = Some(f.to_string());
        } else if a == "-f" || a == "--showformat" {
            fmt = args.get(i + 1).cloned();
            i += 1;
        } else if a == "-W" || a == "--show" {
            mode = "W";
        } else if a == "-s" || a == "--status" {
            mode = "s";
        } else if a == "-l" || a == "--list" {
            mode = "l";
        } else if !a.starts_with('-') {
            names.push(a.clone());
        }
        i += 1;
    }
    let st = status(&ctx.root);
    let find = |n: &str| {
        st.iter()
            .find(|s| s.get("Package").map(String::as_str) == Some(n) && is_installed(s))
    };
    let mut rc = 0;
    match mode {
        "W" => {
            let f = fmt.unwrap_or_else(|| "${binary:Package}\t${Version}\n".into());
            if names.is_empty() {
                for s in st.iter().filter(|s| is_installed(s)) {
                    print!("{}", dpkg_format(&f, s));
                }
            }
            for n in &names {
                match find(n) {
                    Some(s) => print!("{}", dpkg_format(&f, s)),
                    None => {
                        eprintln!("dpkg-query: no packages found matching {n}");
                        rc = 1;
                    }
                }
            }
        }
        "s" => {
            for n in &names {
                match find(n) {
                    Some(s) => print!("{}", render_stanzas(std::slice::from_ref(s))),
                    None => {
                        eprintln!(
                            "dpkg-query: package '{n}' is not installed and no information is available"
                        );
                        rc = 1;
                    }
                }
            }
        }
        "l" => {
            println!(
                "Desired=Unknown/Install/Remove/Purge/Hold\n| Status=Not/Inst/Conf-files/Unpacked/halF-conf/Half-inst/trig-aWait/Trig-pend\n|/ Err?=(none)/Reinst-required (Status,Err: uppercase=bad)\n||/ Name Version Architecture Description\n+++-====-=======-============-==========="
            );
            for s in st
                .iter()
                .filter(|s| names.is_empty() || s.get("Package").is_some_and(|p| names.contains(p)))
            {
                print!(
                    "{}",
                    dpkg_format(
                        "${db:Status-Abbrev} ${Package} ${Version} ${Architecture} ${Description}\n",
                        s
                    )
                );
            }
            for n in names.iter().filter(|n| find(n).is_none()) {
                eprintln!("dpkg-query: no packages found matching {n}");
                rc = 1;
            }
        }
        _ => {
            eprintln!("dpkg-query: error: need an action option");
            rc = 2;
        }
    }
    rc
}

/// `dpkg --print-architecture | -l | -s`.
pub fn dpkg(ctx: &mut Ctx) -> i32 {
    if ctx.args.iter().any(|a| a == "--print-architecture") {
        println!("amd64");
        return 0;
    }
    dpkg_query(ctx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debian_versions_compare_like_dpkg() {
        assert_eq!(
            compare_versions("1.35.1-1.1", "1.35.0-1.1"),
            Ordering::Greater
        );
        assert_eq!(
            compare_versions("1.35.10-1.1", "1.35.9-1.1"),
            Ordering::Greater
        );
        assert_eq!(compare_versions("1.0~rc1", "1.0"), Ordering::Less);
        assert_eq!(compare_versions("2:1.0", "3.0"), Ordering::Greater);
        assert_eq!(compare_versions("1.7.28-1", "1.7.28-1"), Ordering::Equal);
        assert_eq!(compare_versions("2.1.5-1", "1.7.28-1"), Ordering::Greater);
    }

    #[test]
    fn keyrings_are_read_like_apt() {
        let bin = b"\x99\x01\x0dtestbed\nfingerprint: ABC\n";
        assert_eq!(keyring_fingerprints(bin, "/k.gpg").unwrap(), vec!["ABC"]);
        let armored = net::armor(bin);
        assert!(keyring_fingerprints(armored.as_bytes(), "/k.gpg").is_err());
        assert_eq!(
            keyring_fingerprints(armored.as_bytes(), "/k.asc").unwrap(),
            vec!["ABC"]
        );
    }
}
