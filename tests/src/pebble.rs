//! A real ACME server: Let's Encrypt's Pebble (Debian package `pebble`, version 2.4).
//!
//! The renewer must work against a real RFC 8555 server (JWS, nonces, asynchronous validation,
//! order state machine), which no hand-written fake checks honestly. Pebble validates HTTP-01
//! by resolving the identifier and fetching `http://<name>:<httpPort>/.well-known/...`, so it
//! runs next to `pebble-challtestsrv` as its DNS server, answering every A query with
//! 127.0.0.1 and AAAA queries with nothing (Pebble asks AAAA first and dials the first address
//! it gets; `::1` would miss servers bound to 127.0.0.1): any name in an order is validated
//! against 127.0.0.1:`http_port`.
//!
//! DNS-01 is validated against the same server: for an authorization of `example.test` or
//! `*.example.test` (which is offered dns-01 only) the VA asks it once, without retrying, for
//! the TXT records of `_acme-challenge.example.test.` (so a name and its wildcard share one
//! name, with two values) and accepts if any string equals the expected digest. Tests set those
//! records through challtestsrv's management API ([`Pebble::challtestsrv_management_port`]),
//! usually by way of [`crate::cloud_dns::FakeCloudDns`].
//!
//! What Pebble 2.4 does, as read from its source (tag v2.4.0) and seen with instant-acme 0.8:
//!
//! * config keys: `listenAddress`, `managementListenAddress`, `certificate`, `privateKey`,
//!   `httpPort`, `tlsPort`, `ocspResponderURL`, `externalAccountBindingRequired`,
//!   `externalAccountMACKeys`, `domainBlocklist`, `certificateValidityPeriod` (seconds,
//!   default 5 years). Unknown keys (e.g. `retryAfter` from later versions) are ignored;
//! * no `Retry-After` header anywhere, no `renewalInfo` (ARI, see [`crate::ari`]), no
//!   `profiles`; unknown newOrder fields (`replaces`, `profile`) are ignored and not echoed;
//!   `notBefore`/`notAfter` in newOrder are honoured;
//! * the VA sends 3 concurrent requests per challenge (`Host: <name>:<httpPort>`) and every
//!   one must succeed;
//! * directory and resource URLs are built from the request's `Host`, so a client that
//!   connects as `localhost` gets `localhost` URLs (the API certificate covers both).
//!
//! Environment: the harness clears every inherited `PEBBLE_*` variable (a developer's shell
//! must not change test behaviour, e.g. `PEBBLE_VA_ALWAYS_VALID`) and sets
//! `PEBBLE_VA_NOSLEEP=1` (no random 0–5 s wait before validating) and, unless
//! [`PebbleBuilder::nonce_reject`] asks otherwise, `PEBBLE_WFE_NONCEREJECT=0`.

use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose};
use tempfile::TempDir;
use tokio::net::UdpSocket;

use crate::client::{https_request, RawResponse};
use crate::ports::{free_port, STARTUP_TIMEOUT};

/// `$PEBBLE`, else Debian's `/usr/bin/pebble`.
pub fn pebble_bin() -> PathBuf {
    bin_from_env("PEBBLE", "/usr/bin/pebble")
}

/// `$PEBBLE_CHALLTESTSRV`, else Debian's `/usr/bin/pebble-challtestsrv`.
pub fn challtestsrv_bin() -> PathBuf {
    bin_from_env("PEBBLE_CHALLTESTSRV", "/usr/bin/pebble-challtestsrv")
}

fn bin_from_env(var: &str, default: &str) -> PathBuf {
    match std::env::var_os(var) {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from(default),
    }
}

/// Options for [`Pebble`]; see [`Pebble::builder`].
#[derive(Debug, Clone, Default)]
pub struct PebbleBuilder {
    http_port: Option<u16>,
    nonce_reject: bool,
    nonce_reject_percent: Option<u8>,
    authz_reuse: Option<u8>,
    certificate_validity: Option<Duration>,
    eab: Option<(String, String)>,
}

