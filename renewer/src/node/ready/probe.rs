//! The two checks behind `/ready`: a TLS handshake with Envoy's listener (which certificate
//! does it present?) and an HTTP GET of the app's health URL, each within a few seconds.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::shared::config::syntax::AppUrl;

/// The two checks, as a trait so [`super::assess`]'s wiring is testable without Envoy.
#[async_trait::async_trait]
pub trait NodeProbe: Send + Sync {
    /// The serial of the leaf certificate Envoy presents.
    async fn served_serial(&self) -> Result<String, String>;
    /// Whether the app answers its health URL.
    async fn app(&self) -> Result<(), String>;
}

/// The real checks: a TLS handshake with Envoy's listener, and an HTTP GET of the app.
pub struct LocalProbe {
    tls_address: String,
    server_name: rustls::pki_types::ServerName<'static>,
    app_url: Option<AppUrl>,
    tls: tokio_rustls::TlsConnector,
}

/// Accepts whatever certificate Envoy presents: the probe compares its serial with the one
/// `sync` installed (and verified before installing); it does not decide trust. The handshake
/// signature is still checked, so the peer holds the certificate's key.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

const CHECK_TIMEOUT: Duration = Duration::from_secs(3);

impl LocalProbe {
    /// A probe of Envoy's TLS listener at `tls_address` (SNI `server_name`) and of `app_url`.
    pub fn new(
        tls_address: &str,
        server_name: &str,
        app_url: Option<AppUrl>,
    ) -> Result<LocalProbe, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
            .with_no_client_auth();
        let server_name = rustls::pki_types::ServerName::try_from(server_name.to_string())
            .map_err(|e| format!("{server_name:?}: {e}"))?;
        Ok(LocalProbe {
            tls_address: tls_address.to_string(),
            server_name,
            app_url,
            tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
        })
    }
}

#[async_trait::async_trait]
impl NodeProbe for LocalProbe {
    async fn served_serial(&self) -> Result<String, String> {
        let handshake = async {
            let tcp = tokio::net::TcpStream::connect(&self.tls_address)
                .await
                .map_err(|e| format!("{}: {e}", self.tls_address))?;
            let tls = self
                .tls
                .connect(self.server_name.clone(), tcp)
                .await
                .map_err(|e| format!("{}: handshake: {e}", self.tls_address))?;
            let leaf = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .ok_or_else(|| format!("{}: no certificate presented", self.tls_address))?;
            crate::shared::certinfo::serial_of_der(leaf.as_ref()).map_err(|e| e.to_string())
        };
        tokio::time::timeout(CHECK_TIMEOUT, handshake)
            .await
            .map_err(|_| format!("{}: no handshake within 3 s", self.tls_address))?
    }

    async fn app(&self) -> Result<(), String> {
        let Some(url) = &self.app_url else {
            return Ok(());
        };
        let get = async {
            let mut tcp = tokio::net::TcpStream::connect(&url.authority)
                .await
                .map_err(|e| format!("{}: {e}", url.authority))?;
            let request = format!(
                "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: acme-edge-ready\r\nConnection: close\r\n\r\n",
                url.path, url.authority
            );
            tcp.write_all(request.as_bytes())
                .await
                .map_err(|e| e.to_string())?;
            let mut head = [0u8; 64];
            let mut read = 0;
            while read < 12 {
                let n = tcp
                    .read(&mut head[read..])
                    .await
                    .map_err(|e| e.to_string())?;
                if n == 0 {
                    break;
                }
                read += n;
            }
            let line = String::from_utf8_lossy(&head[..read]);
            let status: u16 = line
                .strip_prefix("HTTP/1.")
                .and_then(|r| r.get(2..5))
                .and_then(|c| c.parse().ok())
                .ok_or_else(|| format!("{}: not an HTTP answer", url.authority))?;
            if (200..400).contains(&status) {
                Ok(())
            } else {
                Err(format!("{}{} answered {status}", url.authority, url.path))
            }
        };
        tokio::time::timeout(CHECK_TIMEOUT, get)
            .await
            .map_err(|_| format!("{}{} did not answer within 3 s", url.authority, url.path))?
    }
}
