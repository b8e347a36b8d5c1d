//! Each tool's command lines and the renewer's config, as run and as the report shows them.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

/// Where the CA is, as the command lines need it (real values, or placeholders for the report).
#[derive(Debug, Clone)]
pub struct Endpoints {
    pub directory: String,
    pub api_cert: String,
    pub http_port: String,
}

impl Endpoints {
    pub fn placeholders() -> Endpoints {
        Endpoints {
            directory: "https://127.0.0.1:<api-port>/dir".into(),
            api_cert: "<pebble-api-cert.pem>".into(),
            http_port: "<http-port>".into(),
        }
    }
}

const LEGO_EMAIL: &str = "bench@example.com";

pub fn lego_cmd(bin: &Path, ep: &Endpoints, dir: &Path, domain: &str) -> Command {
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

pub fn certbot_cmd(bin: &Path, ep: &Endpoints, dir: &Path, domain: &str) -> Command {
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

pub fn certbot_register_cmd(bin: &Path, ep: &Endpoints, dir: &Path) -> Command {
    let mut cmd = Command::new(bin);
    cmd.env("REQUESTS_CA_BUNDLE", &ep.api_cert)
        .arg("register")
        .args(certbot_args(ep, dir));
    cmd
}

pub fn renewer_cmd(bin: &Path, config: &Path, args: &[&str]) -> Command {
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
pub fn renewer_config(ep: &Endpoints, store: &str, certs: &[(String, String)]) -> String {
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
pub fn show(cmd: &Command) -> String {
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

/// `renewer serve`'s arguments on 127.0.0.1 and `port`.
pub fn serve_args(port: &str) -> [&str; 5] {
    ["serve", "--address", "127.0.0.1", "--port", port]
}

/// The release renewer with `config` and `args`, as the report shows the command.
pub fn shown_renewer(config: &str, args: &[&str]) -> String {
    show(&renewer_cmd(
        Path::new("target/release/renewer"),
        Path::new(config),
        args,
    ))
}

/// `renewal.concurrency`'s default, for the report (the benchmark leaves it unset).
pub fn default_concurrency() -> usize {
    renewer::config::RenewalConfig::default().concurrency
}

#[cfg(test)]
mod unit {
    use super::*;

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
    }
}
