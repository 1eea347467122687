//! `bench tickets`: join-ticket throughput. N distinct node identities (issued by
//! `ctl::pki::init`) ask one real `master-agent` process for a join ticket at once, each over its
//! own mutual-TLS connection. The master's host root holds what `kubeadm init` leaves
//! (`etc/kubernetes/admin.conf`, `etc/kubernetes/pki/ca.crt`) pointing at a simulated API server
//! (simkube over HTTPS, in this process on its own runtime), so every ticket is backed by a real
//! `bootstrap-token-<id>` Secret; the benchmark checks that afterwards.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use agent_proto::{ControlPlaneClient, JoinTicket, v1};
use anyhow::{Context, Result, bail};
use cluster_common::config::ClusterConfig;
use cluster_common::pki::PkiLayout;
use cluster_common::tls::TlsMaterial;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::ListParams;
use tonic::transport::Endpoint;

use crate::footprint::wait_port;
use crate::util::{Proc, cpu_time, mib, ms, own_threads_cpu, percentile, proc_status_kib, secs};

const MASTER_IP: Ipv4Addr = Ipv4Addr::new(127, 91, 0, 1);
const AGENT_PORT: u16 = 50191;
/// Label the master agent puts on its ticket Secrets (master_agent::tokens::NODE_LABEL).
const NODE_LABEL: &str = "cluster-agents/join-node";

/// The IP of node `i` (0-based): 127.91.1.1, …, 127.91.1.250, 127.91.2.1, …
fn node_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(127, 91, 1 + (i / 250) as u8, 1 + (i % 250) as u8)
}

/// cluster.yaml with a master and `n` nodes on 127.91.x.y.
fn cluster_yaml(n: usize) -> String {
    let mut s = format!(
        "master: {{name: k8s-master, ip: {MASTER_IP}}}\npodCIDR: 10.244.0.0/16\nagentPort: {AGENT_PORT}\nnodes:\n"
    );
    for i in 0..n {
        s.push_str(&format!(
            "  - {{name: node-{}, ip: {}}}\n",
            i + 1,
            node_ip(i)
        ));
    }
    s
}

/// One node's outcome.
struct Sample {
    connect: Duration,
    rpc: Duration,
    /// From the common start until the ticket arrived.
    done: Duration,
    ticket: Result<JoinTicket, String>,
}

fn runtime(name: &str, workers: usize) -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .thread_name(name)
        .enable_all()
        .build()?)
}