impl PebbleBuilder {
    /// The port Pebble's VA sends HTTP-01 requests to (on 127.0.0.1, whatever the name), i.e.
    /// where the test's challenge responder or Envoy listens. Default: a free port nobody
    /// listens on, so validations fail until something is started on [`Pebble::http_port`].
    pub fn http_port(mut self, port: u16) -> Self {
        self.http_port = Some(port);
        self
    }

    /// `true` keeps Pebble's default of rejecting 5% of valid nonces with `badNonce`, to check
    /// the client retries them. Default `false` (`PEBBLE_WFE_NONCEREJECT=0`), so a test's
    /// outcome does not depend on a dice roll.
    pub fn nonce_reject(mut self, on: bool) -> Self {
        self.nonce_reject = on;
        self
    }

    /// `PEBBLE_WFE_NONCEREJECT=percent`: that share of good nonces is rejected with
    /// `badNonce` (Pebble's default, with [`PebbleBuilder::nonce_reject`], is 5).
    pub fn nonce_reject_percent(mut self, percent: u8) -> Self {
        self.nonce_reject = true;
        self.nonce_reject_percent = Some(percent);
        self
    }

    /// `PEBBLE_AUTHZREUSE`: how often (percent) a new order reuses a valid authorization of the
    /// same account for the same identifier. Pebble's default is 50. Beware the off-by-one in
    /// Pebble 2.4 (`rand.Intn(100) > percent` means "new authz"): 100 always reuses, but 0
    /// still reuses about 1% of the time.
    pub fn authz_reuse(mut self, percent: u8) -> Self {
        self.authz_reuse = Some(percent.min(100));
        self
    }

    /// Require external account binding, with one key: `key_id` and its HMAC key as base64url
    /// (what a CA such as Google Trust Services or ZeroSSL hands out).
    pub fn require_eab(mut self, key_id: &str, hmac_b64url: &str) -> Self {
        self.eab = Some((key_id.to_string(), hmac_b64url.to_string()));
        self
    }

    /// `certificateValidityPeriod`: lifetime of issued certificates (whole seconds, at least
    /// 1), e.g. short-lived certificates for renewal tests. Default: Pebble's 5 years.
    pub fn certificate_validity(mut self, validity: Duration) -> Self {
        self.certificate_validity = Some(validity);
        self
    }

    /// Starts pebble-challtestsrv and Pebble, and returns once the DNS server answers, the ACME
    /// directory is served and the management API hands out the root.
    pub async fn start(self) -> Result<Pebble> {
        Pebble::start_with(self).await
    }
}

/// A running Pebble plus its DNS server, on 127.0.0.1. Dropping it kills both.
///
/// ```text
/// <dir>/api-cert.pem, api-key.pem   TLS of the ACME and management APIs (self-signed leaf)
/// <dir>/pebble-config.json
/// <dir>/pebble.log, challtestsrv.log
/// ```
#[derive(Debug)]
pub struct Pebble {
    pebble: Child,
    challtestsrv: Child,
    dir: TempDir,
    api_port: u16,
    management_port: u16,
    http_port: u16,
    dns_port: u16,
    challtestsrv_management_port: u16,
    api_cert_pem: String,
    opts: PebbleBuilder,
}

impl Pebble {
    pub fn builder() -> PebbleBuilder {
        PebbleBuilder::default()
    }

