//! Sticky routing: where every key goes through Envoy A (three backends) and Envoy B (a fourth
//! joins), per trial, for the shipped policy and the compared ones.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::{ensure, Context, Result};
use harness::bench::{envoy_workers, loadavg, range};
use harness::node::Ports;
use harness::{tls_client_config, EchoBackend, Envoy};
use tokio::time::Instant;

use crate::args::{Compare, Options};
use crate::h2::h2_get_backend_ids;
use crate::policy::{
    affinity_sources, app_policy_block, describe_policy, shipped_kind, with_policy, yaml_value,
    LbPolicy,
};
use crate::setup::{has_wasm_filter, node_config, start_envoy, Bench};

/// Backends of Envoy A in the sticky trials; Envoy B has one more.
pub const STICKY_BEFORE: usize = 3;
/// The header the filter sets and the route hashes (render.sh's `AFFINITY_HEADER` default).
pub const AFFINITY_HEADER: &str = "x-edge-affinity";
/// Target: keys moved when a backend joins, at most this many times the ideal 1/n.
pub const TARGET_MOVEMENT_RATIO: f64 = 1.2;
/// Every this-many-th key is asked again on new connections to check it lands on the same
/// backend.
pub const DETERMINISM_SAMPLE_EVERY: usize = 10;

/// How keys spread over backends.
#[derive(Debug, Clone, PartialEq)]
pub struct Spread {
    pub counts: Vec<usize>,
    pub min_share: f64,
    pub max_share: f64,
    /// Largest / smallest count.
    pub max_min: f64,
    /// Root-mean-square deviation of the shares from the ideal 1/n, relative to 1/n.
    pub cv: f64,
}

/// `assignment[key] = backend index` over `n` backends.
fn spread(assignment: &[usize], n: usize) -> Spread {
    let mut counts = vec![0usize; n];
    for &b in assignment {
        counts[b] += 1;
    }
    let total = assignment.len().max(1) as f64;
    let shares: Vec<f64> = counts.iter().map(|&c| c as f64 / total).collect();
    let ideal = 1.0 / n as f64;
    let (min_share, max_share) = range(&shares);
    let msd = shares.iter().map(|s| (s - ideal).powi(2)).sum::<f64>() / n as f64;
    Spread {
        min_share,
        max_share,
        max_min: max_share / min_share,
        cv: msd.sqrt() / ideal,
        counts,
    }
}

/// What changed between two assignments of the same keys when backend `new` joined.
#[derive(Debug, Clone, PartialEq)]
pub struct Movement {
    pub keys: usize,
    pub moved: usize,
    /// Moved keys that went to the new backend (all of them with a consistent hash).
    pub to_new: usize,
    /// `moved / keys`.
    pub fraction: f64,
    /// The ideal fraction: the new backend's fair share, 1 / (backends after).
    pub ideal: f64,
    /// `fraction / ideal`.
    pub ratio: f64,
}

fn movement(before: &[usize], after: &[usize], new: usize, backends_after: usize) -> Movement {
    assert_eq!(before.len(), after.len(), "the same keys before and after");
    let moved = before.iter().zip(after).filter(|(a, b)| a != b).count();
    let to_new = before
        .iter()
        .zip(after)
        .filter(|(a, b)| a != b && **b == new)
        .count();
    let keys = before.len();
    let fraction = moved as f64 / keys.max(1) as f64;
    let ideal = 1.0 / backends_after as f64;
    Movement {
        keys,
        moved,
        to_new,
        fraction,
        ideal,
        ratio: fraction / ideal,
    }
}

pub fn key_name(i: usize) -> String {
    format!("k{i:05}")
}

/// One pass of keys through one Envoy.
struct Pass {
    /// Backend index per key.
    assignment: Vec<usize>,
    secs: f64,
}

