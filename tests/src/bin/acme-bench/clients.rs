//! The ACME clients measured: every tool issues 1 and N certificates from one Pebble in each
//! repetition, taking turns.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use harness::bench::{self, mib, Measured};
use harness::{free_port, Pebble};

use crate::args::Options;
use crate::commands::{
    certbot_cmd, certbot_register_cmd, lego_cmd, renewer_cmd, renewer_config, Endpoints,
};
use crate::progress::progress;
use crate::serve::Serve;
use crate::tools::{deb_version, lego_version, rotation, Tool, Tools, TOOLS};

/// Copies `src` into `dst` recursively (files keep their mode: account keys stay 0600).
fn copy_dir(src: &Path, dst: &Path) -> Result<()> {
    fs::create_dir_all(dst).with_context(|| format!("create {}", dst.display()))?;
    for entry in fs::read_dir(src).with_context(|| format!("read {}", src.display()))? {
        let entry = entry?;
        let (from, to) = (entry.path(), dst.join(entry.file_name()));
        if entry.file_type()?.is_dir() {
            copy_dir(&from, &to)?;
        } else {
            fs::copy(&from, &to)
                .with_context(|| format!("copy {} to {}", from.display(), to.display()))?;
        }
    }
    Ok(())
}

/// One case of one tool in one repetition: `count` certificates.
#[derive(Debug, Clone)]
pub struct CaseResult {
    pub wall: Duration,
    /// The largest peak RSS of the tool's invocations.
    pub peak_rss_kib: u64,
    /// Wall time of each process (one for the renewer).
    pub invocations: Vec<Duration>,
    /// The renewer only: `renewer serve`'s peak RSS (VmHWM) as the HTTP-01 responder.
    pub responder_rss_kib: Option<u64>,
}

