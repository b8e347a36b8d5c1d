//! `renewer members`: keep the EDS file current, with metrics.
//!
//! Each refresh asks the source, applies [`members::next`] and writes the
//! file only when the list changed. A failing source or one that answers no member leaves the
//! file alone (the last known list), says so in a warning, and sets the `stale` metric until
//! a good answer comes back.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use super::eds;
use super::members::{self, KeepReason, Member, MemberSource, Next};
use crate::shared::config::MembersConfig;
use crate::shared::metrics::{self, family, single};

/// What the agent reports (the metrics).
#[derive(Debug, Clone, Default)]
pub struct AgentState {
    /// The list Envoy has (`None` before anything was written).
    pub current: Option<Vec<Member>>,
    /// Whether the last refresh kept the last known list instead of a fresh answer.
    pub stale: bool,
    /// Refreshes whose source failed.
    pub source_errors: u64,
    /// Refreshes whose source answered no usable member.
    pub empty_answers: u64,
    /// New lists written.
    pub updates: u64,
    /// When the source last gave a usable answer.
    pub last_success: Option<OffsetDateTime>,
}

/// What one refresh did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refreshed {
    /// A new list was written.
    Written(Vec<Member>),
    /// The source agrees with the file.
    Unchanged,
    /// The last known list was kept.
    Kept(KeepReason),
}

/// The membership agent of one node.
pub struct Agent {
    source: Box<dyn MemberSource>,
    config: MembersConfig,
    state: Arc<Mutex<AgentState>>,
}

impl Agent {
    /// An agent for `config`, starting from the list in the EDS file, if there is one.
    pub fn new(source: Box<dyn MemberSource>, config: MembersConfig) -> Agent {
        let current = eds::read(&config.dir);
        Agent {
            source,
            config,
            state: Arc::new(Mutex::new(AgentState {
                current,
                ..AgentState::default()
            })),
        }
    }

    /// A copy of the state.
    pub fn state(&self) -> AgentState {
        self.state.lock().map(|s| s.clone()).unwrap_or_default()
    }

    fn update(&self, f: impl FnOnce(&mut AgentState)) {
        if let Ok(mut state) = self.state.lock() {
            f(&mut state);
        }
    }

