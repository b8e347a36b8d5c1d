//! Cluster membership, decided without I/O: which instances of the managed instance group may
//! be handed keys, and what to do when the source fails or answers nothing.
//!
//! A member must be RUNNING, with no action pending in the group (not being created, deleted,
//! recreated, stopped…), and HEALTHY by the group's health check when it has one. So a node
//! that is booting, failing its checks or being removed gets no new keys; its open WebSockets
//! are left alone (Envoy does not close connections to removed hosts).
//!
//! Every node sorts the list the same way, so all of them hand Envoy identical input and
//! Maglev builds the same table everywhere.

use std::net::IpAddr;

/// One instance of the group, as the membership source reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    /// Instance name (`acme-edge-nodes-x1z2`).
    pub name: String,
    /// `RUNNING`, `STAGING`, `STOPPING`, … (Compute Engine's instance status).
    pub status: String,
    /// The group's current action on it: `NONE`, `CREATING`, `DELETING`, `VERIFYING`, …
    pub action: String,
    /// The group's health-check verdict (`HEALTHY`, `UNHEALTHY`, `DRAINING`, `TIMEOUT`,
    /// `UNKNOWN`), or `None` when the group has no health check.
    pub health: Option<String>,
    /// Internal address, when known.
    pub address: Option<IpAddr>,
}

/// A node whose application takes keys.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Member {
    /// Its internal address (first: the sort key every node uses).
    pub address: IpAddr,
    /// Its instance name (Envoy shows it as the endpoint's hostname).
    pub name: String,
}

/// Why an instance is not a member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Excluded {
    /// Not RUNNING.
    Status(String),
    /// The group is acting on it (creating, deleting, …).
    Action(String),
    /// Its health check does not say HEALTHY.
    Health(String),
    /// No internal address is known for it.
    NoAddress,
}

impl std::fmt::Display for Excluded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Status(s) => write!(f, "status {s}"),
            Self::Action(a) => write!(f, "the group is {a} it"),
            Self::Health(h) => write!(f, "health {h}"),
            Self::NoAddress => write!(f, "no internal address"),
        }
    }
}

/// Where the group's instances come from (Compute Engine on Google Cloud; a fake in tests).
#[async_trait::async_trait]
pub trait MemberSource: Send + Sync {
    /// Every instance of the group, as the source sees it now.
    async fn instances(&self) -> Result<Vec<Instance>, String>;
    /// What the source is, for logs.
    fn describe(&self) -> String;
}

/// Split the group's instances into members (sorted) and the excluded ones with the reason.
pub fn select(instances: &[Instance]) -> (Vec<Member>, Vec<(String, Excluded)>) {
    let mut members = Vec::new();
    let mut excluded = Vec::new();
    for i in instances {
        let why = if i.status != "RUNNING" {
            Some(Excluded::Status(i.status.clone()))
        } else if i.action != "NONE" {
            Some(Excluded::Action(i.action.clone()))
        } else if let Some(h) = i.health.as_deref().filter(|h| *h != "HEALTHY") {
            Some(Excluded::Health(h.to_owned()))
        } else if i.address.is_none() {
            Some(Excluded::NoAddress)
        } else {
            None
        };
        match (why, i.address) {
            (None, Some(address)) => members.push(Member {
                address,
                name: i.name.clone(),
            }),
            (Some(why), _) => excluded.push((i.name.clone(), why)),
            (None, None) => excluded.push((i.name.clone(), Excluded::NoAddress)),
        }
    }
    members.sort();
    members.dedup_by(|a, b| a.address == b.address);
    (members, excluded)
}

/// What to do with the list Envoy routes over after a refresh.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// A new list: write it.
    Write(Vec<Member>),
    /// The source agrees with what Envoy has.
    Unchanged,
    /// Keep the last known list: a source that fails or answers nothing must never empty
    /// the cluster (every key would then fail, on every node at once).
    Keep(KeepReason),
}

/// Why the last known list was kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeepReason {
    /// The source could not be read.
    SourceFailed(String),
    /// The source answered, but no instance qualified.
    NoMembers,
}

impl KeepReason {
    /// Short label for logs and the metric.
    pub fn label(&self) -> &'static str {
        match self {
            Self::SourceFailed(_) => "error",
            Self::NoMembers => "empty",
        }
    }
}

