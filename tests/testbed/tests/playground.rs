//! The playground (`testbed demo --exit`) runs the seed's whole story with the real binaries and
//! leaves no process behind.

use std::process::Command;

/// Processes whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(needle) {
            found.push(cmdline);
        }
    }
    found
}

#[test]
fn demo_exit_runs_the_story_and_leaves_nothing_running() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("demo");
    // The sample cluster, moved to addresses no other test uses.
    let config = dir.path().join("playground.yaml");
    std::fs::write(
        &config,
        testbed::demo::LOCAL_CLUSTER.replace("127.50.0.", "127.63.0."),
    )
    .unwrap();
    let out = Command::new(testbed::bins::bin("testbed"))
        .arg("demo")
        .arg("--exit")
        .arg("--dir")
        .arg(&work)
        .arg("--config")
        .arg(&config)
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed:\n{stdout}\n{stderr}");
    assert!(
        stderr.contains("SIMULATED"),
        "says it is simulated: {stderr}"
    );

    // The last table is `ctl get pods -o wide`: three Let's Chat pods, Running and Ready, with
    // no restarts, on the workers only.
    let pods = stdout
        .rsplit("NAME ")
        .next()
        .expect("a pod table")
        .lines()
        .filter(|l| l.starts_with("letschat-"))
        .collect::<Vec<_>>();
    assert_eq!(pods.len(), 3, "{stdout}");
    for pod in &pods {
        let f: Vec<&str> = pod.split_whitespace().collect();
        assert_eq!(&f[1..4], &["1/1", "Running", "0"], "{pod}");
        assert!(matches!(f[f.len() - 1], "node-1" | "node-2"), "{pod}");
    }
    let nodes_ready = stdout
        .lines()
        .filter(|l| l.split_whitespace().nth(1) == Some("Ready"))
        .count();
    assert_eq!(nodes_ready, 3, "three Ready nodes: {stdout}");
    assert!(stderr.contains("admin.kubeconfig"), "{stderr}");

    let left = processes_mentioning(work.to_str().unwrap());
    assert!(left.is_empty(), "left running: {left:#?}");
}
