//! The app cluster's load-balancing policy in a rendered config: reading it, and replacing it
//! for the comparison runs. Also the other facts the report takes from the rendered config.

use std::fmt::Write as _;

use anyhow::{bail, ensure, Context, Result};

/// The value of the first `key: value` line in a rendered config, for the report (so it
/// shows what ran, not what render.sh's defaults were when this was written).
pub fn yaml_value(config: &str, key: &str) -> String {
    config
        .lines()
        .find_map(|l| l.trim_start().strip_prefix(key)?.strip_prefix(':'))
        .map(|v| v.trim().to_owned())
        .unwrap_or_else(|| "?".to_owned())
}

/// The filter's affinity sources in a rendered config: the `"sources": [...]` JSON array of
/// the TLS listener's plugin configuration.
pub fn affinity_sources(config: &str) -> String {
    config
        .split_once("\"sources\": [")
        .and_then(|(_, rest)| rest.split_once(']'))
        .map(|(inner, _)| format!("[{inner}]"))
        .unwrap_or_else(|| "?".to_owned())
}

/// The app cluster's load-balancing policy, for the comparison runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LbPolicy {
    /// `RING_HASH` with `minimum_ring_size` and, if set, `maximum_ring_size`.
    Ring { min: u64, max: Option<u64> },
    /// `MAGLEV` with `table_size` (Envoy's default 65537 if not set; must be prime).
    Maglev { table: Option<u64> },
}

impl LbPolicy {
    /// `maglev`, `maglev:TABLE`, `ring:MIN`, `ring:MIN:MAX`.
    pub fn parse(s: &str) -> Result<LbPolicy> {
        let parts: Vec<&str> = s.trim().split(':').collect();
        let num = |p: &str| -> Result<u64> {
            p.parse()
                .ok()
                .filter(|n| *n > 0)
                .with_context(|| format!("bad number {p:?} in lb policy {s:?}"))
        };
        match parts.as_slice() {
            ["maglev"] => Ok(LbPolicy::Maglev { table: None }),
            ["maglev", t] => Ok(LbPolicy::Maglev {
                table: Some(num(t)?),
            }),
            ["ring", min] => Ok(LbPolicy::Ring {
                min: num(min)?,
                max: None,
            }),
            ["ring", min, max] => Ok(LbPolicy::Ring {
                min: num(min)?,
                max: Some(num(max)?),
            }),
            _ => bail!("unknown lb policy {s:?} (maglev[:TABLE_SIZE] or ring:MIN[:MAX])"),
        }
    }

    pub fn label(&self) -> String {
        match self {
            LbPolicy::Ring { min, max: None } => format!("RING_HASH, minimum_ring_size {min}"),
            LbPolicy::Ring { min, max: Some(m) } => {
                format!("RING_HASH, minimum_ring_size {min}, maximum_ring_size {m}")
            }
            LbPolicy::Maglev { table: None } => "MAGLEV, table_size 65537 (default)".to_owned(),
            LbPolicy::Maglev { table: Some(t) } => format!("MAGLEV, table_size {t}"),
        }
    }

    /// The cluster keys for this policy, at the cluster's key indentation.
    pub fn yaml(&self, indent: &str) -> String {
        match self {
            LbPolicy::Ring { min, max } => {
                let mut y = format!(
                    "{indent}lb_policy: RING_HASH\n{indent}ring_hash_lb_config:\n\
                     {indent}  minimum_ring_size: {min}\n"
                );
                if let Some(max) = max {
                    let _ = writeln!(y, "{indent}  maximum_ring_size: {max}");
                }
                y
            }
            LbPolicy::Maglev { table } => {
                let mut y = format!("{indent}lb_policy: MAGLEV\n");
                if let Some(t) = table {
                    let _ = writeln!(y, "{indent}maglev_lb_config:\n{indent}  table_size: {t}");
                }
                y
            }
        }
    }
}

/// The policy keys of the `app` cluster in a rendered config: the `lb_policy` line and its
/// `*_lb_config` block, as (line range, key indentation, text).
pub struct PolicyBlock {
    lines: Vec<std::ops::Range<usize>>,
    indent: String,
    text: String,
}

