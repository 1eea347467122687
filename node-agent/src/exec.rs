//! The one way agents run host commands (`kubeadm`, `systemctl`, `apt-get`, …): found on
//! `PATH`, argv recorded, failures keep their exit code and stderr. Secrets never go in argv:
//! pass them in files (0600) or on stdin.
//!
//! [`CommandRunner`] is a trait so unit tests can use [`RecordingRunner`], a fake that records
//! every command and answers from a script.

use std::fmt;
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;

/// A command to run.
#[derive(Clone, PartialEq, Eq)]
pub struct Cmd {
    /// Program name (looked up on PATH) or path.
    pub program: String,
    /// Arguments. Never secrets.
    pub args: Vec<String>,
    /// Bytes for stdin, if any (may be secret; never shown).
    pub stdin: Option<Vec<u8>>,
    /// Extra environment variables (never secrets), e.g. `DEBIAN_FRONTEND=noninteractive`.
    pub env: Vec<(String, String)>,
}

impl fmt::Debug for Cmd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Cmd({})", self.argv().join(" "))
    }
}

impl Cmd {
    /// `program` with no arguments.
    pub fn new(program: impl Into<String>) -> Self {
        Self {
            program: program.into(),
            args: Vec::new(),
            stdin: None,
            env: Vec::new(),
        }
    }

    /// Sets an environment variable for the command.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Appends one argument.
    pub fn arg(mut self, a: impl Into<String>) -> Self {
        self.args.push(a.into());
        self
    }

    /// Appends arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Feeds `data` on stdin.
    pub fn stdin(mut self, data: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(data.into());
        self
    }

    /// Program and arguments, for messages.
    pub fn argv(&self) -> Vec<String> {
        std::iter::once(self.program.clone())
            .chain(self.args.iter().cloned())
            .collect()
    }
}

/// What a finished command printed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Output {
    /// Exit code (-1 when killed by a signal).
    pub code: i32,
    /// Standard output.
    pub stdout: Vec<u8>,
    /// Standard error.
    pub stderr: Vec<u8>,
}

impl Output {
    /// Standard output as (lossy) UTF-8.
    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

/// A command that could not run or failed.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ExecError {
    /// The program is not on PATH.
    #[error("`{program}` not found on PATH: install it (or fix PATH) and retry")]
    NotFound {
        /// The program.
        program: String,
    },
    /// It could not be started.
    #[error("cannot start `{}`: {message}", argv.join(" "))]
    Spawn {
        /// The command line.
        argv: Vec<String>,
        /// The OS error.
        message: String,
    },
    /// It exited non-zero.
    #[error("`{}` exited with {code}: {}", argv.join(" "), stderr.trim())]
    Failed {
        /// The command line.
        argv: Vec<String>,
        /// Exit code (-1 when killed by a signal).
        code: i32,
        /// Its stderr, trimmed to the last 4 KiB.
        stderr: String,
    },
}

impl ExecError {
    /// The wire form of the failure, for a failed step event.
    pub fn to_failure(&self) -> agent_proto::CommandFailure {
        match self {
            ExecError::NotFound { program } => agent_proto::CommandFailure {
                argv: vec![program.clone()],
                exit_code: -1,
                stderr: self.to_string(),
            },
            ExecError::Spawn { argv, message } => agent_proto::CommandFailure {
                argv: argv.clone(),
                exit_code: -1,
                stderr: message.clone(),
            },
            ExecError::Failed { argv, code, stderr } => agent_proto::CommandFailure {
                argv: argv.clone(),
                exit_code: *code,
                stderr: stderr.clone(),
            },
        }
    }
}

/// Runs commands. Implementations: [`SystemRunner`] (real processes), [`RecordingRunner`] (tests).
pub trait CommandRunner: Send + Sync + fmt::Debug {
    /// Runs `cmd` to completion and returns its output whatever the exit code; errors only when
    /// it cannot be started.
    fn output<'a>(&'a self, cmd: &'a Cmd) -> BoxFuture<'a, Result<Output, ExecError>>;

    /// Runs `cmd` and fails with [`ExecError::Failed`] unless it exits 0.
    fn run<'a>(&'a self, cmd: &'a Cmd) -> BoxFuture<'a, Result<Output, ExecError>> {
        Box::pin(async move {
            let out = self.output(cmd).await?;
            if out.code == 0 {
                Ok(out)
            } else {
                Err(failed(cmd, &out))
            }
        })
    }
}

/// The error for a command that exited non-zero.
pub fn failed(cmd: &Cmd, out: &Output) -> ExecError {
    let stderr = String::from_utf8_lossy(&out.stderr);
    let start = stderr.len().saturating_sub(4096);
    let start = (start..stderr.len())
        .find(|i| stderr.is_char_boundary(*i))
        .unwrap_or(stderr.len());
    ExecError::Failed {
        argv: cmd.argv(),
        code: out.code,
        stderr: stderr[start..].trim().to_string(),
    }
}

