//! Running other programs: timing a command with its peak memory, and the versions of tools
//! for a report.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::repo_root;

/// Output of a small command run in the repository, trimmed; `fallback` if it cannot run.
pub fn command_output(program: &str, args: &[&str], fallback: &str) -> String {
    Command::new(program)
        .args(args)
        .current_dir(repo_root())
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| fallback.to_owned())
}

/// `envoy --version` prints "`<path>  version: <sha>/1.40.0/Clean/RELEASE/BoringSSL`".
pub fn envoy_version(envoy: &Path) -> String {
    let text = command_output(&envoy.to_string_lossy(), &["--version"], "unknown");
    text.split_once("version:")
        .map(|(_, v)| v.trim().to_owned())
        .unwrap_or(text)
}

/// GNU time, for a child's peak RSS (std has no `wait4`, and the workspace forbids `unsafe`).
/// Debian package `time`; `scripts/bootstrap.sh --bench` installs it.
pub const GNU_TIME: &str = "/usr/bin/time";

/// One timed run of a command.
#[derive(Debug, Clone)]
pub struct Measured {
    /// From spawn to exit, measured here (GNU time's own figure has only 10 ms resolution).
    pub wall: Duration,
    /// Peak resident set of the process, KiB (GNU time's `%M`, from `wait4`'s `ru_maxrss`).
    pub max_rss_kib: u64,
    pub success: bool,
    /// The command's stdout and stderr, for error messages.
    pub output: String,
}

/// Runs `program args…` under GNU time and reports its wall time and peak RSS. The command's
/// own output is captured (returned, not printed). `cmd` gives the environment and directory.
pub fn measure(cmd: Command) -> Result<Measured> {
    if !Path::new(GNU_TIME).is_file() {
        bail!("{GNU_TIME} is missing: run `bash scripts/bootstrap.sh --bench` (make bench does)");
    }
    let report = tempfile::NamedTempFile::new().context("temp file for GNU time")?;
    let program = cmd.get_program().to_owned();
    let args: Vec<_> = cmd.get_args().map(|a| a.to_owned()).collect();
    let mut timed = Command::new(GNU_TIME);
    timed
        .arg("--format=%M")
        .arg("--output")
        .arg(report.path())
        .arg(&program)
        .args(&args);
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => timed.env(k, v),
            None => timed.env_remove(k),
        };
    }
    if let Some(dir) = cmd.get_current_dir() {
        timed.current_dir(dir);
    }
    timed.stdin(Stdio::null());
    let started = Instant::now();
    let out = timed
        .output()
        .with_context(|| format!("run {}", program.to_string_lossy()))?;
    let wall = started.elapsed();
    let text = fs::read_to_string(report.path()).unwrap_or_default();
    // GNU time writes "Command exited with non-zero status N" before the format line.
    let max_rss_kib = text
        .lines()
        .rev()
        .find_map(|l| l.trim().parse::<u64>().ok())
        .with_context(|| format!("GNU time gave no peak RSS for {program:?}: {text:?}"))?;
    let mut output = String::from_utf8_lossy(&out.stdout).into_owned();
    output.push_str(&String::from_utf8_lossy(&out.stderr));
    Ok(Measured {
        wall,
        max_rss_kib,
        success: out.status.success(),
        output,
    })
}
