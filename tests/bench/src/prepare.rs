//! `bench prepare`: the agent's own overhead in a second prepare on a prepared host. The
//! prepare engine (`node_agent::prepare`, the code Host.Prepare runs) runs in-process on a
//! simulated host of the test world with a runner that times every external command (the real
//! shim processes, as the agent would start them); per step, agent time = step duration − the
//! time spent in its commands.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use cluster_common::config::ClusterConfig;
use futures::StreamExt;
use node_agent::events::EventSink;
use node_agent::exec::{Cmd, CommandRunner, ExecError, Output, SystemRunner};
use node_agent::prepare;

use crate::util::{ms, percentile};

/// Runs real commands with the simulated host's environment and records how long each took.
#[derive(Debug)]
struct TimingRunner {
    env: Vec<(String, String)>,
    calls: Mutex<Vec<(String, Duration)>>,
}

impl CommandRunner for TimingRunner {
    fn output<'a>(
        &'a self,
        cmd: &'a Cmd,
    ) -> futures::future::BoxFuture<'a, Result<Output, ExecError>> {
        Box::pin(async move {
            let mut c = cmd.clone();
            let mut env = self.env.clone();
            env.extend(c.env);
            c.env = env;
            let t = Instant::now();
            let out = SystemRunner.output(&c).await;
            self.calls
                .lock()
                .expect("calls lock")
                .push((cmd.argv().join(" "), t.elapsed()));
            out
        })
    }
}

/// One step of one run.
struct StepRun {
    state: String,
    step: Duration,
    commands: Duration,
    count: usize,
}

async fn run_steps(host: &prepare::Host, runner: &TimingRunner) -> Result<Vec<(String, StepRun)>> {
    let mut out = Vec::new();
    for step in prepare::steps() {
        let name = step.name().to_string();
        runner.calls.lock().expect("calls lock").clear();
        let (sink, mut events) = EventSink::new(host.spec.name.to_string(), false);
        let summary = prepare::run(host, std::slice::from_ref(&step), &sink, false).await;
        drop(sink);
        let mut last = None;
        while let Some(e) = events.next().await {
            last = Some(e.map_err(|s| anyhow::anyhow!("{s}"))?);
        }
        let last = last.context("no event")?;
        let e = agent_proto::StepEvent::try_from(last)?;
        if summary.failed.is_some() {
            bail!("step {name} failed: {}", e.message);
        }
        let calls = runner.calls.lock().expect("calls lock");
        out.push((
            name,
            StepRun {
                state: e.state.as_str().to_string(),
                step: e.duration,
                commands: calls.iter().map(|(_, d)| *d).sum(),
                count: calls.len(),
            },
        ));
    }
    Ok(out)
}

/// Runs the benchmark: one first prepare, then `runs` second prepares.
pub fn run(runs: usize) -> Result<()> {
    // Builds the agents, ctl and the shims if they are stale (Testbed::up finds them next to us).
    testbed::bins::bin_dir();
    let dir = tempfile::tempdir()?;
    let local = Path::new(env!("CARGO_MANIFEST_DIR")).join("../clusters/local.yaml");
    let cfg_path = dir.path().join("cluster.yaml");
    let text = std::fs::read_to_string(&local)
        .with_context(|| format!("read {}", local.display()))?
        .replace("127.50.0.", "127.93.0.");
    std::fs::write(&cfg_path, text)?;
    let config = ClusterConfig::load(&cfg_path)?;
    ctl::pki::init(&config, false)?;
    let tb = testbed::Testbed::up(
        &cfg_path,
        &dir.path().join("state"),
        testbed::UpOptions {
            start_agents: false,
            ..Default::default()
        },
    )?;
    let name = config.nodes[0].name.to_string();
    let runner = Arc::new(TimingRunner {
        env: tb.host_env(&name)?,
        calls: Mutex::default(),
    });
    let host = prepare::Host {
        root: tb.root(&name),
        runner: runner.clone(),
        config: Arc::new(config.clone()),
        spec: config.nodes[0].clone(),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let first = rt.block_on(run_steps(&host, &runner))?;
    let mut second: BTreeMap<String, Vec<StepRun>> = BTreeMap::new();
    let mut order = Vec::new();
    for _ in 0..runs {
        for (step, r) in rt.block_on(run_steps(&host, &runner))? {
            if !order.contains(&step) {
                order.push(step.clone());
            }
            second.entry(step).or_default().push(r);
        }
    }
    println!("## Prepare overhead");
    println!();
    println!(
        "host {name} of the test world (shim tools), {runs} second prepares after a first; medians; {}, {}",
        crate::util::now_utc(),
        crate::util::machine_load()
    );
    println!();
    println!(
        "| step | first prepare | second: state | step time | external commands (count) | in the agent |"
    );
    println!("|---|---|---|---|---|---|");
    let (mut tot_step, mut tot_cmd) = (Duration::ZERO, Duration::ZERO);
    for step in &order {
        let rs = &second[step];
        let med = |f: &dyn Fn(&StepRun) -> Duration| {
            let mut v: Vec<Duration> = rs.iter().map(f).collect();
            v.sort();
            percentile(&v, 0.5)
        };
        let st = med(&|r| r.step);
        let cmd = med(&|r| r.commands);
        let own = med(&|r| r.step.saturating_sub(r.commands));
        tot_step += st;
        tot_cmd += cmd;
        let f = first
            .iter()
            .find(|(s, _)| s == step)
            .map(|(_, r)| format!("{} {}", r.state, ms(r.step)))
            .unwrap_or_default();
        let states: Vec<&str> = rs.iter().map(|r| r.state.as_str()).collect();
        let state = if states.iter().all(|s| *s == states[0]) {
            states[0].to_string()
        } else {
            states.join(",")
        };
        println!(
            "| {step} | {f} | {state} | {} | {} ({}) | {} |",
            ms(st),
            ms(cmd),
            rs[0].count,
            ms(own)
        );
    }
    println!(
        "| total | | | {} | {} | {} |",
        ms(tot_step),
        ms(tot_cmd),
        ms(tot_step.saturating_sub(tot_cmd))
    );
    println!();
    println!(
        "\"External commands\" is the wall time from spawning each command to collecting its output (the shim processes, process start included); \"in the agent\" is the rest: reading and comparing files, parsing command output, the port checks, event sending."
    );
    drop(tb);
    Ok(())
}
