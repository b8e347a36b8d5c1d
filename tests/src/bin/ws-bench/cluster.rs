//! Sticky routing across the cluster as deployed: every node's view of every key, before and
//! after a node joins and one leaves.

use anyhow::{ensure, Result};
use tokio::time::Instant;

use crate::args::Options;
use crate::sticky::key_name;

/// One change of membership on the cluster, as every node sees it once settled.
#[derive(Debug, Clone, Copy)]
pub struct Change {
    /// Keys whose instance changed.
    pub moved: usize,
    /// What the change must move: the joining instance's share (keys / instances after), or
    /// the keys the leaving instance had.
    pub ideal: f64,
    /// Moved keys that went from one staying instance to another.
    pub cross: usize,
    /// Keys still in dispute between nodes 30 s after the change (0 when they agreed).
    pub disputed: usize,
}

/// One trial on the cluster as deployed.
#[derive(Debug, Clone)]
pub struct ClusterTrial {
    /// Keys per instance with three nodes.
    pub shares: Vec<usize>,
    /// Keys in dispute with three nodes.
    pub disputed: usize,
    pub join: Change,
    pub leave: Change,
    pub secs: f64,
}

impl ClusterTrial {
    /// Keys the join moved, in multiples of the ideal (the newcomer's share).
    pub fn join_ratio(&self) -> f64 {
        self.join.moved as f64 / self.join.ideal
    }

    /// Keys the leave moved, in multiples of the keys the leaving node had (at least one).
    pub fn leave_ratio(&self) -> f64 {
        self.leave.moved as f64 / self.leave.ideal.max(1.0)
    }
}

/// Where the keys go once the nodes agree (and `done` holds), or, if they never do within
/// the harness's bound, the first node's view and the number of keys in dispute.
async fn cluster_owners(
    c: &harness::cluster::Cluster,
    keys: &[String],
    done: impl Fn(&[String]) -> bool,
) -> Result<(Vec<String>, usize)> {
    if let Ok(agreed) = c.settled_owners(keys, done).await {
        return Ok((agreed, 0));
    }
    let all = c.key_owners(keys).await?;
    let first = all[0].clone();
    let disputed = (0..keys.len())
        .filter(|&k| all.iter().any(|o| o[k] != first[k]))
        .count();
    Ok((first, disputed))
}

/// The cluster as `make deploy` builds it (`harness::cluster`: three nodes rendered by their
/// startup script, membership from the Compute Engine fake, the L4 front): every node is
/// asked where every key goes, then a fourth node joins and one of the first three leaves.
pub async fn cluster_sticky(opts: &Options) -> Result<Vec<ClusterTrial>> {
    use harness::cluster::{Cluster, ClusterOptions};
    let keys: Vec<String> = (0..opts.keys).map(key_name).collect();
    let mut trials = Vec::new();
    for t in 0..opts.cluster_trials {
        let started = Instant::now();
        let mut c = Cluster::start(ClusterOptions::default(), &|_| {}).await?;
        let out = c.renew(false).await?;
        ensure!(out.code == 0, "renewer run failed:\n{}", out.all());
        c.wait_served_everywhere(&Cluster::serial_of(&out)?).await?;
        let (three, disputed) = cluster_owners(&c, &keys, |_| true).await?;
        let names: Vec<String> = c.nodes.iter().map(|n| n.name.clone()).collect();
        let shares = names
            .iter()
            .map(|n| three.iter().filter(|o| *o == n).count())
            .collect();

        let added = c.add_node().await?;
        let (four, join_disputed) = cluster_owners(&c, &keys, |o| o.contains(&added)).await?;
        let moved = (0..keys.len()).filter(|&k| three[k] != four[k]).count();
        let join = Change {
            moved,
            ideal: keys.len() as f64 / 4.0,
            cross: (0..keys.len())
                .filter(|&k| three[k] != four[k] && four[k] != added)
                .count(),
            disputed: join_disputed,
        };

        let gone = names[t % names.len()].clone();
        c.remove_node(&gone).await?;
        let (after, leave_disputed) = cluster_owners(&c, &keys, |o| !o.contains(&gone)).await?;
        let on_gone = four.iter().filter(|o| **o == gone).count();
        let leave = Change {
            moved: (0..keys.len()).filter(|&k| four[k] != after[k]).count(),
            ideal: on_gone as f64,
            cross: (0..keys.len())
                .filter(|&k| four[k] != gone && four[k] != after[k])
                .count(),
            disputed: leave_disputed,
        };
        let trial = ClusterTrial {
            shares,
            disputed,
            join,
            leave,
            secs: started.elapsed().as_secs_f64(),
        };
        eprintln!(
            "ws-bench: cluster trial {}/{}: shares {:?}, disputed {}/{}/{}, join moved {} ({:.3}× ideal, {} cross), leave moved {} ({:.3}× ideal, {} cross)",
            t + 1,
            opts.cluster_trials,
            trial.shares,
            trial.disputed,
            trial.join.disputed,
            trial.leave.disputed,
            trial.join.moved,
            trial.join_ratio(),
            trial.join.cross,
            trial.leave.moved,
            trial.leave_ratio(),
            trial.leave.cross
        );
        trials.push(trial);
    }
    Ok(trials)
}
