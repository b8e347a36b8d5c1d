//! Writing a report section: the Markdown pieces every section has, and where it goes.

use std::fmt::{Display, Write as _};
use std::fs;
use std::path::Path;

use anyhow::{Context, Result};

/// `PASS` or `MISS`, for the targets tables.
pub fn verdict(met: bool) -> &'static str {
    if met {
        "PASS"
    } else {
        "MISS"
    }
}

/// KiB (what `/proc` and GNU time give) in MiB, for a report.
pub fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// A section's `### Setup`: a `| | |` table of (name, value) rows.
pub fn setup_table<K: Display, V: Display>(w: &mut String, rows: impl IntoIterator<Item = (K, V)>) {
    let _ = writeln!(w, "### Setup\n");
    let _ = writeln!(w, "| | |\n|---|---|");
    for (k, v) in rows {
        let _ = writeln!(w, "| {k} | {v} |");
    }
}

/// The head of a targets table (under a heading with "Targets"): `scripts/bench.sh` copies
/// its rows that end in PASS or MISS into the report's summary.
pub fn targets_head(w: &mut String) {
    let _ = writeln!(w, "| target | measured | result |");
    let _ = writeln!(w, "|---|---|---|");
}

/// Writes the report to stdout and, when asked, to `out` (creating its directory).
pub fn emit_report(report: &str, out: Option<&Path>) -> Result<()> {
    print!("{report}");
    if let Some(out) = out {
        if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        }
        fs::write(out, report).with_context(|| format!("write {}", out.display()))?;
    }
    Ok(())
}
