//! Starting a worker of this very program: vfork and exec, nothing between.
//!
//! glibc's posix_spawn, which `std::process::Command` uses, resets every
//! signal's disposition in the child before its exec, about 130 sigaction
//! calls while the parent waits: 85 µs a spawn here against 49 µs without
//! them (a C program, 400 spawns each, medians). A worker of this program
//! needs none of that: the parent blocks every signal around the vfork, so
//! no handler of the parent's can run in the child (which shares its
//! memory), the blocked mask survives the exec, and the worker's first act
//! ([`fibpool_worker::run_stdio`]) is to unblock them. The child's
//! environment is a copy made beforehand, never `environ` itself, which
//! another thread could change while execve reads it. Any other program
//! gets `std::process::Command` and a clean signal state.

use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

/// A program and its arguments made ready for execve, once per pool.
#[derive(Debug)]
pub(crate) struct Exec {
    program: CString,
    args: Vec<CString>,
}

impl Exec {
    /// `None` for a program that cannot be given to execve as it is (a
    /// NUL byte, or no '/' so that PATH would have to be searched).
    pub fn new(program: &OsStr, args: &[OsString]) -> Option<Self> {
        if !program.as_bytes().contains(&b'/') {
            return None;
        }
        let program = CString::new(program.as_bytes()).ok()?;
        let mut argv = vec![program.clone()];
        for arg in args {
            argv.push(CString::new(arg.as_bytes()).ok()?);
        }
        Some(Exec {
            program,
            args: argv,
        })
    }

    /// Starts the program in a process group of its own, with `stdin` and
    /// `stdout` as its fd 0 and 1, stderr and the environment inherited (or
    /// this `Exec`'s), every other descriptor closed by its close-on-exec
    /// flag, and every signal blocked, with `env` (`KEY=VALUE` strings) as
    /// its whole environment. Returns once the exec has happened: a program
    /// that cannot be executed is this call's error.
    pub fn spawn(
        &self,
        stdin: BorrowedFd<'_>,
        stdout: BorrowedFd<'_>,
        env: &Env,
    ) -> io::Result<u32> {
        // Descriptors 0-2 are the child's to fill: ends that sit there in
        // this process (one that closed its own) move up first.
        let high = |fd: BorrowedFd<'_>| -> io::Result<Option<OwnedFd>> {
            if fd.as_raw_fd() > 2 {
                return Ok(None);
            }
            fd.try_clone_to_owned().map(Some)
        };
        let (stdin_high, stdout_high) = (high(stdin)?, high(stdout)?);
        let stdin = stdin_high
            .as_ref()
            .map_or(stdin.as_raw_fd(), AsRawFd::as_raw_fd);
        let stdout = stdout_high
            .as_ref()
            .map_or(stdout.as_raw_fd(), AsRawFd::as_raw_fd);

        let argv: Vec<*const libc::c_char> = pointers(&self.args);
        // Never this process's `environ`: another thread may change it
        // (`set_var`, or C's `setenv`) while the child's execve reads it.
        let envp = env.pointers();
        let mut args = ChildArgs {
            path: self.program.as_ptr(),
            argv: argv.as_ptr(),
            envp: envp.as_ptr(),
            stdin,
            stdout,
            errno: 0,
        };
        // The child runs on a stack of its own until its exec; it needs
        // little (a few calls into libc).
        let mut stack = vec![0u8; CHILD_STACK];
        let top = (stack.as_mut_ptr() as usize + CHILD_STACK) & !15;

        // Every signal, glibc's own two included (which pthread_sigmask
        // would leave out): the raw call. Restored below.
        let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
        let mut all: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: sigsets we own; the kernel reads and writes KERNEL_SIGSET bytes.
        unsafe {
            libc::sigfillset(&mut all);
            sigprocmask(&all, &mut old);
        }
        // SAFETY: with CLONE_VFORK this thread waits until the child has
        // exec'd or exited, so `args` and `stack` outlive its use of them;
        // the child calls only async-signal-safe functions ([`child`]), with
        // every signal blocked.
        let pid = unsafe {
            libc::clone(
                child,
                top as *mut libc::c_void,
                libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
                (&raw mut args).cast(),
            )
        };
        let clone_error = io::Error::last_os_error();
        // SAFETY: the mask saved above.
        unsafe { sigprocmask(&old, std::ptr::null_mut()) };
        drop(stack);
        if pid < 0 {
            return Err(clone_error);
        }
        // SAFETY: written by the child before it exited, read after.
        let errno = unsafe { std::ptr::read_volatile(&raw const args.errno) };
        if errno != 0 {
            let mut status = 0;
            // SAFETY: reaping our own child, which has exited.
            unsafe { libc::waitpid(pid, &mut status, 0) };
            return Err(io::Error::from_raw_os_error(errno));
        }
        Ok(pid as u32)
    }
}

