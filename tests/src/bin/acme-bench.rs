//! `acme-bench`: the renewer against peer ACME clients (lego, certbot) on the same Pebble, and
//! the cold start and size of what Cloud Run runs.
//!
//! Run by `make bench`; `acme-bench --help` lists the options. This is a measurement, not a
//! test: it prints numbers and PASS/MISS against the targets and exits 0 either way. It fails
//! (non-zero) only if something could not run: a tool is missing, an issuance failed (its
//! output is printed), `renewer serve` did not come up.
//!
//! Why it is built the way it is:
//!
//! * One Pebble (the harness's: `PEBBLE_VA_NOSLEEP=1`, no nonce rejection) serves all three
//!   tools, with `PEBBLE_AUTHZREUSE=0`, and every issuance uses names never used before
//!   (`r<rep>-c<i>.n<count>.<tool>.bench.test`): no client gets an authorization it did not
//!   validate. Pebble's HTTP-01 port is one port on 127.0.0.1, taken in turn by each tool's
//!   responder.
//! * Each tool answers HTTP-01 the way it ships: lego and certbot with their standalone
//!   servers (inside the process being timed), the renewer with `renewer serve`'s challenge
//!   route reading the store (started before the timed run, stopped after; its memory is
//!   reported apart). A standalone responder holds the port for its whole invocation, so a
//!   lego or certbot user issues N certificates as N invocations in a row: that is how they
//!   are run, and their time is the sum. The renewer issues N certificates in one `renewer
//!   run` with N `[[certificates]]`, `renewal.concurrency` at a time (its default).
//! * Accounts are registered before anything is timed (a user registers once), and every
//!   tool issues one untimed certificate first (page cache, Python imports). Each case then
//!   starts from a fresh directory holding only a copy of the account.
//! * Tools take turns in every repetition, and the order rotates between repetitions
//!   (renewer, lego, certbot; then lego, certbot, renewer; …) so drift of a shared machine
//!   does not always favour the same one. Times are medians over repetitions.
//! * Peak RSS comes from GNU time (`wait4`'s `ru_maxrss`) via `harness::bench::measure`.
//! * The renewer is the release build (`target/release/renewer`), which is what the image
//!   ships; the benchmark does not build it (`make bench` does, first).

use std::fmt::Write as _;
use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, ensure, Context, Result};
use harness::bench::{self, Measured};
use harness::{free_port, repo_root, wasm_path, Pebble};

/// Targets from the issue.
const TARGET_MANY_SPEEDUP: f64 = 3.0;
const TARGET_COLD_START_MS: f64 = 50.0;

/// Polling interval of the cold-start probe, and how long one probe may take.
const PROBE_INTERVAL: Duration = Duration::from_micros(200);
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);
/// Longest `renewer serve` may take to answer `/healthz` before the benchmark gives up.
const SERVE_READY_TIMEOUT: Duration = Duration::from_secs(10);

const USAGE: &str = "\
acme-bench: the renewer vs lego and certbot on one Pebble; renewer serve's cold start and sizes

Usage: acme-bench [options]   (normally via: make bench)

Options:
  --reps N          repetitions of every ACME case; times are medians (use at least 5) [5]
  --certs N         certificates in the \"many\" case                                   [50]
  --cold-starts N   renewer serve starts measured                                     [20]
  --only WHAT       only `acme` (the clients) or `cold-start` (cold start and sizes)
  --out PATH        also write the Markdown report here
  -h, --help        this text

Needs target/release/renewer (cargo build --release --locked -p renewer), Pebble (Debian
`pebble`), GNU time (Debian `time`), lego ($LEGO, default /usr/bin/lego; Debian `lego`) and
certbot ($CERTBOT, default .venv/bin/certbot; PyPI `certbot`). Progress goes to stderr, the
report to stdout.";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Only {
    All,
    Acme,
    ColdStart,
}

#[derive(Debug, Clone)]
struct Options {
    reps: usize,
    certs: usize,
    cold_starts: usize,
    only: Only,
    out: Option<PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            reps: 5,
            certs: 50,
            cold_starts: 20,
            only: Only::All,
            out: None,
        }
    }
}

/// `Ok(None)` means `--help` was asked for.
fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Option<Options>> {
    let mut opts = Options::default();
    let go = bench::parse_flags(args, |flag, value| {
        match flag {
            "--reps" => opts.reps = bench::number(flag, &value()?)?,
            "--certs" => opts.certs = bench::number(flag, &value()?)?,
            "--cold-starts" => opts.cold_starts = bench::number(flag, &value()?)?,
            "--only" => {
                opts.only = match value()?.as_str() {
                    "acme" => Only::Acme,
                    "cold-start" => Only::ColdStart,
                    other => bail!("--only wants acme or cold-start, got {other:?}"),
                }
            }
            "--out" => opts.out = Some(PathBuf::from(value()?)),
            _ => bail!("unknown argument {flag:?} (see --help)"),
        }
        Ok(())
    })?;
    if !go {
        return Ok(None);
    }
    ensure!(opts.reps >= 1, "--reps must be at least 1");
    ensure!((2..=999).contains(&opts.certs), "--certs must be 2 to 999");
    ensure!(opts.cold_starts >= 1, "--cold-starts must be at least 1");
    Ok(Some(opts))
}