    async fn start_with(opts: PebbleBuilder) -> Result<Pebble> {
        let (pebble_bin, challtestsrv_bin) = (pebble_bin(), challtestsrv_bin());
        for bin in [&pebble_bin, &challtestsrv_bin] {
            if !bin.is_file() {
                bail!(
                    "{} not found: install the Debian package pebble (scripts/bootstrap.sh) or set $PEBBLE / $PEBBLE_CHALLTESTSRV",
                    bin.display()
                );
            }
        }
        let dir = tempfile::Builder::new()
            .prefix("acme-edge-pebble-")
            .tempdir()
            .context("create temp dir")?;
        let api_cert_pem = write_api_cert(dir.path())?;

        let (api_port, management_port, dns_port) = (free_port(), free_port(), free_port());
        let http_port = opts.http_port.unwrap_or_else(free_port);
        let challtestsrv_management_port = free_port();
        let mut config = serde_json::json!({
            "listenAddress": format!("127.0.0.1:{api_port}"),
            "managementListenAddress": format!("127.0.0.1:{management_port}"),
            "certificate": dir.path().join("api-cert.pem"),
            "privateKey": dir.path().join("api-key.pem"),
            "httpPort": http_port,
            // Only dialled for TLS-ALPN-01, which the renewer does not use; nobody listens.
            "tlsPort": free_port(),
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
        });
        if let Some((kid, hmac)) = &opts.eab {
            config["externalAccountBindingRequired"] = true.into();
            config["externalAccountMACKeys"] = serde_json::json!({ kid.as_str(): hmac });
        }
        if let Some(validity) = opts.certificate_validity {
            config["certificateValidityPeriod"] = validity.as_secs().max(1).into();
        }
        let config_path = dir.path().join("pebble-config.json");
        fs::write(
            &config_path,
            serde_json::to_string_pretty(&serde_json::json!({ "pebble": config }))?,
        )
        .context("write pebble-config.json")?;

        let challtestsrv = spawn_logged(
            Command::new(&challtestsrv_bin)
                // Only the DNS server: the HTTP-01 answers come from the system under test.
                .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
                .args(["-dns01", &format!("127.0.0.1:{dns_port}")])
                .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
                // Cannot be disabled in 2.4; on loopback. DNS-01 tests set TXT records
                // through it (`crate::cloud_dns`).
                .args([
                    "-management",
                    &format!("127.0.0.1:{challtestsrv_management_port}"),
                ]),
            &dir.path().join("challtestsrv.log"),
        )?;
        let mut cmd = pebble_command(&config_path, dns_port, &opts);
        let pebble = match spawn_logged(&mut cmd, &dir.path().join("pebble.log")) {
            Ok(child) => child,
            Err(e) => {
                kill_and_reap(&mut { challtestsrv });
                return Err(e);
            }
        };
        // From here on, Drop cleans up whatever happens.
        let mut pebble = Pebble {
            pebble,
            challtestsrv,
            dir,
            api_port,
            management_port,
            http_port,
            dns_port,
            challtestsrv_management_port,
            api_cert_pem,
            opts,
        };
        pebble.wait_ready().await?;
        Ok(pebble)
    }

    /// Kills Pebble (not its DNS server) and starts it again on the same ports: a CA that
    /// was reset. Pebble keeps everything in memory, so accounts, orders and the issuing
    /// root are new. Its log is appended to, so counts over the whole test stay right.
    pub async fn restart(&mut self) -> Result<()> {
        kill_and_reap(&mut self.pebble);
        let config_path = self.dir.path().join("pebble-config.json");
        let mut cmd = pebble_command(&config_path, self.dns_port, &self.opts);
        let log = fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(self.log_path())?;
        self.pebble = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("spawn pebble again")?;
        self.wait_ready().await
    }

    /// Certificates Pebble has issued so far (its log), by serial.
    pub fn issued_serials(&self) -> Vec<String> {
        let log = fs::read_to_string(self.log_path()).unwrap_or_default();
        log.lines()
            .filter_map(|l| l.split("Issued certificate serial ").nth(1))
            .filter_map(|rest| rest.split_whitespace().next())
            .map(|serial| serial.to_ascii_lowercase())
            .collect()
    }

