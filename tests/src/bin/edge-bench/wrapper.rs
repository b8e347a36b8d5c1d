//! Envoy's worker count without changing the harness: a wrapper that `$ENVOY` points at.

use std::fs;
use std::path::Path;

use anyhow::{Context, Result};

/// What the harness passes to Envoy (`--concurrency 2`); other values need a wrapper.
const HARNESS_ENVOY_CONCURRENCY: u32 = 2;

/// The harness starts Envoy with `--concurrency 2` (right for tests, which want two workers to
/// catch per-worker state bugs). To run another worker count without changing the harness,
/// point `$ENVOY` at a one-line wrapper that rewrites that argument and execs the real binary
/// (so the harness still owns, kills and reaps the Envoy process itself).
pub fn envoy_wrapper(concurrency: u32, real: &Path) -> Result<Option<tempfile::TempDir>> {
    if concurrency == HARNESS_ENVOY_CONCURRENCY {
        return Ok(None);
    }
    let real = real
        .to_str()
        .context("the Envoy path is not UTF-8")?
        .replace('\'', r"'\''");
    let dir = tempfile::Builder::new()
        .prefix("acme-edge-bench-")
        .tempdir()
        .context("create a temp dir for the Envoy wrapper")?;
    let script = dir.path().join("envoy");
    fs::write(
        &script,
        format!(
            "#!/bin/sh\n\
             # edge-bench: the harness passes --concurrency {HARNESS_ENVOY_CONCURRENCY}; run {concurrency} workers instead.\n\
             prev=\n\
             for arg do\n  \
               shift\n  \
               if [ \"$prev\" = --concurrency ]; then arg={concurrency}; fi\n  \
               set -- \"$@\" \"$arg\"\n  \
               prev=$arg\n\
             done\n\
             exec '{real}' \"$@\"\n"
        ),
    )
    .context("write the Envoy wrapper")?;
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755))?;
    std::env::set_var("ENVOY", &script);
    Ok(Some(dir))
}
