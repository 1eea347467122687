//! The simulated Tigera operator: once its pod runs, every `Installation`
//! (`operator.tigera.io/v1`) becomes a `calico-system` namespace and a `calico-node` DaemonSet
//! (hostNetwork, tolerating everything); calico-node pods then mark their node's CNI installed
//! (see [`crate::kubelet::Behaviour::CalicoNode`]).

use crate::apiserver::ApiServer;
use crate::util::name;
use serde_json::json;

/// The calico-node image the operator deploys.
pub const CALICO_NODE_IMAGE: &str = "quay.io/calico/node:v3.30.3";

/// One pass of the operator.
pub fn operator_step(api: &ApiServer) {
    let installs = api.store.list("installations.operator.tigera.io", None).0;
    for inst in installs {
        if inst["metadata"]["deletionTimestamp"].is_string() {
            continue;
        }
        if api.store.get("namespaces", "", "calico-system").is_none() {
            let def = api.def("namespaces");
            let _ = api.create(
                &def,
                "",
                json!({"metadata": {"name": "calico-system"}}),
                &Default::default(),
            );
        }
        if api
            .store
            .get("daemonsets.apps", "calico-system", "calico-node")
            .is_none()
        {
            let def = api.def("daemonsets.apps");
            let ds = json!({"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {
                "name": "calico-node", "namespace": "calico-system", "labels": {"k8s-app": "calico-node"}},
                "spec": {"selector": {"matchLabels": {"k8s-app": "calico-node"}},
                    "template": {"metadata": {"labels": {"k8s-app": "calico-node"}},
                        "spec": {"hostNetwork": true, "tolerations": [{"operator": "Exists"}],
                            "serviceAccountName": "calico-node",
                            "containers": [{"name": "calico-node", "image": CALICO_NODE_IMAGE}]}}}});
            let _ = api.create(&def, "calico-system", ds, &Default::default());
        }
        let ready = api
            .store
            .get("daemonsets.apps", "calico-system", "calico-node")
            .is_some_and(|d| {
                let s = &d["status"];
                s["desiredNumberScheduled"].as_i64().unwrap_or(0) > 0
                    && s["numberReady"] == s["desiredNumberScheduled"]
            });
        let want = json!({"variant": "Calico", "computed": inst["spec"],
            "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" },
                "reason": if ready { "AllObjectsAvailable" } else { "ResourceNotReady" },
                "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}]});
        if inst["status"] != want {
            let mut t = api.store.txn();
            if let Some(cur) = t.get("installations.operator.tigera.io", "", name(&inst)) {
                let mut n = (*cur).clone();
                n["status"] = want;
                t.put("installations.operator.tigera.io", "", name(&inst), n);
            }
        }
    }
}