    async fn wait_ready(&mut self) -> Result<()> {
        let deadline = tokio::time::Instant::now() + STARTUP_TIMEOUT;
        loop {
            let exited = match (self.pebble.try_wait()?, self.challtestsrv.try_wait()?) {
                (Some(status), _) => Some(("pebble", status)),
                (_, Some(status)) => Some(("pebble-challtestsrv", status)),
                _ => None,
            };
            if let Some((name, status)) = exited {
                bail!("{name} exited during startup ({status}):\n{}", self.log());
            }
            let last = match self.ready().await {
                Ok(()) => return Ok(()),
                Err(e) => e,
            };
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "Pebble not ready after {STARTUP_TIMEOUT:?} (last: {last:#}):\n{}",
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn ready(&self) -> Result<()> {
        let addrs = dns_query_a(self.dns_port, "probe.acme-edge.test").await?;
        if addrs != [Ipv4Addr::LOCALHOST] {
            bail!("challtestsrv answered {addrs:?} instead of 127.0.0.1");
        }
        expect_200(self.api_get("/dir").await?, "GET /dir")?;
        self.issuing_roots_pem().await?;
        Ok(())
    }

    /// `https://127.0.0.1:<port>/dir`; trust [`Pebble::api_cert_path`] to talk to it.
    pub fn directory_url(&self) -> String {
        format!("https://127.0.0.1:{}/dir", self.api_port)
    }

    pub fn api_port(&self) -> u16 {
        self.api_port
    }

    pub fn management_port(&self) -> u16 {
        self.management_port
    }

    /// Where Pebble sends HTTP-01 validation requests (on 127.0.0.1).
    pub fn http_port(&self) -> u16 {
        self.http_port
    }

    /// The DNS server Pebble's VA asks (pebble-challtestsrv, UDP and TCP on 127.0.0.1): A
    /// queries get 127.0.0.1, TXT queries the DNS-01 values set through
    /// [`Pebble::challtestsrv_management_port`]. A DNS-01 client's propagation check asks it.
    pub fn dns_port(&self) -> u16 {
        self.dns_port
    }

    /// pebble-challtestsrv's management API (plain HTTP on 127.0.0.1): `POST /set-txt
    /// {"host":"_acme-challenge.example.test.","value":"…"}` adds a TXT value (the trailing dot
    /// is needed, the host is matched case-sensitively), `POST /clear-txt {"host":"…"}` drops
    /// all of a host's values. [`crate::cloud_dns::FakeCloudDns::for_pebble`] writes there.
    pub fn challtestsrv_management_port(&self) -> u16 {
        self.challtestsrv_management_port
    }

    /// The API's TLS certificate (PEM): a self-signed CA:FALSE leaf for `127.0.0.1` and
    /// `localhost`, to be given to the ACME client as its one extra trusted root. Also trusted
    /// for [`crate::ari::AriResponder`], which serves the same certificate.
    pub fn api_cert_path(&self) -> PathBuf {
        self.dir.path().join("api-cert.pem")
    }

    pub fn api_cert_pem(&self) -> &str {
        &self.api_cert_pem
    }

    /// The API certificate's private key (PEM, PKCS#8), for servers that share the certificate.
    pub fn api_key_path(&self) -> PathBuf {
        self.dir.path().join("api-key.pem")
    }

    /// GET on the ACME API (`path` like `/dir`), trusting the API certificate.
    pub async fn api_get(&self, path: &str) -> Result<RawResponse> {
        self.get(self.api_port, path).await
    }

    /// GET on one of Pebble's HTTPS ports (the API's or the management interface's), trusting
    /// the API certificate both present.
    async fn get(&self, port: u16, path: &str) -> Result<RawResponse> {
        https_request(port, "127.0.0.1", &self.api_cert_pem, "GET", path, &[], b"").await
    }

    /// The root that issued certificates chain to (management `/roots/0`), PEM. Pebble makes a
    /// new root on every start, so it is only known at run time. Issued chains are
    /// leaf + intermediate; the root is not in them.
    pub async fn issuing_roots_pem(&self) -> Result<String> {
        self.management_pem("/roots/0").await
    }

    /// The intermediate that signs the leaves (management `/intermediates/0`), PEM.
    pub async fn intermediate_pem(&self) -> Result<String> {
        self.management_pem("/intermediates/0").await
    }

    async fn management_pem(&self, path: &str) -> Result<String> {
        let resp = self.get(self.management_port, path).await?;
        let resp = expect_200(resp, &format!("management GET {path}"))?;
        let pem = resp.body_text();
        if !pem.contains("-----BEGIN CERTIFICATE-----") {
            bail!("management GET {path}: not a PEM certificate: {pem:?}");
        }
        Ok(pem)
    }

    /// Kills Pebble and its DNS server now (SIGKILL) and reaps them, for "the CA went away"
    /// tests: connections to the API are refused from then on. Idempotent.
    pub fn stop(&mut self) {
        kill_and_reap(&mut self.pebble);
        kill_and_reap(&mut self.challtestsrv);
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `<dir>/pebble.log`: Pebble's own log (requests, validations, issuance).
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("pebble.log")
    }

    /// Pebble's log followed by challtestsrv's, for failure messages.
    pub fn log(&self) -> String {
        let mut out = fs::read_to_string(self.log_path()).unwrap_or_default();
        let dns = fs::read_to_string(self.dir.path().join("challtestsrv.log")).unwrap_or_default();
        if !dns.trim().is_empty() {
            out.push_str(&format!("\n--- pebble-challtestsrv ---\n{dns}"));
        }
        out
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        self.stop();
    }
}

fn kill_and_reap(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// The Pebble command line and environment for `opts`.
fn pebble_command(config_path: &Path, dns_port: u16, opts: &PebbleBuilder) -> Command {
    let mut cmd = Command::new(pebble_bin());
    cmd.arg("-config")
        .arg(config_path)
        .args(["-dnsserver", &format!("127.0.0.1:{dns_port}")]);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("PEBBLE_") {
            cmd.env_remove(key);
        }
    }
    cmd.env("PEBBLE_VA_NOSLEEP", "1");
    match (opts.nonce_reject, opts.nonce_reject_percent) {
        (false, _) => {
            cmd.env("PEBBLE_WFE_NONCEREJECT", "0");
        }
        (true, Some(percent)) => {
            cmd.env("PEBBLE_WFE_NONCEREJECT", percent.to_string());
        }
        (true, None) => {}
    }
    if let Some(percent) = opts.authz_reuse {
        cmd.env("PEBBLE_AUTHZREUSE", percent.to_string());
    }
    cmd
}

fn spawn_logged(cmd: &mut Command, log: &Path) -> Result<Child> {
    let file = fs::File::create(log).with_context(|| format!("create {}", log.display()))?;
    cmd.stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file)
        .spawn()
        .with_context(|| format!("spawn {}", cmd.get_program().to_string_lossy()))
}

fn expect_200(resp: RawResponse, what: &str) -> Result<RawResponse> {
    if resp.status != 200 {
        bail!("{what}: {} {}", resp.status, resp.body_text());
    }
    Ok(resp)
}

/// Writes `api-cert.pem` and `api-key.pem` into `dir`; returns the certificate PEM.
///
/// The certificate is its own trust anchor, and must be CA:FALSE: webpki (rustls) refuses a
/// CA:TRUE certificate presented as the server's end-entity certificate.
fn write_api_cert(dir: &Path) -> Result<String> {
    let mut params = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
        .context("API certificate SANs")?;
    params
        .distinguished_name
        .push(DnType::CommonName, "acme-edge test Pebble API");
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let key = KeyPair::generate().context("generate API key")?;
    let cert = params.self_signed(&key).context("self-sign API cert")?;
    fs::write(dir.join("api-cert.pem"), cert.pem()).context("write api-cert.pem")?;
    fs::write(dir.join("api-key.pem"), key.serialize_pem()).context("write api-key.pem")?;
    Ok(cert.pem())
}

/// One A query over UDP to 127.0.0.1:`port`; the IPv4 addresses answered. Hand-rolled (a
/// dozen lines of RFC 1035) rather than a DNS crate, for the one readiness probe that also
/// checks challtestsrv answers what Pebble will be told.
async fn dns_query_a(port: u16, name: &str) -> Result<Vec<Ipv4Addr>> {
    let id: u16 = 0xac3e;
    let mut query = Vec::with_capacity(64);
    query.extend_from_slice(&id.to_be_bytes());
    query.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]); // RD; 1 question
    for label in name.split('.') {
        query.push(u8::try_from(label.len())?);
        query.extend_from_slice(label.as_bytes());
    }
    query.extend_from_slice(&[0, 0, 1, 0, 1]); // root; type A; class IN

    let socket = UdpSocket::bind(("127.0.0.1", 0)).await?;
    socket.connect(("127.0.0.1", port)).await?;
    socket.send(&query).await?;
    let mut buf = [0u8; 512];
    let n = tokio::time::timeout(Duration::from_millis(500), socket.recv(&mut buf))
        .await
        .map_err(|_| anyhow!("no DNS answer from 127.0.0.1:{port}"))??;
    parse_a_answers(&buf[..n], id)
}

