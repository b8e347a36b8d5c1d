//! What the benchmark binaries (`tests/src/bin/*-bench.rs`, run by `make bench`) share:
//! statistics, the machine description, timing a command with its peak memory, and writing
//! a report section.
//!
//! Every benchmark writes one Markdown section (it starts with a `## ` heading) to stdout and
//! to its `--out` file; `scripts/bench.sh` puts the sections together into `BENCHMARKS.md`
//! under one header with the machine, date and commit ([`machine_summary`]). A benchmark is a
//! measurement, not a test: a missed target is reported as MISS and the process still exits 0;
//! it exits non-zero only when something could not run.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{client_async_tls_with_config, tungstenite, Connector};

use crate::node::HOST;
use crate::{repo_root, tls_client_config, WsStream, IO_TIMEOUT};

/// Reads a benchmark's command line: `--flag value`, `--flag=value`, and `-h`/`--help`.
/// `on_flag(flag, value)` handles one flag, calling `value()` for its value (the inline one,
/// else the next argument). `Ok(false)` means help was asked for.
pub fn parse_flags(
    args: impl IntoIterator<Item = String>,
    mut on_flag: impl FnMut(&str, &mut dyn FnMut() -> Result<String>) -> Result<()>,
) -> Result<bool> {
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        if arg == "-h" || arg == "--help" {
            return Ok(false);
        }
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) => (f.to_owned(), Some(v.to_owned())),
            None => (arg, None),
        };
        let mut value = || -> Result<String> {
            match &inline {
                Some(v) => Ok(v.clone()),
                None => args.next().with_context(|| format!("{flag} needs a value")),
            }
        };
        on_flag(&flag, &mut value)?;
    }
    Ok(true)
}

/// A flag's numeric value.
pub fn number<T: FromStr>(flag: &str, value: &str) -> Result<T> {
    value
        .parse()
        .map_err(|_| anyhow!("{flag} wants a number, got {value:?}"))
}

/// A flag's value that must be at least 1.
pub fn positive(flag: &str, value: &str) -> Result<usize> {
    match value.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => bail!("{flag} wants a positive number, got {value:?}"),
    }
}

/// The client TLS config of benchmark WebSockets: trusts the test CA only, ALPN http/1.1,
/// and never resumes a session, so each handshake is the full one a new client does.
pub fn ws_tls_config(ca_pem: &str) -> Result<Arc<rustls::ClientConfig>> {
    let mut config = (*tls_client_config(ca_pem, &[b"http/1.1"])?).clone();
    config.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(config))
}

/// Opens `wss://app.test:<port><path_and_query>` with this `Origin` via 127.0.0.1.
///
/// Not the harness's `ws_connect`: this reuses one TLS config instead of parsing the CA for
/// every connection, keeping the client's share of the CPU small. Like browsers, it sets
/// `TCP_NODELAY`: otherwise the client's second small write waits for the server's delayed
/// ACK (40 ms on Linux) and caps a handshake loop at ~350/s. `config` sets tungstenite's
/// buffers (small ones keep ten thousand idle sockets from taking gigabytes).
pub async fn ws_open(
    port: u16,
    path_and_query: &str,
    origin: &'static str,
    tls: &Arc<rustls::ClientConfig>,
    config: Option<WebSocketConfig>,
) -> Result<WsStream> {
    let url = format!("wss://{HOST}:{port}{path_and_query}");
    let mut request = url.as_str().into_client_request()?;
    request
        .headers_mut()
        .insert("origin", HeaderValue::from_static(origin));
    let open = async {
        let tcp = TcpStream::connect(("127.0.0.1", port))
            .await
            .with_context(|| format!("connect 127.0.0.1:{port}"))?;
        tcp.set_nodelay(true)?;
        let connector = Connector::Rustls(tls.clone());
        match client_async_tls_with_config(request, tcp, config, Some(connector)).await {
            Ok((ws, _response)) => Ok(ws),
            Err(tungstenite::Error::Http(response)) => {
                bail!("upgrade of {url} refused: {}", response.status())
            }
            Err(e) => Err(anyhow::Error::new(e).context(format!("WebSocket handshake with {url}"))),
        }
    };
    tokio::time::timeout(IO_TIMEOUT, open)
        .await
        .map_err(|_| anyhow!("WebSocket handshake with {url} timed out"))?
}

/// Client-side close: sends the close frame (flushed) and drops the connection, as a browser
/// leaving a page does. Waiting for the server's side would wait for Envoy's delayed-close
/// timer (1 s) when the backend ends its socket on the close frame without answering it.
pub async fn close_ws(mut ws: WsStream) -> Result<()> {
    ws.close(None).await.context("send WebSocket close")
}

/// Median; NaN for no values. An even count gives the mean of the middle two.
pub fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => xs[n / 2],
        _ => (xs[n / 2 - 1] + xs[n / 2]) / 2.0,
    }
}

/// Smallest and largest value (NaN, NaN for none).
pub fn range(xs: &[f64]) -> (f64, f64) {
    if xs.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    (
        xs.iter().copied().fold(f64::INFINITY, f64::min),
        xs.iter().copied().fold(f64::NEG_INFINITY, f64::max),
    )
}

/// `PASS` or `MISS`, for the targets tables.
pub fn verdict(met: bool) -> &'static str {
    if met {
        "PASS"
    } else {
        "MISS"
    }
}

/// The machine, as rows for a `| | |` table: CPUs, model, memory, kernel.
pub fn machine_summary() -> Vec<(String, String)> {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name")?.split_once(':').map(|x| x.1))
        .map(|m| m.trim().to_owned())
        .unwrap_or_else(|| "unknown".to_owned());
    let nproc = std::thread::available_parallelism()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "?".to_owned());
    let meminfo = fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map(|kib| format!("{:.1} GiB", kib / 1024.0 / 1024.0))
        .unwrap_or_else(|| "unknown".to_owned());
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".to_owned());
    vec![
        ("CPUs (nproc)".to_owned(), nproc),
        ("CPU model".to_owned(), model),
        ("memory".to_owned(), mem),
        ("kernel".to_owned(), kernel),
    ]
}

/// `/proc/loadavg`'s three averages: high values mean something else was busy.
pub fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".to_owned())
}

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

/// `envoy --version` prints "<path>  version: <sha>/1.40.0/Clean/RELEASE/BoringSSL".
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

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn flags_take_inline_or_next_values() {
        let args = |s: &str| s.split_whitespace().map(str::to_owned).collect::<Vec<_>>();
        let mut seen = Vec::new();
        let go = parse_flags(args("--a 1 --b=2"), |flag, value| {
            seen.push((flag.to_owned(), value()?));
            Ok(())
        });
        assert!(go.unwrap());
        assert_eq!(
            seen,
            [("--a".into(), "1".into()), ("--b".into(), "2".into())]
        );
        assert!(!parse_flags(args("--a 1 -h"), |_, v| v().map(drop)).unwrap());
        assert!(parse_flags(args("--a"), |_, v| v().map(drop)).is_err());
        assert_eq!(number::<u64>("--n", "0").unwrap(), 0);
        assert!(positive("--n", "0").is_err());
        assert_eq!(positive("--n", "3").unwrap(), 3);
    }

    #[test]
    fn medians_of_odd_and_even_counts() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(vec![]).is_nan());
        assert_eq!(range(&[2.0, 1.0, 3.0]), (1.0, 3.0));
    }
}
