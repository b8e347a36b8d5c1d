//! Envoy's memory, for the benchmarks that divide it by what Envoy holds.

use std::fs;

use anyhow::{Context, Result};

use super::proc::status_kib;
use crate::Envoy;

/// Envoy's memory at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Memory {
    /// VmRSS from `/proc/<pid>/status`, KiB.
    pub rss_kib: u64,
    /// Admin `/memory`: bytes allocated by Envoy (tcmalloc's in-use bytes), and the heap.
    pub allocated: u64,
    pub heap_size: u64,
}

/// Admin `/memory` is JSON with decimal strings: {"allocated": "8176496", "heap_size": ...}.
pub fn parse_admin_memory(json: &str) -> Result<(u64, u64)> {
    let v: serde_json::Value = serde_json::from_str(json).context("parse /memory")?;
    let field = |name: &str| -> Result<u64> {
        match &v[name] {
            serde_json::Value::String(s) => s.parse().ok(),
            serde_json::Value::Number(n) => n.as_u64(),
            _ => None,
        }
        .with_context(|| format!("no {name} in /memory: {json}"))
    };
    Ok((field("allocated")?, field("heap_size")?))
}

/// Envoy's memory now: its VmRSS and admin `/memory`.
pub async fn envoy_memory(envoy: &Envoy) -> Result<Memory> {
    let pid = envoy.pid();
    let status = fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("read /proc/{pid}/status"))?;
    let rss_kib = status_kib(&status, "VmRSS").context("no VmRSS in /proc/<envoy>/status")?;
    let (allocated, heap_size) = parse_admin_memory(&envoy.admin_get("/memory").await?)?;
    Ok(Memory {
        rss_kib,
        allocated,
        heap_size,
    })
}

/// Bytes per connection from two readings: (after − before) / n.
pub fn per_connection(before: u64, after: u64, n: usize) -> f64 {
    (after as f64 - before as f64) / n.max(1) as f64
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn parses_memory_readings() {
        let memory = r#"{
 "allocated": "8176496",
 "heap_size": "14680064",
 "pageheap_unmapped": "0"
}"#;
        assert_eq!(parse_admin_memory(memory).unwrap(), (8176496, 14680064));
        assert!(parse_admin_memory("{}").is_err());
        assert_eq!(per_connection(1000, 3000, 100), 20.0);
        assert_eq!(per_connection(3000, 1000, 100), -20.0);
    }
}
