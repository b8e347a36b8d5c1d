//! TLS as the tests' clients speak it: trusting one CA only, looking at the certificate a
//! server presents, and one keep-alive HTTPS connection for many small requests.

use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;

use crate::ports::IO_TIMEOUT;

/// A rustls client config that trusts only `ca_pem` (one or more certificates), so tests never
/// depend on the machine's trust store and a wrong chain fails loudly.
pub fn tls_client_config(ca_pem: &str, alpn: &[&[u8]]) -> Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    let mut n = 0;
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots
            .add(cert.context("parse CA PEM")?)
            .context("add CA to root store")?;
        n += 1;
    }
    if n == 0 {
        bail!("no certificate in the CA PEM");
    }
    // An explicit provider: `ClientConfig::builder()` panics if the dependency graph ever
    // enables a second one (aws-lc-rs).
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// The serial (lowercase hex, as the renewer names it) of the leaf certificate served on
/// 127.0.0.1:`port` for `server_name`, verified against `ca_pem`.
pub async fn served_serial(port: u16, server_name: &str, ca_pem: &str) -> Result<String> {
    served_serial_at(
        std::net::Ipv4Addr::LOCALHOST.into(),
        port,
        server_name,
        ca_pem,
    )
    .await
}

/// [`served_serial`] of the listener at `ip:port` (a node of a local cluster).
pub async fn served_serial_at(
    ip: std::net::IpAddr,
    port: u16,
    server_name: &str,
    ca_pem: &str,
) -> Result<String> {
    use base64::Engine;
    let tls = handshake(ip, port, server_name, ca_pem).await?;
    let chain: Vec<Vec<u8>> = tls
        .get_ref()
        .1
        .peer_certificates()
        .unwrap_or_default()
        .iter()
        .map(|c| c.as_ref().to_vec())
        .collect();
    let leaf = chain.first().context("no certificate presented")?;
    let pem = format!(
        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
        base64::engine::general_purpose::STANDARD.encode(leaf)
    );
    Ok(renewer::certinfo::inspect(&pem)?.serial)
}

/// The certificate chain (DER, leaf first) served on 127.0.0.1:`port` for `server_name`, after
/// verifying it against `ca_pem`; for checking that a renewed certificate got picked up.
pub async fn tls_peer_certificates(
    port: u16,
    server_name: &str,
    ca_pem: &str,
) -> Result<Vec<Vec<u8>>> {
    let tls = handshake(
        std::net::Ipv4Addr::LOCALHOST.into(),
        port,
        server_name,
        ca_pem,
    )
    .await?;
    let (_, conn) = tls.get_ref();
    Ok(conn
        .peer_certificates()
        .unwrap_or_default()
        .iter()
        .map(|c| c.as_ref().to_vec())
        .collect())
}

/// A TLS connection to `ip:port` for `server_name`, trusting only `ca_pem`, offering
/// `http/1.1`, within [`IO_TIMEOUT`].
async fn handshake(
    ip: std::net::IpAddr,
    port: u16,
    server_name: &str,
    ca_pem: &str,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let config = tls_client_config(ca_pem, &[b"http/1.1"])?;
    tokio::time::timeout(IO_TIMEOUT, tls_connect_at(ip, port, server_name, config))
        .await
        .map_err(|_| anyhow!("TLS handshake with {ip}:{port} timed out"))?
}

pub(super) async fn tls_connect(
    port: u16,
    server_name: &str,
    config: Arc<rustls::ClientConfig>,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>> {
    tls_connect_at(
        std::net::Ipv4Addr::LOCALHOST.into(),
        port,
        server_name,
        config,
    )
    .await
}

async fn tls_connect_at(
    ip: std::net::IpAddr,
    port: u16,
    server_name: &str,
    config: Arc<rustls::ClientConfig>,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let name = ServerName::try_from(server_name.to_string())
        .with_context(|| format!("invalid TLS server name {server_name:?}"))?;
    let tcp = TcpStream::connect((ip, port))
        .await
        .with_context(|| format!("connect {ip}:{port}"))?;
    tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .with_context(|| format!("TLS handshake with {ip}:{port} as {server_name}"))
}

/// One HTTP/1.1 keep-alive connection over TLS to `ip:port`, for many small requests in a row
/// (asking a node where thousands of keys go without a handshake per key).
pub struct HttpsConn {
    sender: hyper::client::conn::http1::SendRequest<http_body_util::Empty<bytes::Bytes>>,
    authority: String,
    _driver: tokio::task::JoinHandle<()>,
}

impl HttpsConn {
    pub async fn connect(
        ip: std::net::IpAddr,
        port: u16,
        server_name: &str,
        ca_pem: &str,
    ) -> Result<HttpsConn> {
        let tls = handshake(ip, port, server_name, ca_pem).await?;
        let (sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
                .await
                .context("HTTP/1.1 handshake")?;
        let driver = tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(HttpsConn {
            sender,
            authority: format!("{server_name}:{port}"),
            _driver: driver,
        })
    }

    /// `GET path` with these headers: the status, the headers and the body.
    pub async fn get(
        &mut self,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<(u16, http::HeaderMap, bytes::Bytes)> {
        use http_body_util::BodyExt as _;
        let mut request = http::Request::get(path).header("host", &self.authority);
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        let request = request.body(http_body_util::Empty::new())?;
        let exchange = async {
            self.sender.ready().await.context("connection closed")?;
            let response = self.sender.send_request(request).await?;
            let (parts, body) = response.into_parts();
            let body = body.collect().await?.to_bytes();
            anyhow::Ok((parts.status.as_u16(), parts.headers, body))
        };
        tokio::time::timeout(IO_TIMEOUT, exchange)
            .await
            .map_err(|_| anyhow!("GET {path} timed out"))?
    }
}
