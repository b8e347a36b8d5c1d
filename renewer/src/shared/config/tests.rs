//! Tests of the config: defaults, the example file, errors that name the field, overrides.

use std::path::{Path, PathBuf};

use super::*;
use crate::shared::store::StoreUrl;

const GOOD: &str = r#"
[acme]
directory = "letsencrypt-staging"
contact = ["ops@example.com"]

[store]
url = "file:///var/lib/acme-edge"

[[certificates]]
name = "app"
domains = ["app.example.com", "www.example.com"]
"#;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, "renewer.toml", &[])
}

fn field_of(text: &str) -> String {
    parse(text).expect_err("must be refused").field
}

#[test]
fn good_config_and_defaults() {
    let c = parse(GOOD).expect("good config");
    assert_eq!(c.directory_url(), LETSENCRYPT_STAGING);
    assert_eq!(c.contact_urls(), vec!["mailto:ops@example.com"]);
    assert_eq!(c.certificates[0].key_type, KeyType::EcdsaP256);
    assert!((c.renewal.fraction_left - 1.0 / 3.0).abs() < 1e-9);
    assert!(c.renewal.ari);
    assert_eq!(c.renewal.concurrency, 8);
    assert_eq!(c.lock.ttl_seconds, 600);
    assert_eq!(c.serve.shutdown_timeout_seconds, 9);
    assert_eq!(c.sync.dir, PathBuf::from("/var/lib/acme-edge/tls"));
    assert_eq!(c.sync.source, SyncSource::Store);
    assert_eq!(c.sync.secret_name, "server_cert");
    assert_eq!(
        c.store.url,
        StoreUrl::File(PathBuf::from("/var/lib/acme-edge"))
    );
}

/// Found by `make fuzz` (corpus `renewer_config/crash-c1466721…`): an empty key made an
/// error whose field was empty.
#[test]
fn an_empty_key_still_names_a_field() {
    let e = parse(&format!("{GOOD}\n['']\n")).expect_err("must be refused");
    assert_eq!(e.field, "(top level)");
    assert!(e.message.contains("unknown field"), "{e}");
}

#[test]
fn example_file_is_valid() {
    let text = include_str!("../../../renewer.example.toml");
    parse(text).expect("renewer.example.toml must be valid");
}

const MEMBERS_OK: &str = "[members]\nproject = \"my-project\"\nregion = \"europe-west1\"\n\
                          group = \"acme-edge-nodes\"\nport = 8080\n";
const MEMBERS_BAD_PROJECT: &str =
    "[members]\nproject = \"P\"\nregion = \"europe-west1\"\ngroup = \"g\"\nport = 8080\n";
const MEMBERS_BAD_REGION: &str =
    "[members]\nproject = \"my-project\"\nregion = \"europe\"\ngroup = \"g\"\nport = 8080\n";
const MEMBERS_BAD_GROUP: &str = "[members]\nproject = \"my-project\"\nregion = \"europe-west1\"\n\
                                 group = \"Nodes_1\"\nport = 8080\n";
const MEMBERS_BAD_PORT: &str =
    "[members]\nproject = \"my-project\"\nregion = \"europe-west1\"\ngroup = \"g\"\nport = 0\n";
const MEMBERS_BAD_DIR: &str = "[members]\nproject = \"my-project\"\nregion = \"europe-west1\"\n\
                               group = \"g\"\nport = 1\ndir = \"members\"\n";
const MEMBERS_BAD_METRICS: &str =
    "[members]\nproject = \"my-project\"\nregion = \"europe-west1\"\n\
                                   group = \"g\"\nport = 1\nmetrics_address = \"localhost\"\n";

#[test]
fn the_ca_is_required_only_where_it_is_used() {
    // The node agents' settings carry no [acme] section.
    let node = GOOD.replace(
        "[acme]\ndirectory = \"letsencrypt-staging\"\ncontact = [\"ops@example.com\"]",
        "",
    );
    let c = parse(&node).expect("a config without [acme]");
    let e = c.require_acme("node.env").expect_err("no CA");
    assert_eq!(e.field, "acme.directory");
    parse(GOOD)
        .unwrap()
        .require_acme("x")
        .expect("GOOD has a CA");
}

#[test]
fn members_section_defaults() {
    let c = parse(&format!("{GOOD}\n{MEMBERS_OK}")).expect("members section");
    let m = c.members.expect("members");
    assert_eq!(m.dir, PathBuf::from("/var/lib/acme-edge/members"));
    assert_eq!(m.cluster, "app");
    assert_eq!(m.interval_seconds, 10);
    assert_eq!(m.metrics_address, "127.0.0.1:9902");
    assert!(parse(GOOD).unwrap().members.is_none());
}