/// Decide, from the list Envoy has (`None`: nothing written yet) and what the source said.
pub fn next(current: Option<&[Member]>, fetched: Result<Vec<Member>, String>) -> Next {
    match fetched {
        Err(e) => Next::Keep(KeepReason::SourceFailed(e)),
        Ok(list) if list.is_empty() => Next::Keep(KeepReason::NoMembers),
        Ok(list) if current == Some(list.as_slice()) => Next::Unchanged,
        Ok(list) => Next::Write(list),
    }
}

/// How the list changed: (joined, left).
pub fn diff<'a>(before: &'a [Member], after: &'a [Member]) -> (Vec<&'a Member>, Vec<&'a Member>) {
    let joined = after.iter().filter(|m| !before.contains(m)).collect();
    let left = before.iter().filter(|m| !after.contains(m)).collect();
    (joined, left)
}

#[cfg(test)]
impl Instance {
    /// An instance that is a member in every respect: running, no action pending, healthy,
    /// at `ip` (for the unit tests).
    pub(crate) fn healthy(name: &str, ip: &str) -> Instance {
        Instance {
            name: name.into(),
            status: "RUNNING".into(),
            action: "NONE".into(),
            health: Some("HEALTHY".into()),
            address: ip.parse().ok(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_running_idle_healthy_instances_with_an_address_are_members() {
        let mut booting = Instance::healthy("c", "10.0.0.3");
        booting.action = "CREATING".into();
        let mut draining = Instance::healthy("d", "10.0.0.4");
        draining.health = Some("DRAINING".into());
        let mut stopping = Instance::healthy("e", "10.0.0.5");
        stopping.status = "STOPPING".into();
        let mut deleting = Instance::healthy("f", "10.0.0.6");
        deleting.action = "DELETING".into();
        let mut unchecked = Instance::healthy("g", "10.0.0.7");
        unchecked.health = None; // a group without a health check
        let no_ip = Instance::healthy("h", "not an address");
        let (members, excluded) = select(&[
            Instance::healthy("b", "10.0.0.2"),
            Instance::healthy("a", "10.0.0.10"),
            booting,
            draining,
            stopping,
            deleting,
            unchecked,
            no_ip,
        ]);
        let names: Vec<&str> = members.iter().map(|m| m.name.as_str()).collect();
        // Sorted by address (10.0.0.2 < 10.0.0.7 < 10.0.0.10 as addresses, not strings).
        assert_eq!(names, ["b", "g", "a"]);
        let reasons: Vec<String> = excluded
            .iter()
            .map(|(n, why)| format!("{n}: {why}"))
            .collect();
        assert_eq!(
            reasons,
            [
                "c: the group is CREATING it",
                "d: health DRAINING",
                "e: status STOPPING",
                "f: the group is DELETING it",
                "h: no internal address"
            ]
        );
    }

    #[test]
    fn every_order_of_the_same_instances_gives_the_same_list() {
        let all = [
            Instance::healthy("a", "10.0.0.3"),
            Instance::healthy("b", "10.0.0.1"),
            Instance::healthy("c", "10.0.0.2"),
        ];
        let mut reversed = all.clone();
        reversed.reverse();
        assert_eq!(select(&all).0, select(&reversed).0);
    }

    #[test]
    fn failures_and_empty_answers_keep_the_last_known_list() {
        let list = select(&[Instance::healthy("a", "10.0.0.1")]).0;
        assert_eq!(
            next(Some(&list), Err("503".into())),
            Next::Keep(KeepReason::SourceFailed("503".into()))
        );
        assert_eq!(
            next(Some(&list), Ok(vec![])),
            Next::Keep(KeepReason::NoMembers)
        );
        assert_eq!(next(None, Ok(vec![])), Next::Keep(KeepReason::NoMembers));
        assert_eq!(next(Some(&list), Ok(list.clone())), Next::Unchanged);
        assert_eq!(next(None, Ok(list.clone())), Next::Write(list.clone()));
        let more = select(&[
            Instance::healthy("a", "10.0.0.1"),
            Instance::healthy("b", "10.0.0.2"),
        ])
        .0;
        assert_eq!(
            next(Some(&list), Ok(more.clone())),
            Next::Write(more.clone())
        );
        let (joined, left) = diff(&list, &more);
        assert_eq!((joined.len(), left.len()), (1, 0));
        assert_eq!(joined[0].name, "b");
    }
}
