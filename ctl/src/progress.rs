//! Live progress of streamed host steps (prepare, and anything else that streams `StepEvent`s).
//!
//! - `-o json`: one JSON object per event per line on stdout (`host`, `step`, `state`,
//!   `message`, `durationMs`, `planned`, and `command` {argv, exitCode, stderr} on failures);
//! - `-o yaml`: one YAML document per event on stdout;
//! - table on a terminal: one live line per host on stderr with its current step, then a table
//!   of every finished step on stdout;
//! - table otherwise (pipes, CI): one plain line per finished step on stdout.
//!
//! Failed steps are also explained on stderr, with the failed command and its stderr.

use std::collections::BTreeMap;
use std::io::IsTerminal;

use agent_proto::{StepEvent, StepState};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

use crate::output::{self, Format};

/// A failed command as printed.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct CommandJson {
    /// Command line.
    pub argv: Vec<String>,
    /// Exit code (-1: signal or not started).
    pub exit_code: i32,
    /// Its stderr.
    pub stderr: String,
}

/// One event as printed with `-o json|yaml`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct EventJson {
    /// Host name.
    pub host: String,
    /// Step name.
    pub step: String,
    /// running | unchanged | changed | failed.
    pub state: &'static str,
    /// What happened or would happen.
    pub message: String,
    /// Step duration in milliseconds.
    pub duration_ms: u64,
    /// True for a plan: `changed` means "would change".
    pub planned: bool,
    /// The failed command, if a command failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<CommandJson>,
}

impl From<&StepEvent> for EventJson {
    fn from(e: &StepEvent) -> Self {
        Self {
            host: e.host.clone(),
            step: e.step.clone(),
            state: e.state.as_str(),
            message: e.message.clone(),
            duration_ms: e.duration.as_millis() as u64,
            planned: e.planned,
            command: e.command.as_ref().map(|c| CommandJson {
                argv: c.argv.clone(),
                exit_code: c.exit_code,
                stderr: c.stderr.clone(),
            }),
        }
    }
}

enum Mode {
    Json,
    Yaml,
    Live {
        multi: MultiProgress,
        bars: BTreeMap<String, ProgressBar>,
        done: Vec<StepEvent>,
    },
    Plain,
}

/// Renders step events as they arrive, for a set of hosts.
pub struct Progress {
    mode: Mode,
    failed: Vec<StepEvent>,
}

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Progress")
            .field("failed", &self.failed.len())
            .finish()
    }
}

impl Progress {
    /// A renderer for `hosts` in `format`; live lines only when stderr is a terminal.
    pub fn new(hosts: &[String], format: Format) -> Self {
        Self::with_terminal(hosts, format, std::io::stderr().is_terminal())
    }

    /// As [`Progress::new`], saying whether stderr is a terminal.
    pub fn with_terminal(hosts: &[String], format: Format, terminal: bool) -> Self {
        let mode = match format {
            Format::Json => Mode::Json,
            Format::Yaml => Mode::Yaml,
            Format::Table if terminal => {
                let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
                let width = hosts.iter().map(String::len).max().unwrap_or(4);
                let style = ProgressStyle::with_template(&format!(
                    "{{spinner}} {{prefix:<{width}}}  {{msg}}"
                ))
                .unwrap_or_else(|_| ProgressStyle::default_spinner());
                let bars = hosts
                    .iter()
                    .map(|h| {
                        let bar = multi.add(ProgressBar::new_spinner());
                        bar.set_style(style.clone());
                        bar.set_prefix(h.clone());
                        bar.set_message("connecting");
                        bar.enable_steady_tick(std::time::Duration::from_millis(120));
                        (h.clone(), bar)
                    })
                    .collect();
                Mode::Live {
                    multi,
                    bars,
                    done: Vec::new(),
                }
            }
            Format::Table => Mode::Plain,
        };
        Self {
            mode,
            failed: Vec::new(),
        }
    }