    /// One refresh: ask the source, then write, keep or leave the file.
    pub async fn refresh(&self) -> std::io::Result<Refreshed> {
        let current = self.state().current;
        let fetched = self.source.instances().await;
        let (fetched, excluded) = match fetched {
            Ok(instances) => {
                let (list, excluded) = members::select(&instances);
                (Ok(list), excluded)
            }
            Err(e) => (Err(e), Vec::new()),
        };
        let excluded_text: Vec<String> = excluded
            .iter()
            .map(|(name, why)| format!("{name} ({why})"))
            .collect();
        match members::next(current.as_deref(), fetched) {
            Next::Write(list) => {
                let text = eds::render(&self.config.cluster, self.config.port, &list);
                eds::install(&self.config.dir, &text)?;
                let before = current.unwrap_or_default();
                let (joined, left) = members::diff(&before, &list);
                let names = |ms: Vec<&Member>| {
                    ms.iter()
                        .map(|m| format!("{} {}", m.name, m.address))
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                tracing::info!(
                    members = list.len(),
                    joined = names(joined),
                    left = names(left),
                    excluded = excluded_text.join(", "),
                    file = %eds::path(&self.config.dir).display(),
                    "membership changed; Envoy reloads the endpoints"
                );
                self.update(|s| {
                    s.current = Some(list.clone());
                    s.stale = false;
                    s.updates += 1;
                    s.last_success = Some(OffsetDateTime::now_utc());
                });
                Ok(Refreshed::Written(list))
            }
            Next::Unchanged => {
                tracing::debug!(
                    members = current.map_or(0, |c| c.len()),
                    "membership unchanged"
                );
                self.update(|s| {
                    s.stale = false;
                    s.last_success = Some(OffsetDateTime::now_utc());
                });
                Ok(Refreshed::Unchanged)
            }
            Next::Keep(reason) => {
                let kept = current.as_ref().map_or(0, Vec::len);
                match &reason {
                    KeepReason::SourceFailed(e) => tracing::warn!(
                        source = self.source.describe(),
                        error = e.as_str(),
                        kept_members = kept,
                        "the membership source failed; keeping the last known list"
                    ),
                    KeepReason::NoMembers => tracing::warn!(
                        source = self.source.describe(),
                        excluded = excluded_text.join(", "),
                        kept_members = kept,
                        "the membership source answered no usable member; keeping the last known list"
                    ),
                }
                self.update(|s| {
                    s.stale = true;
                    match reason {
                        KeepReason::SourceFailed(_) => s.source_errors += 1,
                        KeepReason::NoMembers => s.empty_answers += 1,
                    }
                });
                Ok(Refreshed::Kept(reason))
            }
        }
    }

    /// Before Envoy's first start: make sure the file exists. A fresh list when the source
    /// answers; otherwise the one already there, or an empty one (Envoy starts, the app
    /// routes answer 503 until the first good refresh of `--watch`).
    pub async fn init(&self) -> std::io::Result<Refreshed> {
        let refreshed = self.refresh().await?;
        if self.state().current.is_none() {
            eds::install(
                &self.config.dir,
                &eds::render(&self.config.cluster, self.config.port, &[]),
            )?;
            tracing::warn!(
                file = %eds::path(&self.config.dir).display(),
                "no membership yet: wrote an empty list so Envoy can start; --watch fills it"
            );
            self.update(|s| s.current = Some(Vec::new()));
        }
        Ok(refreshed)
    }

    /// Refresh every `interval` until `stop`; serve metrics meanwhile if configured.
    pub async fn watch(
        self: Arc<Self>,
        interval: Duration,
        stop: CancellationToken,
    ) -> std::io::Result<()> {
        if !self.config.metrics_address.is_empty() {
            let listener = tokio::net::TcpListener::bind(&self.config.metrics_address).await?;
            tracing::info!(address = %self.config.metrics_address, "members metrics at /metrics");
            let agent = self.clone();
            let router = Router::new().route(
                "/metrics",
                get(move || {
                    let agent = agent.clone();
                    async move { metrics::response(agent.metrics()) }
                }),
            );
            let stopped = stop.clone();
            tokio::spawn(async move {
                let _ = axum::serve(listener, router)
                    .with_graceful_shutdown(async move { stopped.cancelled().await })
                    .await;
            });
        }
        tracing::info!(
            source = self.source.describe(),
            file = %eds::path(&self.config.dir).display(),
            interval_seconds = interval.as_secs(),
            "renewer members watching"
        );
        loop {
            if let Err(e) = self.refresh().await {
                tracing::error!(error = %e, "cannot write the membership file; retrying at the next refresh");
            }
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = stop.cancelled() => return Ok(()),
            }
        }
    }

