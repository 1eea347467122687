//! The shim host tools on their own, run as an agent would run them (the host's shim PATH and
//! environment, cwd in the root): each behaves like the real tool, including its failures, and
//! records argv, cwd, exit code and whether it changed anything. Addresses 127.72.x.y.

use std::path::Path;
use std::process::Output;

use testbed::{Testbed, UpOptions};

fn world(dir: &Path, prefix: &str) -> Testbed {
    let cfg = dir.join("cluster.yaml");
    std::fs::write(
        &cfg,
        format!("master: {{name: k8s-master, ip: {prefix}.10}}\nnodes:\n  - {{name: node-1, ip: {prefix}.11}}\npodCIDR: 10.244.0.0/16\n"),
    )
    .unwrap();
    Testbed::up(
        &cfg,
        &dir.join("state"),
        UpOptions {
            start_agents: false,
            ..Default::default()
        },
    )
    .unwrap()
}

fn run(tb: &Testbed, host: &str, tool: &str, args: &[&str]) -> Output {
    tb.run_tool(host, tool, args).unwrap()
}

fn ok(tb: &Testbed, host: &str, tool: &str, args: &[&str]) -> String {
    let o = run(tb, host, tool, args);
    assert!(
        o.status.success(),
        "{tool} {args:?} failed ({:?}):\n{}\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

const K8S_LIST: &str = "deb [signed-by=/etc/apt/keyrings/kubernetes-apt-keyring.gpg] file:///srv/mirror/pkgs.k8s.io/core:/stable:/v1.35/deb/ /\n";
const K8S_KEY: &str = "file:///srv/mirror/pkgs.k8s.io/core:/stable:/v1.35/deb/Release.key";

/// What a correct host preparation does, through the shims.
fn prepare(tb: &Testbed, host: &str) {
    let root = tb.root(host);
    ok(tb, host, "swapoff", &["-a"]);
    ok(tb, host, "modprobe", &["overlay"]);
    ok(tb, host, "modprobe", &["br_netfilter"]);
    std::fs::write(
        root.join("etc/sysctl.d/k8s.conf"),
        "net.ipv4.ip_forward = 1\nnet.bridge.bridge-nf-call-iptables = 1\nnet.bridge.bridge-nf-call-ip6tables = 1\n",
    )
    .unwrap();
    ok(tb, host, "sysctl", &["--system"]);
    ok(
        tb,
        host,
        "curl",
        &[
            "-fsSL",
            "file:///srv/mirror/download.docker.com/linux/ubuntu/gpg",
            "-o",
            "/etc/apt/keyrings/docker.asc",
        ],
    );
    std::fs::write(
        root.join("etc/apt/sources.list.d/docker.list"),
        "deb [arch=amd64 signed-by=/etc/apt/keyrings/docker.asc] file:///srv/mirror/download.docker.com/linux/ubuntu noble stable\n",
    )
    .unwrap();
    ok(tb, host, "curl", &["-fsSL", K8S_KEY, "-o", "/tmp/k8s.key"]);
    ok(
        tb,
        host,
        "gpg",
        &[
            "--batch",
            "--yes",
            "--dearmor",
            "-o",
            "/etc/apt/keyrings/kubernetes-apt-keyring.gpg",
            "/tmp/k8s.key",
        ],
    );
    std::fs::write(
        root.join("etc/apt/sources.list.d/kubernetes.list"),
        K8S_LIST,
    )
    .unwrap();
    ok(tb, host, "apt-get", &["update"]);
    ok(
        tb,
        host,
        "apt-get",
        &[
            "install",
            "-y",
            "containerd.io",
            "kubelet",
            "kubeadm",
            "kubectl",
        ],
    );
    let default = ok(tb, host, "containerd", &["config", "default"]);
    let cfg = default.replace(
        "            ShimCgroup = ''\n",
        "            ShimCgroup = ''\n            SystemdCgroup = true\n",
    );
    std::fs::write(root.join("etc/containerd/config.toml"), cfg).unwrap();
    ok(tb, host, "systemctl", &["restart", "containerd"]);
}

#[test]
fn apt_installs_only_from_repositories_configured_with_their_key() {
    let dir = tempfile::tempdir().unwrap();
    let tb = world(dir.path(), "127.72.0");
    let h = "node-1";
    let root = tb.root(h);
    let o = run(&tb, h, "apt-get", &["install", "-y", "kubelet"]);
    assert_eq!(o.status.code(), Some(100));
    assert!(
        err(&o).contains("E: Unable to locate package kubelet"),
        "{}",
        err(&o)
    );

    std::fs::write(
        root.join("etc/apt/sources.list.d/kubernetes.list"),
        K8S_LIST,
    )
    .unwrap();
    let o = run(&tb, h, "apt-get", &["update"]);
    assert_eq!(o.status.code(), Some(100), "no keyring yet");
    assert!(
        err(&o).contains("NO_PUBKEY 234654DA9A296436"),
        "{}",
        err(&o)
    );
    assert!(err(&o).contains("is not signed"), "{}", err(&o));

    // The armored key saved as .gpg (the classic mistake): apt ignores it.
    ok(
        &tb,
        h,
        "curl",
        &[
            "-fsSL",
            K8S_KEY,
            "-o",
            "/etc/apt/keyrings/kubernetes-apt-keyring.gpg",
        ],
    );
    let o = run(&tb, h, "apt-get", &["update"]);
    assert_eq!(o.status.code(), Some(100));
    assert!(err(&o).contains("unsupported filetype"), "{}", err(&o));

    // gpg refuses to overwrite without --yes (no terminal to ask).
    ok(&tb, h, "curl", &["-fsSL", K8S_KEY, "-o", "/tmp/k.asc"]);
    let o = run(
        &tb,
        h,
        "gpg",
        &[
            "--dearmor",
            "-o",
            "/etc/apt/keyrings/kubernetes-apt-keyring.gpg",
            "/tmp/k.asc",
        ],
    );
    assert_eq!(o.status.code(), Some(2));
    ok(
        &tb,
        h,
        "gpg",
        &[
            "--batch",
            "--yes",
            "--dearmor",
            "-o",
            "/etc/apt/keyrings/kubernetes-apt-keyring.gpg",
            "/tmp/k.asc",
        ],
    );
    ok(&tb, h, "apt-get", &["update"]);

    let o = run(&tb, h, "apt-get", &["install", "kubelet"]);
    assert_eq!(
        o.status.code(),
        Some(1),
        "no -y and no terminal: apt aborts"
    );
    let o = run(&tb, h, "apt-get", &["install", "-y", "kubelet=9.9.9-1.1"]);
    assert!(err(&o).contains("Version '9.9.9-1.1' for 'kubelet' was not found"));
    assert!(!tb.host(h).unwrap().bin().join("kubeadm").exists());
    ok(
        &tb,
        h,
        "apt-get",
        &[
            "install",
            "-y",
            "kubelet=1.35.0-1.1",
            "kubeadm=1.35.0-1.1",
            "kubectl=1.35.0-1.1",
        ],
    );
    assert!(
        tb.host(h).unwrap().bin().join("kubeadm").exists(),
        "kubeadm now on the PATH"
    );
    assert_eq!(
        ok(&tb, h, "dpkg-query", &["-W", "-f=${Version}", "kubelet"]),
        "1.35.0-1.1"
    );
    assert_eq!(
        ok(&tb, h, "dpkg-query", &["-W", "cri-tools"]),
        "cri-tools\t1.35.0-1.1\n",
        "dependency installed"
    );
    let o = run(&tb, h, "dpkg-query", &["-W", "docker-ce"]);
    assert_eq!(o.status.code(), Some(1));

    assert_eq!(
        ok(
            &tb,
            h,
            "apt-mark",
            &["hold", "kubelet", "kubeadm", "kubectl"]
        )
        .lines()
        .count(),
        3
    );
    assert_eq!(
        ok(&tb, h, "apt-mark", &["showhold"]),
        "kubeadm\nkubectl\nkubelet\n"
    );
    let o = run(&tb, h, "apt-get", &["install", "-y", "kubelet"]);
    assert_eq!(o.status.code(), Some(100), "upgrading a held package");
    assert!(
        err(&o).contains("Held packages were changed"),
        "{}",
        err(&o)
    );
    let before = tb.shim_log(h).len();
    ok(&tb, h, "apt-get", &["install", "-y", "kubelet=1.35.0-1.1"]);
    ok(&tb, h, "apt-mark", &["hold", "kubelet"]);
    let log = tb.shim_log(h);
    assert!(
        log[before..].iter().all(|c| !c.changed),
        "re-running changes nothing: {:?}",
        &log[before..]
    );
    assert!(log.iter().any(|c| c.argv[0] == "apt-get" && c.exit == 100));
    assert!(log.iter().all(|c| c.cwd == root.display().to_string()));
    assert_eq!(
        ok(
            &tb,
            h,
            "dpkg-query",
            &["-W", "-f=${db:Status-Abbrev}", "kubelet"]
        ),
        "hi "
    );
}

#[test]
fn apt_refuses_two_keyrings_for_one_repository() {
    let dir = tempfile::tempdir().unwrap();
    let tb = world(dir.path(), "127.72.1");
    let root = tb.root("node-1");
    std::fs::write(
        root.join("etc/apt/sources.list.d/kubernetes.list"),
        K8S_LIST,
    )
    .unwrap();
    std::fs::write(
        root.join("etc/apt/sources.list.d/k8s-again.list"),
        K8S_LIST.replace("kubernetes-apt-keyring.gpg", "other.gpg"),
    )
    .unwrap();
    let o = run(&tb, "node-1", "apt-get", &["update"]);
    assert_eq!(o.status.code(), Some(100));
    assert!(
        err(&o).contains("Conflicting values set for option Signed-By"),
        "{}",
        err(&o)
    );
}

#[test]
fn swap_sysctl_modules_and_units_act_on_the_host_root() {
    let dir = tempfile::tempdir().unwrap();
    let tb = world(dir.path(), "127.72.2");
    let h = "node-1";
    let root = tb.root(h);
    let read = |p: &str| std::fs::read_to_string(root.join(p)).unwrap();
    assert!(ok(&tb, h, "swapon", &["--show"]).contains("/swap.img"));
    ok(&tb, h, "swapoff", &["-a"]);
    assert_eq!(
        read("proc/swaps").lines().count(),
        1,
        "only the header left"
    );
    assert_eq!(ok(&tb, h, "swapon", &["--show"]), "");
    assert!(read("proc/meminfo").contains("SwapTotal:               0 kB"));
    let o = run(&tb, h, "systemctl", &["is-active", "swap.img.swap"]);
    assert_eq!(o.status.code(), Some(3));
    ok(&tb, h, "systemctl", &["mask", "swap.img.swap"]);
    assert_eq!(
        std::fs::read_link(root.join("etc/systemd/system/swap.img.swap")).unwrap(),
        Path::new("/dev/null")
    );
    let o = run(&tb, h, "systemctl", &["start", "swap.img.swap"]);
    assert!(err(&o).contains("masked"));

    // bridge sysctls exist only once br_netfilter is loaded, as on a real kernel
    std::fs::write(
        root.join("etc/sysctl.d/k8s.conf"),
        "net.ipv4.ip_forward = 1\nnet.bridge.bridge-nf-call-iptables = 1\n",
    )
    .unwrap();
    let o = run(&tb, h, "sysctl", &["--system"]);
    assert_eq!(o.status.code(), Some(255));
    assert!(
        err(&o).contains("cannot stat /proc/sys/net/bridge/bridge-nf-call-iptables"),
        "{}",
        err(&o)
    );
    let o = run(&tb, h, "modprobe", &["nonexistent_mod"]);
    assert_eq!(o.status.code(), Some(1));
    ok(&tb, h, "modprobe", &["br_netfilter"]);
    assert!(ok(&tb, h, "lsmod", &[]).contains("br_netfilter"));
    ok(&tb, h, "sysctl", &["--system"]);
    assert_eq!(read("proc/sys/net/ipv4/ip_forward"), "1\n");
    assert_eq!(ok(&tb, h, "sysctl", &["-n", "net.ipv4.ip_forward"]), "1\n");

    // units: enable/disable, kubelet crash-loops until the host is joined
    let o = run(&tb, h, "systemctl", &["restart", "kubelet"]);
    assert_eq!(
        o.status.code(),
        Some(5),
        "no kubelet unit before the package"
    );
    assert_eq!(
        ok(&tb, h, "systemctl", &["is-enabled", "containerd"]),
        "enabled\n"
    );
    ok(&tb, h, "systemctl", &["disable", "containerd"]);
    assert_eq!(
        run(&tb, h, "systemctl", &["is-enabled", "containerd"])
            .status
            .code(),
        Some(1)
    );
    std::fs::write(
        root.join("lib/systemd/system/containerd.service"),
        "[Service]\nExecStart=/usr/bin/containerd --changed\n",
    )
    .unwrap();
    ok(&tb, h, "systemctl", &["daemon-reload"]);
    std::fs::write(
        root.join("lib/systemd/system/containerd.service"),
        "[Service]\nExecStart=/usr/bin/containerd\n",
    )
    .unwrap();
    let o = run(&tb, h, "systemctl", &["restart", "containerd"]);
    assert!(
        err(&o).contains("Run 'systemctl daemon-reload'"),
        "{}",
        err(&o)
    );
}

#[test]
fn swap_file_with_a_space_is_escaped_and_turned_off() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("cluster.yaml");
    std::fs::write(
        &cfg,
        "master: {name: m, ip: 127.72.3.10}\nnodes: []\npodCIDR: 10.244.0.0/16\n",
    )
    .unwrap();
    let opts = UpOptions {
        start_agents: false,
        ..Default::default()
    }
    .variant(
        "*",
        testbed::roots::Variant::SwapFile("/my swap.img".into()),
    );
    let tb = Testbed::up(&cfg, &dir.path().join("state"), opts).unwrap();
    assert!(
        std::fs::read_to_string(tb.root("m").join("proc/swaps"))
            .unwrap()
            .contains("/my\\040swap.img")
    );
    let o = run(&tb, "m", "swapoff", &["/no such"]);
    assert_ne!(o.status.code(), Some(0));
    ok(&tb, "m", "swapoff", &["/my swap.img"]);
    assert_eq!(
        std::fs::read_to_string(tb.root("m").join("proc/swaps"))
            .unwrap()
            .lines()
            .count(),
        1
    );
}

#[test]
fn containerd_config_default_follows_the_installed_version_and_cri_needs_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let tb = world(dir.path(), "127.72.4");
    let h = "node-1";
    let root = tb.root(h);
    assert!(
        ok(&tb, h, "containerd", &["config", "default"]).contains("version = 2"),
        "1.7 from the template"
    );
    ok(
        &tb,
        h,
        "curl",
        &[
            "-fsSL",
            "file:///srv/mirror/download.docker.com/linux/ubuntu/gpg",
            "-o",
            "/etc/apt/keyrings/docker.asc",
        ],
    );
    std::fs::write(
        root.join("etc/apt/sources.list.d/docker.list"),
        "deb [arch=amd64 signed-by=/etc/apt/keyrings/docker.asc] file:///srv/mirror/download.docker.com/linux/ubuntu noble stable\n",
    )
    .unwrap();
    ok(
        &tb,
        h,
        "curl",
        &["-fsSL", K8S_KEY, "-o", "/etc/apt/keyrings/kubernetes.asc"],
    );
    std::fs::write(
        root.join("etc/apt/sources.list.d/kubernetes.list"),
        K8S_LIST.replace("kubernetes-apt-keyring.gpg", "kubernetes.asc"),
    )
    .unwrap();
    ok(&tb, h, "apt-get", &["update"]);
    ok(
        &tb,
        h,
        "apt-get",
        &["install", "-y", "containerd.io", "cri-tools"],
    );
    let o = run(&tb, h, "crictl", &["info"]);
    assert!(
        err(&o).contains("unknown service runtime.v1.RuntimeService"),
        "CRI disabled: {}",
        err(&o)
    );
    let v3 = ok(&tb, h, "containerd", &["config", "default"]);
    assert!(
        v3.starts_with("version = 3") && !v3.contains("SystemdCgroup"),
        "2.x default: {v3}"
    );
    std::fs::write(root.join("etc/containerd/config.toml"), &v3).unwrap();
    assert!(
        run(&tb, h, "crictl", &["info"]).status.code() == Some(1),
        "still the loaded config until a restart"
    );
    assert!(!ok(&tb, h, "ctr", &["plugins", "ls"]).contains(" cri "));
    ok(&tb, h, "systemctl", &["restart", "containerd"]);
    ok(&tb, h, "crictl", &["info"]);
    let plugins = ok(&tb, h, "ctr", &["plugins", "ls"]);
    assert!(
        plugins
            .lines()
            .any(|l| l.starts_with("io.containerd.grpc.v1")
                && l.contains(" cri ")
                && l.ends_with("ok")),
        "{plugins}"
    );
    ok(&tb, h, "systemctl", &["stop", "containerd"]);
    assert_eq!(
        run(&tb, h, "ctr", &["plugins", "ls"]).status.code(),
        Some(1)
    );
}

