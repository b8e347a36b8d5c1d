//! What the benchmark binaries (`tests/src/bin/*-bench/`, run by `make bench`) share: the
//! command line, statistics, `/proc` readers, Envoy's memory, timing a command with its peak memory, the
//! benchmark WebSocket client, and writing a report section.
//!
//! Every benchmark writes one Markdown section (it starts with a `## ` heading) to stdout and
//! to its `--out` file; `scripts/bench.sh` puts the sections together into `BENCHMARKS.md`
//! under one header with the machine, date and commit (the same facts as
//! [`machine_summary`]). A benchmark is a measurement, not a test: a missed target is reported
//! as MISS and the process still exits 0; it exits non-zero only when something could not run
//! (see [`main`]).

mod args;
mod command;
mod connections;
mod envoy;
mod memory;
mod proc;
mod report;
mod stats;
mod ws;

pub use args::{
    main, number, one_of, parse_flags, parse_line, parse_options, positive, BenchOptions,
};
pub use command::{command_output, envoy_version, measure, Measured, GNU_TIME};
pub use connections::{close_all, echo_all, open_many};
pub use envoy::envoy_workers;
pub use memory::{envoy_memory, parse_admin_memory, per_connection, Memory};
pub use proc::{
    cpu_seconds_from_stat, loadavg, machine_summary, max_open_files, open_fds, status_kib, CpuTime,
};
pub use report::{emit_report, mib, setup_table, targets_head, verdict};
pub use stats::{median, percentile, range, rotated};
pub use ws::{close_ws, next_text, ws_open, ws_tls_config};