/// Runs real processes, programs looked up on the agent's PATH.
#[derive(Debug, Clone, Default)]
pub struct SystemRunner;

impl CommandRunner for SystemRunner {
    fn output<'a>(&'a self, cmd: &'a Cmd) -> BoxFuture<'a, Result<Output, ExecError>> {
        Box::pin(async move {
            use tokio::io::AsyncWriteExt;
            let mut c = tokio::process::Command::new(&cmd.program);
            c.args(&cmd.args)
                .envs(cmd.env.iter().map(|(k, v)| (k, v)))
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .stdin(if cmd.stdin.is_some() {
                    std::process::Stdio::piped()
                } else {
                    std::process::Stdio::null()
                })
                .kill_on_drop(true);
            tracing::debug!(argv = ?cmd.argv(), "running");
            let mut child = c.spawn().map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => ExecError::NotFound {
                    program: cmd.program.clone(),
                },
                _ => ExecError::Spawn {
                    argv: cmd.argv(),
                    message: e.to_string(),
                },
            })?;
            if let (Some(data), Some(mut stdin)) = (&cmd.stdin, child.stdin.take()) {
                // A child that exits without reading stdin is not an error here.
                let _ = stdin.write_all(data).await;
                drop(stdin);
            }
            let out = child
                .wait_with_output()
                .await
                .map_err(|e| ExecError::Spawn {
                    argv: cmd.argv(),
                    message: e.to_string(),
                })?;
            Ok(Output {
                code: out.status.code().unwrap_or(-1),
                stdout: out.stdout,
                stderr: out.stderr,
            })
        })
    }
}

type Responder = Box<dyn Fn(&Cmd) -> Option<Output> + Send + Sync>;

/// A fake runner for unit tests: records every command; answers with the first scripted
/// responder that matches, else exit 0 with no output.
#[derive(Clone, Default)]
pub struct RecordingRunner {
    calls: Arc<Mutex<Vec<Cmd>>>,
    responders: Arc<Mutex<Vec<Responder>>>,
}

impl fmt::Debug for RecordingRunner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecordingRunner")
            .field("calls", &self.calls())
            .finish()
    }
}

impl RecordingRunner {
    /// A runner that succeeds at everything.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a responder: `f` returns `Some(output)` for the commands it answers.
    pub fn respond(&self, f: impl Fn(&Cmd) -> Option<Output> + Send + Sync + 'static) {
        self.responders.lock().expect("poisoned").push(Box::new(f));
    }

    /// Every command run so far, in order.
    pub fn calls(&self) -> Vec<Cmd> {
        self.calls.lock().expect("poisoned").clone()
    }

    /// Command lines run so far, joined by spaces.
    pub fn lines(&self) -> Vec<String> {
        self.calls().iter().map(|c| c.argv().join(" ")).collect()
    }
}

impl CommandRunner for RecordingRunner {
    fn output<'a>(&'a self, cmd: &'a Cmd) -> BoxFuture<'a, Result<Output, ExecError>> {
        Box::pin(async move {
            self.calls.lock().expect("poisoned").push(cmd.clone());
            let responders = self.responders.lock().expect("poisoned");
            Ok(responders.iter().find_map(|r| r(cmd)).unwrap_or_default())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn system_runner_keeps_exit_code_and_stderr() {
        let cmd = Cmd::new("sh").args(["-c", "echo oops >&2; exit 3"]);
        let err = SystemRunner.run(&cmd).await.unwrap_err();
        assert_eq!(
            err,
            ExecError::Failed {
                argv: vec!["sh".into(), "-c".into(), "echo oops >&2; exit 3".into()],
                code: 3,
                stderr: "oops".into()
            }
        );
    }

    #[tokio::test]
    async fn system_runner_feeds_stdin_and_reports_missing_programs() {
        let out = SystemRunner
            .run(&Cmd::new("cat").stdin("secret"))
            .await
            .unwrap();
        assert_eq!(out.stdout, b"secret");
        let err = SystemRunner
            .run(&Cmd::new("no-such-program-xyz"))
            .await
            .unwrap_err();
        assert!(matches!(err, ExecError::NotFound { .. }), "{err}");
    }

    #[tokio::test]
    async fn recording_runner_records_and_scripts() {
        let r = RecordingRunner::new();
        r.respond(|c| {
            (c.program == "false").then(|| Output {
                code: 1,
                ..Default::default()
            })
        });
        r.run(&Cmd::new("true")).await.unwrap();
        assert!(r.run(&Cmd::new("false")).await.is_err());
        assert_eq!(r.lines(), vec!["true", "false"]);
    }
}