#[test]
fn shims_accept_root_joined_absolute_paths_as_the_agent_passes_them() {
    let dir = tempfile::tempdir().unwrap();
    let tb = world(dir.path(), "127.72.8");
    let root = tb.root("node-1");
    let download = root.join("etc/apt/keyrings/.k.download");
    let out = root.join("etc/apt/keyrings/k.gpg");
    ok(
        &tb,
        "node-1",
        "curl",
        &["-fsSL", "-o", download.to_str().unwrap(), K8S_KEY],
    );
    ok(
        &tb,
        "node-1",
        "gpg",
        &[
            "--batch",
            "--yes",
            "--dearmor",
            "-o",
            out.to_str().unwrap(),
            download.to_str().unwrap(),
        ],
    );
    assert_eq!(std::fs::read(&out).unwrap()[0], 0x99, "binary keyring");
}

#[test]
fn curl_fails_like_curl_without_internet() {
    let dir = tempfile::tempdir().unwrap();
    let tb = world(dir.path(), "127.72.5");
    assert_eq!(
        run(
            &tb,
            "node-1",
            "curl",
            &["-fsSL", "https://example.invalid/x"]
        )
        .status
        .code(),
        Some(6)
    );
    assert_eq!(
        run(
            &tb,
            "node-1",
            "curl",
            &["-fsSL", "https://pkgs.k8s.io/nope"]
        )
        .status
        .code(),
        Some(22)
    );
    assert_eq!(
        run(&tb, "node-1", "curl", &["-fsSL", "file:///nope"])
            .status
            .code(),
        Some(37)
    );
    let key = ok(
        &tb,
        "node-1",
        "curl",
        &[
            "-fsSL",
            "https://pkgs.k8s.io/core:/stable:/v1.34/deb/Release.key",
        ],
    );
    assert!(key.starts_with("-----BEGIN PGP PUBLIC KEY BLOCK-----"));
}

