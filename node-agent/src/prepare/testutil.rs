//! Unit-test world for the steps: a tempdir host root and a [`RecordingRunner`] whose scripted
//! answers can keep a little state ("marks") like the real tools would.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Arc, Mutex};

use cluster_common::config::ClusterConfig;

use super::Host;
use crate::exec::{Output, RecordingRunner};

#[derive(Clone)]
pub struct World {
    pub dir: Arc<tempfile::TempDir>,
    pub runner: RecordingRunner,
    marks: Arc<Mutex<BTreeSet<String>>>,
}

impl World {
    pub fn new() -> Self {
        Self {
            dir: Arc::new(tempfile::tempdir().unwrap()),
            runner: RecordingRunner::new(),
            marks: Arc::default(),
        }
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn write(&self, rel: &str, data: &[u8]) {
        let p = self.root().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, data).unwrap();
    }

    pub fn read(&self, rel: &str) -> Vec<u8> {
        std::fs::read(self.root().join(rel)).unwrap_or_default()
    }

    pub fn exists(&self, rel: &str) -> bool {
        self.root().join(rel).exists()
    }

    pub fn mark(&self, key: &str) {
        self.marks.lock().unwrap().insert(key.to_string());
    }

    pub fn marked(&self, key: &str) -> bool {
        self.marks.lock().unwrap().contains(key)
    }

    pub fn ok(stdout: &str) -> Output {
        Output {
            code: 0,
            stdout: stdout.as_bytes().to_vec(),
            stderr: Vec::new(),
        }
    }

    pub fn fail(code: i32, stderr: &str) -> Output {
        Output {
            code,
            stdout: Vec::new(),
            stderr: stderr.as_bytes().to_vec(),
        }
    }

    /// Answers `curl -o OUT` and `gpg … -o OUT IN` by writing a key to OUT.
    pub fn fake_downloads(&self) {
        self.runner.respond(move |c| {
            let i = c.args.iter().position(|a| a == "-o")?;
            if c.program != "curl" && c.program != "gpg" {
                return None;
            }
            std::fs::write(&c.args[i + 1], b"-----BEGIN PGP PUBLIC KEY BLOCK-----\n").unwrap();
            None
        });
    }

    pub fn is_mutating(&self, line: &str) -> bool {
        let argv: Vec<String> = line.split(' ').map(str::to_string).collect();
        super::is_mutating(&argv)
    }

    pub fn config(ip: &str) -> ClusterConfig {
        ClusterConfig::parse(
            &format!(
                "master: {{name: k8s-master, ip: {ip}}}\nnodes:\n  - {{name: node-1, ip: 127.0.0.3}}\npodCIDR: 10.244.0.0/16\n\
                 kubernetes: {{version: \"1.35\", packageVersion: \"1.35.0-1.1\"}}\n"
            ),
            Path::new("/tmp/cluster.yaml"),
        )
        .unwrap()
    }

    pub fn host_with(&self, config: ClusterConfig, name: &str) -> Host {
        let spec = config.host(name).unwrap().clone();
        Host {
            root: self.root().to_path_buf(),
            runner: Arc::new(self.runner.clone()),
            config: Arc::new(config),
            spec,
        }
    }

    pub fn host_master(&self) -> Host {
        self.host_with(Self::config("127.0.0.2"), "k8s-master")
    }
}
