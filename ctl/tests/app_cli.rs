//! The `ctl deploy`, `ctl scale` and `ctl get` binaries: bad input is refused before the cluster
//! is contacted, and the whole flow works over HTTPS with the admin kubeconfig next to
//! cluster.yaml (served by the simulated cluster).

use std::path::Path;
use std::process::Output;

use simkube::{NodeSpec, SimCluster, SimOptions};

const CLUSTER_YAML: &str = "master: {name: k8s-master, ip: 192.168.50.10}
nodes:
  - {name: node-1, ip: 192.168.50.11}
  - {name: node-2, ip: 192.168.50.12}
podCIDR: 10.244.0.0/16
";

async fn ctl(dir: &Path, args: &[&str]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_ctl"))
        .arg("--config")
        .arg(dir.join("cluster.yaml"))
        .args(args)
        .env("HOME", dir)
        .env_remove("KUBECONFIG")
        .kill_on_drop(true)
        .output()
        .await
        .expect("run ctl")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn workdir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("cluster.yaml"), CLUSTER_YAML).unwrap();
    dir
}

#[tokio::test]
async fn without_a_kubeconfig_every_cluster_command_says_to_run_bootstrap_first() {
    let dir = workdir();
    for args in [
        &["deploy", "letschat"][..],
        &["deploy", "-f", "x.yaml"],
        &["scale", "letschat", "--replicas", "3"],
        &["get", "pods"],
    ] {
        let out = ctl(dir.path(), args).await;
        assert!(!out.status.success(), "{args:?}");
        let err = text(&out.stderr);
        assert!(err.contains("run `ctl bootstrap` first"), "{args:?}: {err}");
        assert!(err.contains("admin.kubeconfig"), "{args:?}: {err}");
    }
}

#[tokio::test]
async fn bad_replicas_and_targets_are_refused_before_the_cluster_is_contacted() {
    // No kubeconfig: had ctl contacted the cluster, the error would be about bootstrap.
    let dir = workdir();
    for (args, want) in [
        (
            &["scale", "letschat", "--replicas", "-1"][..],
            "must not be negative",
        ),
        (
            &["scale", "letschat", "--replicas=-3"],
            "must not be negative",
        ),
        (
            &["scale", "letschat", "--replicas", "three"],
            "not a whole number",
        ),
        (
            &["scale", "letschat", "--replicas", "51"],
            "more than the limit of 50",
        ),
        (
            &["scale", "svc/letschat", "--replicas", "2"],
            "only Deployments can be scaled",
        ),
    ] {
        let out = ctl(dir.path(), args).await;
        assert!(!out.status.success(), "{args:?}");
        let err = text(&out.stderr);
        assert!(err.contains(want), "{args:?}: {err}");
        assert!(!err.contains("bootstrap"), "{args:?}: {err}");
    }
    let out = ctl(dir.path(), &["deploy", "wordpress"]).await;
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("letschat"),
        "{}",
        text(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_scale_and_get_work_over_https_with_the_admin_kubeconfig() {
    let cluster = SimCluster::new(SimOptions::fast(0.05)).unwrap();
    for (name, ip, cp) in [
        ("k8s-master", "192.168.50.10", true),
        ("node-1", "192.168.50.11", false),
        ("node-2", "192.168.50.12", false),
    ] {
        cluster
            .register_node(&NodeSpec {
                name: name.into(),
                ip: ip.into(),
                control_plane: cp,
            })
            .unwrap();
        cluster.start_kubelet(name);
        cluster.set_cni_installed(name, true);
    }
    let listener = tokio::net::TcpListener::bind("127.7.0.1:0").await.unwrap();
    let server = cluster.serve_https(listener, None, &[]).unwrap();
    let dir = workdir();
    cluster
        .write_kubeconfig(
            &dir.path().join("admin.kubeconfig"),
            &server.url(),
            "kubernetes-admin",
            &["kubeadm:cluster-admins"],
        )
        .unwrap();

    let out = ctl(dir.path(), &["deploy", "letschat"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let urls = text(&out.stdout);
    assert!(urls.starts_with("http://192.168.50.11:3"), "{urls}");
    assert_eq!(urls.lines().count(), 2, "{urls}");

    let out = ctl(dir.path(), &["scale", "deploy/letschat", "--replicas", "3"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    let rows: Vec<&str> = table.lines().skip(1).collect();
    assert_eq!(rows.len(), 3, "{table}");
    for r in &rows {
        let cols: Vec<&str> = r.split_whitespace().collect();
        assert_eq!(cols[1..4], ["1/1", "Running", "0"], "{table}");
        assert!(cols[6] == "node-1" || cols[6] == "node-2", "{table}");
    }

    let out = ctl(dir.path(), &["get", "svc", "-o", "wide"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("NodePort"),
        "{}",
        text(&out.stdout)
    );

    let out = ctl(dir.path(), &["scale", "letchat", "--replicas", "2"]).await;
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("existing Deployments: letschat, mongo"),
        "{}",
        text(&out.stderr)
    );
    server.shutdown().await;
}