/// An environment for execve: `KEY=VALUE\0` entries back to back in one
/// block (copying the environment costs one allocation, not two a
/// variable).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Env {
    block: Vec<u8>,
    starts: Vec<usize>,
}

impl Env {
    /// Appends `key=value`; a NUL byte in either is an error.
    pub fn push(&mut self, key: &OsStr, value: &OsStr) -> io::Result<()> {
        let (key, value) = (key.as_bytes(), value.as_bytes());
        if key.contains(&0) || value.contains(&0) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "a NUL byte in the worker's environment variable {:?}",
                    String::from_utf8_lossy(key)
                ),
            ));
        }
        self.starts.push(self.block.len());
        self.block.extend_from_slice(key);
        self.block.push(b'=');
        self.block.extend_from_slice(value);
        self.block.push(0);
        Ok(())
    }

    /// The entries, without their NUL.
    pub fn entries(&self) -> impl Iterator<Item = &[u8]> {
        let ends = self
            .starts
            .iter()
            .skip(1)
            .copied()
            .chain([self.block.len()]);
        self.starts
            .iter()
            .zip(ends)
            .map(|(&start, end)| &self.block[start..end - 1])
    }

    /// This environment with `vars` set as well, replacing their names.
    pub fn with_vars(&self, vars: &[(&'static str, OsString)]) -> io::Result<Env> {
        let replaced = |entry: &[u8]| {
            let name = entry.split(|&b| b == b'=').next().unwrap_or_default();
            vars.iter().any(|(k, _)| k.as_bytes() == name)
        };
        let mut env = Env::default();
        for entry in self.entries().filter(|e| !replaced(e)) {
            env.starts.push(env.block.len());
            env.block.extend_from_slice(entry);
            env.block.push(0);
        }
        for (k, v) in vars {
            env.push(OsStr::new(k), v)?;
        }
        Ok(env)
    }

    /// execve's `envp`: a pointer to each entry, then null.
    fn pointers(&self) -> Vec<*const libc::c_char> {
        self.starts
            .iter()
            .map(|&start| self.block[start..].as_ptr().cast())
            .chain(std::iter::once(std::ptr::null()))
            .collect()
    }
}

const CHILD_STACK: usize = 64 * 1024;

/// The kernel's signal set: 64 signals.
const KERNEL_SIGSET: usize = 8;

/// rt_sigprocmask(SIG_SETMASK) on this thread.
///
/// # Safety
/// `set` must be valid to read and `old` null or valid to write.
unsafe fn sigprocmask(set: *const libc::sigset_t, old: *mut libc::sigset_t) {
    // SAFETY: as the caller promises.
    unsafe {
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            set,
            old,
            KERNEL_SIGSET,
        )
    };
}

fn pointers(strings: &[CString]) -> Vec<*const libc::c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

#[repr(C)]
struct ChildArgs {
    path: *const libc::c_char,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
    stdin: libc::c_int,
    stdout: libc::c_int,
    /// Set by the child when a step failed, before it exits.
    errno: libc::c_int,
}