/// Asks Envoy on `port` where each key goes: a WebSocket handshake of `/ws?room=<key>` (the
/// filter checks it, derives the key from `room` and sets the affinity header), and reads the
/// serving backend's id from `x-backend-id`. Answers are cross-checked with what the backends
/// recorded (each key's upgrade once, at the backend that answered, with the affinity header
/// set to the key).
async fn route_keys(
    port: u16,
    client: &Arc<rustls::ClientConfig>,
    keys: &[String],
    backends: &[&EchoBackend],
) -> Result<Pass> {
    let recorded_before: Vec<usize> = backends.iter().map(|b| b.upgrade_count()).collect();
    let started = Instant::now();
    let ids = h2_get_backend_ids(port, client, keys).await?;
    let secs = started.elapsed().as_secs_f64();
    let index: HashMap<&str, usize> = backends
        .iter()
        .enumerate()
        .map(|(i, b)| (b.id.as_str(), i))
        .collect();
    let assignment = ids
        .iter()
        .zip(keys)
        .map(|(id, key)| {
            index
                .get(id.as_str())
                .copied()
                .with_context(|| format!("key {key}: unknown backend id {id:?}"))
        })
        .collect::<Result<Vec<_>>>()?;

    // The backends' side: which keys each one got, and the affinity header Envoy hashed.
    let mut seen: HashMap<String, usize> = HashMap::with_capacity(keys.len());
    for (i, b) in backends.iter().enumerate() {
        for r in b.upgrades().into_iter().skip(recorded_before[i]) {
            let room = r
                .path
                .strip_prefix("/ws?room=")
                .with_context(|| format!("unexpected upgrade of {} at {}", r.path, b.id))?;
            let affinity = r.header(AFFINITY_HEADER).unwrap_or_default();
            ensure!(
                affinity == room,
                "backend {} got room {room} with {AFFINITY_HEADER}: {affinity:?}: the filter \
                 did not derive the key from the room",
                b.id
            );
            ensure!(
                seen.insert(room.to_owned(), i).is_none(),
                "room {room} reached a backend twice in one pass"
            );
        }
    }
    ensure!(
        seen.len() == keys.len(),
        "the backends recorded {} of {} keys",
        seen.len(),
        keys.len()
    );
    for (key, &b) in keys.iter().zip(&assignment) {
        ensure!(
            seen.get(key) == Some(&b),
            "key {key}: answered by backend {b}, recorded at {:?}",
            seen.get(key)
        );
    }
    Ok(Pass { assignment, secs })
}

/// One policy in one trial.
#[derive(Debug, Clone)]
pub struct PolicyTrial {
    /// Spread over backends 1–3 (Envoy A) and 1–4 (Envoy B).
    pub spread_before: Spread,
    pub spread_after: Spread,
    pub movement: Movement,
    /// Keys asked twice through Envoy A, and how many got another backend the second time.
    pub determinism_checked: usize,
    pub determinism_changed: usize,
    /// Envoy's own view of its ring/table (gauges), A then B.
    pub lb_gauges: [String; 2],
    /// Seconds per pass, A then B (informational).
    pub pass_secs: [f64; 2],
}

pub struct Trial {
    pub ports: Vec<u16>,
    /// Index 0 is the shipped config, then the comparisons in order.
    pub policies: Vec<PolicyTrial>,
}

pub struct StickyResult {
    pub shipped: String,
    /// Affinity sources and hash header of the rendered config.
    pub sources: String,
    pub hash_header: String,
    pub compared: Vec<LbPolicy>,
    pub trials: Vec<Trial>,
    pub workers: u64,
    pub filter_present: bool,
    pub loadavg: String,
}