fn main() {
    let opts = match parse_args(std::env::args().skip(1)) {
        Ok(Some(opts)) => opts,
        Ok(None) => {
            println!("{USAGE}");
            return;
        }
        Err(e) => {
            eprintln!("acme-bench: {e:#}\n\n{USAGE}");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(&opts) {
        eprintln!("acme-bench: {e:#}");
        std::process::exit(1);
    }
}

fn run(opts: &Options) -> Result<()> {
    let renewer = renewer_release_bin()?;
    let stale = stale_note(&renewer);
    if let Some(note) = &stale {
        eprintln!("acme-bench: warning: {note}");
    }
    let mut report = String::new();
    if opts.only != Only::ColdStart {
        let tools = Tools::find(renewer.clone())?;
        let section = acme_section(opts, &tools, stale.as_deref())?;
        report.push_str(&section);
    }
    if opts.only != Only::Acme {
        report.push_str(&cold_start_section(opts, &renewer, stale.as_deref())?);
    }
    bench::emit_report(&report, opts.out.as_deref())
}

fn progress(message: impl AsRef<str>) {
    eprintln!("acme-bench: {}", message.as_ref());
}

// ---------------------------------------------------------------------------------------------
// The binaries

/// `target/release/renewer` (honouring `$CARGO_TARGET_DIR`): the build the image ships.
fn renewer_release_bin() -> Result<PathBuf> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"));
    let bin = target.join("release/renewer");
    ensure!(
        bin.is_file(),
        "{} is missing: build it first with `cargo build --release --locked -p renewer` \
         (make bench does)",
        bin.display()
    );
    Ok(bin)
}

/// A warning when a renewer source file is newer than the binary (a forgotten rebuild).
fn stale_note(bin: &Path) -> Option<String> {
    let built = fs::metadata(bin).and_then(|m| m.modified()).ok()?;
    let newest = newest_mtime(&repo_root().join("renewer"))?;
    (newest > built).then(|| {
        format!(
            "{} is older than the renewer's sources: rebuild it (cargo build --release --locked -p renewer)",
            bin.display()
        )
    })
}

fn newest_mtime(dir: &Path) -> Option<SystemTime> {
    let mut newest = None;
    for entry in fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let t = if path.is_dir() {
            newest_mtime(&path)
        } else {
            entry.metadata().and_then(|m| m.modified()).ok()
        };
        newest = newest.max(t);
    }
    newest
}

fn bin_from_env(var: &str, default: PathBuf) -> PathBuf {
    match std::env::var_os(var) {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => default,
    }
}

struct Tools {
    renewer: PathBuf,
    lego: PathBuf,
    certbot: PathBuf,
}

impl Tools {
    fn find(renewer: PathBuf) -> Result<Tools> {
        let lego = bin_from_env("LEGO", PathBuf::from("/usr/bin/lego"));
        let certbot = bin_from_env("CERTBOT", repo_root().join(".venv/bin/certbot"));
        ensure!(
            lego.is_file(),
            "{} not found: install the Debian package lego (scripts/bootstrap.sh --bench) or set $LEGO",
            lego.display()
        );
        ensure!(
            certbot.is_file(),
            "{} not found: install certbot into the venv (scripts/bootstrap.sh --bench) or set $CERTBOT",
            certbot.display()
        );
        Ok(Tools {
            renewer,
            lego,
            certbot,
        })
    }
}

/// `lego --version` of Debian's build says `lego version dev linux/amd64`; the package version
/// is then the useful one.
fn lego_version(version_output: &str, package_version: &str) -> String {
    let v = version_output
        .strip_prefix("lego version ")
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or("unknown");
    match (v, package_version) {
        ("dev", "") | ("unknown", "") => format!("`{}`", version_output.trim()),
        ("dev", pkg) | ("unknown", pkg) => format!("{pkg} (Debian package; the binary says `{v}`)"),
        (v, _) => v.to_string(),
    }
}

fn deb_version(package: &str) -> String {
    bench::command_output("dpkg-query", &["-W", "-f=${Version}", package], "")
}

// ---------------------------------------------------------------------------------------------
// ACME clients

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tool {
    Renewer,
    Lego,
    Certbot,
}

const TOOLS: [Tool; 3] = [Tool::Renewer, Tool::Lego, Tool::Certbot];
const PEERS: [Tool; 2] = [Tool::Lego, Tool::Certbot];

impl Tool {
    fn name(self) -> &'static str {
        match self {
            Tool::Renewer => "renewer",
            Tool::Lego => "lego",
            Tool::Certbot => "certbot",
        }
    }
}

/// The order of the tools in repetition `rep` (0-based): rotated by one each time.
fn rotation(rep: usize) -> [Tool; 3] {
    let mut order = TOOLS;
    order.rotate_left(rep % TOOLS.len());
    order
}

/// Where the CA is, as the command lines need it (real values, or placeholders for the report).
#[derive(Debug, Clone)]
struct Endpoints {
    directory: String,
    api_cert: String,
    http_port: String,
}

impl Endpoints {
    fn placeholders() -> Endpoints {
        Endpoints {
            directory: "https://127.0.0.1:<api-port>/dir".into(),
            api_cert: "<pebble-api-cert.pem>".into(),
            http_port: "<http-port>".into(),
        }
    }
}

const LEGO_EMAIL: &str = "bench@example.com";

fn lego_cmd(bin: &Path, ep: &Endpoints, dir: &Path, domain: &str) -> Command {
    let mut cmd = Command::new(bin);
    cmd.env("LEGO_CA_CERTIFICATES", &ep.api_cert)
        .arg("--server")
        .arg(&ep.directory)
        .arg("--path")
        .arg(dir)
        .args(["--email", LEGO_EMAIL, "--accept-tos", "--key-type", "ec256"])
        .args(["--domains", domain])
        .args(["--http", "--http.port"])
        .arg(format!("127.0.0.1:{}", ep.http_port))
        .arg("run");
    cmd
}