#[test]
fn errors_name_the_field() {
    let cases: &[(&str, &str)] = &[
        ("[acme]\ndirectory = \"x\"", "acme.directory"),
        (
            "[[acme.fallback]]\ndirectory = \"http://ca\"",
            "acme.fallback[0].directory",
        ),
        // Missing: serde names the table and says "missing field `directory`".
        ("[[acme.fallback]]\nextra_root_ca = \"/x\"", "acme.fallback[0]"),
        ("[[acme.fallback]]\ndirectory = \"\"", "acme.fallback[0].directory"),
        (
            "[acme]\ndirectory = \"letsencrypt\"\n[[acme.fallback]]\ndirectory = \"https://acme-v02.api.letsencrypt.org/directory\"",
            "acme.fallback[0].directory",
        ),
        (
            "[[acme.fallback]]\ndirectory = \"https://ca\"\neab = { key_id = \"k\" }",
            "acme.fallback[0].eab",
        ),
        ("[[acme.fallback]]\ndirectory = \"https://ca\"\ncolour = 1", "acme.fallback[0].colour"),
        ("colour = 1", "colour"),
        ("[acme]\ndirektory = 1", "acme.direktory"),
        ("[renewal]\nfraction_left = 1.5", "renewal.fraction_left"),
        ("[renewal]\nconcurrency = 0", "renewal.concurrency"),
        ("[renewal]\nconcurrency = 65", "renewal.concurrency"),
        ("[renewal]\nconcurrency = -1", "renewal.concurrency"),
        ("[store]\nurl = \"s3://x\"", "store.url"),
        (
            "[store]\nurl = \"file:///x\"\nkeep_serials = 0",
            "store.keep_serials",
        ),
        ("[lock]\nttl_seconds = 1", "lock.ttl_seconds"),
        ("[serve]\nmax_body_bytes = 0", "serve.max_body_bytes"),
        (
            "[serve]\npass_grace_seconds = 9",
            "serve.pass_grace_seconds",
        ),
        ("[serve]\nport = 80", "serve.port"),
        ("[sync]\ncertificate = \"other\"", "sync.certificate"),
        ("[sync]\nsource = \"secret-manager\"", "sync.source"),
        ("[sync]\nsource = \"s3\"", "sync.source"),
        ("[sync]\ndir = \"relative/tls\"", "sync.dir"),
        ("[sync]\ndir = \"/var/lib/tls dir\"", "sync.dir"),
        ("[sync]\nsecret_name = \"a b\"", "sync.secret_name"),
        ("[sync]\ninterval_seconds = 0", "sync.interval_seconds"),
        ("[sync]\nkeep_versions = 0", "sync.keep_versions"),
        ("[sync]\non_change = \" \"", "sync.on_change"),
        (
            "[sync]\nstatus_address = \"localhost\"",
            "sync.status_address",
        ),
        (
            "[sync]\nready_tls_address = \":443\"",
            "sync.ready_tls_address",
        ),
        (
            "[sync]\nready_server_name = \"a b\"",
            "sync.ready_server_name",
        ),
        (
            "[sync]\nready_app_url = \"https://a:1/\"",
            "sync.ready_app_url",
        ),
        (
            "[sync]\nready_interval_seconds = 0",
            "sync.ready_interval_seconds",
        ),
        ("[members]\nproject = \"p\"", "members"),
        (MEMBERS_BAD_PROJECT, "members.project"),
        (MEMBERS_BAD_REGION, "members.region"),
        (MEMBERS_BAD_GROUP, "members.group"),
        (MEMBERS_BAD_PORT, "members.port"),
        (MEMBERS_BAD_DIR, "members.dir"),
        (MEMBERS_BAD_METRICS, "members.metrics_address"),
    ];
    for (extra, field) in cases {
        // Replace the section in GOOD when the case redefines it.
        let text = if extra.starts_with("[acme]") {
            GOOD.replace(
                "[acme]\ndirectory = \"letsencrypt-staging\"\ncontact = [\"ops@example.com\"]",
                extra,
            )
        } else if extra.starts_with("[store]") {
            GOOD.replace("[store]\nurl = \"file:///var/lib/acme-edge\"", extra)
        } else if extra.starts_with('[') {
            format!("{GOOD}\n{extra}")
        } else {
            format!("{extra}\n{GOOD}")
        };
        let e = parse(&text).expect_err(extra);
        assert!(
            e.field.starts_with(field),
            "{extra}: field {:?}, wanted {field}: {e}",
            e.field
        );
    }
}

