//! A progress bar on stderr for long work: only when stderr is a terminal,
//! and only once the work has lasted long enough to be worth watching.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

/// Work shorter than this shows no bar at all.
const DELAY: Duration = Duration::from_millis(500);
/// Clock reads are spread out: every this many steps.
const CHECK_EVERY: u64 = 256;

pub struct Progress {
    total: u64,
    done: u64,
    next_check: u64,
    started: Instant,
    label: &'static str,
    enabled: bool,
    bar: Option<ProgressBar>,
}

impl Progress {
    pub fn new(total: u64, label: &'static str) -> Self {
        Progress {
            total,
            done: 0,
            next_check: 0,
            started: Instant::now(),
            label,
            enabled: std::io::stderr().is_terminal(),
            bar: None,
        }
    }

    pub fn inc(&mut self, steps: u64) {
        self.done += steps;
        if !self.enabled {
            return;
        }
        if let Some(bar) = &self.bar {
            bar.set_position(self.done);
            return;
        }
        if self.done >= self.next_check || steps > 1 {
            self.next_check = self.done + CHECK_EVERY;
            if self.started.elapsed() >= DELAY {
                let bar = ProgressBar::new(self.total).with_prefix(self.label);
                bar.set_style(
                    ProgressStyle::with_template(
                        "{prefix} [{elapsed_precise}] {wide_bar} {pos}/{len} ({eta} left)",
                    )
                    .expect("a valid template"),
                );
                bar.set_position(self.done);
                self.bar = Some(bar);
            }
        }
    }

    /// Removes the bar, leaving the terminal as it was.
    pub fn finish(self) {
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
    }
}
