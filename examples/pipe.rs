//! The book chapter's `multiprocessing.Pipe` program: process A sends
//! random integers from 1 to 10 to process B, which prints them. A and B
//! are real processes (this program started again with a role), and the
//! pipe between them carries fibpool's frames: a length, then bincode.
//!
//!     cargo run --example pipe -- [COUNT]   (default 10)

use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::process::{Command, Stdio};

use fibpool_protocol::{FrameReader, FrameWriter};
use serde::{Deserialize, Serialize};

/// What travels from A to B.
#[derive(Debug, Serialize, Deserialize)]
struct Number {
    value: u8,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    match args.next().as_deref() {
        Some("--process-a") => process_a(args.next().map_or(Ok(10), |a| a.parse())?),
        Some("--process-b") => process_b(),
        count => {
            let count: u32 = count.map_or(Ok(10), str::parse)?;
            parent(count)
        }
    }
}

/// Starts A and B with a pipe from A's stdout to B's stdin, and waits for both.
fn parent(count: u32) -> Result<(), Box<dyn std::error::Error>> {
    let me = std::env::current_exe()?;
    let (reader, writer) = io::pipe()?;
    let mut a = Command::new(&me)
        .args(["--process-a", &count.to_string()])
        .stdout(writer)
        .spawn()?;
    let mut b = Command::new(&me)
        .arg("--process-b")
        .stdin(reader)
        .stdout(Stdio::inherit())
        .spawn()?;
    let (a, b) = (a.wait()?, b.wait()?);
    if !a.success() || !b.success() {
        return Err(format!("process A {a}, process B {b}").into());
    }
    Ok(())
}

/// Process A: random integers from 1 to 10, one frame each.
fn process_a(count: u32) -> Result<(), Box<dyn std::error::Error>> {
    let mut out = FrameWriter::new(raw_stdout()?);
    let mut state = (std::process::id() as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    for _ in 0..count {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let value = 1 + (state % 10) as u8;
        out.send(&Number { value })?;
        eprintln!("process A sent {value}");
    }
    Ok(())
}

/// Process B: prints every integer that arrives, until A's end of the pipe closes.
fn process_b() -> Result<(), Box<dyn std::error::Error>> {
    let mut input = FrameReader::new(io::stdin().lock());
    while let Some(Number { value }) = input.recv::<Number>()? {
        println!("process B received {value}");
    }
    Ok(())
}

/// Standard output without std's line buffering, which would split a
/// frame holding a newline byte into two writes.
fn raw_stdout() -> io::Result<File> {
    Ok(File::from(io::stdout().as_fd().try_clone_to_owned()?))
}