impl CaseResult {
    fn from_runs(runs: &[Measured]) -> CaseResult {
        CaseResult {
            wall: runs.iter().map(|m| m.wall).sum(),
            peak_rss_kib: runs.iter().map(|m| m.max_rss_kib).max().unwrap_or(0),
            invocations: runs.iter().map(|m| m.wall).collect(),
            responder_rss_kib: None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct ToolRep {
    pub rep: usize,
    pub position: usize,
    pub tool: Tool,
    pub one: CaseResult,
    pub many: CaseResult,
}

/// Everything a case needs: the tools, where Pebble is, the work directory and the accounts.
struct AcmeRun<'a> {
    tools: &'a Tools,
    ep: Endpoints,
    work: PathBuf,
}

impl AcmeRun<'_> {
    fn base(&self, tool: Tool) -> PathBuf {
        self.work.join(tool.name()).join("base")
    }

    fn case_dir(&self, tool: Tool, label: &str) -> Result<PathBuf> {
        let dir = self.work.join(tool.name()).join(label);
        fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        Ok(dir)
    }

    /// Registers each tool's account, then issues one untimed certificate per tool.
    fn prepare(&self) -> Result<()> {
        let renewer_base = self.base(Tool::Renewer);
        fs::create_dir_all(&renewer_base)?;
        let config = renewer_base.join("renewer.toml");
        fs::write(
            &config,
            renewer_config(
                &self.ep,
                &renewer_base.join("store").display().to_string(),
                &[("warmup".into(), "warmup.renewer.bench.test".into())],
            ),
        )?;
        let out = bench::measure(renewer_cmd(&self.tools.renewer, &config, &["account"]))?;
        ensure!(out.success, "renewer account failed:\n{}", out.output);

        let certbot_base = self.base(Tool::Certbot);
        let out = bench::measure(certbot_register_cmd(
            &self.tools.certbot,
            &self.ep,
            &certbot_base,
        ))?;
        ensure!(out.success, "certbot register failed:\n{}", out.output);
        // lego has no separate registration: its first `run` registers (into --path).
        for tool in TOOLS {
            self.issue(tool, &self.base(tool), &["warmup".into()], "warmup")?;
        }
        Ok(())
    }

    /// A fresh directory for a case, holding a copy of the tool's account.
    fn fresh_case_dir(&self, tool: Tool, label: &str) -> Result<PathBuf> {
        let dir = self.case_dir(tool, label)?;
        let base = self.base(tool);
        match tool {
            Tool::Renewer => copy_dir(&base.join("store/acme"), &dir.join("store/acme"))?,
            Tool::Lego => copy_dir(&base.join("accounts"), &dir.join("accounts"))?,
            Tool::Certbot => copy_dir(&base.join("config/accounts"), &dir.join("config/accounts"))?,
        }
        Ok(dir)
    }

    fn domain(tool: Tool, label: &str, cert: &str) -> String {
        format!("{label}-{cert}.{}.bench.test", tool.name())
    }

    /// Issues the certificates `names` (their domains derive from `label`) with `tool` into
    /// `dir`, checks they exist, and returns the timed result.
    fn issue(&self, tool: Tool, dir: &Path, names: &[String], label: &str) -> Result<CaseResult> {
        let domains: Vec<String> = names.iter().map(|n| Self::domain(tool, label, n)).collect();
        match tool {
            Tool::Renewer => {
                let config = dir.join("renewer.toml");
                let store = dir.join("store");
                let certs: Vec<(String, String)> =
                    names.iter().cloned().zip(domains.iter().cloned()).collect();
                fs::write(
                    &config,
                    renewer_config(&self.ep, &store.display().to_string(), &certs),
                )?;
                let port: u16 = self.ep.http_port.parse()?;
                let mut responder = Serve::start(&self.tools.renewer, &config, port, dir)?;
                let run = bench::measure(renewer_cmd(&self.tools.renewer, &config, &["run"]));
                let responder_rss = responder.stop();
                let run = run?;
                ensure!(
                    run.success,
                    "renewer run ({} certificates) failed:\n{}\n--- renewer serve (responder)\n{}",
                    names.len(),
                    run.output,
                    responder.log()
                );
                for name in names {
                    let current = store.join(format!("certs/{name}/current.json"));
                    ensure!(
                        current.is_file(),
                        "renewer run succeeded but {} is missing:\n{}",
                        current.display(),
                        run.output
                    );
                }
                let mut result = CaseResult::from_runs(&[run]);
                result.responder_rss_kib = responder_rss;
                Ok(result)
            }
            Tool::Lego | Tool::Certbot => {
                let mut runs = Vec::with_capacity(domains.len());
                for domain in &domains {
                    let (cmd, cert) = if tool == Tool::Lego {
                        (
                            lego_cmd(&self.tools.lego, &self.ep, dir, domain),
                            dir.join(format!("certificates/{domain}.crt")),
                        )
                    } else {
                        (
                            certbot_cmd(&self.tools.certbot, &self.ep, dir, domain),
                            dir.join(format!("config/live/{domain}/fullchain.pem")),
                        )
                    };
                    let run = bench::measure(cmd)?;
                    ensure!(
                        run.success,
                        "{} failed for {domain}:\n{}",
                        tool.name(),
                        run.output
                    );
                    ensure!(
                        cert.is_file(),
                        "{} succeeded but {} is missing:\n{}",
                        tool.name(),
                        cert.display(),
                        run.output
                    );
                    runs.push(run);
                }
                Ok(CaseResult::from_runs(&runs))
            }
        }
    }
}

/// Setup facts for the report.
pub struct AcmeSetup {
    pub lego_version: String,
    pub certbot_version: String,
    pub pebble_version: String,
    pub commit: String,
    pub loadavg_start: String,
    pub loadavg_end: String,
    pub total: Duration,
}

/// Every repetition of both cases for every tool, and the setup facts for the report.
pub fn measure(opts: &Options, tools: &Tools) -> Result<(AcmeSetup, Vec<ToolRep>)> {
    let started = Instant::now();
    let loadavg_start = bench::loadavg();
    let http_port = free_port();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("build the tokio runtime")?;
    progress("starting Pebble");
    // Pebble needs nothing from this process once started: the runtime only starts it.
    let pebble = runtime.block_on(
        Pebble::builder()
            .http_port(http_port)
            .authz_reuse(0)
            .start(),
    )?;
    let work = tempfile::Builder::new()
        .prefix("acme-edge-acme-bench-")
        .tempdir()
        .context("create the work directory")?;
    let acme = AcmeRun {
        tools,
        ep: Endpoints {
            directory: pebble.directory_url(),
            api_cert: pebble.api_cert_path().display().to_string(),
            http_port: http_port.to_string(),
        },
        work: work.path().to_path_buf(),
    };
    progress("registering accounts and issuing one untimed certificate per tool");
    acme.prepare().with_context(|| {
        format!(
            "preparing the accounts\n--- pebble log\n{}",
            tail(&pebble.log(), 40)
        )
    })?;

    let many_names: Vec<String> = (1..=opts.certs).map(|i| format!("c{i:03}")).collect();
    let one_name = vec!["c001".to_string()];
    let mut results = Vec::new();
    for rep in 0..opts.reps {
        for (position, tool) in rotation(rep).into_iter().enumerate() {
            let label = format!("r{}", rep + 1);
            let one_label = format!("{label}-one");
            let many_label = format!("{label}-n{}", opts.certs);
            let dir = acme.fresh_case_dir(tool, &one_label)?;
            let one = acme
                .issue(tool, &dir, &one_name, &one_label)
                .with_context(|| format!("{} rep {} (1 certificate)", tool.name(), rep + 1))?;
            progress(format!(
                "rep {}/{}: {:<8} 1 certificate:  {:>7.2} s, peak RSS {:.1} MiB",
                rep + 1,
                opts.reps,
                tool.name(),
                one.wall.as_secs_f64(),
                mib(one.peak_rss_kib)
            ));
            let dir = acme.fresh_case_dir(tool, &many_label)?;
            let many = acme
                .issue(tool, &dir, &many_names, &many_label)
                .with_context(|| {
                    format!(
                        "{} rep {} ({} certificates)",
                        tool.name(),
                        rep + 1,
                        opts.certs
                    )
                })?;
            progress(format!(
                "rep {}/{}: {:<8} {} certificates: {:>7.2} s, peak RSS {:.1} MiB",
                rep + 1,
                opts.reps,
                tool.name(),
                opts.certs,
                many.wall.as_secs_f64(),
                mib(many.peak_rss_kib)
            ));
            results.push(ToolRep {
                rep: rep + 1,
                position: position + 1,
                tool,
                one,
                many,
            });
        }
    }
    drop(pebble);
    let lego_out = bench::command_output(&tools.lego.to_string_lossy(), &["--version"], "unknown");
    let setup = AcmeSetup {
        lego_version: lego_version(&lego_out, &deb_version("lego")),
        certbot_version: bench::command_output(
            &tools.certbot.to_string_lossy(),
            &["--version"],
            "unknown",
        ),
        pebble_version: match deb_version("pebble") {
            v if v.is_empty() => "unknown".into(),
            v => format!("{v} (Debian package)"),
        },
        commit: bench::command_output("git", &["describe", "--always", "--dirty"], "unknown"),
        loadavg_start,
        loadavg_end: bench::loadavg(),
        total: started.elapsed(),
    };
    Ok((setup, results))
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
