//! `fibpool run`'s output: `n<TAB>value` lines, written without copying a
//! big value. Short pieces are copied into one buffer; a value of at least
//! [`BORROW_MIN`] bytes is written from the frame it came in, in the same
//! writev(2) as the pieces around it.

use std::io::{self, IoSlice, Write};
use std::ops::Range;

use fibpool_coordinator::Item;

use super::IOV_MAX;

/// Values this long or longer are written from where they lie; shorter
/// ones are copied, which costs less than a buffer of their own.
pub(crate) const BORROW_MIN: usize = 1024;

/// Copied bytes are written once they reach this many.
const SCRATCH_FLUSH: usize = 64 << 10;

pub(crate) struct Lines<W: Write> {
    out: W,
    /// Copied pieces waiting to be written, in order.
    scratch: Vec<u8>,
    /// Lines handed over so far, written or waiting to be.
    pub handed: u64,
}

/// A piece of output: copied, or borrowed from a frame.
enum Piece<'v> {
    Copied(Range<usize>),
    Borrowed(&'v [u8]),
}

impl<W: Write> Lines<W> {
    pub fn new(out: W) -> Self {
        Lines {
            out,
            scratch: Vec::with_capacity(SCRATCH_FLUSH + BORROW_MIN),
            handed: 0,
        }
    }

    /// Writes a line per item. Whatever borrows from the items is written
    /// before this returns; copied bytes may wait for later items.
    pub fn write_items<'v>(&mut self, items: impl Iterator<Item = Item<'v>>) -> io::Result<()> {
        let mut pieces: Vec<Piece<'v>> = Vec::new();
        // Where the copied bytes not yet in `pieces` begin.
        let mut copied = 0;
        for item in items {
            // Writing to a Vec cannot fail.
            let _ = write!(self.scratch, "{}\t", item.index);
            if item.value.len() >= BORROW_MIN {
                pieces.push(Piece::Copied(copied..self.scratch.len()));
                pieces.push(Piece::Borrowed(item.value));
                copied = self.scratch.len();
                // Room for another value's two and the copied tail.
                if pieces.len() + 3 > IOV_MAX {
                    self.write_pieces(&pieces, copied)?;
                    pieces.clear();
                    copied = 0;
                }
            } else {
                self.scratch.extend_from_slice(item.value);
            }
            self.scratch.push(b'\n');
            self.handed += 1;
        }
        if !pieces.is_empty() || self.scratch.len() >= SCRATCH_FLUSH {
            self.write_pieces(&pieces, copied)?;
        }
        Ok(())
    }

    /// Writes everything still copied.
    pub fn flush(&mut self) -> io::Result<()> {
        self.write_pieces(&[], 0)?;
        self.out.flush()
    }

    /// Writes `pieces`, then the copied bytes from `copied` on, and
    /// empties the copy buffer.
    fn write_pieces(&mut self, pieces: &[Piece<'_>], copied: usize) -> io::Result<()> {
        let scratch = &self.scratch;
        let mut slices: Vec<IoSlice<'_>> = pieces
            .iter()
            .map(|piece| match piece {
                Piece::Copied(range) => &scratch[range.clone()],
                Piece::Borrowed(value) => value,
            })
            .chain([&scratch[copied..]])
            .filter(|bytes| !bytes.is_empty())
            .map(IoSlice::new)
            .collect();
        let mut rest = &mut slices[..];
        let mut written = Ok(());
        while !rest.is_empty() {
            match self.out.write_vectored(rest) {
                Ok(0) => {
                    written = Err(io::ErrorKind::WriteZero.into());
                    break;
                }
                Ok(n) => IoSlice::advance_slices(&mut rest, n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    written = Err(e);
                    break;
                }
            }
        }
        // Emptied either way: after an error what was copied is not written
        // again (part of it may be out already), not even on drop.
        self.scratch.clear();
        written
    }
}

