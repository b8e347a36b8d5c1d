//! Unit tests of `renewer sync`: checks, layout, lock, intervals.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{CertificateParams, KeyPair};
use time::OffsetDateTime;

use super::*;
use crate::shared::bundle::Bundle;
use crate::shared::certinfo;

fn bundle_for(names: &[&str], days: i64) -> Bundle {
    crate::shared::testing::bundle("app", names, days)
}

fn target(dir: &Path) -> Target {
    Target {
        trusted_roots: None,
        dir: dir.to_path_buf(),
        secret_name: "server_cert".into(),
        keep_versions: 2,
    }
}

fn wanted(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

/// A CA, and a chain for `a.example.com` it signed (leaf then CA).
fn ca_and_chain() -> (String, String) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let mut leaf = CertificateParams::new(vec!["a.example.com".to_string()]).unwrap();
    leaf.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let leaf = leaf.signed_by(&key, &issuer).unwrap();
    (ca_cert.pem(), format!("{}{}", leaf.pem(), ca_cert.pem()))
}

fn roots_of(pem: &str) -> std::sync::Arc<rustls::RootCertStore> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("roots.pem");
    fs::write(&path, pem).unwrap();
    std::sync::Arc::new(load_roots(&path).unwrap())
}

#[test]
fn the_shipped_roots_load() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("roots");
    // ISRG Root X1 and X2, and the two staging roots.
    let roots = load_roots(&dir.join("letsencrypt.pem")).unwrap();
    assert_eq!(roots.len(), 4);
}

#[test]
fn only_chains_to_a_trusted_root_pass() {
    let (ca, chain) = ca_and_chain();
    let (other_ca, _) = ca_and_chain();
    let leaf = certinfo::inspect(&chain).unwrap();
    let now = OffsetDateTime::now_utc();
    chain_trusted(&chain, &roots_of(&ca), &leaf, now).expect("signed by the trusted CA");
    let e = chain_trusted(&chain, &roots_of(&other_ca), &leaf, now).unwrap_err();
    assert!(e.contains("trusted root"), "{e}");
    // A self-signed bundle leads nowhere.
    let own = bundle_for(&["a.example.com"], 30);
    let own_leaf = certinfo::inspect(&own.fullchain_pem).unwrap();
    assert!(chain_trusted(&own.fullchain_pem, &roots_of(&ca), &own_leaf, now).is_err());
    // A file without certificates is refused when loaded.
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.pem");
    fs::write(&empty, "nothing").unwrap();
    assert!(load_roots(&empty).is_err());
    assert!(load_roots(&dir.path().join("missing.pem")).is_err());
}

#[test]
fn verify_accepts_a_good_bundle() {
    let b = bundle_for(&["a.example.com", "b.example.com"], 30);
    let leaf = verify(&b, OffsetDateTime::now_utc()).unwrap();
    assert_eq!(leaf.serial, b.meta.serial);
}

#[test]
fn verify_refuses_expiry_and_foreign_keys() {
    let b = bundle_for(&["a.example.com"], 30);
    let now = OffsetDateTime::now_utc();
    let e = verify(&b, now + time::Duration::days(31)).unwrap_err();
    assert!(e.contains("expired"), "{e}");
    let e = verify(&b, now - time::Duration::days(2)).unwrap_err();
    assert!(e.contains("not valid before"), "{e}");
    let other = bundle_for(&["a.example.com"], 30);
    let mut mixed = b.clone();
    mixed.privkey_pem = other.privkey_pem.clone();
    let e = verify(&mixed, now).unwrap_err();
    assert!(e.contains("does not match"), "{e}");
}

#[test]
fn the_best_certificate_there_is_is_served_and_a_gap_never_grows() {
    let now = OffsetDateTime::now_utc();
    let both = wanted(&["a.example.com", "B.example.com"]);
    let dir = tempfile::tempdir().unwrap();
    let t = target(dir.path());
    let install_one = |names: &[&str]| {
        let b = bundle_for(names, 30);
        let leaf = verify(&b, now).unwrap();
        (install(&t, &b, &leaf, "test", now).unwrap(), leaf)
    };
    let (only_a, leaf_a) = install_one(&["a.example.com"]);
    assert_eq!(missing_names(&only_a.domains, &both), vec!["B.example.com"]);
    // Nothing installed: the one lacking a name is better than none.
    assert!(accept(None, &leaf_a, &both, now).is_ok());
    // A newer one with the same gap, or a smaller one, replaces it.
    let b = bundle_for(&["a.example.com"], 60);
    assert!(accept(Some(&only_a), &verify(&b, now).unwrap(), &both, now).is_ok());
    let (full, leaf_full) = install_one(&["a.example.com", "b.example.com"]);
    assert!(missing_names(&full.domains, &both).is_empty());
    assert!(accept(Some(&only_a), &leaf_full, &both, now).is_ok());
    // Never back to one that lacks a name the installed one has...
    let e = accept(Some(&full), &leaf_a, &both, now).unwrap_err();
    assert!(e.contains("does not cover B.example.com"), "{e}");
    // ...unless the installed one has expired (then anything valid is better).
    assert!(accept(Some(&full), &leaf_a, &both, now + time::Duration::days(31)).is_ok());
    // A name dropped from the settings is no gap.
    assert!(accept(Some(&full), &leaf_a, &wanted(&["a.example.com"]), now).is_ok());
}

