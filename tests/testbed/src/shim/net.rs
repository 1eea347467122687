//! Network-facing shims. There is no internet: `curl` serves `file://` URLs from the host root and
//! `http(s)://HOST/PATH` from the simulated mirror in the root (`srv/mirror/HOST/PATH`), failing
//! with curl's exit codes (6 unknown host, 22 with `-f` on 404, 37 unreadable file). `gpg
//! --dearmor` turns an armored key into the binary keyring apt wants in a `.gpg` file and refuses
//! to overwrite without `--yes` (no terminal to ask, like the real one). `ip` and `ss` answer
//! from the host's cluster.yaml IP.

use std::io::{Read, Write};

use base64::Engine;

use super::Ctx;

/// Why a fetch failed.
#[derive(Debug)]
pub enum FetchError {
    /// No such host in the mirror.
    NoHost(String),
    /// The host exists but not the path (HTTP 404).
    NotFound,
    /// A `file://` path that cannot be read.
    File(String),
}

/// Fetches a URL as the host sees it.
pub fn fetch(ctx: &Ctx, url: &str) -> Result<Vec<u8>, FetchError> {
    if let Some(path) = url
        .strip_prefix("file://")
        .or_else(|| url.strip_prefix("file:"))
    {
        let path = if path.starts_with('/') {
            path.to_string()
        } else {
            format!("/{path}")
        };
        return std::fs::read(ctx.path(&path))
            .map_err(|e| FetchError::File(format!("{path}: {e}")));
    }
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| FetchError::NoHost(url.to_string()))?;
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let host_dir = ctx.path(format!("srv/mirror/{host}"));
    if !host_dir.is_dir() {
        return Err(FetchError::NoHost(host.to_string()));
    }
    let p = host_dir.join(path);
    if p.is_file() {
        std::fs::read(p).map_err(|_| FetchError::NotFound)
    } else {
        Err(FetchError::NotFound)
    }
}

/// ASCII armor of a binary key.
pub fn armor(bin: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(bin);
    let mut out = String::from("-----BEGIN PGP PUBLIC KEY BLOCK-----\n\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str("=tbed\n-----END PGP PUBLIC KEY BLOCK-----\n");
    out
}

/// Decodes an ASCII-armored key; `None` if it is not armored.
pub fn dearmor(text: &[u8]) -> Option<Vec<u8>> {
    let text = String::from_utf8_lossy(text);
    let mut lines = text.lines();
    lines.find(|l| l.starts_with("-----BEGIN PGP"))?;
    let mut b64 = String::new();
    let mut in_body = false;
    for l in lines {
        if l.starts_with("-----END") {
            break;
        }
        if !in_body {
            if l.trim().is_empty() {
                in_body = true;
            }
            continue;
        }
        if l.starts_with('=') {
            continue;
        }
        b64.push_str(l.trim());
    }
    base64::engine::general_purpose::STANDARD.decode(b64).ok()
}

/// `curl [-fsSL] URL [-o FILE]`.
pub fn curl(ctx: &mut Ctx) -> i32 {
    let args = ctx.args.clone();
    let mut fail = false;
    let mut silent_errors = false;
    let mut output = None;
    let mut url = None;
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        if a == "-o" || a == "--output" {
            output = args.get(i + 1).cloned();
            i += 1;
        } else if let Some(o) = a.strip_prefix("--output=") {
            output = Some(o.to_string());
        } else if a.starts_with("--") {
            if a == "--fail" {
                fail = true;
            }
        } else if a.starts_with('-') {
            fail |= a.contains('f');
            silent_errors |= a.contains('s') && !a.contains('S');
            if a.ends_with('o') {
                output = args.get(i + 1).cloned();
                i += 1;
            }
        } else {
            url = Some(a.clone());
        }
        i += 1;
    }
    let report = |code: i32, msg: String| {
        if !silent_errors {
            eprintln!("curl: ({code}) {msg}");
        }
        code
    };
    let Some(url) = url else {
        return report(2, "no URL specified".into());
    };
    let body = match fetch(ctx, &url) {
        Ok(b) => b,
        Err(FetchError::NoHost(h)) => return report(6, format!("Could not resolve host: {h}")),
        Err(FetchError::File(e)) => return report(37, format!("Couldn't open file {e}")),
        Err(FetchError::NotFound) if fail => {
            return report(22, "The requested URL returned error: 404".into());
        }
        Err(FetchError::NotFound) => b"<html><body><h1>404 Not Found</h1></body></html>\n".to_vec(),
    };
    match output {
        Some(o) if o != "-" => {
            let path = if o.starts_with('/') {
                o.clone()
            } else {
                std::env::current_dir()
                    .map(|d| d.join(&o).display().to_string())
                    .unwrap_or(o.clone())
            };
            // Relative to cwd, which the agent keeps inside the root; absolute → under the root.
            let target = if path.starts_with(&ctx.root.display().to_string()) {
                std::path::PathBuf::from(&path)
            } else {
                ctx.path(&path)
            };
            if let Some(d) = target.parent()
                && !d.is_dir()
            {
                return report(
                    23,
                    format!(
                        "Failure writing output to destination, passed {} returned 0",
                        body.len()
                    ),
                );
            }
            let before = std::fs::read(&target).ok();
            if std::fs::write(&target, &body).is_err() {
                return report(23, "Failure writing output to destination".into());
            }
            ctx.changed |= before.as_deref() != Some(&body[..]);
        }
        _ => {
            let _ = std::io::stdout().write_all(&body);
        }
    }
    0
}

