//! Plain HTTPS load with wrk, and what its report says.

use std::process::Stdio;
use std::time::Duration;

use anyhow::{anyhow, bail, ensure, Context, Result};
use harness::IO_TIMEOUT;

use crate::args::{Options, WRK_THREADS};

#[derive(Debug, Clone, Default)]
pub struct WrkResult {
    pub requests_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub requests: u64,
    pub non_2xx_3xx: u64,
    pub socket_errors: u64,
}

/// What a plain load requests: a path, and the headers every request carries.
#[derive(Debug, Clone, Copy)]
pub struct Plain<'a> {
    pub path: &'a str,
    pub header: Option<&'a str>,
}

pub fn wrk_args(opts: &Options, duration: Duration, port: u16, load: Plain) -> Vec<String> {
    let mut args = vec![
        format!("-t{WRK_THREADS}"),
        format!("-c{}", opts.connections),
        format!("-d{}s", duration.as_secs()),
        "--latency".to_owned(),
    ];
    if let Some(header) = load.header {
        args.extend(["-H".to_owned(), header.to_owned()]);
    }
    args.push(format!("https://127.0.0.1:{port}{}", load.path));
    args
}

pub async fn run_wrk(
    opts: &Options,
    duration: Duration,
    port: u16,
    load: Plain<'_>,
) -> Result<WrkResult> {
    run_wrk_on(opts, duration, port, load, None).await
}

/// [`run_wrk`], on the CPUs `cpus` (`taskset -c` list) when given.
pub async fn run_wrk_on(
    opts: &Options,
    duration: Duration,
    port: u16,
    load: Plain<'_>,
    cpus: Option<&str>,
) -> Result<WrkResult> {
    let args = wrk_args(opts, duration, port, load);
    let mut command = match cpus {
        Some(cpus) => {
            let mut c = tokio::process::Command::new("taskset");
            c.args(["-c", cpus, "wrk"]);
            c
        }
        None => tokio::process::Command::new("wrk"),
    };
    let child = command
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("run wrk (install it with: bash scripts/bootstrap.sh --bench)")?;
    let out = tokio::time::timeout(duration + IO_TIMEOUT, child.wait_with_output())
        .await
        .map_err(|_| anyhow!("wrk {} did not finish", args.join(" ")))??;
    let stdout = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success(),
        "wrk {} failed ({}):\n{stdout}{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let result = parse_wrk(&stdout).with_context(|| format!("wrk output:\n{stdout}"))?;
    // Every answer should be the backend's 200: anything else means the proxy refused or
    // failed requests and the numbers would measure the error path.
    ensure!(
        result.requests > 0 && result.non_2xx_3xx == 0,
        "wrk {}: {} requests, {} not 2xx/3xx:\n{stdout}",
        args.join(" "),
        result.requests,
        result.non_2xx_3xx
    );
    Ok(result)
}

/// Parses wrk 4's report: "Requests/sec:", the "Latency Distribution" lines, the request
/// count, and the error lines wrk prints only when there were errors.
fn parse_wrk(text: &str) -> Result<WrkResult> {
    let mut r = WrkResult::default();
    let (mut rps, mut p50, mut p99, mut requests) = (None, None, None, None);
    for line in text.lines().map(str::trim) {
        if let Some(v) = line.strip_prefix("Requests/sec:") {
            rps = Some(v.trim().parse::<f64>().context("Requests/sec")?);
        } else if let Some(v) = line.strip_prefix("50%") {
            p50 = Some(wrk_time_ms(v.trim())?);
        } else if let Some(v) = line.strip_prefix("99%") {
            p99 = Some(wrk_time_ms(v.trim())?);
        } else if line.contains(" requests in ") {
            let n = line.split_whitespace().next().unwrap_or_default();
            requests = Some(n.parse::<u64>().context("request count")?);
        } else if let Some(v) = line.strip_prefix("Non-2xx or 3xx responses:") {
            r.non_2xx_3xx = v.trim().parse().context("Non-2xx count")?;
        } else if let Some(v) = line.strip_prefix("Socket errors:") {
            // "connect 0, read 0, write 0, timeout 0"
            for part in v.split(',') {
                let n = part.split_whitespace().nth(1).unwrap_or_default();
                r.socket_errors += n.parse::<u64>().context("socket error count")?;
            }
        }
    }
    r.requests_per_s = rps.context("no Requests/sec line")?;
    r.p50_ms = p50.context("no 50% latency line (was --latency given?)")?;
    r.p99_ms = p99.context("no 99% latency line (was --latency given?)")?;
    r.requests = requests.context("no 'N requests in' line")?;
    Ok(r)
}

/// wrk prints times as `812.00us`, `1.23ms`, `2.01s`, `1.00m`.
fn wrk_time_ms(s: &str) -> Result<f64> {
    let split = s
        .find(|c: char| c.is_ascii_alphabetic())
        .with_context(|| format!("no unit in wrk time {s:?}"))?;
    let (num, unit) = s.split_at(split);
    let num: f64 = num.parse().with_context(|| format!("bad wrk time {s:?}"))?;
    let scale = match unit {
        "us" => 0.001,
        "ms" => 1.0,
        "s" => 1000.0,
        "m" => 60_000.0,
        "h" => 3_600_000.0,
        _ => bail!("unknown unit in wrk time {s:?}"),
    };
    Ok(num * scale)
}

#[cfg(test)]
mod unit {
    use super::*;

    const WRK_OUTPUT: &str = "\
Running 10s test @ https://127.0.0.1:40000/
  2 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     5.31ms    2.10ms  40.12ms   80.00%
    Req/Sec     6.12k   512.00     7.01k    70.00%
  Latency Distribution
     50%    4.98ms
     75%    6.01ms
     90%    7.50ms
     99%   12.34ms
  121880 requests in 10.00s, 18.72MB read
  Socket errors: connect 0, read 3, write 0, timeout 2
  Non-2xx or 3xx responses: 7
Requests/sec:  12180.77
Transfer/sec:      1.87MB
";

    #[test]
    fn parses_wrk_output() {
        let r = parse_wrk(WRK_OUTPUT).unwrap();
        assert_eq!(r.requests_per_s, 12180.77);
        assert_eq!(r.p50_ms, 4.98);
        assert_eq!(r.p99_ms, 12.34);
        assert_eq!(r.requests, 121880);
        assert_eq!(r.socket_errors, 5);
        assert_eq!(r.non_2xx_3xx, 7);
    }

    #[test]
    fn wrk_output_without_latency_is_an_error() {
        let text = WRK_OUTPUT.replace("     50%    4.98ms\n", "");
        assert!(parse_wrk(&text).is_err());
    }

    #[test]
    fn wrk_times_convert_to_ms() {
        assert_eq!(wrk_time_ms("812.00us").unwrap(), 0.812);
        assert_eq!(wrk_time_ms("1.50ms").unwrap(), 1.5);
        assert_eq!(wrk_time_ms("2.00s").unwrap(), 2000.0);
        assert!(wrk_time_ms("2.00").is_err());
        assert!(wrk_time_ms("2.00ns").is_err());
    }
}
