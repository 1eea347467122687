//! `kubeadm` shim: `init`, `join`, `token create|list|delete`, `reset`, `version`, acting on the
//! host root and, through the harness, on the simulated cluster.
//!
//! - `init --config F` reads kubeadm v1beta4 (`InitConfiguration` + `ClusterConfiguration`; the
//!   old v1beta3 map form of `kubeletExtraArgs` is refused as kubeadm's decoder does), runs the
//!   preflight checks that matter (CPUs, memory, ports, `ip_forward`, the CRI of the *running*
//!   containerd, already-initialised files, kubelet/control-plane version skew) with kubeadm's
//!   messages, then writes `etc/kubernetes/{pki,manifests,*.conf}` and the kubelet config, and asks
//!   the harness for the API server at the advertise address. Swap still on, or no kubelet
//!   installed, ends as the real kubeadm does: the kubelet never gets healthy and the
//!   wait-control-plane phase fails (instantly here, after 4 minutes on a VM).
//! - `join --config F` (or the flag form): discovery with the bootstrap token and the CA pin,
//!   then the node is registered and `etc/kubernetes/kubelet.conf` written.
//! - `reset -f` removes what kubeadm created but leaves `etc/cni/net.d` behind.
//!
//! The node IP the kubelet registers is `--node-ip` from `kubeletExtraArgs` or
//! `etc/default/kubelet`; without it the kubelet takes the default-route interface, which on a
//! Vagrant VM is the NAT NIC (10.0.2.15) — the two-NIC mistake shows up as a wrong InternalIP.

use std::io::Read;

use serde_json::{Value, json};

use super::Ctx;
use super::systemctl::{self, Units};

/// The IP a kubelet picks without `--node-ip`: the NAT NIC of a Vagrant VM.
pub const DEFAULT_ROUTE_IP: &str = "10.0.2.15";

const STACK_HINT: &str = "To see the stack trace of this error execute with --v=5 or higher";

struct Failure(String);

type Res<T> = Result<T, Failure>;

fn fail<T>(msg: impl Into<String>) -> Res<T> {
    Err(Failure(msg.into()))
}

/// `kubeadm ...`.
pub fn main(ctx: &mut Ctx) -> i32 {
    let args = ctx.args.clone();
    let pos: Vec<&str> = args
        .iter()
        .map(String::as_str)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let r = match pos.first().copied() {
        Some("init") => init(ctx, &args),
        Some("join") => join(ctx, &args),
        Some("reset") => reset(ctx, &args),
        Some("token") => token(ctx, &args, pos.get(1).copied().unwrap_or("")),
        Some("version") => {
            if flag_value(&args, "-o")
                .or_else(|| flag_value(&args, "--output"))
                .as_deref()
                == Some("short")
            {
                println!("v{}", kubeadm_version(ctx));
            } else {
                println!(
                    "kubeadm version: &version.Info{{Major:\"1\", Minor:\"{}\", GitVersion:\"v{}\", GoVersion:\"go1.24.6\", Compiler:\"gc\", Platform:\"linux/amd64\"}}",
                    minor_of(&kubeadm_version(ctx)),
                    kubeadm_version(ctx)
                );
            }
            Ok(())
        }
        Some("config") if pos.get(1) == Some(&"images") => Ok(()),
        other => fail(format!(
            "unknown command {:?} for \"kubeadm\"",
            other.unwrap_or("")
        )),
    };
    match r {
        Ok(()) => 0,
        Err(Failure(msg)) => {
            eprintln!("{msg}");
            eprintln!("{STACK_HINT}");
            1
        }
    }
}

fn flag_value(args: &[String], name: &str) -> Option<String> {
    for (i, a) in args.iter().enumerate() {
        if a == name {
            return args.get(i + 1).cloned();
        }
        if let Some(v) = a.strip_prefix(&format!("{name}=")) {
            return Some(v.to_string());
        }
    }
    None
}

/// Positional arguments, skipping flags and the values of flags that take one.
fn positionals(args: &[String]) -> Vec<&String> {
    const BOOL_FLAGS: &[&str] = &[
        "--discovery-token-unsafe-skip-ca-verification",
        "--control-plane",
        "--dry-run",
        "--print-join-command",
        "--skip-token-print",
        "--upload-certs",
        "-f",
        "--force",
    ];
    let mut pos = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a.starts_with('-') {
            if !a.contains('=') && !BOOL_FLAGS.contains(&a.as_str()) {
                it.next();
            }
        } else {
            pos.push(a);
        }
    }
    pos
}

fn has_flag(args: &[String], name: &str) -> bool {
    args.iter()
        .any(|a| a == name || a.starts_with(&format!("{name}=")))
}

/// The installed kubeadm version, e.g. `1.35.1`.
fn kubeadm_version(ctx: &Ctx) -> String {
    super::apt::installed_version(&ctx.root, "kubeadm")
        .map(|v| v.split('-').next().unwrap_or("").to_string())
        .unwrap_or_else(|| "1.35.0".into())
}

fn minor_of(v: &str) -> u64 {
    v.trim_start_matches('v')
        .split('.')
        .nth(1)
        .and_then(|m| m.parse().ok())
        .unwrap_or(0)
}