/// certbot's three directories live under `dir` (`config/`, `work/`, `logs/`).
fn certbot_args(ep: &Endpoints, dir: &Path) -> Vec<String> {
    let d = |sub: &str| dir.join(sub).display().to_string();
    vec![
        "--server".into(),
        ep.directory.clone(),
        "--config-dir".into(),
        d("config"),
        "--work-dir".into(),
        d("work"),
        "--logs-dir".into(),
        d("logs"),
        "--non-interactive".into(),
        "--agree-tos".into(),
        "--register-unsafely-without-email".into(),
    ]
}

fn certbot_cmd(bin: &Path, ep: &Endpoints, dir: &Path, domain: &str) -> Command {
    let mut cmd = Command::new(bin);
    cmd.env("REQUESTS_CA_BUNDLE", &ep.api_cert)
        .args(["certonly", "--standalone", "--http-01-address", "127.0.0.1"])
        .arg("--http-01-port")
        .arg(&ep.http_port)
        .args(certbot_args(ep, dir))
        .args(["--key-type", "ecdsa", "--elliptic-curve", "secp256r1"])
        .args(["-d", domain]);
    cmd
}

fn certbot_register_cmd(bin: &Path, ep: &Endpoints, dir: &Path) -> Command {
    let mut cmd = Command::new(bin);
    cmd.env("REQUESTS_CA_BUNDLE", &ep.api_cert)
        .arg("register")
        .args(certbot_args(ep, dir));
    cmd
}

fn renewer_cmd(bin: &Path, config: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(bin);
    cmd.arg("--config")
        .arg(config)
        .args(args)
        .env("RENEWER_LOG_FORMAT", "json")
        .env_remove("RENEWER_CONFIG")
        .env_remove("PORT");
    // A developer's RENEWER__* overrides must not change what is measured.
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("RENEWER__") {
            cmd.env_remove(key);
        }
    }
    cmd
}

/// The renewer's config: Pebble, a file store, and one `[[certificates]]` per (name, domain).
/// Everything else is the default (`renewal.concurrency` included).
fn renewer_config(ep: &Endpoints, store: &str, certs: &[(String, String)]) -> String {
    let mut text = format!(
        "[acme]\n\
         directory = \"{}\"\n\
         contact = [\"ops@example.com\"]\n\
         extra_root_ca = \"{}\"\n\n\
         [store]\n\
         url = \"file://{store}\"\n",
        ep.directory, ep.api_cert
    );
    for (name, domain) in certs {
        let _ = write!(
            text,
            "\n[[certificates]]\nname = \"{name}\"\ndomains = [\"{domain}\"]\nkey_type = \"ecdsa-p256\"\n"
        );
    }
    text
}

