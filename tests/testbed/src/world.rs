//! The long-running side of the simulated cluster, owned by the harness: the simulated API
//! servers that `kubeadm init` asks for and the kubelet simulations that `systemctl restart
//! kubelet` asks for. Shims reach it through the control socket with one JSON request per
//! connection: `{"op": "...", ...}`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use cluster_common::config::ClusterConfig;
use serde_json::{Value, json};

/// The simulated cluster behind the shims.
#[derive(Debug)]
pub struct World {
    config: Arc<ClusterConfig>,
    state: PathBuf,
    netns: Option<HashMap<String, String>>,
    kubelets: Mutex<HashMap<String, bool>>,
}

impl World {
    /// A world for `config` with its state under `state`; `netns` maps host → namespace.
    pub fn new(
        config: Arc<ClusterConfig>,
        state: PathBuf,
        netns: Option<HashMap<String, String>>,
    ) -> Self {
        Self {
            config,
            state,
            netns,
            kubelets: Mutex::new(HashMap::new()),
        }
    }

    /// Whether the kubelet simulation of `host` runs.
    pub fn kubelet_running(&self, host: &str) -> bool {
        self.kubelets
            .lock()
            .expect("lock")
            .get(host)
            .copied()
            .unwrap_or(false)
    }

    /// Answers one control request.
    pub fn handle(&self, req: &Value) -> Result<Value, String> {
        let op = req.get("op").and_then(Value::as_str).unwrap_or("");
        let host = req
            .get("host")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        match op {
            "ping" => Ok(
                json!({"hosts": self.config.hosts().count(), "state": self.state, "netns": self.netns.is_some()}),
            ),
            "kubelet_start" => {
                self.kubelets.lock().expect("lock").insert(host, true);
                Ok(Value::Null)
            }
            "kubelet_stop" => {
                self.kubelets.lock().expect("lock").insert(host, false);
                Ok(Value::Null)
            }
            other => Err(format!("unknown control request {other:?}")),
        }
    }

    /// Stops every simulated API server and kubelet.
    pub fn shutdown(&self) {
        self.kubelets.lock().expect("lock").clear();
    }
}