/// The documents of a kubeadm config file by kind.
#[derive(Debug, Default)]
struct Docs {
    init: Value,
    cluster: Value,
    join: Value,
    cluster_yaml: String,
}

const INIT_FIELDS: &[&str] = &[
    "apiVersion",
    "kind",
    "bootstrapTokens",
    "nodeRegistration",
    "localAPIEndpoint",
    "certificateKey",
    "skipPhases",
    "patches",
    "timeouts",
    "dryRun",
];
const CLUSTER_FIELDS: &[&str] = &[
    "apiVersion",
    "kind",
    "etcd",
    "networking",
    "kubernetesVersion",
    "controlPlaneEndpoint",
    "apiServer",
    "controllerManager",
    "scheduler",
    "dns",
    "proxy",
    "certificatesDir",
    "imageRepository",
    "featureGates",
    "clusterName",
    "encryptionAlgorithm",
    "certificateValidityPeriod",
    "caCertificateValidityPeriod",
    "upgrade",
];
const JOIN_FIELDS: &[&str] = &[
    "apiVersion",
    "kind",
    "nodeRegistration",
    "caCertPath",
    "discovery",
    "controlPlane",
    "skipPhases",
    "patches",
    "timeouts",
    "dryRun",
];

fn read_config(ctx: &Ctx, path: &str) -> Res<Docs> {
    let text = match std::fs::read_to_string(ctx.path(path)) {
        Ok(t) => t,
        Err(_) => {
            // The agent may pass a path outside the root (a private temp dir): read it as given.
            std::fs::read_to_string(path).or_else(|_| {
                fail(format!(
                    "unable to read config from {path:?} : open {path}: no such file or directory"
                ))
            })?
        }
    };
    let mut docs = Docs::default();
    for (n, doc) in text.split("\n---").enumerate() {
        if doc.trim().is_empty() || doc.trim() == "---" {
            continue;
        }
        let v: Value = serde_yaml_ng::from_str(doc).or_else(|e| {
            fail(format!(
                "error converting YAML to JSON: yaml: line {}: {e}",
                n + 1
            ))
        })?;
        if v.is_null() {
            continue;
        }
        let api = v["apiVersion"].as_str().unwrap_or("");
        let kind = v["kind"].as_str().unwrap_or("");
        if api.is_empty() || kind.is_empty() {
            return fail(format!(
                "invalid configuration for GroupVersionKind /, Kind=: kind and apiVersion is mandatory information that must be specified (document {})",
                n + 1
            ));
        }
        if let Some(old) = api.strip_prefix("kubeadm.k8s.io/") {
            match old {
                "v1beta4" => {}
                "v1beta3" => eprintln!(
                    "W1203 12:00:00.000000    1234 common.go:101] your configuration file uses a deprecated API spec: \"kubeadm.k8s.io/v1beta3\" (kind: \"{kind}\"). Please use 'kubeadm config migrate --old-config old.yaml --new-config new.yaml', which will write the new, similar spec using a newer API version."
                ),
                _ => {
                    return fail(format!(
                        "your configuration file uses an old API spec: \"{api}\" (kind: \"{kind}\"). Please use kubeadm v1.22 instead and run 'kubeadm config migrate --old-config old.yaml --new-config new.yaml', which will write the new, similar spec using a newer API version."
                    ));
                }
            }
        }
        let fields = match kind {
            "InitConfiguration" => INIT_FIELDS,
            "ClusterConfiguration" => CLUSTER_FIELDS,
            "JoinConfiguration" => JOIN_FIELDS,
            _ => &[][..],
        };
        if !fields.is_empty() {
            for k in v
                .as_object()
                .map(|o| o.keys().cloned().collect::<Vec<_>>())
                .unwrap_or_default()
            {
                if !fields.contains(&k.as_str()) {
                    eprintln!(
                        "W1203 12:00:00.000000    1234 initconfiguration.go:332] error unmarshaling configuration schema.GroupVersionKind{{Group:\"kubeadm.k8s.io\", Version:\"v1beta4\", Kind:\"{kind}\"}}: strict decoding error: unknown field \"{k}\""
                    );
                }
            }
        }
        if api == "kubeadm.k8s.io/v1beta4" {
            let extra = &v["nodeRegistration"]["kubeletExtraArgs"];
            if extra.is_object() {
                return fail(format!(
                    "error unmarshaling JSON: while decoding JSON: json: cannot unmarshal object into Go struct field NodeRegistrationOptions.nodeRegistration.kubeletExtraArgs of type []v1beta4.Arg (kind {kind})"
                ));
            }
        }
        match kind {
            "InitConfiguration" => docs.init = v,
            "ClusterConfiguration" => {
                docs.cluster_yaml = doc.to_string();
                docs.cluster = v;
            }
            "JoinConfiguration" => docs.join = v,
            "KubeletConfiguration" | "KubeProxyConfiguration" => {}
            other => eprintln!(
                "W1203 [config] WARNING: Ignored configuration document with GroupVersionKind {api}, Kind={other}"
            ),
        }
    }
    Ok(docs)
}