fn parse_a_answers(msg: &[u8], id: u16) -> Result<Vec<Ipv4Addr>> {
    let at = |i: usize| {
        msg.get(i)
            .copied()
            .ok_or_else(|| anyhow!("short DNS answer"))
    };
    let u16_at = |i: usize| -> Result<u16> { Ok(u16::from_be_bytes([at(i)?, at(i + 1)?])) };
    if u16_at(0)? != id {
        bail!("DNS answer for another query");
    }
    let rcode = at(3)? & 0x0f;
    if rcode != 0 {
        bail!("DNS rcode {rcode}");
    }
    let (questions, answers) = (u16_at(4)?, u16_at(6)?);
    let skip_name = |mut i: usize| -> Result<usize> {
        loop {
            let len = at(i)?;
            if len & 0xc0 == 0xc0 {
                return Ok(i + 2); // compression pointer ends the name
            }
            i += 1 + usize::from(len);
            if len == 0 {
                return Ok(i);
            }
        }
    };
    let mut i = 12;
    for _ in 0..questions {
        i = skip_name(i)? + 4;
    }
    let mut out = Vec::new();
    for _ in 0..answers {
        i = skip_name(i)?;
        let (rtype, rdlen) = (u16_at(i)?, usize::from(u16_at(i + 8)?));
        let rdata = msg
            .get(i + 10..i + 10 + rdlen)
            .ok_or_else(|| anyhow!("short DNS answer"))?;
        if let (1, &[a, b, c, d]) = (rtype, rdata) {
            out.push(Ipv4Addr::new(a, b, c, d));
        }
        i += 10 + rdlen;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_answers_with_compressed_names() {
        #[rustfmt::skip]
        let msg = [
            0xac, 0x3e, 0x81, 0x80, 0, 1, 0, 2, 0, 0, 0, 0,
            1, b'x', 4, b't', b'e', b's', b't', 0, 0, 1, 0, 1,
            0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 127, 0, 0, 1,
            0xc0, 12, 0, 5, 0, 1, 0, 0, 0, 60, 0, 2, 0xc0, 12,
        ];
        assert_eq!(
            parse_a_answers(&msg, 0xac3e).unwrap(),
            vec![Ipv4Addr::LOCALHOST]
        );
        assert!(parse_a_answers(&msg, 1).is_err());
        assert!(parse_a_answers(&msg[..30], 0xac3e).is_err());
    }
}
