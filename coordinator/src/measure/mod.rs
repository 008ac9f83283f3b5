//! The three measurements, as raw samples: `startup` (what starting a
//! worker costs, phase by phase), `stress` (the IPC: latency, throughput,
//! integrity) and `bench` (speedup against workers, against Python too).
//! They use the pool through its public API and [`crate::pool::probe`];
//! statistics are in [`crate::stats`], the results they build in
//! [`crate::report`].

pub mod bench;
pub mod startup;
pub mod stress;
