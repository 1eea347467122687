//! Finding the workspace's real binaries (`ctl`, `master-agent`, `node-agent`, `testbed`) from
//! tests. `cargo test` builds only the binaries of the package under test, so the first call
//! runs `cargo build --bins` once for the product binaries and testbed (a no-op when they are fresh) and
//! then returns paths under `target/<profile>/`.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The directory holding the workspace binaries (`target/debug` for tests).
pub fn bin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let exe = std::env::current_exe().expect("test executable path");
        // target/debug/deps/<test> → target/debug
        let dir = exe
            .parent()
            .and_then(|d| {
                if d.ends_with("deps") {
                    d.parent()
                } else {
                    Some(d)
                }
            })
            .expect("target dir")
            .to_path_buf();
        let release = dir.ends_with("release");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = std::process::Command::new(cargo);
        cmd.args([
            "build",
            "--quiet",
            "-p",
            "ctl",
            "-p",
            "master-agent",
            "-p",
            "node-agent",
            "-p",
            "testbed",
            "--bins",
        ]);
        if release {
            cmd.arg("--release");
        }
        cmd.current_dir(env!("CARGO_MANIFEST_DIR"));
        let status = cmd
            .status()
            .expect("run cargo build for the workspace binaries");
        assert!(
            status.success(),
            "cargo build of the workspace binaries failed"
        );
        dir
    })
}

/// The path of workspace binary `name`, built if needed.
pub fn bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(p.exists(), "{} was not built", p.display());
    p
}