pub fn app_policy_block(config: &str) -> Result<PolicyBlock> {
    let lines: Vec<&str> = config.lines().collect();
    let indent_of = |l: &str| l.len() - l.trim_start().len();
    // The first `- name: app` after `clusters:` (a virtual host has the same name).
    let clusters = lines
        .iter()
        .position(|l| l.trim() == "clusters:")
        .context("no `clusters:` in the rendered config")?;
    let start = lines[clusters..]
        .iter()
        .position(|l| l.trim() == "- name: app")
        .map(|i| clusters + i)
        .context("no `- name: app` cluster in the rendered config")?;
    let key_indent = indent_of(lines[start]) + 2;
    let mut ranges = Vec::new();
    let mut text = String::new();
    let mut i = start + 1;
    while i < lines.len() {
        let l = lines[i];
        let blank = l.trim().is_empty() || l.trim_start().starts_with('#');
        if !blank && indent_of(l) < key_indent {
            break; // the next cluster, or the end of the list
        }
        let key = l.trim_start();
        let is_policy_key = !blank
            && indent_of(l) == key_indent
            && (key.starts_with("lb_policy:")
                || key.starts_with("ring_hash_lb_config:")
                || key.starts_with("maglev_lb_config:"));
        if is_policy_key {
            let mut end = i + 1;
            while end < lines.len() {
                let n = lines[end];
                let deeper = n.trim().is_empty() || indent_of(n) > key_indent;
                if !deeper {
                    break;
                }
                end += 1;
            }
            for l in &lines[i..end] {
                text.push_str(l);
                text.push('\n');
            }
            ranges.push(i..end);
            i = end;
        } else {
            i += 1;
        }
    }
    ensure!(
        ranges
            .iter()
            .any(|r| lines[r.start].trim_start().starts_with("lb_policy:")),
        "the app cluster has no lb_policy line"
    );
    Ok(PolicyBlock {
        lines: ranges,
        indent: " ".repeat(key_indent),
        text,
    })
}

/// The shipped policy as the rendered config states it, e.g.
/// "RING_HASH (minimum_ring_size: 4096, maximum_ring_size: 65536)".
pub fn describe_policy(block: &PolicyBlock) -> String {
    let mut name = String::new();
    let mut params = Vec::new();
    for l in block.text.lines().map(str::trim) {
        if let Some(p) = l.strip_prefix("lb_policy:") {
            name = p.trim().to_owned();
        } else if !l.is_empty() && !l.starts_with('#') && !l.ends_with(':') {
            params.push(l.to_owned());
        }
    }
    if params.is_empty() {
        name
    } else {
        format!("{name} ({})", params.join(", "))
    }
}

/// `minimum_ring_size` of a RING_HASH policy as [`describe_policy`] prints it.
pub fn ring_minimum(described: &str) -> Option<u64> {
    if !described.starts_with("RING_HASH") {
        return None;
    }
    let (_, rest) = described.split_once("minimum_ring_size: ")?;
    rest.split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// The parsed shipped policy, to pick the `auto` comparison.
pub fn shipped_kind(block: &PolicyBlock) -> Option<&'static str> {
    let d = describe_policy(block);
    if d.starts_with("RING_HASH") {
        Some("RING_HASH")
    } else if d.starts_with("MAGLEV") {
        Some("MAGLEV")
    } else {
        None
    }
}

/// `config` with the app cluster's policy keys replaced by `policy`.
pub fn with_policy(config: &str, policy: &LbPolicy) -> Result<String> {
    let block = app_policy_block(config)?;
    let lines: Vec<&str> = config.lines().collect();
    let mut out = String::with_capacity(config.len());
    let first = block.lines[0].start;
    for (i, l) in lines.iter().enumerate() {
        if i == first {
            out.push_str(&policy.yaml(&block.indent));
        }
        if block.lines.iter().any(|r| r.contains(&i)) {
            continue;
        }
        out.push_str(l);
        out.push('\n');
    }
    Ok(out)
}

