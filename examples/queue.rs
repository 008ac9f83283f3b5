//! The book chapter's `multiprocessing.Queue`, with several producer
//! processes and one consumer. The queue is one pipe: every producer
//! writes its frames to the same write end, the consumer reads them in
//! arrival order. A frame is written in one `write(2)` of fewer than
//! PIPE_BUF bytes, which POSIX makes atomic, so frames from different
//! producers never interleave (Python's Queue takes a lock for the same).
//!
//!     cargo run --example queue -- [PRODUCERS] [ITEMS]   (default 3 5)

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::process::{Command, Stdio};

use fibpool_protocol::{FrameReader, FrameWriter};
use serde::{Deserialize, Serialize};

/// One item a producer puts on the queue.
#[derive(Debug, Serialize, Deserialize)]
struct Item {
    producer: u32,
    seq: u32,
    value: u64,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    match args.next().as_deref() {
        Some("--producer") => {
            let id = args.next().ok_or("--producer ID ITEMS")?.parse()?;
            let items = args.next().ok_or("--producer ID ITEMS")?.parse()?;
            producer(id, items)
        }
        Some("--consumer") => consumer(),
        first => {
            let producers: u32 = first.map_or(Ok(3), str::parse)?;
            let items: u32 = args.next().map_or(Ok(5), |a| a.parse())?;
            parent(producers, items)
        }
    }
}

fn parent(producers: u32, items: u32) -> Result<(), Box<dyn std::error::Error>> {
    let me = std::env::current_exe()?;
    let (reader, writer) = io::pipe()?;
    let mut children = Vec::new();
    for id in 0..producers {
        children.push(
            Command::new(&me)
                .args(["--producer", &id.to_string(), &items.to_string()])
                .stdout(writer.try_clone()?)
                .spawn()?,
        );
    }
    // The consumer sees the end of the queue once every producer is done:
    // no copy of the write end may stay open here.
    drop(writer);
    let mut consumer = Command::new(&me)
        .arg("--consumer")
        .stdin(reader)
        .stdout(Stdio::inherit())
        .spawn()?;
    for mut child in children {
        let status = child.wait()?;
        if !status.success() {
            return Err(format!("a producer {status}").into());
        }
    }
    let status = consumer.wait()?;
    if !status.success() {
        return Err(format!("the consumer {status}").into());
    }
    Ok(())
}

/// Puts `items` values on the queue: F(seq + 10 * id) mod 2^64, which the
/// consumer can check.
fn producer(id: u32, items: u32) -> Result<(), Box<dyn std::error::Error>> {
    let mut queue = FrameWriter::new(raw_stdout()?);
    for seq in 0..items {
        let value = fib_mod(u64::from(seq + 10 * id));
        queue.send(&Item {
            producer: id,
            seq,
            value,
        })?;
    }
    Ok(())
}

/// Takes items off the queue until every producer has closed it.
fn consumer() -> Result<(), Box<dyn std::error::Error>> {
    let mut queue = FrameReader::new(io::stdin().lock());
    let mut next: HashMap<u32, u32> = HashMap::new();
    let mut taken = 0;
    while let Some(item) = queue.recv::<Item>()? {
        let expected = next.entry(item.producer).or_insert(0);
        if item.seq != *expected || item.value != fib_mod(u64::from(item.seq + 10 * item.producer))
        {
            return Err(format!("item out of order or wrong: {item:?}").into());
        }
        *expected += 1;
        taken += 1;
        println!(
            "consumer got {} from producer {} (item {})",
            item.value, item.producer, item.seq
        );
    }
    println!("consumer: {taken} items from {} producers", next.len());
    Ok(())
}

/// F(n) mod 2^64.
fn fib_mod(n: u64) -> u64 {
    let (mut a, mut b) = (0u64, 1u64);
    for _ in 0..n {
        (a, b) = (b, a.wrapping_add(b));
    }
    a
}

/// Standard output without std's line buffering, which would split a
/// frame holding a newline byte into two writes.
fn raw_stdout() -> io::Result<File> {
    Ok(File::from(io::stdout().as_fd().try_clone_to_owned()?))
}
