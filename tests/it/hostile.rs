//! What a hostile afternoon with the CLI found: stderr and stdout that
//! cannot be written, inherited environment, reports on every exit path,
//! bounds. Each test failed on the code before its fix.

use std::fs::OpenOptions;
use std::process::Stdio;

use crate::util::*;

/// `fibpool ARGS` with stderr on /dev/full and stdout discarded.
fn exit_code_with_full_stderr(args: &[&str]) -> Option<i32> {
    let full = OpenOptions::new().write(true).open("/dev/full").unwrap();
    fibpool()
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(full)
        .status()
        .unwrap()
        .code()
}

#[test]
fn a_stderr_that_cannot_be_written_changes_no_exit_code() {
    assert_eq!(exit_code_with_full_stderr(&["run", "0..10"]), Some(0));
    assert_eq!(exit_code_with_full_stderr(&["run", "--", "-5"]), Some(2));
    assert_eq!(
        exit_code_with_full_stderr(&["run", "--worker-cmd", "false", "0..3"]),
        Some(1)
    );
    assert_eq!(
        exit_code_with_full_stderr(&["stress", "--count", "10", "--sizes", "8"]),
        Some(0)
    );
}

#[test]
fn a_stderr_on_a_closed_pipe_changes_no_exit_code() {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    for (args, want) in [(&["run", "0..10"][..], 0), (&["run", "--", "-5"][..], 2)] {
        let status = fibpool()
            .args(args)
            .stdout(Stdio::null())
            .stderr(writer.try_clone().unwrap())
            .status()
            .unwrap();
        assert_eq!(status.code(), Some(want), "{args:?}");
    }
}

#[test]
fn help_that_cannot_be_written_fails() {
    let full = OpenOptions::new().write(true).open("/dev/full").unwrap();
    let out = fibpool()
        .arg("--help")
        .stdout(full)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "fibpool: error: cannot write to stdout: No space left on device (os error 28)\n"
    );
}

#[test]
fn the_workers_mode_is_not_inherited_from_the_users_environment() {
    for (name, value) in [("FIBPOOL_ANSWER_AT_ONCE", "1"), ("FIBPOOL_SOCKET", "")] {
        let out = run(fibpool().args(["run", "0..10"]).env(name, value));
        out.assert_success();
        assert_eq!(
            out.stdout,
            expected_lines(&(0..10).collect::<Vec<_>>(), 10),
            "{name}"
        );
        let out = run(fibpool()
            .args(["run", "--transport", "socket", "0..10"])
            .env(name, value));
        out.assert_success();
        assert_eq!(
            out.stdout,
            expected_lines(&(0..10).collect::<Vec<_>>(), 10),
            "{name}"
        );
    }
}