fn extra_arg(node_reg: &Value, name: &str) -> Option<String> {
    node_reg["kubeletExtraArgs"]
        .as_array()?
        .iter()
        .find_map(|a| {
            (a["name"].as_str() == Some(name))
                .then(|| a["value"].as_str().unwrap_or("").to_string())
        })
}

/// The IP the kubelet will register: `--node-ip` from kubeadm, then `etc/default/kubelet`,
/// else the default-route interface.
fn node_ip(ctx: &Ctx, node_reg: &Value) -> String {
    if let Some(ip) = extra_arg(node_reg, "node-ip") {
        return ip;
    }
    let env = ctx.read("etc/default/kubelet").unwrap_or_default();
    for line in env.lines() {
        if let Some(v) = line.trim().strip_prefix("KUBELET_EXTRA_ARGS=") {
            for part in v.trim_matches('"').trim_matches('\'').split_whitespace() {
                if let Some(ip) = part.strip_prefix("--node-ip=") {
                    return ip.to_string();
                }
            }
        }
    }
    DEFAULT_ROUTE_IP.to_string()
}

fn cpus(ctx: &Ctx) -> usize {
    ctx.read("proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count()
}

fn mem_mb(ctx: &Ctx) -> u64 {
    ctx.read("proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("MemTotal:")?
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .unwrap_or(0)
        / 1024
}

fn port_in_use(ip: &str, port: u16) -> bool {
    std::net::TcpListener::bind((ip, port)).is_err()
}

fn ignored(args: &[String], check: &str) -> bool {
    flag_value(args, "--ignore-preflight-errors")
        .map(|v| {
            v.split(',')
                .any(|c| c.eq_ignore_ascii_case(check) || c.eq_ignore_ascii_case("all"))
        })
        .unwrap_or(false)
}

fn preflight_result(args: &[String], errors: Vec<(String, String)>) -> Res<()> {
    let fatal: Vec<&(String, String)> = errors
        .iter()
        .filter(|(name, _)| !ignored(args, name))
        .collect();
    for (name, msg) in errors.iter().filter(|(name, _)| ignored(args, name)) {
        eprintln!("\t[WARNING {name}]: {msg}");
    }
    if fatal.is_empty() {
        return Ok(());
    }
    let mut msg =
        String::from("error execution phase preflight: [preflight] Some fatal errors occurred:\n");
    for (name, m) in &fatal {
        msg.push_str(&format!("\t[ERROR {name}]: {m}\n"));
    }
    msg.push_str("[preflight] If you know what you are doing, you can make a check non-fatal with `--ignore-preflight-errors=...`");
    fail(msg)
}

fn common_checks(ctx: &Ctx, errors: &mut Vec<(String, String)>) {
    if ctx
        .read("proc/sys/net/ipv4/ip_forward")
        .map(|v| v.trim().to_string())
        .as_deref()
        != Some("1")
    {
        errors.push((
            "FileContent--proc-sys-net-ipv4-ip_forward".into(),
            "/proc/sys/net/ipv4/ip_forward contents are not set to 1".into(),
        ));
    }
    if let Err(e) = super::system::cri_status(ctx) {
        errors.push(("CRI".into(), format!("container runtime is not running: output: time=\"2026-01-01T00:00:00Z\" level=fatal msg=\"{e}\"\n, error: exit status 1")));
    }
}

fn swap_active(ctx: &Ctx) -> bool {
    ctx.read("proc/swaps")
        .unwrap_or_default()
        .lines()
        .skip(1)
        .any(|l| !l.trim().is_empty())
}

fn kubelet_timeout(phase: &str) -> Failure {
    Failure(format!(
        "[kubelet-check] The kubelet is not healthy after 4m0s\n\nUnfortunately, an error has occurred, likely caused by:\n\t- The kubelet is not running\n\t- The kubelet is unhealthy due to a misconfiguration of the node in some way (required cgroups disabled)\n\nIf you are on a systemd-powered system, you can try to troubleshoot the error with the following commands:\n\t- 'systemctl status kubelet'\n\t- 'journalctl -xeu kubelet'\n\nerror execution phase {phase}: failed while waiting for the kubelet to start: The HTTP call equal to 'curl -sSL http://127.0.0.1:10248/healthz' returned error: Get \"http://127.0.0.1:10248/healthz\": dial tcp 127.0.0.1:10248: connect: connection refused"
    ))
}

fn write_private(ctx: &mut Ctx, path: &str, content: &str) {
    let _ = ctx.write(path, content);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(ctx.path(path), std::fs::Permissions::from_mode(0o600));
    }
}

fn kubelet_files(ctx: &mut Ctx, node_ip: &str, extra: &str) {
    let _ = ctx.write(
        "var/lib/kubelet/config.yaml",
        "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\nauthentication:\n  x509:\n    clientCAFile: /etc/kubernetes/pki/ca.crt\ncgroupDriver: systemd\nclusterDNS:\n- 10.96.0.10\nclusterDomain: cluster.local\ncontainerRuntimeEndpoint: unix:///var/run/containerd/containerd.sock\nfailSwapOn: true\nrotateCertificates: true\nstaticPodPath: /etc/kubernetes/manifests\n",
    );
    let _ = ctx.write(
        "var/lib/kubelet/kubeadm-flags.env",
        format!("KUBELET_KUBEADM_ARGS=\"--node-ip={node_ip} --pod-infra-container-image=registry.k8s.io/pause:3.10{extra}\"\n"),
    );
}

/// Starts the kubelet as kubeadm does; true when it became healthy.
fn start_kubelet(ctx: &mut Ctx) -> bool {
    if super::apt::installed_version(&ctx.root, "kubelet").is_none() {
        return false;
    }
    let mut units = Units::load(ctx);
    let ok = systemctl::start(ctx, &mut units, "kubelet.service")
        .map(|s| s == "active")
        .unwrap_or(false);
    units.save(ctx);
    ok
}

fn init(ctx: &mut Ctx, args: &[String]) -> Res<()> {
    super::simulated_delay("kubeadm-init");
    let docs = match flag_value(args, "--config") {
        Some(p) => read_config(ctx, &p)?,
        None => Docs::default(),
    };
    let reg = &docs.init["nodeRegistration"];
    let node = reg["name"]
        .as_str()
        .map(str::to_string)
        .or_else(|| flag_value(args, "--node-name"))
        .unwrap_or_else(|| ctx.host.clone());
    let advertise = docs.init["localAPIEndpoint"]["advertiseAddress"]
        .as_str()
        .map(str::to_string)
        .or_else(|| flag_value(args, "--apiserver-advertise-address"))
        .unwrap_or_else(|| DEFAULT_ROUTE_IP.to_string());
    let port = docs.init["localAPIEndpoint"]["bindPort"]
        .as_u64()
        .unwrap_or(6443) as u16;
    let kubeadm_v = kubeadm_version(ctx);
    let version = docs.cluster["kubernetesVersion"]
        .as_str()
        .map(|v| v.trim_start_matches('v').to_string())
        .unwrap_or_else(|| kubeadm_v.clone());
    let pod_subnet = docs.cluster["networking"]["podSubnet"]
        .as_str()
        .map(str::to_string)
        .or_else(|| flag_value(args, "--pod-network-cidr"))
        .unwrap_or_default();
    let service_subnet = docs.cluster["networking"]["serviceSubnet"]
        .as_str()
        .unwrap_or("10.96.0.0/12")
        .to_string();
    let mut sans: Vec<String> = docs.cluster["apiServer"]["certSANs"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    if let Some(extra) = flag_value(args, "--apiserver-cert-extra-sans") {
        sans.extend(extra.split(',').map(str::to_string));
    }
    sans.push(advertise.clone());
    let token = docs.init["bootstrapTokens"]
        .as_array()
        .and_then(|a| a.first())
        .and_then(|t| t["token"].as_str())
        .map(str::to_string)
        .or_else(|| flag_value(args, "--token"));
    if let Some(t) = &token
        && !crate::world::valid_token(t)
    {
        return fail(format!(
            "bootstrapTokens[0].token: Invalid value: \"{}\": the bootstrap token is invalid",
            "<redacted>"
        ));
    }
    if minor_of(&version) > minor_of(&kubeadm_v) {
        return fail(format!(
            "this version of kubeadm only supports deploying clusters with the control plane version >= 1.{}.0. Current version: v{version}",
            minor_of(&kubeadm_v).saturating_sub(1)
        ));
    }
    if !pod_subnet.is_empty() && pod_subnet.parse::<ipnet::Ipv4Net>().is_err() {
        return fail(format!(
            "networking.podSubnet: Invalid value: \"{pod_subnet}\": couldn't parse subnet"
        ));
    }
    println!("[init] Using Kubernetes version: v{version}");
    println!("[preflight] Running pre-flight checks");
    let mut errors = Vec::new();
    let n = cpus(ctx);
    if n < 2 {
        errors.push((
            "NumCPU".into(),
            format!("the number of available CPUs {n} is less than the required 2"),
        ));
    }
    let mem = mem_mb(ctx);
    if mem < 1700 {
        errors.push((
            "Mem".into(),
            format!("the system RAM ({mem} MB) is less than the minimum 1700 MB"),
        ));
    }
    if let Some(kv) = super::apt::installed_version(&ctx.root, "kubelet")
        && minor_of(&kv) > minor_of(&version)
    {
        errors.push(("KubeletVersion".into(), format!("the kubelet version is higher than the control plane version. This is not a supported version skew and may lead to a malfunctional cluster. Kubelet version: \"{}\" Control plane version: \"{version}\"", kv.split('-').next().unwrap_or(""))));
    }
    for p in [port, 10259, 10257] {
        if port_in_use(&advertise, p) {
            errors.push((format!("Port-{p}"), format!("Port {p} is in use")));
        }
    }
    for m in [
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
        "etcd",
    ] {
        if ctx
            .path(format!("etc/kubernetes/manifests/{m}.yaml"))
            .exists()
        {
            errors.push((
                format!("FileAvailable--etc-kubernetes-manifests-{m}.yaml"),
                format!("/etc/kubernetes/manifests/{m}.yaml already exists"),
            ));
        }
    }
    for p in [10250u16, 2379, 2380] {
        if port_in_use(&advertise, p) {
            errors.push((format!("Port-{p}"), format!("Port {p} is in use")));
        }
    }
    if std::fs::read_dir(ctx.path("var/lib/etcd"))
        .map(|mut d| d.next().is_some())
        .unwrap_or(false)
    {
        errors.push((
            "DirAvailable--var-lib-etcd".into(),
            "/var/lib/etcd is not empty".into(),
        ));
    }
    common_checks(ctx, &mut errors);
    if swap_active(ctx) {
        eprintln!(
            "\t[WARNING Swap]: swap is supported for cgroup v2 only. The kubelet must be properly configured to use swap. Please refer to https://kubernetes.io/docs/concepts/architecture/nodes/#swap-memory, or disable swap on the node"
        );
    }
    if Units::load(ctx).state("kubelet.service") == "inactive"
        && !ctx
            .path("etc/systemd/system/multi-user.target.wants/kubelet.service")
            .exists()
    {
        eprintln!(
            "\t[WARNING Service-Kubelet]: kubelet service is not enabled, please run 'systemctl enable kubelet.service'"
        );
    }
    preflight_result(args, errors)?;
    println!("[preflight] Pulling images required for setting up a Kubernetes cluster");
    println!("[certs] Using certificateDir folder \"/etc/kubernetes/pki\"");
    let manifest = |name: &str, extra: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: kube-system\n  labels:\n    component: {name}\n    tier: control-plane\nspec:\n  hostNetwork: true\n  containers:\n  - name: {name}\n    image: registry.k8s.io/{name}:v{version}\n    command:\n    - {name}\n{extra}"
        )
    };
    let _ = ctx.write("etc/kubernetes/manifests/kube-apiserver.yaml", manifest("kube-apiserver", &format!("    - --advertise-address={advertise}\n    - --secure-port={port}\n    - --service-cluster-ip-range={service_subnet}\n")));
    let _ = ctx.write(
        "etc/kubernetes/manifests/kube-controller-manager.yaml",
        manifest(
            "kube-controller-manager",
            &format!("    - --allocate-node-cidrs=true\n    - --cluster-cidr={pod_subnet}\n"),
        ),
    );
    let _ = ctx.write(
        "etc/kubernetes/manifests/kube-scheduler.yaml",
        manifest("kube-scheduler", ""),
    );
    let _ = ctx.write(
        "etc/kubernetes/manifests/etcd.yaml",
        manifest(
            "etcd",
            &format!("    - --advertise-client-urls=https://{advertise}:2379\n"),
        ),
    );
    let ip = node_ip(ctx, reg);
    kubelet_files(ctx, &ip, "");
    let _ = ctx.write("var/lib/etcd/member/snap/db", "simulated etcd data\n");
    println!(
        "[kubelet-start] Writing kubelet environment file with flags to file \"/var/lib/kubelet/kubeadm-flags.env\""
    );
    println!(
        "[kubelet-start] Writing kubelet configuration to file \"/var/lib/kubelet/config.yaml\""
    );
    println!("[kubelet-start] Starting the kubelet");
    println!(
        "[wait-control-plane] Waiting for the kubelet to boot up the control plane as static Pods from directory \"/etc/kubernetes/manifests\""
    );
    println!(
        "[kubelet-check] Waiting for a healthy kubelet at http://127.0.0.1:10248/healthz. This can take up to 4m0s"
    );
    if swap_active(ctx) || super::apt::installed_version(&ctx.root, "kubelet").is_none() {
        let mut units = Units::load(ctx);
        if super::apt::installed_version(&ctx.root, "kubelet").is_some() {
            units.set("kubelet.service", "activating");
        }
        units.save(ctx);
        ctx.changed = true;
        return Err(kubelet_timeout("wait-control-plane"));
    }
    let ttl = docs.init["bootstrapTokens"]
        .as_array()
        .and_then(|a| a.first())
        .and_then(|t| t["ttl"].as_str())
        .and_then(parse_duration)
        .unwrap_or(86400);
    let reply = ctx
        .control(json!({
            "op": "kubeadm_init", "host": ctx.host, "node_name": node, "node_ip": ip,
            "advertise": advertise, "port": port, "minor": minor_of(&version),
            "pod_subnet": pod_subnet, "service_subnet": service_subnet, "cert_sans": sans,
            "token": token, "token_ttl_secs": ttl, "cluster_configuration": docs.cluster_yaml,
        }))
        .map_err(|e| Failure(format!("error execution phase wait-control-plane: {e}")))?;
    let get = |k: &str| reply[k].as_str().unwrap_or("").to_string();
    let _ = ctx.write("etc/kubernetes/pki/ca.crt", get("ca_crt"));
    write_private(ctx, "etc/kubernetes/pki/ca.key", &get("ca_key"));
    println!("[certs] Generating \"ca\" certificate and key");
    println!("[certs] Generating \"apiserver\" certificate and key");
    println!(
        "[certs] apiserver serving cert is signed for DNS names [kubernetes kubernetes.default kubernetes.default.svc kubernetes.default.svc.cluster.local {node}] and IPs [10.96.0.1 {advertise}]"
    );
    for (file, key) in [
        ("admin.conf", "admin"),
        ("super-admin.conf", "super_admin"),
        ("kubelet.conf", "kubelet"),
        ("controller-manager.conf", "controller_manager"),
        ("scheduler.conf", "scheduler"),
    ] {
        write_private(ctx, &format!("etc/kubernetes/{file}"), &get(key));
        println!("[kubeconfig] Writing \"{file}\" kubeconfig file");
    }
    ctx.changed = true;
    if !start_kubelet(ctx) {
        return Err(kubelet_timeout("wait-control-plane"));
    }
    println!("[kubelet-check] The kubelet is healthy after 501.29ms");
    println!("[control-plane-check] kube-apiserver is healthy after 1.2s");
    println!(
        "[upload-config] Storing the configuration used in ConfigMap \"kubeadm-config\" in the \"kube-system\" Namespace"
    );
    println!(
        "[mark-control-plane] Marking the node {node} as control-plane by adding the labels: [node-role.kubernetes.io/control-plane node.kubernetes.io/exclude-from-external-load-balancers]"
    );
    println!(
        "[mark-control-plane] Marking the node {node} as control-plane by adding the taints [node-role.kubernetes.io/control-plane:NoSchedule]"
    );
    let skip_print = has_flag(args, "--skip-token-print");
    if skip_print {
        println!("[bootstrap-token] Using token: <value withheld>");
    } else {
        println!("[bootstrap-token] Using token: {}", get("token"));
    }
    println!(
        "[bootstrap-token] Creating the \"cluster-info\" ConfigMap in the \"kube-public\" namespace"
    );
    println!(
        "[addons] Applied essential addon: CoreDNS\n[addons] Applied essential addon: kube-proxy\n"
    );
    println!(
        "Your Kubernetes control-plane has initialized successfully!\n\nTo start using your cluster, you need to run the following as a regular user:\n\n  mkdir -p $HOME/.kube\n  sudo cp -i /etc/kubernetes/admin.conf $HOME/.kube/config\n  sudo chown $(id -u):$(id -g) $HOME/.kube/config\n\nYou should now deploy a pod network to the cluster.\nRun \"kubectl apply -f [podnetwork].yaml\" with one of the options listed at:\n  https://kubernetes.io/docs/concepts/cluster-administration/addons/\n"
    );
    if !skip_print {
        println!(
            "Then you can join any number of worker nodes by running the following on each as root:\n\nkubeadm join {} --token {} \\\n\t--discovery-token-ca-cert-hash {}",
            get("endpoint"),
            get("token"),
            get("ca_hash")
        );
    }
    Ok(())
}