/// As a `BufWriter`: what is still copied is written when the writer goes,
/// so a run that fails prints every line before the failure.
impl<W: Write> Drop for Lines<W> {
    fn drop(&mut self) {
        let _ = self.write_pieces(&[], 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Takes at most `max` bytes a call, from the first buffer only or
    /// from several, as a pipe might.
    struct Trickle {
        got: Vec<u8>,
        max: usize,
        calls: usize,
    }

    impl Write for Trickle {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let n = buf.len().min(self.max);
            self.got.extend_from_slice(&buf[..n]);
            self.calls += 1;
            Ok(n)
        }

        fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            let mut n = 0;
            for buf in bufs {
                let take = buf.len().min(self.max - n);
                self.got.extend_from_slice(&buf[..take]);
                n += take;
                if n == self.max {
                    break;
                }
            }
            self.calls += 1;
            Ok(n)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn values() -> Vec<Vec<u8>> {
        // Short and long values mixed, and more long ones than one writev takes.
        (0..2500u32)
            .map(|i| {
                let len = if i % 3 == 0 {
                    BORROW_MIN + i as usize
                } else {
                    i as usize % 50
                };
                (0..len)
                    .map(|k| b'a' + ((i as usize + k) % 26) as u8)
                    .collect()
            })
            .collect()
    }

    fn items(values: &[Vec<u8>], from: usize) -> impl Iterator<Item = Item<'_>> {
        values.iter().enumerate().map(move |(i, value)| Item {
            position: (from + i) as u64,
            index: (from + i) as u64 * 7,
            value,
        })
    }

    fn want(values: &[Vec<u8>]) -> Vec<u8> {
        let mut want = Vec::new();
        for (i, value) in values.iter().enumerate() {
            want.extend_from_slice(format!("{}\t", i * 7).as_bytes());
            want.extend_from_slice(value);
            want.push(b'\n');
        }
        want
    }

    #[test]
    fn lines_come_out_whole_and_in_order_however_the_writer_takes_them() {
        let values = values();
        for max in [1, 7, 4096, usize::MAX] {
            let mut lines = Lines::new(Trickle {
                got: Vec::new(),
                max,
                calls: 0,
            });
            // Two chunks, then the end.
            lines.write_items(items(&values[..1000], 0)).unwrap();
            lines.write_items(items(&values[1000..], 1000)).unwrap();
            lines.flush().unwrap();
            assert!(
                lines.out.got == want(&values),
                "max {max}: the bytes differ"
            );
        }
    }

    #[test]
    fn short_lines_wait_for_more_and_long_ones_go_in_few_calls() {
        let short: Vec<Vec<u8>> = (0..100).map(|i| vec![b'x'; i % 10]).collect();
        let mut lines = Lines::new(Trickle {
            got: Vec::new(),
            max: usize::MAX,
            calls: 0,
        });
        lines.write_items(items(&short, 0)).unwrap();
        assert_eq!(lines.out.calls, 0, "short values are copied and wait");
        lines.flush().unwrap();
        assert_eq!((lines.out.calls, lines.out.got.clone()), (1, want(&short)));
        // Dropped with lines copied, it writes them.
        let mut got = Vec::new();
        let mut dropped = Lines::new(&mut got);
        dropped.write_items(items(&short, 0)).unwrap();
        drop(dropped);
        assert_eq!(got, want(&short));

        let long: Vec<Vec<u8>> = (0..1500).map(|_| vec![b'y'; BORROW_MIN]).collect();
        let mut lines = Lines::new(Trickle {
            got: Vec::new(),
            max: usize::MAX,
            calls: 0,
        });
        lines.write_items(items(&long, 0)).unwrap();
        // Two buffers a value: 1500 values in three writev calls of at most 1024.
        assert_eq!(lines.out.calls, 3);
        assert!(lines.out.got == want(&long));
    }

    #[test]
    fn a_writer_that_takes_nothing_is_an_error() {
        let mut lines = Lines::new(Trickle {
            got: Vec::new(),
            max: 0,
            calls: 0,
        });
        let big = [vec![b'z'; BORROW_MIN]];
        let err = lines.write_items(items(&big, 0)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WriteZero);
        assert!(lines.scratch.is_empty(), "nothing is written again on drop");
    }
}