#[cfg(test)]
mod unit {
    use super::*;

    const CLUSTERS: &str = "\
            virtual_hosts:
            - name: app
              domains: [\"*\"]
  clusters:
  - name: app
    type: STATIC
    connect_timeout: 2s
    lb_policy: RING_HASH
    ring_hash_lb_config:
      # A larger ring spreads keys more evenly.
      minimum_ring_size: 4096
      maximum_ring_size: 65536
    circuit_breakers:
      thresholds:
      - priority: DEFAULT
    load_assignment:
      cluster_name: app
  - name: acme_store
    type: LOGICAL_DNS
    lb_policy: ROUND_ROBIN
";

    #[test]
    fn reads_config_facts() {
        let config = "\
      max_active_downstream_connections: 100000
                    {\"affinity\": {\"header\": \"x-edge-affinity\", \"sources\": [{\"query\": \"room\"}, \"cookie\"], \"cookie\": {}}}
                  hash_policy:
                  - header: { header_name: x-edge-affinity }
        max_connections: 100000
";
        assert_eq!(
            yaml_value(config, "max_active_downstream_connections"),
            "100000"
        );
        assert_eq!(yaml_value(config, "max_connections"), "100000");
        assert_eq!(
            yaml_value(config, "- header"),
            "{ header_name: x-edge-affinity }"
        );
        assert_eq!(yaml_value(config, "nothing"), "?");
        assert_eq!(affinity_sources(config), r#"[{"query": "room"}, "cookie"]"#);
        assert_eq!(affinity_sources("{}"), "?");
    }

    #[test]
    fn reads_the_shipped_policy() {
        let block = app_policy_block(CLUSTERS).unwrap();
        assert_eq!(
            describe_policy(&block),
            "RING_HASH (minimum_ring_size: 4096, maximum_ring_size: 65536)"
        );
        assert_eq!(shipped_kind(&block), Some("RING_HASH"));
        assert_eq!(ring_minimum(&describe_policy(&block)), Some(4096));
        assert_eq!(ring_minimum("MAGLEV"), None);
        assert_eq!(block.indent, "    ");
    }

    #[test]
    fn replaces_only_the_app_clusters_policy() {
        let maglev = with_policy(CLUSTERS, &LbPolicy::Maglev { table: None }).unwrap();
        // The app cluster's policy block, comment included, becomes one line; the other
        // cluster's `lb_policy` stays.
        let ring = "    lb_policy: RING_HASH
    ring_hash_lb_config:
      # A larger ring spreads keys more evenly.
      minimum_ring_size: 4096
      maximum_ring_size: 65536
";
        assert_eq!(maglev, CLUSTERS.replace(ring, "    lb_policy: MAGLEV\n"));
        let back = with_policy(
            &maglev,
            &LbPolicy::Ring {
                min: 4096,
                max: Some(65536),
            },
        )
        .unwrap();
        assert_eq!(
            describe_policy(&app_policy_block(&back).unwrap()),
            "RING_HASH (minimum_ring_size: 4096, maximum_ring_size: 65536)"
        );
        let table = with_policy(CLUSTERS, &LbPolicy::Maglev { table: Some(131) }).unwrap();
        assert_eq!(
            describe_policy(&app_policy_block(&table).unwrap()),
            "MAGLEV (table_size: 131)"
        );
        assert!(app_policy_block("  clusters:\n  - name: other\n").is_err());
        assert!(app_policy_block("            - name: app\n    lb_policy: MAGLEV\n").is_err());
    }

    #[test]
    fn parses_lb_policies() {
        assert_eq!(
            LbPolicy::parse("maglev").unwrap(),
            LbPolicy::Maglev { table: None }
        );
        assert_eq!(
            LbPolicy::parse("ring:1024:2048").unwrap(),
            LbPolicy::Ring {
                min: 1024,
                max: Some(2048)
            }
        );
        assert!(LbPolicy::parse("ring").is_err());
        assert!(LbPolicy::parse("ring:x").is_err());
    }
}
