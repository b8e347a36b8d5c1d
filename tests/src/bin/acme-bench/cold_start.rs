//! Cold start and sizes: how long `renewer serve` takes from `exec` to its first `200` on
//! `/healthz`, and the size of what the image ships.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{ensure, Context, Result};
use harness::{bench, free_port, wasm_path};

use crate::args::Options;
use crate::progress::progress;
use crate::serve::Serve;

/// What the cold-start section reports.
pub struct Measured {
    pub starts: Vec<ColdStart>,
    pub sizes: Sizes,
    /// `/proc/loadavg` before the first start.
    pub loadavg: String,
}

pub fn measure(opts: &Options, renewer: &Path) -> Result<Measured> {
    let dir = tempfile::Builder::new()
        .prefix("acme-edge-cold-start-")
        .tempdir()
        .context("create the work directory")?;
    let loadavg = bench::loadavg();
    progress(format!("{} cold starts of renewer serve", opts.cold_starts));
    let starts = cold_starts(opts, renewer, dir.path())?;
    let sizes = sizes(renewer, dir.path())?;
    Ok(Measured {
        starts,
        sizes,
        loadavg,
    })
}

pub struct ColdStart {
    pub ms: f64,
    pub peak_rss_kib: Option<u64>,
}

fn cold_starts(opts: &Options, renewer: &Path, dir: &Path) -> Result<Vec<ColdStart>> {
    let config = dir.join("renewer.toml");
    fs::write(&config, cold_start_config(&dir.join("store")))?;
    let mut out = Vec::with_capacity(opts.cold_starts);
    for i in 0..opts.cold_starts {
        let port = free_port();
        let started = Instant::now();
        let mut serve = Serve::spawn(renewer, &config, port, dir.join("serve.log"))?;
        let ready = serve.wait_healthy(port)?;
        let ms = ready.duration_since(started).as_secs_f64() * 1000.0;
        let peak_rss_kib = serve.stop();
        progress(format!(
            "cold start {}/{}: {ms:.2} ms",
            i + 1,
            opts.cold_starts
        ));
        out.push(ColdStart { ms, peak_rss_kib });
    }
    Ok(out)
}

/// A valid config with a file store, like the image's (where `RENEWER__*` variables fill it):
/// `serve` reads it, opens the store and listens; the CA is only contacted by a pass.
fn cold_start_config(store: &Path) -> String {
    format!(
        "[acme]\ndirectory = \"letsencrypt-staging\"\ncontact = [\"ops@example.com\"]\n\n\
         [store]\nurl = \"file://{}\"\n\n\
         [[certificates]]\nname = \"app\"\ndomains = [\"app.example.com\"]\n",
        store.display()
    )
}

pub struct Sizes {
    pub renewer: u64,
    pub wasm: Option<u64>,
    /// (tar, tar.gz) of the image's own layer; None without the wasm.
    pub layer: Option<(u64, u64)>,
}

/// The files the Dockerfile's runtime stage copies (`COPY --from=build /out/ /`), as a tar and
/// a gzip'd tar (what a registry stores and Cloud Run pulls).
fn image_layer(renewer: &Path, wasm: &Path, dir: &Path) -> Result<(u64, u64)> {
    let root = dir.join("out");
    let put = |src: &Path, rel: &str| -> Result<()> {
        let dst = root.join(rel);
        fs::create_dir_all(dst.parent().context("path has a parent")?)?;
        fs::copy(src, &dst).with_context(|| format!("copy {}", src.display()))?;
        Ok(())
    };
    put(renewer, "usr/local/bin/renewer")?;
    put(wasm, "opt/acme-edge/edge_filter.wasm")?;
    fs::create_dir_all(root.join("etc/acme-edge"))?;
    // The same one-line file the Dockerfile writes.
    fs::write(
        root.join("etc/acme-edge/renewer.toml"),
        "# Settings come from RENEWER__<SECTION>__<FIELD> environment variables.\n",
    )?;
    let tar = dir.join("layer.tar");
    let status = Command::new("tar")
        .args([
            "--sort=name",
            "--owner=0",
            "--group=0",
            "--numeric-owner",
            "--mtime=@0",
        ])
        .arg("-C")
        .arg(&root)
        .arg("-cf")
        .arg(&tar)
        .arg(".")
        .status()
        .context("run tar")?;
    ensure!(status.success(), "tar failed: {status}");
    let gz = dir.join("layer.tar.gz");
    let status = Command::new("gzip")
        .args(["-6", "-n", "-c"])
        .arg(&tar)
        .stdout(fs::File::create(&gz)?)
        .status()
        .context("run gzip")?;
    ensure!(status.success(), "gzip failed: {status}");
    Ok((fs::metadata(&tar)?.len(), fs::metadata(&gz)?.len()))
}

fn sizes(renewer: &Path, dir: &Path) -> Result<Sizes> {
    let wasm = wasm_path();
    let wasm_size = fs::metadata(&wasm).ok().map(|m| m.len());
    let layer = match wasm_size {
        Some(_) => Some(image_layer(renewer, &wasm, dir)?),
        None => None,
    };
    Ok(Sizes {
        renewer: fs::metadata(renewer)?.len(),
        wasm: wasm_size,
        layer,
    })
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn the_config_parses() {
        let text = cold_start_config(Path::new("/tmp/store"));
        renewer::config::Config::parse(&text, "cold start", &[]).expect("valid config");
    }
}