pub async fn sticky(opts: &Options, ctx: &Bench) -> Result<StickyResult> {
    let client = tls_client_config(&ctx.tls.ca_pem, &[b"h2"])?;
    let keys: Vec<String> = (0..opts.keys).map(key_name).collect();
    let sample: Vec<String> = keys
        .iter()
        .step_by(DETERMINISM_SAMPLE_EVERY)
        .cloned()
        .collect();
    let loadavg = loadavg();
    let mut shipped = None;
    let (mut sources, mut hash_header) = (String::new(), String::new());
    let mut compared = Vec::new();
    let mut trials = Vec::new();
    let (mut workers, mut filter_present) = (0, false);
    for t in 0..opts.trials {
        let mut backends = Vec::new();
        for i in 0..=STICKY_BEFORE {
            backends.push(EchoBackend::start(&format!("backend-{}", i + 1)).await?);
        }
        let all: Vec<&EchoBackend> = backends.iter().collect();
        let before = &all[..STICKY_BEFORE];
        let ports = Ports::free();
        let base_a = node_config(&ports, ctx, before, "ws-bench-a")?;
        let base_b = node_config(&ports, ctx, &all, "ws-bench-b")?;
        if shipped.is_none() {
            let block = app_policy_block(&base_a)?;
            compared = match &opts.compare {
                Compare::List(l) => l.clone(),
                Compare::Auto => match shipped_kind(&block) {
                    Some("RING_HASH") => vec![LbPolicy::Maglev { table: None }],
                    Some("MAGLEV") => vec![LbPolicy::Ring {
                        min: 4096,
                        max: Some(65536),
                    }],
                    _ => Vec::new(),
                },
            };
            shipped = Some(describe_policy(&block));
            sources = affinity_sources(&base_a);
            hash_header = yaml_value(&base_a, "- header");
        }
        let mut variants: Vec<(String, String, String)> =
            vec![("shipped".to_owned(), base_a.clone(), base_b.clone())];
        for p in &compared {
            variants.push((
                p.label(),
                with_policy(&base_a, p)?,
                with_policy(&base_b, p)?,
            ));
        }
        let mut policies = Vec::new();
        for (label, config_a, config_b) in &variants {
            let tag = format!("trial {}/{} {label}", t + 1, opts.trials);
            let envoy_a = start_envoy(config_a, ports.admin, before.len()).await?;
            if t == 0 && label == "shipped" {
                workers = envoy_workers(&envoy_a).await?;
                filter_present = has_wasm_filter(&envoy_a).await?;
            }
            let a = route_keys(ports.https, &client, &keys, before).await?;
            let again = route_keys(ports.https, &client, &sample, before).await?;
            let determinism_changed = again
                .assignment
                .iter()
                .enumerate()
                .filter(|(j, b)| a.assignment[j * DETERMINISM_SAMPLE_EVERY] != **b)
                .count();
            let gauges_a = lb_gauges(&envoy_a).await?;
            drop(envoy_a);
            let envoy_b = start_envoy(config_b, ports.admin, all.len()).await?;
            let b = route_keys(ports.https, &client, &keys, &all).await?;
            let gauges_b = lb_gauges(&envoy_b).await?;
            drop(envoy_b);
            let pt = PolicyTrial {
                spread_before: spread(&a.assignment, before.len()),
                spread_after: spread(&b.assignment, all.len()),
                movement: movement(&a.assignment, &b.assignment, STICKY_BEFORE, all.len()),
                determinism_checked: sample.len(),
                determinism_changed,
                lb_gauges: [gauges_a, gauges_b],
                pass_secs: [a.secs, b.secs],
            };
            eprintln!(
                "ws-bench: {tag}: shares {:?} (max/min {:.3}), moved {:.4} ({:.3}× ideal, \
                 {}/{} to the new backend), {} of {} re-asked keys changed, passes {:.1}+{:.1} s",
                pt.spread_before.counts,
                pt.spread_before.max_min,
                pt.movement.fraction,
                pt.movement.ratio,
                pt.movement.to_new,
                pt.movement.moved,
                pt.determinism_changed,
                pt.determinism_checked,
                a.secs,
                b.secs
            );
            policies.push(pt);
        }
        trials.push(Trial {
            ports: backends.iter().map(|b| b.port).collect(),
            policies,
        });
    }
    Ok(StickyResult {
        shipped: shipped.unwrap_or_default(),
        sources,
        hash_header,
        compared,
        trials,
        workers,
        filter_present,
        loadavg,
    })
}

/// Envoy's ring/table gauges (`ring_hash_lb.*` or `maglev_lb.*` of the app cluster), e.g.
/// "size 4098, min_hashes_per_host 1366, max_hashes_per_host 1366".
async fn lb_gauges(envoy: &Envoy) -> Result<String> {
    let body = envoy
        .admin_get("/stats?filter=%5Ecluster%5C.app%5C.(ring_hash_lb%7Cmaglev_lb)%5C.")
        .await?;
    Ok(body
        .lines()
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(": ")?;
            let short = name.rsplit('.').next()?;
            Some(format!("{short} {}", value.trim()))
        })
        .collect::<Vec<_>>()
        .join(", "))
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn spread_of_an_even_and_an_uneven_assignment() {
        let even = spread(&[0, 1, 2, 0, 1, 2], 3);
        assert_eq!(even.counts, vec![2, 2, 2]);
        assert_eq!(even.max_min, 1.0);
        assert!(even.cv.abs() < 1e-12);

        // Shares 0.5, 0.25, 0.25 against 1/3: deviations 1/6, -1/12, -1/12.
        let uneven = spread(&[0, 0, 1, 2], 3);
        assert_eq!(uneven.counts, vec![2, 1, 1]);
        assert_eq!((uneven.min_share, uneven.max_share), (0.25, 0.5));
        assert_eq!(uneven.max_min, 2.0);
        let rms = ((1.0f64 / 36.0 + 2.0 / 144.0) / 3.0).sqrt();
        assert!((uneven.cv - rms * 3.0).abs() < 1e-12);
    }

    #[test]
    fn movement_counts_keys_that_changed_and_where_they_went() {
        let before = [0, 1, 2, 0, 1, 2, 0, 1];
        let after = [3, 1, 2, 0, 0, 3, 0, 1];
        let m = movement(&before, &after, 3, 4);
        assert_eq!((m.keys, m.moved, m.to_new), (8, 3, 2));
        assert_eq!(m.fraction, 3.0 / 8.0);
        assert_eq!(m.ideal, 0.25);
        assert_eq!(m.ratio, 1.5);

        let same = movement(&before, &before, 3, 4);
        assert_eq!((same.moved, same.to_new, same.ratio), (0, 0, 0.0));
    }

    #[test]
    fn keys_are_fixed_width() {
        assert_eq!(key_name(0), "k00000");
        assert_eq!(key_name(9999), "k09999");
    }
}
