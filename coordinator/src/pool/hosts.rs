//! Where a pool's workers run: this machine, or hosts reached over ssh,
//! named as GNU parallel's `--sshlogin` names them.

use std::fmt;

use super::{MAX_WORKERS, WorkerCommand};

/// A host to reach over ssh: `[user@]host[:port]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Login {
    pub user: Option<String>,
    pub host: String,
    pub port: Option<u16>,
}

impl fmt::Display for Login {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(user) = &self.user {
            write!(f, "{user}@")?;
        }
        if self.host.contains(':') {
            write!(f, "[{}]", self.host)?;
        } else {
            f.write_str(&self.host)?;
        }
        if let Some(port) = self.port {
            write!(f, ":{port}")?;
        }
        Ok(())
    }
}

/// One entry of a host list: where, and how many workers (`None`: the
/// pool's per-host default, else the host's core count).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    pub workers: Option<usize>,
    /// `None` for this machine (`:`), whose workers are started locally.
    pub login: Option<Login>,
}

impl Host {
    /// This machine, `workers` of them (`None`: the default).
    pub fn local(workers: Option<usize>) -> Host {
        Host {
            workers,
            login: None,
        }
    }

    /// Parses one entry: `[N/][user@]host[:port]`, or `[N/]:` for this
    /// machine. An IPv6 address goes in brackets: `[::1]:2222`.
    pub fn parse(spec: &str) -> Result<Host, String> {
        let bad = |why: &str| Err(format!("bad host '{spec}': {why}"));
        let text = spec.trim();
        let (workers, rest) = match text.split_once('/') {
            Some((n, rest)) => match n.parse::<usize>() {
                Ok(n) if (1..=MAX_WORKERS).contains(&n) => (Some(n), rest),
                _ => return bad(&format!("N/ must be a count from 1 to {MAX_WORKERS}")),
            },
            None => (None, text),
        };
        if rest == ":" {
            return Ok(Host::local(workers));
        }
        let (user, rest) = match rest.rsplit_once('@') {
            Some((user, rest)) => (Some(user), rest),
            None => (None, rest),
        };
        let (host, port) = if let Some(inner) = rest.strip_prefix('[') {
            match inner.split_once(']') {
                Some((host, "")) => (host, None),
                Some((host, port)) => match port.strip_prefix(':') {
                    Some(port) => (host, Some(port)),
                    None => return bad("expected ':PORT' after ']'"),
                },
                None => return bad("'[' without ']'"),
            }
        } else {
            match rest.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (rest, None),
            }
        };
        let port = match port {
            None => None,
            Some(port) => match port.parse::<u16>() {
                Ok(port) if port > 0 => Some(port),
                _ => return bad(&format!("'{port}' is not a port (1 to 65535)")),
            },
        };
        if let Some(user) = user
            && !plain(user)
        {
            return bad("the user name is empty or has a character ssh would not take");
        }
        if !plain(host) && !ipv6(host) {
            return bad("the host name is empty or has a character ssh would not take");
        }
        Ok(Host {
            workers,
            login: Some(Login {
                user: user.map(str::to_owned),
                host: host.to_owned(),
                port,
            }),
        })
    }

    /// Parses a comma-separated list, as `--hosts` takes it.
    pub fn parse_list(spec: &str) -> Result<Vec<Host>, String> {
        let hosts = spec
            .split(',')
            .map(Host::parse)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(hosts)
    }

    /// Parses a hosts file: one entry per line (or several, comma-separated),
    /// blank lines and `#` comments skipped, as GNU parallel's
    /// `--sshloginfile`. Errors name the line.
    pub fn parse_file(text: &str) -> Result<Vec<Host>, String> {
        let mut hosts = Vec::new();
        for (number, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let more = Host::parse_list(line).map_err(|e| format!("line {}: {e}", number + 1))?;
            hosts.extend(more);
        }
        Ok(hosts)
    }
}

/// A name or address ssh takes as one argument and cannot read as an
/// option: letters, digits and `._-`, not starting with `-`.
fn plain(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// An IPv6 address, as written in brackets.
fn ipv6(name: &str) -> bool {
    name.contains(':')
        && name
            .chars()
            .all(|c| c.is_ascii_hexdigit() || matches!(c, ':' | '.'))
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(n) = self.workers {
            write!(f, "{n}/")?;
        }
        match &self.login {
            Some(login) => login.fmt(f),
            None => f.write_str(":"),
        }
    }
}

/// How remote workers are started: `ssh` and its options, then the worker
/// command as the far side's shell runs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ssh {
    pub command: WorkerCommand,
    pub remote_command: String,
}

impl Ssh {
    /// The program the remote command runs, to look for on each host
    /// (`None` when it begins with a variable assignment); an error for a
    /// remote command that is empty or cannot be split as a shell would.
    pub fn remote_program(&self) -> Result<Option<String>, String> {
        let words = shell_words::split(&self.remote_command)
            .map_err(|e| format!("cannot parse '{}': {e}", self.remote_command))?;
        match words.into_iter().next() {
            None => Err("the remote worker command is empty".to_owned()),
            Some(first) if first.contains('=') => Ok(None),
            Some(first) => Ok(Some(first)),
        }
    }
}