/// `24h`, `15m`, `90s`, `1h30m`, `0` → seconds.
pub fn parse_duration(s: &str) -> Option<u64> {
    if s == "0" || s == "0s" {
        return Some(0);
    }
    let mut total = 0u64;
    let mut num = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() {
            num.push(c);
        } else {
            let n: u64 = num.parse().ok()?;
            num.clear();
            total += n * match c {
                'h' => 3600,
                'm' => 60,
                's' => 1,
                _ => return None,
            };
        }
    }
    if !num.is_empty() {
        return None;
    }
    Some(total)
}

fn join(ctx: &mut Ctx, args: &[String]) -> Res<()> {
    super::simulated_delay("kubeadm-join");
    let docs = match flag_value(args, "--config") {
        Some(p) => read_config(ctx, &p)?,
        None => Docs::default(),
    };
    let j = &docs.join;
    let bt = &j["discovery"]["bootstrapToken"];
    // The flag form: kubeadm join ENDPOINT --token T --discovery-token-ca-cert-hash H.
    let pos = positionals(&args[1..]);
    let endpoint = bt["apiServerEndpoint"]
        .as_str()
        .map(str::to_string)
        .or_else(|| pos.first().map(|s| s.to_string()));
    let Some(endpoint) = endpoint else {
        return fail("discovery: Invalid value: \"\": bootstrapToken or file must be set");
    };
    let token = bt["token"]
        .as_str()
        .map(str::to_string)
        .or_else(|| {
            j["discovery"]["tlsBootstrapToken"]
                .as_str()
                .map(str::to_string)
        })
        .or_else(|| flag_value(args, "--token"))
        .or_else(|| flag_value(args, "--discovery-token"))
        .unwrap_or_default();
    if !crate::world::valid_token(&token) {
        return fail(
            "discovery.bootstrapToken.token: Invalid value: \"<redacted>\": the bootstrap token is invalid",
        );
    }
    let mut hashes: Vec<String> = bt["caCertHashes"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    if let Some(h) = flag_value(args, "--discovery-token-ca-cert-hash") {
        hashes.push(h);
    }
    let unsafe_skip = bt["unsafeSkipCAVerification"].as_bool().unwrap_or(false)
        || has_flag(args, "--discovery-token-unsafe-skip-ca-verification");
    let reg = &j["nodeRegistration"];
    let node = reg["name"]
        .as_str()
        .map(str::to_string)
        .or_else(|| flag_value(args, "--node-name"))
        .unwrap_or_else(|| ctx.host.clone());
    println!("[preflight] Running pre-flight checks");
    let mut errors = Vec::new();
    for f in [
        "etc/kubernetes/kubelet.conf",
        "etc/kubernetes/bootstrap-kubelet.conf",
    ] {
        if ctx.path(f).exists() {
            errors.push((
                format!("FileAvailable--{}", f.replace('/', "-")),
                format!("/{f} already exists"),
            ));
        }
    }
    if ctx.path("etc/kubernetes/pki/ca.crt").exists() {
        errors.push((
            "FileAvailable--etc-kubernetes-pki-ca.crt".into(),
            "/etc/kubernetes/pki/ca.crt already exists".into(),
        ));
    }
    if !ctx.ip.is_empty() && port_in_use(&ctx.ip, 10250) {
        errors.push(("Port-10250".into(), "Port 10250 is in use".into()));
    }
    common_checks(ctx, &mut errors);
    if swap_active(ctx) {
        eprintln!(
            "\t[WARNING Swap]: swap is supported for cgroup v2 only. The kubelet must be properly configured to use swap. Please refer to https://kubernetes.io/docs/concepts/architecture/nodes/#swap-memory, or disable swap on the node"
        );
    }
    preflight_result(args, errors)?;
    // Discovery: the API server must be reachable from this host (its network namespace).
    let addr: Option<std::net::SocketAddr> = endpoint.parse().ok();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    loop {
        let ok = addr.is_some_and(|a| {
            std::net::TcpStream::connect_timeout(&a, std::time::Duration::from_millis(700)).is_ok()
        });
        if ok {
            break;
        }
        if std::time::Instant::now() > deadline {
            return fail(format!(
                "error execution phase preflight: couldn't validate the identity of the API Server: failed to request the cluster-info ConfigMap: Get \"https://{endpoint}/api/v1/namespaces/kube-public/configmaps/cluster-info?timeout=10s\": dial tcp {endpoint}: connect: connection refused"
            ));
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let ip = node_ip(ctx, reg);
    let healthy =
        !swap_active(ctx) && super::apt::installed_version(&ctx.root, "kubelet").is_some();
    let reply = ctx
        .control(json!({
            "op": "kubeadm_join", "host": ctx.host, "endpoint": endpoint, "token": token,
            "ca_hashes": hashes, "unsafe_skip_ca": unsafe_skip, "node_name": node, "node_ip": ip,
            "discover_only": !healthy,
        }))
        .map_err(|e| Failure(format!("error execution phase preflight: {e}")))?;
    println!(
        "[preflight] Reading configuration from the \"kubeadm-config\" ConfigMap in namespace \"kube-system\"..."
    );
    let _ = ctx.write(
        "etc/kubernetes/pki/ca.crt",
        reply["ca_crt"].as_str().unwrap_or(""),
    );
    kubelet_files(ctx, &ip, "");
    println!(
        "[kubelet-start] Writing kubelet configuration to file \"/var/lib/kubelet/config.yaml\""
    );
    println!(
        "[kubelet-start] Writing kubelet environment file with flags to file \"/var/lib/kubelet/kubeadm-flags.env\""
    );
    println!("[kubelet-start] Starting the kubelet");
    println!(
        "[kubelet-check] Waiting for a healthy kubelet at http://127.0.0.1:10248/healthz. This can take up to 4m0s"
    );
    ctx.changed = true;
    if !healthy {
        let mut units = Units::load(ctx);
        if super::apt::installed_version(&ctx.root, "kubelet").is_some() {
            units.set("kubelet.service", "activating");
        }
        units.save(ctx);
        return Err(kubelet_timeout("kubelet-start"));
    }
    write_private(
        ctx,
        "etc/kubernetes/kubelet.conf",
        reply["kubelet"].as_str().unwrap_or(""),
    );
    if !start_kubelet(ctx) {
        return Err(kubelet_timeout("kubelet-start"));
    }
    println!(
        "[kubelet-check] The kubelet is healthy after 501.29ms\n[kubelet-start] Waiting for the kubelet to perform the TLS Bootstrap\n\nThis node has joined the cluster:\n* Certificate signing request was sent to apiserver and a response was received.\n* The Kubelet was informed of the new secure connection details.\n\nRun 'kubectl get nodes' on the control-plane to see this node join the cluster.\n"
    );
    Ok(())
}

fn require_admin(ctx: &Ctx, args: &[String]) -> Res<()> {
    let path =
        flag_value(args, "--kubeconfig").unwrap_or_else(|| "/etc/kubernetes/admin.conf".into());
    if !ctx.path(&path).exists() {
        return fail(format!(
            "failed to load admin kubeconfig: open {path}: no such file or directory"
        ));
    }
    Ok(())
}

fn token(ctx: &mut Ctx, args: &[String], sub: &str) -> Res<()> {
    require_admin(ctx, args)?;
    match sub {
        "create" => {
            let pos = positionals(&args[2..]);
            let ttl = flag_value(args, "--ttl").map(|t| parse_duration(&t).ok_or_else(|| Failure(format!("invalid argument \"{t}\" for \"--ttl\" flag: time: invalid duration \"{t}\"")))).transpose()?.unwrap_or(86400);
            let r = ctx
                .control(json!({"op": "token_create", "token": pos.first(), "ttl_secs": ttl, "description": flag_value(args, "--description").unwrap_or_default()}))
                .map_err(Failure)?;
            ctx.changed = true;
            let t = r["token"].as_str().unwrap_or("");
            if has_flag(args, "--print-join-command") {
                println!(
                    "kubeadm join {} --token {t} --discovery-token-ca-cert-hash {} ",
                    r["endpoint"].as_str().unwrap_or(""),
                    r["ca_hash"].as_str().unwrap_or("")
                );
            } else {
                println!("{t}");
            }
            Ok(())
        }
        "list" => {
            let r = ctx.control(json!({"op": "token_list"})).map_err(Failure)?;
            println!(
                "TOKEN                     TTL         EXPIRES                USAGES                   DESCRIPTION                                                EXTRA GROUPS"
            );
            for t in r.as_array().into_iter().flatten() {
                println!(
                    "{}.<redacted>   -   {}   authentication,signing   {}   system:bootstrappers:kubeadm:default-node-token",
                    t["id"].as_str().unwrap_or(""),
                    t["expiration"].as_str().unwrap_or("<forever>"),
                    t["description"].as_str().unwrap_or("<none>")
                );
            }
            Ok(())
        }
        "delete" => {
            for t in args.iter().skip(2).filter(|a| !a.starts_with('-')) {
                ctx.control(json!({"op": "token_delete", "token_id": t}))
                    .map_err(Failure)?;
                ctx.changed = true;
                println!(
                    "bootstrap token \"{}\" deleted",
                    t.split('.').next().unwrap_or("")
                );
            }
            Ok(())
        }
        other => fail(format!("unknown command \"{other}\" for \"kubeadm token\"")),
    }
}

fn reset(ctx: &mut Ctx, args: &[String]) -> Res<()> {
    if !has_flag(args, "-f") && !has_flag(args, "--force") {
        print!("[reset] Are you sure you want to proceed? [y/N]: ");
        let mut answer = String::new();
        let _ = std::io::stdin().read_to_string(&mut answer);
        if !answer.trim().eq_ignore_ascii_case("y") {
            return fail(
                "error execution phase preflight: won't proceed; the user didn't answer (Y|y) in order to continue",
            );
        }
    }
    println!("[preflight] Running pre-flight checks");
    let _ = ctx.control(json!({"op": "reset", "host": ctx.host}));
    let mut units = Units::load(ctx);
    if units.state("kubelet.service") != "inactive" {
        units.set("kubelet.service", "inactive");
        ctx.changed = true;
    }
    units.save(ctx);
    println!(
        "[reset] Deleted contents of the etcd data directory: /var/lib/etcd\n[reset] Stopping the kubelet service\n[reset] Unmounting mounted directories in \"/var/lib/kubelet\""
    );
    for d in [
        "var/lib/etcd",
        "var/lib/kubelet",
        "etc/kubernetes/manifests",
        "etc/kubernetes/pki",
    ] {
        if let Ok(rd) = std::fs::read_dir(ctx.path(d)) {
            for e in rd.flatten() {
                let rel = format!("{d}/{}", e.file_name().to_string_lossy());
                ctx.remove(rel);
            }
        }
    }
    println!(
        "[reset] Deleting contents of directories: [/etc/kubernetes/manifests /var/lib/kubelet /etc/kubernetes/pki]"
    );
    for f in [
        "admin.conf",
        "super-admin.conf",
        "kubelet.conf",
        "bootstrap-kubelet.conf",
        "controller-manager.conf",
        "scheduler.conf",
    ] {
        ctx.remove(format!("etc/kubernetes/{f}"));
    }
    println!(
        "[reset] Deleting files: [/etc/kubernetes/admin.conf /etc/kubernetes/super-admin.conf /etc/kubernetes/kubelet.conf /etc/kubernetes/bootstrap-kubelet.conf /etc/kubernetes/controller-manager.conf /etc/kubernetes/scheduler.conf]\n\nThe reset process does not clean CNI configuration. To do so, you must remove /etc/cni/net.d\n\nThe reset process does not reset or clean up iptables rules or IPVS tables.\nIf you wish to reset iptables, you must do so manually by using the \"iptables\" command.\n\nIf your cluster was setup to utilize IPVS, run ipvsadm --clear (or similar)\nto reset your system's IPVS tables.\n\nThe reset process does not clean your kubeconfig files and you must remove them manually.\nPlease, check the contents of the $HOME/.kube/config file."
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_like_go() {
        assert_eq!(parse_duration("24h"), Some(86400));
        assert_eq!(parse_duration("15m"), Some(900));
        assert_eq!(parse_duration("1h30m"), Some(5400));
        assert_eq!(parse_duration("0"), Some(0));
        assert_eq!(parse_duration("5x"), None);
    }
}