#[test]
fn certificate_errors() {
    let with = |cert: &str| {
        format!(
            "{}\n{cert}",
            GOOD.split("[[certificates]]").next().unwrap_or("")
        )
    };
    assert_eq!(field_of(&with("")), "certificates");
    assert_eq!(
        field_of(&with("[[certificates]]\nname = \"a\"\ndomains = []")),
        "certificates[0].domains"
    );
    assert_eq!(
        field_of(&with(
            "[[certificates]]\nname = \"a\"\ndomains = [\"ok.example.com\", \"bad..example.com\"]"
        )),
        "certificates[0].domains[1]"
    );
    assert_eq!(
        field_of(&with(
            "[[certificates]]\nname = \"a\"\ndomains = [\"a.example.com\", \"A.example.com\"]"
        )),
        "certificates[0].domains[1]"
    );
    assert_eq!(
        field_of(&with(
            "[[certificates]]\nname = \"a\"\ndomains = [\"*.example.com\"]"
        )),
        "certificates[0].domains[0]"
    );
    assert_eq!(
        field_of(&with(
            "[[certificates]]\nname = \"a\"\ndomains = [\"a.example.com\"]\nkey_type = \"ed25519\""
        )),
        "certificates[0].key_type"
    );
    assert_eq!(
        field_of(&with("[[certificates]]\nname = \"a\"\ndomains = [\"a.example.com\"]\n[[certificates]]\nname = \"a\"\ndomains = [\"b.example.com\"]")),
        "certificates[1].name"
    );
    assert_eq!(
        field_of(&with(
            "[[certificates]]\nname = \"a/b\"\ndomains = [\"a.example.com\"]"
        )),
        "certificates[0].name"
    );
    assert_eq!(
        field_of(&with(
            "[[certificates]]\nname = \"a\"\ndomains = [\"a.example.com\"]\ncolour = 1"
        )),
        "certificates[0].colour"
    );
}

#[test]
fn env_overrides() {
    let env = vec![
        (
            "RENEWER__STORE__URL".to_string(),
            "gs://my-bucket/acme".to_string(),
        ),
        ("RENEWER__RENEWAL__ARI".to_string(), "false".to_string()),
        ("RENEWER__RENEWAL__CONCURRENCY".to_string(), "2".to_string()),
        (
            "RENEWER__ACME__CONTACT".to_string(),
            "[\"a@example.org\"]".to_string(),
        ),
        ("PATH".to_string(), "/bin".to_string()),
    ];
    let c = Config::parse(GOOD, "renewer.toml", &env).expect("overrides apply");
    assert_eq!(
        c.store.url,
        StoreUrl::Gcs {
            bucket: "my-bucket".into(),
            prefix: "acme".into()
        }
    );
    assert!(!c.renewal.ari);
    assert_eq!(c.renewal.concurrency, 2);
    assert_eq!(c.acme.contact, vec!["a@example.org"]);

    let bad = vec![("RENEWER__STORE__URLL".to_string(), "x".to_string())];
    let e = Config::parse(GOOD, "renewer.toml", &bad).expect_err("unknown env key");
    assert!(e.source_name.contains("RENEWER__STORE__URLL"), "{e}");

    let bad = vec![(
        "RENEWER__RENEWAL__FRACTION_LEFT".to_string(),
        "yes".to_string(),
    )];
    let e = Config::parse(GOOD, "renewer.toml", &bad).expect_err("bad type");
    assert_eq!(e.field, "renewal.fraction_left");
    assert!(
        e.source_name.contains("RENEWER__RENEWAL__FRACTION_LEFT"),
        "{e}"
    );
}

#[test]
fn domains() {
    for ok in ["example.com", "a-b.example.co.uk", "xn--bcher-kva.example"] {
        assert!(check_domain(ok).is_ok(), "{ok}");
    }
    for bad in [
        "",
        "com",
        "-a.example.com",
        "a_b.example.com",
        "1.2.3.4",
        "a..b",
        &"a".repeat(64),
    ] {
        assert!(check_domain(bad).is_err(), "{bad}");
    }
}

