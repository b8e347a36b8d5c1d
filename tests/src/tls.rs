//! Throwaway certificates: in the on-disk layout Envoy's file-based SDS reads, and as a bare
//! self-signed PEM pair.
//!
//! Production Envoy reads its certificate through SDS from files that the renewer replaces by
//! swapping a `current` symlink (an atomic rename, so Envoy never sees a half-written pair).
//! Tests use the same layout, with a private CA that only the test clients trust.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{symlink, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use tempfile::TempDir;

/// The SDS secret name `sds.yaml` defines; Envoy configs refer to it.
pub const SECRET_NAME: &str = "server_cert";

/// A CA plus a leaf certificate on disk:
///
/// ```text
/// <dir>/sds.yaml              SDS resource "server_cert" pointing at current/*
/// <dir>/current -> v<N>       symlink, swapped atomically by `rotate`
/// <dir>/v<N>/fullchain.pem    leaf then CA
/// <dir>/v<N>/privkey.pem      mode 0600
/// ```
///
/// The directory is deleted on drop.
pub struct TlsFiles {
    pub dir: TempDir,
    /// The CA certificate, the only trust anchor clients should use.
    pub ca_pem: String,
    /// The current leaf certificate (PEM and DER), to compare with what a server presents.
    pub leaf_pem: String,
    pub leaf_der: Vec<u8>,
    version: u32,
    ca: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for TlsFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsFiles")
            .field("dir", &self.dir.path())
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

impl TlsFiles {
    /// A fresh CA and a leaf for `names` (DNS names; IP literals become IP SANs) plus the IP
    /// SAN 127.0.0.1, so clients may also connect by address.
    pub fn self_signed(names: &[&str]) -> Result<TlsFiles> {
        let ca_key = KeyPair::generate().context("generate CA key")?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "acme-edge test CA");
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca_params.self_signed(&ca_key).context("self-sign CA")?;
        let dir = tempfile::Builder::new()
            .prefix("acme-edge-tls-")
            .tempdir()
            .context("create TLS temp dir")?;
        let mut files = TlsFiles {
            dir,
            ca_pem: ca_cert.pem(),
            leaf_pem: String::new(),
            leaf_der: Vec::new(),
            version: 0,
            ca: Issuer::new(ca_params, ca_key),
        };
        files.rotate(names)?;
        // The same sds.yaml `renewer sync` writes, so tests load certificates the shipped way.
        let sds = renewer::node::sync::sds_yaml(files.path(), SECRET_NAME);
        fs::write(files.sds_path(), sds).context("write sds.yaml")?;
        Ok(files)
    }

    /// Issues a new leaf (same CA) into `v<N+1>` and atomically repoints `current` at it, the
    /// way the renewer deploys a renewed certificate.
    pub fn rotate(&mut self, names: &[&str]) -> Result<()> {
        let mut sans: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        if !sans.iter().any(|n| n == "127.0.0.1") {
            sans.push("127.0.0.1".to_string());
        }
        let mut params = CertificateParams::new(sans).context("leaf SANs")?;
        params.distinguished_name.push(
            DnType::CommonName,
            names.first().copied().unwrap_or("localhost"),
        );
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().context("generate leaf key")?;
        let leaf = params.signed_by(&key, &self.ca).context("sign leaf")?;

        let version = self.version + 1;
        let vdir = self.dir.path().join(format!("v{version}"));
        fs::create_dir(&vdir).with_context(|| format!("create {}", vdir.display()))?;
        fs::write(
            vdir.join("fullchain.pem"),
            format!("{}{}", leaf.pem(), self.ca_pem),
        )
        .context("write fullchain.pem")?;
        fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(vdir.join("privkey.pem"))
            .and_then(|mut f| f.write_all(key.serialize_pem().as_bytes()))
            .context("write privkey.pem")?;

        // Relative target, so the tree stays valid if the directory is moved or mounted.
        let tmp_link = self.dir.path().join("current.tmp");
        let _ = fs::remove_file(&tmp_link);
        symlink(format!("v{version}"), &tmp_link).context("create symlink")?;
        fs::rename(&tmp_link, self.current_dir()).context("swap current symlink")?;

        self.version = version;
        self.leaf_pem = leaf.pem();
        self.leaf_der = leaf.der().to_vec();
        Ok(())
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `<dir>/current`, the symlink Envoy reads through.
    pub fn current_dir(&self) -> PathBuf {
        self.dir.path().join("current")
    }

    /// `<dir>/sds.yaml`, for `path_config_source` (watch `<dir>` to catch symlink swaps).
    pub fn sds_path(&self) -> PathBuf {
        self.dir.path().join("sds.yaml")
    }

    /// The current fullchain and key, e.g. to build an in-process TLS server in tests.
    pub fn fullchain_pem(&self) -> Result<String> {
        fs::read_to_string(self.current_dir().join("fullchain.pem")).context("read fullchain.pem")
    }

    pub fn privkey_pem(&self) -> Result<String> {
        fs::read_to_string(self.current_dir().join("privkey.pem")).context("read privkey.pem")
    }
}

/// A self-signed certificate for `names` (its SANs) and its key, both PEM: `(certificate,
/// key)`, e.g. a bundle that no trusted root vouches for.
pub fn self_signed_pem(names: &[&str]) -> Result<(String, String)> {
    let key = KeyPair::generate().context("generate key")?;
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let cert = CertificateParams::new(names)
        .context("certificate SANs")?
        .self_signed(&key)
        .context("self-sign")?;
    Ok((cert.pem(), key.serialize_pem()))
}