/// `gpg --dearmor [-o FILE] [--yes] [--batch] [INPUT]` (stdin → stdout by default).
pub fn gpg(ctx: &mut Ctx) -> i32 {
    let args = ctx.args.clone();
    if !args.iter().any(|a| a == "--dearmor" || a == "--dearmour") {
        eprintln!("gpg: only --dearmor is simulated by the testbed");
        return 2;
    }
    let yes = args.iter().any(|a| a == "--yes");
    let mut output = None;
    let mut input = None;
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        if a == "-o" || a == "--output" {
            output = args.get(i + 1).cloned();
            i += 1;
        } else if !a.starts_with('-') {
            input = Some(a.clone());
        }
        i += 1;
    }
    let data = match &input {
        Some(p) if p != "-" => match std::fs::read(ctx.path(p)) {
            Ok(d) => d,
            Err(_) => {
                eprintln!("gpg: can't open '{p}': No such file or directory");
                eprintln!("gpg: dearmoring failed: No such file or directory");
                return 2;
            }
        },
        _ => {
            let mut d = Vec::new();
            let _ = std::io::stdin().read_to_end(&mut d);
            d
        }
    };
    let Some(bin) = dearmor(&data) else {
        eprintln!("gpg: no valid OpenPGP data found.");
        eprintln!("gpg: dearmoring failed: Unknown system error");
        return 2;
    };
    match output {
        Some(o) if o != "-" => {
            let target = ctx.path(&o);
            if target.exists() && !yes {
                eprintln!(
                    "File '{o}' exists. Overwrite? (y/N) gpg: signal Inappropriate ioctl for device caught"
                );
                eprintln!("gpg: Sorry, we are in batchmode - can't get input");
                return 2;
            }
            let before = std::fs::read(&target).ok();
            if let Err(e) = std::fs::write(&target, &bin) {
                eprintln!("gpg: can't create '{o}': {e}");
                return 2;
            }
            ctx.changed |= before.as_deref() != Some(&bin[..]);
        }
        _ => {
            let _ = std::io::stdout().write_all(&bin);
        }
    }
    0
}

/// `ip -4 -o addr show` / `ip addr` / `ip route`: the host's cluster.yaml IP on its interface.
pub fn ip(ctx: &mut Ctx) -> i32 {
    let args: Vec<&str> = ctx
        .args
        .iter()
        .map(String::as_str)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let ifname = if ctx.ip.starts_with("127.") {
        "lo"
    } else {
        "eth1"
    };
    match args.first().copied() {
        Some("a") | Some("addr") | Some("address") | None => {
            if ctx.args.iter().any(|a| a == "-o") {
                println!(
                    "1: lo    inet 127.0.0.1/8 scope host lo\\       valid_lft forever preferred_lft forever"
                );
                if ifname != "lo" {
                    println!(
                        "3: {ifname}    inet {}/24 brd + scope global {ifname}\\       valid_lft forever preferred_lft forever",
                        ctx.ip
                    );
                } else {
                    println!(
                        "1: lo    inet {}/8 scope host lo\\       valid_lft forever preferred_lft forever",
                        ctx.ip
                    );
                }
            } else {
                println!(
                    "1: lo: <LOOPBACK,UP,LOWER_UP> mtu 65536 qdisc noqueue state UNKNOWN group default qlen 1000\n    inet 127.0.0.1/8 scope host lo"
                );
                println!(
                    "3: {ifname}: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 state UP\n    inet {}/24 scope global {ifname}",
                    ctx.ip
                );
            }
            0
        }
        Some("r") | Some("route") => {
            println!("default via 10.0.2.2 dev eth0 proto dhcp src 10.0.2.15 metric 100");
            0
        }
        _ => {
            eprintln!("ip: only addr and route are simulated");
            1
        }
    }
}

/// `ss -ltn`: listening TCP sockets on the host's IP (checked for real with a bind).
pub fn ss(ctx: &mut Ctx) -> i32 {
    println!("State  Recv-Q Send-Q Local Address:Port Peer Address:Port Process");
    for port in [6443u16, 10250, 10257, 10259, 2379, 2380] {
        let addr = format!("{}:{port}", ctx.ip);
        if std::net::TcpListener::bind(&addr).is_err() {
            println!("LISTEN 0      4096   {addr}        0.0.0.0:*");
        }
    }
    0
}
