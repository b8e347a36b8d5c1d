//! The cluster section of the report.

use std::fmt::Write as _;

use harness::bench::{self, verdict};

use crate::args::Options;
use crate::cluster::{Change, ClusterTrial};
use crate::setup::command_line;
use crate::sticky::TARGET_MOVEMENT_RATIO;

pub fn render_cluster(opts: &Options, trials: &[ClusterTrial]) -> String {
    let mut md = String::new();
    let w = &mut md;
    if trials.is_empty() {
        return md;
    }
    let _ = writeln!(w, "\n## Sticky routing across the cluster, as deployed\n");
    let _ = writeln!(
        w,
        "`harness::cluster` (what `make demo` runs): three nodes, each Envoy + edge filter + app + \
         `renewer sync` + `renewer members` configured by `deploy/node/startup.sh render` on the \
         `node.env` that `deploy/deploy.sh --plan` writes, membership from the Compute Engine fake \
         (`renewer members --watch 1s`), a stand-in for the network load balancer in front. Every \
         node is asked where each of {} keys goes (`GET /where?room=<key>` on its TLS listener; \
         the room hashes there as the filter's header does), then a fourth node joins, then one of \
         the first three leaves. After each change the nodes are asked again until they agree (at \
         most 30 s: Envoy's workers rebuild their Maglev tables a moment after a change). \
         Command: `{}`; {} trials.\n",
        opts.keys,
        command_line(),
        trials.len()
    );
    let _ = writeln!(
        w,
        "| trial | keys per instance (3 nodes) | keys in dispute (3 nodes / join / leave) | join: moved, × ideal ¼, between old instances | leave: moved, × ideal (its keys), between survivors | seconds |"
    );
    let _ = writeln!(w, "|---|---|---|---|---|---|");
    for (i, t) in trials.iter().enumerate() {
        let _ = writeln!(
            w,
            "| {} | {:?} | {} / {} / {} | {} | {} | {:.0} |",
            i + 1,
            t.shares,
            t.disputed,
            t.join.disputed,
            t.leave.disputed,
            change(&t.join, t.join_ratio()),
            change(&t.leave, t.leave_ratio()),
            t.secs
        );
    }
    let disputed: usize = trials
        .iter()
        .map(|t| t.disputed + t.join.disputed + t.leave.disputed)
        .sum();
    let worst = |f: fn(&ClusterTrial) -> f64| trials.iter().map(f).fold(0.0, f64::max);
    let join_worst = worst(ClusterTrial::join_ratio);
    let leave_worst = worst(ClusterTrial::leave_ratio);
    let cross: usize = trials.iter().map(|t| t.join.cross + t.leave.cross).sum();
    let _ = writeln!(w, "\n### Targets\n");
    bench::targets_head(w);
    let _ = writeln!(
        w,
        "| cluster: every node sends a key to the same instance, also after a join and a leave | {disputed} keys in dispute | {} |",
        verdict(disputed == 0)
    );
    let _ = writeln!(
        w,
        "| cluster: keys moved when a node joins ≤ {TARGET_MOVEMENT_RATIO}× ideal | worst {join_worst:.3}× | {} |",
        verdict(join_worst <= TARGET_MOVEMENT_RATIO)
    );
    let _ = writeln!(
        w,
        "| cluster: keys moved when a node leaves ≤ {TARGET_MOVEMENT_RATIO}× its keys | worst {leave_worst:.3}× | {} |",
        verdict(leave_worst <= TARGET_MOVEMENT_RATIO)
    );
    let _ = writeln!(
        w,
        "\nMaglev is not perfectly minimal: {cross} keys over all trials moved between instances \
         that stayed ({:.3} % of the keys per change), the table being refilled from the hosts' \
         permutations; no Envoy load balancer keeps that at zero while keeping active health \
         checks.",
        100.0 * cross as f64 / (2 * trials.len() * opts.keys) as f64
    );
    md
}

/// A change's cell of the trials table: keys moved, × ideal, moved between instances that
/// stayed.
fn change(c: &Change, ratio: f64) -> String {
    format!("{}, {ratio:.3}×, {}", c.moved, c.cross)
}