    /// Shows one event.
    pub fn event(&mut self, e: &StepEvent) {
        if e.state == StepState::Failed {
            self.failed.push(e.clone());
        }
        match &mut self.mode {
            Mode::Json => {
                // println! is line-buffered: each event reaches a pipe as it happens.
                println!(
                    "{}",
                    serde_json::to_string(&EventJson::from(e)).unwrap_or_default()
                );
            }
            Mode::Yaml => {
                let doc = serde_yaml_ng::to_string(&EventJson::from(e)).unwrap_or_default();
                print!("---\n{doc}");
            }
            Mode::Live { bars, done, .. } => {
                if let Some(bar) = bars.get(&e.host) {
                    bar.set_message(match e.state {
                        StepState::Running => format!("{}: {}", e.step, e.message),
                        s => format!("{}: {s}", e.step),
                    });
                }
                if e.state != StepState::Running {
                    done.push(e.clone());
                }
            }
            Mode::Plain => {
                if e.state != StepState::Running {
                    println!("{}", plain_line(e));
                }
            }
        }
    }

    /// Marks `host` finished with `summary` (e.g. "done: 3 changed").
    pub fn host_done(&mut self, host: &str, summary: &str) {
        if let Mode::Live { bars, .. } = &mut self.mode
            && let Some(bar) = bars.get(host)
        {
            bar.finish_with_message(summary.to_string());
        }
    }

    /// Ends the display: the final table (terminal) and the failures on stderr. Returns the
    /// failed events.
    pub fn finish(self) -> Vec<StepEvent> {
        if let Mode::Live { multi, bars, done } = self.mode {
            for bar in bars.values() {
                if !bar.is_finished() {
                    bar.finish();
                }
            }
            let _ = multi.clear();
            let rows: Vec<Vec<String>> = done
                .iter()
                .map(|e| {
                    vec![
                        e.host.clone(),
                        e.step.clone(),
                        state_word(e),
                        format!("{:.1}s", e.duration.as_secs_f64()),
                        e.message.clone(),
                    ]
                })
                .collect();
            print!(
                "{}",
                output::table(&["HOST", "STEP", "STATE", "TIME", "MESSAGE"], &rows)
            );
        }
        for e in &self.failed {
            eprintln!("{}: step {} failed: {}", e.host, e.step, e.message);
            if let Some(c) = &e.command {
                eprintln!("  command: {} (exit {})", c.argv.join(" "), c.exit_code);
                for l in c.stderr.lines() {
                    eprintln!("  | {l}");
                }
            }
        }
        self.failed
    }
}

fn state_word(e: &StepEvent) -> String {
    match (e.state, e.planned) {
        (StepState::Changed, true) => "would change".into(),
        (s, _) => s.to_string(),
    }
}

/// One finished step as a plain line: `host  step  state  1.2s  message`.
pub fn plain_line(e: &StepEvent) -> String {
    format!(
        "{}  {}  {}  {:.1}s  {}",
        e.host,
        e.step,
        state_word(e),
        e.duration.as_secs_f64(),
        e.message
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ev(state: StepState) -> StepEvent {
        StepEvent {
            host: "node-1".into(),
            step: "swap".into(),
            state,
            message: "comment out swap".into(),
            duration: Duration::from_millis(1500),
            command: None,
            planned: false,
        }
    }

    #[test]
    fn json_line_has_host_step_state_message() {
        let line = serde_json::to_string(&EventJson::from(&ev(StepState::Changed))).unwrap();
        assert_eq!(
            line,
            r#"{"host":"node-1","step":"swap","state":"changed","message":"comment out swap","durationMs":1500,"planned":false}"#
        );
    }

    #[test]
    fn plain_line_says_would_change_for_plans() {
        let mut e = ev(StepState::Changed);
        e.planned = true;
        assert_eq!(
            plain_line(&e),
            "node-1  swap  would change  1.5s  comment out swap"
        );
    }

    #[test]
    fn failures_are_collected() {
        let mut p = Progress::with_terminal(&["node-1".into()], Format::Json, false);
        p.event(&ev(StepState::Unchanged));
        p.event(&ev(StepState::Failed));
        assert_eq!(p.finish().len(), 1);
    }
}
