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
    /// Started from this program, which enters through
    /// [`crate::run_if_worker`] or [`fibpool_worker::run_stdio`] (as
    /// `fibpool worker` does); they unblock every signal first, so such a
    /// worker may be exec'd with them blocked ([`super::vfork`]).
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
    /// [`crate::run_if_worker`] first thing in `main`, before it starts any
    /// thread: it starts with every signal blocked until that call.
    pub fn this_program() -> std::io::Result<Self> {
        let mut command = WorkerCommand::new(current_exe()?).env(WORKER_ENV, "1");
        command.this_program = true;
        Ok(command)
    }

    /// This program with a subcommand, such as `fibpool worker`, which
    /// must serve through [`fibpool_worker::run_stdio`] (or call
    /// [`fibpool_worker::unblock_signals`] first thing): it starts with
    /// every signal blocked.
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

    /// The whole environment for a worker of this command, as execve takes
    /// it: this process's, without the variables that choose a worker's
    /// mode, with the command's own set (the last of a name wins).
    pub(crate) fn exec_env(&self) -> std::io::Result<super::vfork::Env> {
        let given = |key: &OsStr| self.env.iter().any(|(k, _)| k == key);
        let mut env = super::vfork::Env::default();
        for (k, v) in std::env::vars_os() {
            if !given(&k) && !fibpool_protocol::env::ALL.iter().any(|n| k == *n) {
                env.push(&k, &v)?;
            }
        }
        for (i, (k, v)) in self.env.iter().enumerate() {
            if !self.env[i + 1..].iter().any(|(later, _)| later == k) {
                env.push(k, v)?;
            }
        }
        Ok(env)
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
    fn the_last_of_a_name_wins_in_a_workers_environment() {
        let cmd = WorkerCommand::new("/bin/true")
            .env("FIBPOOL_TEST_TWICE", "first")
            .env("FIBPOOL_TEST_TWICE", "second");
        let env = cmd.exec_env().unwrap();
        let set: Vec<&[u8]> = env
            .entries()
            .filter(|e| e.starts_with(b"FIBPOOL_TEST_TWICE="))
            .collect();
        assert_eq!(set, [&b"FIBPOOL_TEST_TWICE=second"[..]]);
        // The rest is this process's environment, in its order.
        let inherited = std::env::vars_os().count();
        assert_eq!(env.entries().count(), inherited + 1);
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