/// A command as a shell line, environment first: for the report.
fn show(cmd: &Command) -> String {
    let quote = |s: &str| {
        if !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_./:=<>@,".contains(&b))
        {
            s.to_string()
        } else {
            format!("'{}'", s.replace('\'', r"'\''"))
        }
    };
    let mut parts: Vec<String> = cmd
        .get_envs()
        .filter_map(|(k, v)| {
            Some(format!(
                "{}={}",
                k.to_string_lossy(),
                quote(&v?.to_string_lossy())
            ))
        })
        .collect();
    let program = Path::new(cmd.get_program())
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    parts.push(program);
    parts.extend(cmd.get_args().map(|a| quote(&a.to_string_lossy())));
    parts.join(" ")
}

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
struct CaseResult {
    wall: Duration,
    /// The largest peak RSS of the tool's invocations.
    peak_rss_kib: u64,
    /// Wall time of each process (one for the renewer).
    invocations: Vec<Duration>,
    /// The renewer only: `renewer serve`'s peak RSS (VmHWM) as the HTTP-01 responder.
    responder_rss_kib: Option<u64>,
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
struct ToolRep {
    rep: usize,
    position: usize,
    tool: Tool,
    one: CaseResult,
    many: CaseResult,
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

/// `renewer serve` as a child process: the renewer's HTTP-01 responder, and what the
/// cold-start measurement starts.
struct Serve {
    child: Option<Child>,
    log: PathBuf,
}

impl Serve {
    fn spawn(bin: &Path, config: &Path, port: u16, log: PathBuf) -> Result<Serve> {
        let stderr = fs::File::create(&log).with_context(|| format!("create {}", log.display()))?;
        let port_s = port.to_string();
        let child = renewer_cmd(
            bin,
            config,
            &["serve", "--address", "127.0.0.1", "--port", &port_s],
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .with_context(|| format!("spawn {}", bin.display()))?;
        Ok(Serve {
            child: Some(child),
            log,
        })
    }

    /// Spawned and answering `/healthz`.
    fn start(bin: &Path, config: &Path, port: u16, dir: &Path) -> Result<Serve> {
        let mut serve = Serve::spawn(bin, config, port, dir.join("serve.log"))?;
        serve.wait_healthy(port)?;
        Ok(serve)
    }

    /// Polls `GET /healthz` every [`PROBE_INTERVAL`] until it answers 200; returns when.
    fn wait_healthy(&mut self, port: u16) -> Result<Instant> {
        let deadline = Instant::now() + SERVE_READY_TIMEOUT;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        loop {
            if let Some(200) = healthz_status(addr) {
                return Ok(Instant::now());
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                bail!("renewer serve exited ({status}):\n{}", self.log());
            }
            if Instant::now() >= deadline {
                bail!(
                    "renewer serve did not answer /healthz within {SERVE_READY_TIMEOUT:?}:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(PROBE_INTERVAL);
        }
    }

    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Peak resident set so far (`VmHWM`), KiB.
    fn peak_rss_kib(&self) -> Option<u64> {
        let status = fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        vm_hwm_kib(&status)
    }

    /// SIGTERM (as Cloud Run stops it), then reaps it; its peak RSS just before.
    fn stop(&mut self) -> Option<u64> {
        let rss = self.peak_rss_kib();
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(15);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(2));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        rss
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// One `GET /healthz` over a fresh connection; the status code, or `None` when the server is
/// not there (yet) or the answer is not HTTP.
fn healthz_status(addr: SocketAddr) -> Option<u16> {
    let mut stream = TcpStream::connect_timeout(&addr, PROBE_TIMEOUT).ok()?;
    stream.set_read_timeout(Some(PROBE_TIMEOUT)).ok()?;
    stream.set_write_timeout(Some(PROBE_TIMEOUT)).ok()?;
    let _ = stream.set_nodelay(true);
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut head = [0u8; 64];
    let mut n = 0;
    while n < 12 {
        match stream.read(&mut head[n..]) {
            Ok(0) | Err(_) => break,
            Ok(k) => n += k,
        }
    }
    status_code(&head[..n])
}

/// The status code of an HTTP/1.x response's first line.
fn status_code(head: &[u8]) -> Option<u16> {
    let text = std::str::from_utf8(head.get(..12)?).ok()?;
    let rest = text
        .strip_prefix("HTTP/1.1 ")
        .or_else(|| text.strip_prefix("HTTP/1.0 "))?;
    rest.get(..3)?.parse().ok()
}

fn vm_hwm_kib(proc_status: &str) -> Option<u64> {
    proc_status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Setup facts for the report.
struct AcmeSetup {
    lego_version: String,
    certbot_version: String,
    pebble_version: String,
    commit: String,
    loadavg_start: String,
    loadavg_end: String,
    total: Duration,
}

fn acme_section(opts: &Options, tools: &Tools, stale: Option<&str>) -> Result<String> {
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
    Ok(render_acme(opts, tools, &setup, &results, stale))
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Medians and maxima of one tool over the repetitions.
#[derive(Debug, Clone, Copy)]
struct ToolSummary {
    one_s: f64,
    many_s: f64,
    peak_rss_kib: u64,
}

fn summarize(results: &[ToolRep], tool: Tool) -> ToolSummary {
    let of = |f: &dyn Fn(&ToolRep) -> f64| {
        bench::median(results.iter().filter(|r| r.tool == tool).map(f).collect())
    };
    ToolSummary {
        one_s: of(&|r| r.one.wall.as_secs_f64()),
        many_s: of(&|r| r.many.wall.as_secs_f64()),
        peak_rss_kib: results
            .iter()
            .filter(|r| r.tool == tool)
            .map(|r| r.one.peak_rss_kib.max(r.many.peak_rss_kib))
            .max()
            .unwrap_or(0),
    }
}

/// The peer with the smallest value of `key`, and that value.
fn fastest_peer(results: &[ToolRep], key: fn(&ToolSummary) -> f64) -> (Tool, f64) {
    PEERS
        .into_iter()
        .map(|t| (t, key(&summarize(results, t))))
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .unwrap_or((Tool::Certbot, f64::NAN))
}

fn render_acme(
    opts: &Options,
    tools: &Tools,
    setup: &AcmeSetup,
    results: &[ToolRep],
    stale: Option<&str>,
) -> String {
    let n = opts.certs;
    let mut md = String::new();
    let w = &mut md;
    let _ = writeln!(w, "## ACME clients: renewer vs lego vs certbot\n");
    let _ = writeln!(
        w,
        "Wall time to issue 1 certificate and {n} certificates from one Pebble, and peak memory, \
         for the renewer and two widely used ACME clients. Every figure is from this run; times \
         are medians of {} repetition(s).\n",
        opts.reps
    );
    if let Some(note) = stale {
        let _ = writeln!(w, "**Warning:** {note}.\n");
    }

    let _ = writeln!(w, "### Setup\n");
    let _ = writeln!(w, "| | |\n|---|---|");
    let many_key = format!("{n} certificates");
    let rows: Vec<(&str, String)> = vec![
        (
            "renewer",
            format!(
                "commit `{}`, release build (`target/release/renewer`, what the image ships); \
                 `renewal.concurrency` at its default ({})",
                setup.commit,
                default_concurrency()
            ),
        ),
        ("lego", setup.lego_version.clone()),
        (
            "certbot",
            format!("{} (PyPI, project venv)", setup.certbot_version),
        ),
        (
            "CA",
            format!(
                "Pebble {} on 127.0.0.1 with pebble-challtestsrv as its DNS (every name → \
                 127.0.0.1); `PEBBLE_VA_NOSLEEP=1` (no random 0–5 s wait before validating), \
                 `PEBBLE_WFE_NONCEREJECT=0`, `PEBBLE_AUTHZREUSE=0`; Pebble 2.4 sends no \
                 `Retry-After`",
                setup.pebble_version
            ),
        ),
        (
            "fresh authorizations",
            "every issuance is for names never ordered before \
             (`r<rep>-<one|n{n}>-c<i>.<tool>.bench.test`), so no authorization is reused \
             whatever Pebble's reuse setting"
                .replace("{n}", &n.to_string()),
        ),
        (
            "key type",
            "ECDSA P-256 for every certificate (lego `--key-type ec256`, certbot `--key-type \
             ecdsa --elliptic-curve secp256r1`, renewer `key_type = \"ecdsa-p256\"`)"
                .into(),
        ),
        (
            "HTTP-01 responders",
            "as each tool ships: lego's and certbot's standalone servers, inside the timed \
             process; the renewer's `renewer serve` (`GET /.well-known/acme-challenge/{token}` \
             from the store), started before and stopped after each timed run, its memory \
             reported apart"
                .into(),
        ),
        (
            "accounts",
            "registered once per tool before anything is timed (`renewer account`, `certbot \
             register`, lego's first `run`), then one untimed warm-up issuance per tool; each \
             case starts in a fresh directory holding a copy of the account"
                .into(),
        ),
        (
            &many_key,
            format!(
                "renewer: one `renewer run` with {n} `[[certificates]]` (c001…c{n:03}); lego and \
                 certbot: {n} invocations in a row, one certificate each (a standalone \
                 responder holds the HTTP-01 port for its whole invocation, so that is how \
                 their users issue several certificates); time = sum of the invocations"
            ),
        ),
        (
            "repetitions",
            format!(
                "{}; the tools take turns and the order rotates each repetition (renewer, lego, \
                 certbot; lego, certbot, renewer; …)",
                opts.reps
            ),
        ),
        (
            "timing",
            "wall time from spawn to exit of each process, measured by the benchmark; peak RSS \
             from GNU time (`%M`, `wait4`'s `ru_maxrss`), which wraps every timed process"
                .into(),
        ),
        (
            "load average (start → end)",
            format!("{} → {}", setup.loadavg_start, setup.loadavg_end),
        ),
        ("total time", format!("{:.0} s", setup.total.as_secs_f64())),
    ];
    for (k, v) in rows {
        let _ = writeln!(w, "| {k} | {v} |");
    }

    let _ = writeln!(w, "\n### Commands\n");
    let ep = Endpoints::placeholders();
    let dir = Path::new("<case-dir>");
    let _ = writeln!(w, "```sh");
    let _ = writeln!(
        w,
        "# renewer: responder, then the timed run (<case-dir>/renewer.toml below)"
    );
    let _ = writeln!(
        w,
        "{} &",
        show(&renewer_cmd(
            Path::new("target/release/renewer"),
            Path::new("<case-dir>/renewer.toml"),
            &["serve", "--address", "127.0.0.1", "--port", "<http-port>"],
        ))
    );
    let _ = writeln!(
        w,
        "{}",
        show(&renewer_cmd(
            Path::new("target/release/renewer"),
            Path::new("<case-dir>/renewer.toml"),
            &["run"],
        ))
    );
    let _ = writeln!(w, "# lego, once per certificate");
    let _ = writeln!(w, "{}", show(&lego_cmd(&tools.lego, &ep, dir, "<domain>")));
    let _ = writeln!(w, "# certbot, once per certificate");
    let _ = writeln!(
        w,
        "{}",
        show(&certbot_cmd(&tools.certbot, &ep, dir, "<domain>"))
    );
    let _ = writeln!(
        w,
        "# each timed process runs as: /usr/bin/time --format=%M --output <file> <command>"
    );
    let _ = writeln!(w, "```\n");
    let sample = renewer_config(
        &ep,
        "<case-dir>/store",
        &[
            (
                "c001".into(),
                format!("r<rep>-n{n}-c001.renewer.bench.test"),
            ),
            (
                "c002".into(),
                format!("r<rep>-n{n}-c002.renewer.bench.test"),
            ),
        ],
    );
    let _ = writeln!(
        w,
        "`<case-dir>/renewer.toml` ({n} certificates: c001 … c{n:03}):\n"
    );
    let _ = writeln!(w, "```toml\n{}# … up to c{n:03}\n```\n", sample);

    let _ = writeln!(w, "### Raw numbers\n");
    let _ = writeln!(
        w,
        "| rep | turn | tool | 1 cert (s) | {n} certs (s) | peak RSS 1 cert (MiB) | peak RSS {n} certs (MiB) | processes for {n} |"
    );
    let _ = writeln!(w, "|---:|---:|---|---:|---:|---:|---:|---:|");
    for r in results {
        let responder = |c: &CaseResult| match c.responder_rss_kib {
            Some(k) => format!(" (+ serve {:.1})", mib(k)),
            None => String::new(),
        };
        let _ = writeln!(
            w,
            "| {} | {} | {} | {:.3} | {:.3} | {:.1}{} | {:.1}{} | {} |",
            r.rep,
            r.position,
            r.tool.name(),
            r.one.wall.as_secs_f64(),
            r.many.wall.as_secs_f64(),
            mib(r.one.peak_rss_kib),
            responder(&r.one),
            mib(r.many.peak_rss_kib),
            responder(&r.many),
            r.many.invocations.len()
        );
    }
    let _ = writeln!(
        w,
        "\n\"+ serve\" is the peak RSS of `renewer serve` answering the challenges during that \
         run (the peers' responders are inside their own process, hence in their figure).\n"
    );

    let _ = writeln!(w, "### Single invocations of the peers\n");
    let _ = writeln!(
        w,
        "Every lego and certbot process of every repetition (1 and {n} certificates), one \
         certificate each:\n"
    );
    let _ = writeln!(
        w,
        "| tool | processes | median (s) | min (s) | max (s) | under 1 s |"
    );
    let _ = writeln!(w, "|---|---:|---:|---:|---:|---:|");
    for peer in PEERS {
        let walls: Vec<f64> = results
            .iter()
            .filter(|r| r.tool == peer)
            .flat_map(|r| r.one.invocations.iter().chain(&r.many.invocations))
            .map(Duration::as_secs_f64)
            .collect();
        let (min, max) = bench::range(&walls);
        let fast = walls.iter().filter(|&&s| s < 1.0).count();
        let _ = writeln!(
            w,
            "| {} | {} | {:.3} | {min:.3} | {max:.3} | {fast} |",
            peer.name(),
            walls.len(),
            bench::median(walls.clone()),
        );
    }
    let _ = writeln!(
        w,
        "\nlego checks the authorization once right after accepting the challenge, and only \
         if it is not valid yet waits 5 s (its default when the CA sends no `Retry-After`, \
         which Pebble 2.4 never does) before checking again. Pebble validates in the \
         background, without delay here, so now and then it has finished by lego's first \
         check, and lego is done in well under a second (the last column). The renewer always waits 250 ms before \
         its first check.\n"
    );

    let _ = writeln!(w, "### Medians over {} repetition(s)\n", opts.reps);
    let _ = writeln!(
        w,
        "| tool | 1 cert (s) | {n} certs (s) | per certificate in the {n} case (s) | peak RSS, max (MiB) |"
    );
    let _ = writeln!(w, "|---|---:|---:|---:|---:|");
    for tool in TOOLS {
        let s = summarize(results, tool);
        let _ = writeln!(
            w,
            "| {} | {:.3} | {:.2} | {:.3} | {:.1} |",
            tool.name(),
            s.one_s,
            s.many_s,
            s.many_s / n as f64,
            mib(s.peak_rss_kib)
        );
    }
    let serve_rss = results
        .iter()
        .filter_map(|r| r.one.responder_rss_kib.max(r.many.responder_rss_kib))
        .max();
    if let Some(k) = serve_rss {
        let _ = writeln!(
            w,
            "\n`renewer serve` as the responder peaked at {:.1} MiB (max over all runs).",
            mib(k)
        );
    }

    let renewer = summarize(results, Tool::Renewer);
    let certbot = summarize(results, Tool::Certbot);
    let (peer_one, peer_one_s) = fastest_peer(results, |s| s.one_s);
    let (peer_many, peer_many_s) = fastest_peer(results, |s| s.many_s);
    let _ = writeln!(w, "\n### Ratios (fastest peer / renewer)\n");
    let _ = writeln!(
        w,
        "| case | fastest peer | its median (s) | renewer (s) | ratio |"
    );
    let _ = writeln!(w, "|---|---|---:|---:|---:|");
    let _ = writeln!(
        w,
        "| 1 certificate | {} | {:.3} | {:.3} | {:.2}× |",
        peer_one.name(),
        peer_one_s,
        renewer.one_s,
        peer_one_s / renewer.one_s
    );
    let _ = writeln!(
        w,
        "| {n} certificates | {} | {:.2} | {:.2} | {:.1}× |",
        peer_many.name(),
        peer_many_s,
        renewer.many_s,
        peer_many_s / renewer.many_s
    );
    for peer in PEERS {
        let s = summarize(results, peer);
        let _ = writeln!(
            w,
            "| peak RSS: {} / renewer | | {:.1} MiB | {:.1} MiB | {:.1}× |",
            peer.name(),
            mib(s.peak_rss_kib),
            mib(renewer.peak_rss_kib),
            s.peak_rss_kib as f64 / renewer.peak_rss_kib.max(1) as f64
        );
    }

    let _ = writeln!(w, "\n### Targets\n");
    let _ = writeln!(w, "| target | measured | result |");
    let _ = writeln!(w, "|---|---|---|");
    let speedup = peer_many_s / renewer.many_s;
    let _ = writeln!(
        w,
        "| {n} certificates at least {TARGET_MANY_SPEEDUP}× faster than the fastest peer | \
         {} {:.2} s / renewer {:.2} s = {:.1}× | {} |",
        peer_many.name(),
        peer_many_s,
        renewer.many_s,
        speedup,
        bench::verdict(speedup >= TARGET_MANY_SPEEDUP)
    );
    let _ = writeln!(
        w,
        "| 1 certificate no slower than the fastest peer | renewer {:.3} s vs {} {:.3} s | {} |",
        renewer.one_s,
        peer_one.name(),
        peer_one_s,
        bench::verdict(renewer.one_s <= peer_one_s)
    );
    let _ = writeln!(
        w,
        "| renewer peak RSS below certbot's | renewer {:.1} MiB vs certbot {:.1} MiB | {} |",
        mib(renewer.peak_rss_kib),
        mib(certbot.peak_rss_kib),
        bench::verdict(renewer.peak_rss_kib < certbot.peak_rss_kib)
    );
    let _ = writeln!(
        w,
        "\nWhere the time goes: lego's 5 s wait (above; with a CA that sends `Retry-After` it \
         follows that instead). certbot checks the authorization every second and waits 1 s \
         before it first checks the finalized order (the `acme` package's `client.py`), and \
         starts a Python interpreter in every invocation. The renewer checks the order 250 ms \
         after the challenges are accepted, then ×1.5 each time (the same after finalizing), \
         and renews {} certificates at a time.\n",
        default_concurrency()
    );
    md
}

/// `renewal.concurrency`'s default, for the report (the benchmark leaves it unset).
fn default_concurrency() -> usize {
    renewer::config::RenewalConfig::default().concurrency
}

// ---------------------------------------------------------------------------------------------
// Cold start and sizes

/// p-th percentile by nearest rank (p in 0..=100); NaN for no values.
fn percentile(mut xs: Vec<f64>, p: f64) -> f64 {
    if xs.is_empty() {
        return f64::NAN;
    }
    xs.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * xs.len() as f64).ceil().max(1.0) as usize;
    xs[rank.min(xs.len()) - 1]
}

struct ColdStart {
    ms: f64,
    peak_rss_kib: Option<u64>,
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

struct Sizes {
    renewer: u64,
    wasm: Option<u64>,
    /// (tar, tar.gz) of the image's own layer; None without the wasm.
    layer: Option<(u64, u64)>,
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

fn cold_start_section(opts: &Options, renewer: &Path, stale: Option<&str>) -> Result<String> {
    let dir = tempfile::Builder::new()
        .prefix("acme-edge-cold-start-")
        .tempdir()
        .context("create the work directory")?;
    let loadavg = bench::loadavg();
    progress(format!("{} cold starts of renewer serve", opts.cold_starts));
    let starts = cold_starts(opts, renewer, dir.path())?;
    let sizes = sizes(renewer, dir.path())?;
    Ok(render_cold_start(opts, &starts, &sizes, &loadavg, stale))
}

fn render_cold_start(
    opts: &Options,
    starts: &[ColdStart],
    sizes: &Sizes,
    loadavg: &str,
    stale: Option<&str>,
) -> String {
    let mut md = String::new();
    let w = &mut md;
    let ms: Vec<f64> = starts.iter().map(|s| s.ms).collect();
    let med = bench::median(ms.clone());
    let (min, max) = bench::range(&ms);
    let p90 = percentile(ms.clone(), 90.0);
    let _ = writeln!(w, "## Cold start and size\n");
    if let Some(note) = stale {
        let _ = writeln!(w, "**Warning:** {note}.\n");
    }
    let _ = writeln!(
        w,
        "Cloud Run bills an instance from its start, and a request waits for it: the time from \
         `exec` of `renewer serve` to its first `200` on `/healthz`, {} times.\n",
        opts.cold_starts
    );
    let _ = writeln!(w, "### Cold start\n");
    let _ = writeln!(
        w,
        "```sh\n{}\n```\n",
        show(&renewer_cmd(
            Path::new("target/release/renewer"),
            Path::new("<dir>/renewer.toml"),
            &["serve", "--address", "127.0.0.1", "--port", "<free-port>"],
        ))
    );
    let _ = writeln!(
        w,
        "The config is valid, with a file store and one certificate (`letsencrypt-staging`; \
         `serve` does not contact the CA until a pass runs). The clock starts just before \
         `spawn` and stops at the first `HTTP/1.1 200` on `GET /healthz`, probed over a new \
         connection every {} µs (a refused connection costs microseconds on loopback). Each \
         instance is then stopped with SIGTERM and reaped. The binary is in the page cache \
         (warm), as after the first start on a host: the image pull and container creation \
         that Cloud Run adds are not measured. With a `gs://` store the start also builds the \
         Cloud Storage client (not measured here: no credentials, no network). Load average at \
         start: {loadavg}.\n",
        PROBE_INTERVAL.as_micros()
    );
    let _ = writeln!(w, "| runs | median (ms) | p90 (ms) | min (ms) | max (ms) |");
    let _ = writeln!(w, "|---:|---:|---:|---:|---:|");
    let _ = writeln!(
        w,
        "| {} | {med:.2} | {p90:.2} | {min:.2} | {max:.2} |\n",
        starts.len()
    );
    let raw: Vec<String> = ms.iter().map(|m| format!("{m:.2}")).collect();
    let _ = writeln!(w, "Every run, in order (ms): {}.\n", raw.join(", "));
    let rss: Vec<f64> = starts
        .iter()
        .filter_map(|s| s.peak_rss_kib.map(mib))
        .collect();
    if !rss.is_empty() {
        let _ = writeln!(
            w,
            "Peak RSS of `renewer serve` once ready (VmHWM): median {:.1} MiB.\n",
            bench::median(rss)
        );
    }

    let _ = writeln!(w, "### Sizes\n");
    let _ = writeln!(w, "| artefact | bytes | MiB |");
    let _ = writeln!(w, "|---|---:|---:|");
    let row = |w: &mut String, name: &str, bytes: u64| {
        let _ = writeln!(w, "| {name} | {bytes} | {:.2} |", bytes as f64 / 1048576.0);
    };
    row(
        w,
        "`target/release/renewer` (release profile: LTO, stripped)",
        sizes.renewer,
    );
    match sizes.wasm {
        Some(b) => row(w, "`target/wasm/edge_filter.wasm` (`make wasm`)", b),
        None => {
            let _ = writeln!(
                w,
                "| `target/wasm/edge_filter.wasm` | not built (`make wasm`) | |"
            );
        }
    }
    if let Some((tar, gz)) = sizes.layer {
        row(w, "image: the renewer's own layer, tar", tar);
        row(
            w,
            "image: the renewer's own layer, tar.gz (gzip -6, as pushed)",
            gz,
        );
    }
    let _ = writeln!(
        w,
        "\nThe image's own layer is what the Dockerfile's runtime stage copies \
         (`COPY --from=build /out/ /`): `/usr/local/bin/renewer`, \
         `/opt/acme-edge/edge_filter.wasm` and the one-line `/etc/acme-edge/renewer.toml`, \
         packed here with `tar` and `gzip -6` from the local builds (the image builds the same \
         sources in `rust:1.95-bookworm`, and its wasm with rustup's wasm32 target, so its \
         sizes may differ slightly). It does not \
         include the base image, `gcr.io/distroless/cc-debian12:nonroot`: there is no Docker \
         engine and no network to the registry on this machine, so its layers were not \
         measured and no figure is given for them.\n"
    );

    let _ = writeln!(w, "### Targets\n");
    let _ = writeln!(w, "| target | measured | result |");
    let _ = writeln!(w, "|---|---|---|");
    let _ = writeln!(
        w,
        "| cold start under {TARGET_COLD_START_MS} ms (`exec` → 200 on `/healthz`) | median \
         {med:.2} ms (p90 {p90:.2}, max {max:.2}) over {} runs | {} |\n",
        starts.len(),
        bench::verdict(med < TARGET_COLD_START_MS)
    );
    md
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn options() {
        let args = |s: &str| s.split_whitespace().map(String::from).collect::<Vec<_>>();
        let o = parse_args(args("")).unwrap().unwrap();
        assert_eq!((o.reps, o.certs, o.cold_starts), (5, 50, 20));
        assert_eq!(o.only, Only::All);
        let o = parse_args(args(
            "--reps 1 --certs=5 --cold-starts 3 --only cold-start --out x.md",
        ))
        .unwrap()
        .unwrap();
        assert_eq!((o.reps, o.certs, o.cold_starts), (1, 5, 3));
        assert_eq!(o.only, Only::ColdStart);
        assert_eq!(o.out, Some(PathBuf::from("x.md")));
        assert!(parse_args(args("--help")).unwrap().is_none());
        for bad in [
            "--reps 0",
            "--certs 1",
            "--only lego",
            "--reps",
            "--what 1",
            "--reps x",
        ] {
            assert!(parse_args(args(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn tools_rotate_every_repetition() {
        use Tool::*;
        assert_eq!(rotation(0), [Renewer, Lego, Certbot]);
        assert_eq!(rotation(1), [Lego, Certbot, Renewer]);
        assert_eq!(rotation(2), [Certbot, Renewer, Lego]);
        assert_eq!(rotation(3), rotation(0));
    }

    #[test]
    fn lego_versions() {
        assert_eq!(
            lego_version("lego version dev linux/amd64", "4.9.1-1"),
            "4.9.1-1 (Debian package; the binary says `dev`)"
        );
        assert_eq!(
            lego_version("lego version 4.14.2 linux/amd64", "4.9.1-1"),
            "4.14.2"
        );
        assert_eq!(
            lego_version("lego version dev linux/amd64", ""),
            "`lego version dev linux/amd64`"
        );
    }

    #[test]
    fn status_lines_and_proc_status() {
        assert_eq!(status_code(b"HTTP/1.1 200 OK\r\n"), Some(200));
        assert_eq!(status_code(b"HTTP/1.0 503 Service"), Some(503));
        assert_eq!(status_code(b"HTTP/1.1 2"), None);
        assert_eq!(status_code(b"SSH-2.0-OpenSSH"), None);
        let status = "Name:\trenewer\nVmPeak:\t  20000 kB\nVmHWM:\t    9876 kB\nVmRSS:\t 9000 kB\n";
        assert_eq!(vm_hwm_kib(status), Some(9876));
        assert_eq!(vm_hwm_kib("Name: x\n"), None);
    }

    #[test]
    fn percentiles_by_nearest_rank() {
        let xs: Vec<f64> = (1..=20).map(f64::from).collect();
        assert_eq!(percentile(xs.clone(), 90.0), 18.0);
        assert_eq!(percentile(xs.clone(), 100.0), 20.0);
        assert_eq!(percentile(xs, 0.0), 1.0);
        assert_eq!(percentile(vec![5.0], 90.0), 5.0);
        assert!(percentile(vec![], 50.0).is_nan());
    }

    #[test]
    fn commands_show_as_shell_lines() {
        let ep = Endpoints::placeholders();
        let line = show(&lego_cmd(
            Path::new("/usr/bin/lego"),
            &ep,
            Path::new("<case-dir>"),
            "<domain>",
        ));
        assert!(
            line.starts_with("LEGO_CA_CERTIFICATES=<pebble-api-cert.pem> lego --server"),
            "{line}"
        );
        assert!(
            line.contains("--http.port 127.0.0.1:<http-port> run"),
            "{line}"
        );
        let mut cmd = Command::new("x");
        cmd.arg("a b").arg("it's");
        assert_eq!(show(&cmd), r"x 'a b' 'it'\''s'");
    }

    #[test]
    fn renewer_configs_parse() {
        let ep = Endpoints {
            directory: "https://127.0.0.1:14000/dir".into(),
            api_cert: "/tmp/api.pem".into(),
            http_port: "5002".into(),
        };
        let certs: Vec<(String, String)> = (1..=3)
            .map(|i| (format!("c{i:03}"), format!("r1-c{i:03}.renewer.bench.test")))
            .collect();
        let text = renewer_config(&ep, "/tmp/store", &certs);
        let config = renewer::config::Config::parse(&text, "bench", &[]).expect("valid config");
        assert_eq!(config.certificates.len(), 3);
        assert_eq!(config.renewal.concurrency, default_concurrency());
        let text = cold_start_config(Path::new("/tmp/store"));
        renewer::config::Config::parse(&text, "cold start", &[]).expect("valid config");
    }
}