/// The child, between vfork and exec: async-signal-safe calls only, no
/// allocation, no unwinding.
extern "C" fn child(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the parent's `ChildArgs`, alive while it waits.
    let args = unsafe { &mut *arg.cast::<ChildArgs>() };
    // SAFETY: plain system calls on descriptors and strings the parent
    // prepared; errno is read right after the call that set it.
    unsafe {
        let ok = libc::setpgid(0, 0) == 0
            && libc::dup2(args.stdin, libc::STDIN_FILENO) >= 0
            && libc::dup2(args.stdout, libc::STDOUT_FILENO) >= 0;
        if ok {
            libc::execve(args.path, args.argv, args.envp);
        }
        let errno = *libc::__errno_location();
        std::ptr::write_volatile(
            &raw mut args.errno,
            if errno == 0 { libc::EINVAL } else { errno },
        );
        libc::_exit(127)
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::os::fd::AsFd;

    use super::*;

    fn exec(program: &str, args: &[&str]) -> Exec {
        let args: Vec<OsString> = args.iter().map(OsString::from).collect();
        Exec::new(OsStr::new(program), &args).expect("an absolute path")
    }

    fn blocked(status_file: &str) -> u64 {
        let status = std::fs::read_to_string(status_file).unwrap();
        let line = status.lines().find(|l| l.starts_with("SigBlk:")).unwrap();
        u64::from_str_radix(line["SigBlk:".len()..].trim(), 16).unwrap()
    }

    fn reap(pid: u32) -> i32 {
        let mut status = 0;
        // SAFETY: waitpid on a child of this test.
        assert_eq!(
            unsafe { libc::waitpid(pid as i32, &mut status, 0) },
            pid as i32
        );
        status
    }

    #[test]
    fn the_child_gets_its_streams_its_own_group_and_every_signal_blocked() {
        let (stdin_read, mut stdin_write) = std::io::pipe().unwrap();
        let (mut stdout_read, stdout_write) = std::io::pipe().unwrap();
        let mine = blocked("/proc/thread-self/status");
        let pid = exec("/bin/cat", &[])
            .spawn(stdin_read.as_fd(), stdout_write.as_fd(), &Env::default())
            .unwrap();
        drop((stdin_read, stdout_write));
        // This thread's mask is as it was.
        assert_eq!(blocked("/proc/thread-self/status"), mine);
        // SAFETY: getpgid on our child, not yet reaped.
        assert_eq!(unsafe { libc::getpgid(pid as i32) }, pid as i32);
        let theirs = blocked(&format!("/proc/{pid}/status"));
        for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGCHLD, libc::SIGUSR1] {
            assert_ne!(
                theirs & (1 << (signal - 1)),
                0,
                "signal {signal}: {theirs:x}"
            );
        }
        stdin_write.write_all(b"through the pipes\n").unwrap();
        drop(stdin_write);
        let mut out = String::new();
        stdout_read.read_to_string(&mut out).unwrap();
        assert_eq!(out, "through the pipes\n");
        assert_eq!(reap(pid), 0);
    }

    #[test]
    fn a_given_environment_is_the_whole_environment() {
        let (stdin, _keep) = std::io::pipe().unwrap();
        let (mut stdout_read, stdout_write) = std::io::pipe().unwrap();
        let mut env = Env::default();
        env.push(OsStr::new("ONLY"), OsStr::new("this one"))
            .unwrap();
        let pid = exec("/usr/bin/env", &[])
            .spawn(stdin.as_fd(), stdout_write.as_fd(), &env)
            .unwrap();
        drop(stdout_write);
        let mut out = String::new();
        stdout_read.read_to_string(&mut out).unwrap();
        assert_eq!(out, "ONLY=this one\n");
        assert_eq!(reap(pid), 0);
    }

    #[test]
    fn a_program_that_cannot_be_executed_is_the_spawn_error() {
        let (stdin, _keep) = std::io::pipe().unwrap();
        let err = exec("/nonexistent/fibpool", &["worker"])
            .spawn(stdin.as_fd(), std::io::stderr().as_fd(), &Env::default())
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound, "{err}");
        let err = exec("/proc/self/status", &[])
            .spawn(stdin.as_fd(), std::io::stderr().as_fd(), &Env::default())
            .unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EACCES), "{err}");
    }

    #[test]
    fn channel_variables_replace_their_names() {
        let mut env = Env::default();
        for (k, v) in [("A", "a"), ("B", "b"), ("EMPTY", "")] {
            env.push(OsStr::new(k), OsStr::new(v)).unwrap();
        }
        let env = env
            .with_vars(&[("B", OsString::from("channel")), ("C", OsString::from("c"))])
            .unwrap();
        let got: Vec<&[u8]> = env.entries().collect();
        assert_eq!(got, [&b"A=a"[..], b"EMPTY=", b"B=channel", b"C=c"]);
    }

    #[test]
    fn only_a_path_without_nul_bytes_is_exec_ready() {
        assert!(Exec::new(OsStr::new("cat"), &[]).is_none());
        assert!(Exec::new(OsStr::new("/bin/cat"), &[OsString::from("a\0b")]).is_none());
        let err = Env::default()
            .push(OsStr::new("A"), OsStr::new("b\0"))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "a NUL byte in the worker's environment variable \"A\""
        );
    }
}