/// Runs the benchmark with `n` nodes, at most `concurrency` asking at a time.
pub fn run(n: usize, concurrency: usize) -> Result<()> {
    if n == 0 || n > 250 * 250 {
        bail!("--nodes must be 1..=62500");
    }
    let bins = testbed::bins::bin_dir().to_path_buf();
    let dir = tempfile::tempdir()?;
    let cfg_path = dir.path().join("cluster.yaml");
    std::fs::write(&cfg_path, cluster_yaml(n))?;
    let t = Instant::now();
    let config = ClusterConfig::load(&cfg_path)?;
    let t_load = t.elapsed();
    let t = Instant::now();
    ctl::pki::init(&config, false)?;
    let t_pki = t.elapsed();

    // The simulated API server, as kubeadm init would leave it, on its own runtime.
    let sim_rt = runtime("simkube", 2)?;
    let root = dir.path().join("master-root");
    let (sim, serve) = sim_rt.block_on(async {
        let sim = simkube::SimCluster::new(simkube::SimOptions {
            delay_scale: 0.0,
            ..Default::default()
        })?;
        let listener = tokio::net::TcpListener::bind((MASTER_IP, 6443))
            .await
            .with_context(|| format!("bind {MASTER_IP}:6443"))?;
        let serve = sim.serve_https(listener, None, &["k8s-master".into()])?;
        anyhow::Ok((sim, serve))
    })?;
    std::fs::create_dir_all(root.join("etc/kubernetes/pki"))?;
    sim.write_kubeconfig(
        &root.join("etc/kubernetes/admin.conf"),
        &serve.url(),
        "kubernetes-admin",
        &["kubeadm:cluster-admins"],
    )?;
    std::fs::write(root.join("etc/kubernetes/pki/ca.crt"), &sim.ca().cert_pem)?;

    // The real master agent on that root.
    let log = std::fs::File::create(dir.path().join("master-agent.log"))?;
    let agent = Proc(
        Command::new(bins.join("master-agent"))
            .arg("--config")
            .arg(&config.path)
            .args(["--host", "k8s-master", "--root"])
            .arg(&root)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("start master-agent")?,
    );
    let started = Instant::now();
    let serving = wait_port(
        config.agent_endpoint(&config.master),
        started,
        Duration::from_secs(10),
    )?;
    let pid = agent.pid();
    let rss_idle = proc_status_kib(pid, "VmRSS:")?;

    // Every node's identity, read before the clock starts.
    let pki = PkiLayout::new(&config.pki_dir);
    let identities: Vec<(String, TlsMaterial)> = config
        .nodes
        .iter()
        .map(|h| {
            Ok((
                h.name.to_string(),
                TlsMaterial::host(&pki, h.name.as_str())?,
            ))
        })
        .collect::<Result<_>>()?;
    let url = format!("https://{MASTER_IP}:{AGENT_PORT}");

    let client_rt = runtime("bench-client", 2)?;
    let cpu_agent0 = cpu_time(pid)?;
    let cpu_sim0 = own_threads_cpu("simkube")?;
    let cpu_client0 = own_threads_cpu("bench-client")?;
    let gate = Arc::new(tokio::sync::Semaphore::new(concurrency));
    let start = Instant::now();
    let samples: Vec<Sample> = client_rt.block_on(async {
        let tasks: Vec<_> = identities
            .into_iter()
            .map(|(name, tls)| {
                let url = url.clone();
                let gate = gate.clone();
                tokio::spawn(async move {
                    let _permit = gate.acquire_owned().await.expect("open semaphore");
                    let t0 = Instant::now();
                    let mut s = Sample {
                        connect: Duration::ZERO,
                        rpc: Duration::ZERO,
                        done: Duration::ZERO,
                        ticket: Err(String::new()),
                    };
                    let channel = match Endpoint::from_shared(url)
                        .and_then(|e| e.tls_config(tls.client_config()))
                        .map(|e| {
                            e.connect_timeout(Duration::from_secs(30))
                                .timeout(Duration::from_secs(60))
                        }) {
                        Ok(e) => e.connect().await,
                        Err(e) => Err(e),
                    };
                    s.connect = t0.elapsed();
                    let t1 = Instant::now();
                    s.ticket = match channel {
                        Err(e) => Err(format!("connect: {e}")),
                        Ok(ch) => ControlPlaneClient::new(ch)
                            .issue_join_ticket(v1::IssueJoinTicketRequest {
                                node_name: name.clone(),
                            })
                            .await
                            .map_err(|e| format!("{}: {}", e.code(), e.message()))
                            .and_then(|r| {
                                JoinTicket::try_from(r.into_inner()).map_err(|e| e.to_string())
                            }),
                    };
                    s.rpc = t1.elapsed();
                    s.done = start.elapsed();
                    s
                })
            })
            .collect();
        let mut out = Vec::with_capacity(tasks.len());
        for t in tasks {
            out.push(t.await.expect("client task"));
        }
        out
    });
    let wall = start.elapsed();
    let cpu_agent = cpu_time(pid)? - cpu_agent0;
    let cpu_sim = own_threads_cpu("simkube")? - cpu_sim0;
    let cpu_client = own_threads_cpu("bench-client")? - cpu_client0;
    let rss_peak = proc_status_kib(pid, "VmHWM:")?;
    let rss_after = proc_status_kib(pid, "VmRSS:")?;
    let load = crate::util::machine_load();

    // Every ticket must be backed by its own Secret in the API server.
    let errors: Vec<&String> = samples
        .iter()
        .filter_map(|s| s.ticket.as_ref().err())
        .collect();
    let ids: BTreeSet<String> = samples
        .iter()
        .filter_map(|s| s.ticket.as_ref().ok())
        .map(|t| t.token.id().to_string())
        .collect();
    let secrets: BTreeSet<String> = sim_rt.block_on(async {
        let api: Api<Secret> = Api::namespaced(sim.kube_client(), "kube-system");
        let list = api.list(&ListParams::default().labels(NODE_LABEL)).await?;
        anyhow::Ok(
            list.into_iter()
                .filter_map(|s| {
                    s.data?
                        .get("token-id")
                        .map(|v| String::from_utf8_lossy(&v.0).into_owned())
                })
                .collect(),
        )
    })?;
    let backed = ids.iter().filter(|id| secrets.contains(*id)).count();

    let ok = samples.len() - errors.len();
    let mut done: Vec<Duration> = samples.iter().map(|s| s.done).collect();
    let mut connect: Vec<Duration> = samples.iter().map(|s| s.connect).collect();
    let mut rpc: Vec<Duration> = samples.iter().map(|s| s.rpc).collect();
    let mut request: Vec<Duration> = samples.iter().map(|s| s.connect + s.rpc).collect();
    done.sort();
    request.sort();
    connect.sort();
    rpc.sort();

    println!("## Join-ticket throughput");
    println!();
    println!(
        "{n} node identities, concurrency {concurrency}; {}, {load} (at the end of the run)",
        crate::util::now_utc()
    );
    println!();
    println!("| figure | value |");
    println!("|---|---|");
    println!("| tickets issued / asked | {ok} / {n} |");
    println!(
        "| tickets backed by their own token Secret | {backed} (distinct token ids {}) |",
        ids.len()
    );
    println!("| wall time, first ask → last ticket | {} |", secs(wall));
    println!("| tickets/s | {:.0} |", ok as f64 / wall.as_secs_f64());
    println!(
        "| latency (start → ticket, per node) p50 / p99 / max | {} / {} / {} |",
        ms(percentile(&done, 0.5)),
        ms(percentile(&done, 0.99)),
        ms(*done.last().expect("n > 0"))
    );
    println!(
        "| per request (connect + RPC, no queueing for a turn) p50 / p99 | {} / {} |",
        ms(percentile(&request, 0.5)),
        ms(percentile(&request, 0.99))
    );
    println!(
        "| of which mTLS connect p50 / p99 | {} / {} |",
        ms(percentile(&connect, 0.5)),
        ms(percentile(&connect, 0.99))
    );
    println!(
        "| of which IssueJoinTicket RPC p50 / p99 | {} / {} |",
        ms(percentile(&rpc, 0.5)),
        ms(percentile(&rpc, 0.99))
    );
    println!(
        "| master-agent RSS idle / peak / after | {} / {} / {} |",
        mib(rss_idle),
        mib(rss_peak),
        mib(rss_after)
    );
    println!(
        "| CPU time: master-agent / simulated API server / clients | {} / {} / {} |",
        secs(cpu_agent),
        secs(cpu_sim),
        secs(cpu_client)
    );
    println!(
        "| PKI for {} identities (`ctl pki init`) | {} |",
        n + 2,
        secs(t_pki)
    );
    println!("| cluster.yaml load + validate | {} |", ms(t_load));
    println!("| master-agent start → serving | {} |", ms(serving));
    println!();
    println!("Targets: {n} tickets < 2 s on 2 cores, p99 < 500 ms, master-agent peak RSS < 64 MB.");
    if let Some(e) = errors.first() {
        println!();
        println!("{} asks failed; first error: {e}", errors.len());
    }
    drop(agent);
    sim_rt.block_on(serve.shutdown());
    drop(sim);
    if std::env::var_os("BENCH_KEEP").is_some() {
        let kept = dir.keep();
        eprintln!("kept {}", kept.display());
    }
    if errors.len() == samples.len() {
        bail!("no ticket was issued: {}", errors[0]);
    }
    Ok(())
}
