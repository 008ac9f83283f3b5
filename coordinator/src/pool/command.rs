//! How a worker process is started.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::path::PathBuf;
use std::process::Command;

/// The environment variable that tells a program started by
/// [`WorkerCommand::this_program`] to serve as a worker: see [`crate::run_if_worker`].
pub const WORKER_ENV: &str = "FIBPOOL_WORKER";

/// A program and arguments that, once started, speak the worker protocol on
/// stdin and stdout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerCommand {
    program: OsString,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    /// Started from this program, through [`crate::run_if_worker`] or
    /// `fibpool worker`, which unblock every signal first: such a worker
    /// may be exec'd with them blocked ([`super::vfork`]).
    this_program: bool,
}

impl WorkerCommand {
    pub fn new(program: impl Into<OsString>) -> Self {
        WorkerCommand {
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
            this_program: false,
        }
    }

    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Parses `"CMD ARGS"` with shell quoting rules (no expansion), as given to
    /// `--worker-cmd`.
    pub fn parse(line: &str) -> Result<Self, String> {
        let words = shell_words::split(line).map_err(|e| format!("cannot parse '{line}': {e}"))?;
        let mut words = words.into_iter();
        let program = words
            .next()
            .ok_or_else(|| "the worker command is empty".to_owned())?;
        Ok(words.fold(WorkerCommand::new(program), WorkerCommand::arg))
    }

    /// This very program, started with [`WORKER_ENV`]`=1`, as Python's "spawn"
    /// start method re-runs the main module. The program must call
    /// [`crate::run_if_worker`] first thing in `main`.
    pub fn this_program() -> std::io::Result<Self> {
        let mut command = WorkerCommand::new(current_exe()?).env(WORKER_ENV, "1");
        command.this_program = true;
        Ok(command)
    }

    /// This program with a subcommand, such as `fibpool worker`.
    pub fn this_program_with(arg: impl Into<OsString>) -> std::io::Result<Self> {
        let mut command = WorkerCommand::new(current_exe()?).arg(arg);
        command.this_program = true;
        Ok(command)
    }

    /// Whether it was made by [`WorkerCommand::this_program`] or
    /// [`WorkerCommand::this_program_with`].
    pub(crate) fn is_this_program(&self) -> bool {
        self.this_program
    }

    pub(crate) fn args(&self) -> &[OsString] {
        &self.args
    }

    /// The whole environment for a worker of this command with `extra` set
    /// as well, as execve takes it; `None` when that is this process's own,
    /// unchanged (copying it costs 12-18 µs a spawn).
    pub(crate) fn exec_env(
        &self,
        extra: &[(&'static str, OsString)],
    ) -> std::io::Result<Option<Vec<std::ffi::CString>>> {
        if self.env.is_empty() && extra.is_empty() && !inherits_a_mode() {
            return Ok(None);
        }
        let set = |key: &OsStr| {
            self.env.iter().any(|(k, _)| k == key) || extra.iter().any(|(k, _)| key == *k)
        };
        let inherited = std::env::vars_os()
            .filter(|(k, _)| !set(k) && !fibpool_protocol::env::ALL.iter().any(|n| k == n));
        let given = self.env.iter().cloned();
        let extra = extra.iter().map(|(k, v)| (OsString::from(k), v.clone()));
        inherited
            .chain(given)
            .chain(extra)
            .map(|(k, v)| {
                super::vfork::env_entry(&k, &v).ok_or_else(|| {
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidInput,
                        format!("a NUL byte in the worker's environment variable {k:?}"),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }

    pub fn program(&self) -> &OsStr {
        &self.program
    }

    /// A `Command` that starts this worker, with its arguments and environment.
    /// The variables that choose a worker's mode ([`fibpool_protocol::env`])
    /// are not inherited: only those set here reach the worker.
    pub fn to_command(&self) -> Command {
        let mut command = Command::new(&self.program);
        command.args(&self.args);
        // Only one that is set: any removal makes std copy the whole
        // environment at each spawn.
        for name in fibpool_protocol::env::ALL {
            if std::env::var_os(name).is_some() {
                command.env_remove(name);
            }
        }
        command.envs(self.env.iter().map(|(k, v)| (k, v)));
        command
    }
}

/// Whether this process's environment sets a variable that chooses a
/// worker's mode, which no worker may inherit.
fn inherits_a_mode() -> bool {
    fibpool_protocol::env::ALL
        .iter()
        .any(|name| std::env::var_os(name).is_some())
}

fn current_exe() -> std::io::Result<PathBuf> {
    std::env::current_exe()
}

impl fmt::Display for WorkerCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let words = std::iter::once(&self.program).chain(&self.args);
        let words: Vec<_> = words.map(|w| w.to_string_lossy()).collect();
        f.write_str(&shell_words::join(words))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_splits_like_a_shell() {
        let cmd = WorkerCommand::parse("ssh -o 'BatchMode yes' host fibpool worker").unwrap();
        assert_eq!(cmd.program(), "ssh");
        assert_eq!(
            cmd.args,
            ["-o", "BatchMode yes", "host", "fibpool", "worker"]
        );
        assert_eq!(
            cmd.to_string(),
            "ssh -o 'BatchMode yes' host fibpool worker"
        );
    }

    #[test]
    fn parse_refuses_empty_and_unbalanced() {
        assert_eq!(
            WorkerCommand::parse("  ").unwrap_err(),
            "the worker command is empty"
        );
        let err = WorkerCommand::parse("worker 'open").unwrap_err();
        assert!(err.starts_with("cannot parse 'worker 'open':"), "{err}");
    }
}