#[test]
fn plan_keeps_only_the_same_intact_certificate() {
    let b = bundle_for(&["a.example.com"], 30);
    let dir = tempfile::tempdir().unwrap();
    let t = target(dir.path());
    let leaf = verify(&b, OffsetDateTime::now_utc()).unwrap();
    let i = install(&t, &b, &leaf, "test", OffsetDateTime::now_utc()).unwrap();
    assert_eq!(plan(Some(&i), &i.serial, &i.chain_sha256), Plan::Keep);
    assert_eq!(plan(Some(&i), "other", &i.chain_sha256), Plan::Install);
    assert_eq!(plan(Some(&i), &i.serial, "other"), Plan::Install);
    assert_eq!(plan(None, &i.serial, &i.chain_sha256), Plan::Install);
}

#[test]
fn install_lays_out_versions_and_swaps_current() {
    let dir = tempfile::tempdir().unwrap();
    let t = target(dir.path());
    assert!(prepare(&t).unwrap());
    assert!(!prepare(&t).unwrap(), "a second prepare writes nothing");
    assert!(installed(dir.path()).is_none());

    let mut serials = Vec::new();
    for i in 0..4 {
        let b = bundle_for(&["a.example.com"], 30);
        let leaf = verify(&b, OffsetDateTime::now_utc()).unwrap();
        let now = OffsetDateTime::now_utc() + time::Duration::seconds(i);
        let meta = install(&t, &b, &leaf, "test", now).unwrap();
        serials.push(meta.serial.clone());
        let current = installed(dir.path()).expect("installed");
        assert_eq!(current, meta);
        let link = fs::read_link(dir.path().join("current")).unwrap();
        assert_eq!(link, PathBuf::from(&meta.version), "relative link");
        let key = dir.path().join("current/privkey.pem");
        assert_eq!(
            fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            fs::read_to_string(dir.path().join("current/fullchain.pem")).unwrap(),
            b.fullchain_pem
        );
    }
    // keep_versions = 2: the current one and the one before.
    let mut left: Vec<String> = fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.') && n != "sds.yaml" && n != "current")
        .collect();
    left.sort();
    assert_eq!(left.len(), 2, "{left:?}");
    assert!(left[1].ends_with(&serials[3][..16]), "{left:?}");
    assert!(left[0].ends_with(&serials[2][..16]), "{left:?}");
}

#[test]
fn tampered_files_read_as_not_installed() {
    let dir = tempfile::tempdir().unwrap();
    let t = target(dir.path());
    let b = bundle_for(&["a.example.com"], 30);
    let leaf = verify(&b, OffsetDateTime::now_utc()).unwrap();
    install(&t, &b, &leaf, "test", OffsetDateTime::now_utc()).unwrap();
    fs::write(dir.path().join("current/fullchain.pem"), "garbage").unwrap();
    assert!(installed(dir.path()).is_none());
}

#[test]
fn sds_yaml_watches_the_directory() {
    let yaml = sds_yaml(Path::new("/var/lib/acme-edge/tls"), "server_cert");
    assert!(yaml.contains("name: server_cert"));
    assert!(yaml.contains("filename: /var/lib/acme-edge/tls/current/fullchain.pem"));
    assert!(yaml.contains("filename: /var/lib/acme-edge/tls/current/privkey.pem"));
    assert!(yaml.contains("watched_directory: { path: /var/lib/acme-edge/tls }"));
}

#[test]
fn the_directory_lock_is_exclusive() {
    let dir = tempfile::tempdir().unwrap();
    let held = lock_dir(dir.path()).unwrap();
    let e = lock_dir(dir.path()).err().expect("second lock refused");
    assert!(e.to_string().contains("another `renewer sync`"), "{e}");
    drop(held);
    lock_dir(dir.path()).expect("free again");
}

#[test]
fn intervals() {
    assert_eq!(parse_interval("30s").unwrap(), Duration::from_secs(30));
    assert_eq!(parse_interval("5m").unwrap(), Duration::from_secs(300));
    assert_eq!(parse_interval("2h").unwrap(), Duration::from_secs(7200));
    assert_eq!(parse_interval("45").unwrap(), Duration::from_secs(45));
    assert!(parse_interval("0s").is_err());
    assert!(parse_interval("5d").is_err());
    assert!(parse_interval("soon").is_err());
    assert_eq!(
        jittered(Duration::from_secs(100), 0.0),
        Duration::from_secs(90)
    );
    assert_eq!(
        jittered(Duration::from_secs(100), 1.0),
        Duration::from_secs(110)
    );
}

#[test]
fn version_names_sort_by_time() {
    let a = version_name(time::macros::datetime!(2026-01-02 03:04:05 UTC), "0abc");
    let b = version_name(time::macros::datetime!(2026-01-02 03:04:06 UTC), "0000");
    assert_eq!(a, "20260102T030405.000Z-0abc");
    // Within one second, the later install still sorts last.
    let c = version_name(time::macros::datetime!(2026-01-02 03:04:05.002 UTC), "ffff");
    let d = version_name(time::macros::datetime!(2026-01-02 03:04:05.010 UTC), "0000");
    assert!(c < d, "{c} {d}");
    assert!(a < b);
}