#[test]
fn kubeadm_init_fails_preflight_on_an_unprepared_host_and_forms_a_cluster_once_prepared() {
    let dir = tempfile::tempdir().unwrap();
    let tb = world(dir.path(), "127.72.6");
    let m = "k8s-master";
    let root = tb.root(m);
    let config = "apiVersion: kubeadm.k8s.io/v1beta4\nkind: InitConfiguration\nlocalAPIEndpoint:\n  advertiseAddress: 127.72.6.10\n  bindPort: 6443\nnodeRegistration:\n  name: k8s-master\n  kubeletExtraArgs:\n  - name: node-ip\n    value: 127.72.6.10\n---\napiVersion: kubeadm.k8s.io/v1beta4\nkind: ClusterConfiguration\nkubernetesVersion: v1.35.0\nnetworking:\n  podSubnet: 10.244.0.0/16\n  serviceSubnet: 10.96.0.0/12\n";
    std::fs::write(root.join("tmp/kubeadm.yaml"), config).unwrap();

    // kubeadm is not even installed on a fresh host
    assert!(
        tb.run_tool(m, "kubeadm", &["init"]).is_err(),
        "no kubeadm on the PATH"
    );
    // install only the packages, nothing else prepared
    ok(&tb, m, "curl", &["-fsSL", K8S_KEY, "-o", "/tmp/k.asc"]);
    ok(
        &tb,
        m,
        "gpg",
        &[
            "--dearmor",
            "-o",
            "/etc/apt/keyrings/kubernetes-apt-keyring.gpg",
            "/tmp/k.asc",
        ],
    );
    std::fs::write(
        root.join("etc/apt/sources.list.d/kubernetes.list"),
        K8S_LIST,
    )
    .unwrap();
    ok(&tb, m, "apt-get", &["update"]);
    ok(
        &tb,
        m,
        "apt-get",
        &["install", "-y", "kubelet", "kubeadm", "kubectl"],
    );
    let o = run(
        &tb,
        m,
        "kubeadm",
        &["init", "--config", "/tmp/kubeadm.yaml"],
    );
    assert_eq!(o.status.code(), Some(1));
    let e = err(&o);
    assert!(
        e.contains("[ERROR CRI]") && e.contains("unknown service runtime.v1.RuntimeService"),
        "{e}"
    );
    assert!(
        e.contains("[ERROR FileContent--proc-sys-net-ipv4-ip_forward]"),
        "{e}"
    );
    assert!(e.contains("[WARNING Swap]"), "{e}");
    assert!(
        !root.join("etc/kubernetes/admin.conf").exists(),
        "preflight changes nothing"
    );

    // v1beta3-style map kubeletExtraArgs is refused by the v1beta4 decoder
    std::fs::write(
        root.join("tmp/bad.yaml"),
        config.replace(
            "  kubeletExtraArgs:\n  - name: node-ip\n    value: 127.72.6.10\n",
            "  kubeletExtraArgs:\n    node-ip: 127.72.6.10\n",
        ),
    )
    .unwrap();
    let o = run(&tb, m, "kubeadm", &["init", "--config", "/tmp/bad.yaml"]);
    assert!(err(&o).contains("cannot unmarshal object into Go struct field NodeRegistrationOptions.nodeRegistration.kubeletExtraArgs"), "{}", err(&o));

    // swap still on: the kubelet never gets healthy
    let mut p = tb.run_tool(m, "modprobe", &["br_netfilter"]).unwrap();
    assert!(p.status.success());
    std::fs::write(
        root.join("etc/sysctl.d/k8s.conf"),
        "net.ipv4.ip_forward = 1\n",
    )
    .unwrap();
    ok(&tb, m, "sysctl", &["--system"]);
    std::fs::write(
        root.join("etc/containerd/config.toml"),
        ok(&tb, m, "containerd", &["config", "default"]),
    )
    .unwrap();
    ok(&tb, m, "systemctl", &["restart", "containerd"]);
    p = run(
        &tb,
        m,
        "kubeadm",
        &["init", "--config", "/tmp/kubeadm.yaml"],
    );
    assert_eq!(p.status.code(), Some(1));
    assert!(
        err(&p).contains("The kubelet is not healthy after 4m0s"),
        "{}",
        err(&p)
    );
    let o = run(
        &tb,
        m,
        "kubeadm",
        &["init", "--config", "/tmp/kubeadm.yaml"],
    );
    assert!(
        err(&o).contains("[ERROR FileAvailable--etc-kubernetes-manifests-kube-apiserver.yaml]"),
        "not idempotent: {}",
        err(&o)
    );
    ok(&tb, m, "kubeadm", &["reset", "-f"]);

    prepare(&tb, m);
    let out = ok(
        &tb,
        m,
        "kubeadm",
        &[
            "init",
            "--config",
            "/tmp/kubeadm.yaml",
            "--skip-token-print",
        ],
    );
    assert!(
        out.contains("Your Kubernetes control-plane has initialized successfully!"),
        "{out}"
    );
    assert!(
        !out.contains("--token"),
        "--skip-token-print keeps the token out of the output"
    );
    for f in [
        "etc/kubernetes/admin.conf",
        "etc/kubernetes/kubelet.conf",
        "etc/kubernetes/pki/ca.crt",
        "etc/kubernetes/pki/ca.key",
    ] {
        assert!(root.join(f).exists(), "{f}");
    }
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(root.join("etc/kubernetes/admin.conf"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    assert_eq!(
        ok(&tb, m, "systemctl", &["is-active", "kubelet"]),
        "active\n"
    );
    assert!(
        std::net::TcpStream::connect("127.72.6.10:6443").is_ok(),
        "API server at the advertise address"
    );
    let client = tb.world().kube_client().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let nodes: kube::Api<k8s_openapi::api::core::v1::Node> = kube::Api::all(client);
    let master = rt.block_on(nodes.get("k8s-master")).unwrap();
    let taints = master.spec.unwrap().taints.unwrap();
    assert_eq!(taints[0].key, "node-role.kubernetes.io/control-plane");
    let ip = &master.status.unwrap().addresses.unwrap()[0].address;
    assert_eq!(ip, "127.72.6.10", "node-ip from kubeletExtraArgs");
    let o = run(
        &tb,
        m,
        "kubeadm",
        &["init", "--config", "/tmp/kubeadm.yaml"],
    );
    assert!(
        err(&o).contains("[ERROR Port-6443]: Port 6443 is in use"),
        "already initialised: {}",
        err(&o)
    );

    // join: wrong pin, expired token, then a good one
    let n = "node-1";
    prepare(&tb, n);
    let good = ok(&tb, m, "kubeadm", &["token", "create", "--ttl", "10m"])
        .trim()
        .to_string();
    let ca_hash = testbed::world::ca_cert_hash(
        &std::fs::read_to_string(root.join("etc/kubernetes/pki/ca.crt")).unwrap(),
    )
    .unwrap();
    let join_cfg = |token: &str, hash: &str| {
        format!(
            "apiVersion: kubeadm.k8s.io/v1beta4\nkind: JoinConfiguration\ndiscovery:\n  bootstrapToken:\n    apiServerEndpoint: 127.72.6.10:6443\n    token: {token}\n    caCertHashes:\n    - {hash}\nnodeRegistration:\n  name: node-1\n  kubeletExtraArgs:\n  - name: node-ip\n    value: 127.72.6.11\n"
        )
    };
    let nroot = tb.root(n);
    std::fs::write(
        nroot.join("tmp/join.yaml"),
        join_cfg(&good, &format!("sha256:{}", "0".repeat(64))),
    )
    .unwrap();
    let o = run(&tb, n, "kubeadm", &["join", "--config", "/tmp/join.yaml"]);
    assert!(
        err(&o).contains("none of the public keys") && err(&o).contains("are pinned"),
        "{}",
        err(&o)
    );
    let short = ok(&tb, m, "kubeadm", &["token", "create", "--ttl", "1s"])
        .trim()
        .to_string();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    std::fs::write(nroot.join("tmp/join.yaml"), join_cfg(&short, &ca_hash)).unwrap();
    let o = run(&tb, n, "kubeadm", &["join", "--config", "/tmp/join.yaml"]);
    assert!(
        err(&o).contains("could not find a JWS signature in the cluster-info ConfigMap"),
        "expired: {}",
        err(&o)
    );
    assert!(!nroot.join("etc/kubernetes/kubelet.conf").exists());
    std::fs::write(nroot.join("tmp/join.yaml"), join_cfg(&good, &ca_hash)).unwrap();
    let out = ok(&tb, n, "kubeadm", &["join", "--config", "/tmp/join.yaml"]);
    assert!(out.contains("This node has joined the cluster"), "{out}");
    assert!(nroot.join("etc/kubernetes/kubelet.conf").exists());
    assert!(rt.block_on(nodes.get("node-1")).is_ok());
    assert!(
        tb.shim_log(n)
            .iter()
            .all(|c| !c.argv.iter().any(|a| a.contains(&good))),
        "token never in argv"
    );
    let o = run(&tb, n, "kubeadm", &["join", "--config", "/tmp/join.yaml"]);
    assert!(
        err(&o).contains("[ERROR FileAvailable--etc-kubernetes-kubelet.conf]"),
        "{}",
        err(&o)
    );

    // reset leaves the CNI config behind
    std::fs::write(nroot.join("etc/cni/net.d/10-calico.conflist"), "{}").unwrap();
    ok(&tb, n, "kubeadm", &["reset", "-f"]);
    assert!(!nroot.join("etc/kubernetes/kubelet.conf").exists());
    assert!(nroot.join("etc/cni/net.d/10-calico.conflist").exists());
    let o = run(&tb, m, "kubeadm", &["reset"]);
    assert!(err(&o).contains("won't proceed"), "reset without -f asks");
    drop(tb);
    drop(rt);
}

#[test]
fn kubeadm_init_refuses_a_master_with_too_few_cpus_and_too_little_memory() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("cluster.yaml");
    std::fs::write(
        &cfg,
        "master: {name: m, ip: 127.72.7.10}\nnodes: []\npodCIDR: 10.244.0.0/16\n",
    )
    .unwrap();
    let opts = UpOptions {
        start_agents: false,
        ..Default::default()
    }
    .variant("m", testbed::roots::Variant::Cpus(1))
    .variant("m", testbed::roots::Variant::MemoryMb(1024));
    let tb = Testbed::up(&cfg, &dir.path().join("state"), opts).unwrap();
    prepare(&tb, "m");
    std::fs::write(
        tb.root("m").join("tmp/init.yaml"),
        "apiVersion: kubeadm.k8s.io/v1beta4\nkind: InitConfiguration\nlocalAPIEndpoint:\n  advertiseAddress: 127.72.7.10\n",
    )
    .unwrap();
    let o = run(&tb, "m", "kubeadm", &["init", "--config", "/tmp/init.yaml"]);
    assert_eq!(o.status.code(), Some(1));
    let e = err(&o);
    assert!(
        e.contains("[ERROR NumCPU]: the number of available CPUs 1 is less than the required 2"),
        "{e}"
    );
    assert!(
        e.contains("[ERROR Mem]: the system RAM (1024 MB) is less than the minimum 1700 MB"),
        "{e}"
    );
    assert!(
        !e.contains("[ERROR CRI]"),
        "the host is otherwise prepared: {e}"
    );
    let o = run(
        &tb,
        "m",
        "kubeadm",
        &[
            "init",
            "--config",
            "/tmp/init.yaml",
            "--ignore-preflight-errors=NumCPU,Mem",
        ],
    );
    assert!(o.status.success(), "{}", err(&o));
}