    /// Prometheus text of the agent's state.
    pub fn metrics(&self) -> String {
        let s = self.state();
        let mut out = String::new();
        single(
            &mut out,
            "acme_edge_members",
            "gauge",
            "Members in the list Envoy routes over.",
            s.current.as_ref().map_or(0, Vec::len),
        );
        single(
            &mut out,
            "acme_edge_members_stale",
            "gauge",
            "1 while the last known list is kept because the source failed or answered no member.",
            u8::from(s.stale),
        );
        family(
            &mut out,
            "acme_edge_members_source_failures_total",
            "counter",
            "Refreshes that kept the last known list, by reason.",
        );
        out.push_str(&format!(
            "acme_edge_members_source_failures_total{{reason=\"error\"}} {}\n\
             acme_edge_members_source_failures_total{{reason=\"empty\"}} {}\n",
            s.source_errors, s.empty_answers
        ));
        single(
            &mut out,
            "acme_edge_members_updates_total",
            "counter",
            "New lists written for Envoy.",
            s.updates,
        );
        single(
            &mut out,
            "acme_edge_members_last_success_timestamp_seconds",
            "gauge",
            "When the source last gave a usable answer (0: never).",
            s.last_success.map_or(0, |t| t.unix_timestamp()),
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::members::Instance;

    /// A source whose answers the test sets.
    struct Scripted(Mutex<Vec<Result<Vec<Instance>, String>>>);

    #[async_trait::async_trait]
    impl MemberSource for Scripted {
        async fn instances(&self) -> Result<Vec<Instance>, String> {
            let mut answers = self.0.lock().unwrap();
            if answers.len() > 1 {
                answers.remove(0)
            } else {
                answers[0].clone()
            }
        }
        fn describe(&self) -> String {
            "scripted".into()
        }
    }

    fn config(dir: &std::path::Path) -> MembersConfig {
        MembersConfig {
            project: "my-project".into(),
            region: "europe-west1".into(),
            group: "nodes".into(),
            port: 8080,
            dir: dir.to_path_buf(),
            cluster: "app".into(),
            interval_seconds: 10,
            metrics_address: String::new(),
            endpoint: None,
        }
    }

    #[tokio::test]
    async fn a_failing_or_empty_source_never_empties_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let two = vec![
            Instance::healthy("a", "10.0.0.1"),
            Instance::healthy("b", "10.0.0.2"),
        ];
        let source = Scripted(Mutex::new(vec![
            Ok(two.clone()),
            Err("503 Service Unavailable".into()),
            Ok(vec![]),
            Ok(vec![Instance::healthy("a", "10.0.0.1")]),
        ]));
        let agent = Agent::new(Box::new(source), config(dir.path()));
        assert!(matches!(agent.refresh().await.unwrap(), Refreshed::Written(l) if l.len() == 2));
        let written = std::fs::read_to_string(eds::path(dir.path())).unwrap();

        assert!(matches!(
            agent.refresh().await.unwrap(),
            Refreshed::Kept(KeepReason::SourceFailed(_))
        ));
        assert_eq!(
            std::fs::read_to_string(eds::path(dir.path())).unwrap(),
            written
        );
        assert!(agent.state().stale);
        assert!(agent
            .metrics()
            .contains("acme_edge_members_source_failures_total{reason=\"error\"} 1"));

        assert_eq!(
            agent.refresh().await.unwrap(),
            Refreshed::Kept(KeepReason::NoMembers)
        );
        assert_eq!(
            std::fs::read_to_string(eds::path(dir.path())).unwrap(),
            written
        );
        assert!(agent.metrics().contains("acme_edge_members_stale 1"));
        assert!(agent.metrics().contains("acme_edge_members 2\n"));

        // A good answer ends the stale state.
        assert!(matches!(agent.refresh().await.unwrap(), Refreshed::Written(l) if l.len() == 1));
        assert!(agent.metrics().contains("acme_edge_members_stale 0"));
        assert_eq!(eds::read(dir.path()).unwrap().len(), 1);
        // A restarted agent starts from the file.
        let again = Agent::new(
            Box::new(Scripted(Mutex::new(vec![Err("down".into())]))),
            config(dir.path()),
        );
        assert_eq!(again.state().current.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn init_writes_an_empty_list_only_when_there_is_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let down = || Box::new(Scripted(Mutex::new(vec![Err("down".into())])));
        let agent = Agent::new(down(), config(dir.path()));
        agent.init().await.unwrap();
        assert_eq!(eds::read(dir.path()), Some(vec![]));
        // With a list already there, init keeps it when the source is down.
        let up = Agent::new(
            Box::new(Scripted(Mutex::new(vec![Ok(vec![Instance::healthy(
                "a", "10.0.0.1",
            )])]))),
            config(dir.path()),
        );
        up.init().await.unwrap();
        let again = Agent::new(down(), config(dir.path()));
        again.init().await.unwrap();
        assert_eq!(eds::read(dir.path()).unwrap().len(), 1);
    }
}