#[test]
fn each_fallback_ca_gets_its_own_directory_roots_and_eab() {
    let text = format!(
        "{GOOD}\n[[acme.fallback]]\ndirectory = \"https://dv.acme-v02.api.pki.goog/directory\"\n\
         eab = {{ key_id = \"kid\", hmac_key_env = \"GTS_EAB_HMAC\" }}\n\
         [[acme.fallback]]\ndirectory = \"https://ca.internal/dir\"\nextra_root_ca = \"/etc/ca.pem\"\n"
    );
    let c = parse(&text).expect("valid");
    let cas = c.per_ca();
    let dirs: Vec<&str> = cas.iter().map(|c| c.directory_url()).collect();
    assert_eq!(
        dirs,
        [
            LETSENCRYPT_STAGING,
            "https://dv.acme-v02.api.pki.goog/directory",
            "https://ca.internal/dir"
        ]
    );
    assert!(cas.iter().all(|c| c.acme.fallback.is_empty()));
    assert!(cas[0].acme.eab.is_none());
    assert_eq!(
        cas[1].acme.eab.as_ref().map(|e| e.key_id.as_str()),
        Some("kid")
    );
    assert_eq!(
        cas[2].acme.extra_root_ca.as_deref(),
        Some(Path::new("/etc/ca.pem"))
    );
    assert_eq!(
        cas[2].acme.contact, c.acme.contact,
        "one contact for every account"
    );
}

#[test]
fn every_ca_shares_the_key_of_the_others_primary_first() {
    let text = format!(
        "{GOOD}\n[[acme.fallback]]\ndirectory = \"https://one.test/dir\"\n\
         [[acme.fallback]]\ndirectory = \"https://two.test/dir\"\n"
    );
    let c = parse(&text).expect("valid");
    assert_eq!(
        c.other_ca_directories(0),
        ["https://one.test/dir", "https://two.test/dir"]
    );
    assert_eq!(
        c.other_ca_directories(2),
        [LETSENCRYPT_STAGING, "https://one.test/dir"]
    );
}

#[test]
fn fallback_cas_can_come_from_the_environment() {
    let env = vec![(
        "RENEWER__ACME__FALLBACK".to_string(),
        "[{directory = \"https://dv.acme-v02.api.pki.goog/directory\", eab = {key_id = \"k\", hmac_key_env = \"GTS_EAB_HMAC_KEY\"}}]".to_string(),
    )];
    let c = Config::parse(GOOD, "renewer.toml", &env).expect("valid");
    assert_eq!(c.acme.fallback.len(), 1);
    assert_eq!(
        c.per_ca()[1].directory_url(),
        "https://dv.acme-v02.api.pki.goog/directory"
    );
    let bad = vec![(
        "RENEWER__ACME__FALLBACK".to_string(),
        "[{directory = \"http://ca\"}]".to_string(),
    )];
    let e = Config::parse(GOOD, "renewer.toml", &bad).expect_err("http is refused");
    assert_eq!(e.field, "acme.fallback[0].directory");
}

#[test]
fn dns_01_certificates_need_a_dns_section_and_may_be_wildcards() {
    let wildcard =
        "[[certificates]]\nname = \"w\"\ndomains = [\"*.example.com\", \"example.com\"]\n";
    let base = GOOD.replace("[[certificates]]", "[[oldcertificates]]");
    let base = &base[..base.find("[[oldcertificates]]").unwrap_or(base.len())];
    // Without dns-01, a wildcard is refused, naming the field.
    let e = parse(&format!("{base}{wildcard}")).expect_err("http-01 wildcard");
    assert_eq!(e.field, "certificates[0].domains[0]");
    assert!(e.message.contains("dns-01"), "{e}");
    // dns-01 without [dns].
    let dns01 = wildcard.replace("domains", "challenge = \"dns-01\"\ndomains");
    let e = parse(&format!("{base}{dns01}")).expect_err("no [dns]");
    assert_eq!(e.field, "certificates[0].challenge");
    // With [dns]: accepted.
    let c = parse(&format!(
        "{base}[dns]\nproject = \"my-project\"\nzone = \"example-com\"\n{dns01}"
    ))
    .expect("valid");
    assert_eq!(c.certificates[0].challenge, ChallengeKind::Dns01);
    assert_eq!(
        c.dns.as_ref().map(|d| d.propagation_timeout_seconds),
        Some(300)
    );
    for (dns, field) in [
        ("project = \"x\"", "dns.project"),
        (
            "project = \"my-project\"\nzone = \"Example.com\"",
            "dns.zone",
        ),
        (
            "project = \"my-project\"\ncheck_servers = [\"127.0.0.1\"]",
            "dns.check_servers[0]",
        ),
        (
            "project = \"my-project\"\npropagation_timeout_seconds = 0",
            "dns.propagation_timeout_seconds",
        ),
        (
            "project = \"my-project\"\nendpoint = \"ftp://x\"",
            "dns.endpoint",
        ),
    ] {
        let e = parse(&format!("{base}[dns]\n{dns}\n{dns01}")).expect_err(dns);
        assert_eq!(e.field, field, "{dns}: {e}");
    }
}
