//! Integration tests: the `fibpool` binary with real worker processes, real
//! pipes and real signals. One test binary, one module per capability.

mod bench;
mod examples;
mod faults;
mod hostile;
mod hosts;
mod library;
mod report;
mod run;
mod signals;
mod start_methods;
mod startup;
mod stress;
mod usage;
mod util;