impl Ssh {
    /// The remote command as sent: with `exec` before a plain command (a
    /// program and its words, nothing else for the shell to do), so that
    /// the worker replaces the far side's shell, its parent is the sshd
    /// that serves its session, and a kill of its pid is a kill of the
    /// worker.
    pub(crate) fn sent_command(&self) -> String {
        let plain = matches!(self.remote_program(), Ok(Some(_)))
            && !self
                .remote_command
                .chars()
                .any(|c| ";&|<>()$`\n*?[]{}~!#".contains(c));
        // Shell builtins and keywords that `exec` cannot run: POSIX's
        // special builtins and the regular ones no PATH holds.
        let first = self.remote_command.split_whitespace().next().unwrap_or("");
        let builtin = matches!(
            first,
            "exec"
                | "command"
                | "builtin"
                | "time"
                | "eval"
                | "exit"
                | "return"
                | "break"
                | "continue"
                | "."
                | ":"
                | "source"
                | "export"
                | "readonly"
                | "set"
                | "unset"
                | "shift"
                | "times"
                | "trap"
                | "cd"
                | "umask"
                | "ulimit"
                | "wait"
                | "alias"
                | "unalias"
                | "local"
                | "read"
                | "hash"
                | "type"
                | "jobs"
                | "fg"
                | "bg"
                | "getopts"
        );
        if plain && !builtin {
            format!("exec {}", self.remote_command)
        } else {
            self.remote_command.clone()
        }
    }
}

impl Default for Ssh {
    fn default() -> Self {
        Ssh {
            command: WorkerCommand::new("ssh"),
            remote_command: "fibpool worker".to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn login(user: Option<&str>, host: &str, port: Option<u16>) -> Option<Login> {
        Some(Login {
            user: user.map(str::to_owned),
            host: host.to_owned(),
            port,
        })
    }

    #[test]
    fn entries_parse_as_gnu_parallel_writes_them() {
        let hosts =
            Host::parse_list("4/alice@node1:2222,:,node2,2/:,[::1]:22,bob@10.0.0.5").unwrap();
        let want = [
            (Some(4), login(Some("alice"), "node1", Some(2222))),
            (None, None),
            (None, login(None, "node2", None)),
            (Some(2), None),
            (None, login(None, "::1", Some(22))),
            (None, login(Some("bob"), "10.0.0.5", None)),
        ];
        assert_eq!(hosts.len(), want.len());
        for (host, (workers, login)) in hosts.iter().zip(want) {
            assert_eq!((host.workers, &host.login), (workers, &login), "{host}");
        }
        let shown: Vec<String> = hosts.iter().map(Host::to_string).collect();
        assert_eq!(
            shown,
            [
                "4/alice@node1:2222",
                ":",
                "node2",
                "2/:",
                "[::1]:22",
                "bob@10.0.0.5"
            ]
        );
    }

    #[test]
    fn bad_entries_say_what_is_wrong() {
        let cases = [
            (
                "0/node",
                "bad host '0/node': N/ must be a count from 1 to 1024",
            ),
            (
                "x/node",
                "bad host 'x/node': N/ must be a count from 1 to 1024",
            ),
            (
                "node:0",
                "bad host 'node:0': '0' is not a port (1 to 65535)",
            ),
            (
                "node:http",
                "bad host 'node:http': 'http' is not a port (1 to 65535)",
            ),
            (
                "",
                "bad host '': the host name is empty or has a character ssh would not take",
            ),
            (
                "-oProxyCommand=x",
                "bad host '-oProxyCommand=x': the host name is empty or has a character ssh would not take",
            ),
            (
                "a b",
                "bad host 'a b': the host name is empty or has a character ssh would not take",
            ),
            (
                "@node",
                "bad host '@node': the user name is empty or has a character ssh would not take",
            ),
            ("[::1", "bad host '[::1': '[' without ']'"),
        ];
        for (spec, want) in cases {
            assert_eq!(Host::parse(spec).unwrap_err(), want, "{spec}");
        }
    }

    #[test]
    fn a_plain_remote_command_is_execed_and_others_are_left_alone() {
        let sent = |remote: &str| {
            Ssh {
                command: WorkerCommand::new("ssh"),
                remote_command: remote.to_owned(),
            }
            .sent_command()
        };
        assert_eq!(sent("fibpool worker"), "exec fibpool worker");
        assert_eq!(
            sent("'/opt/my dir/fibpool' worker"),
            "exec '/opt/my dir/fibpool' worker"
        );
        assert_eq!(sent("exec fibpool worker"), "exec fibpool worker");
        assert_eq!(sent("command fibpool worker"), "command fibpool worker");
        for builtin in ["exit 3", "cd /tmp", ". ./env.sh", "ulimit -v 100", "wait"] {
            assert_eq!(sent(builtin), builtin);
        }
        for other in [
            "cd /x && fibpool worker",
            "FOO=1 fibpool worker",
            "fibpool worker 2>$LOG",
        ] {
            assert_eq!(sent(other), other);
        }
    }

    #[test]
    fn a_hosts_file_skips_comments_and_names_the_bad_line() {
        let hosts = Host::parse_file("# cluster\n\n2/node1  # fast\nnode2,:\n").unwrap();
        assert_eq!(
            hosts.iter().map(Host::to_string).collect::<Vec<_>>(),
            ["2/node1", "node2", ":"]
        );
        assert_eq!(
            Host::parse_file("node1\nnode2:99999\n").unwrap_err(),
            "line 2: bad host 'node2:99999': '99999' is not a port (1 to 65535)"
        );
    }
}
