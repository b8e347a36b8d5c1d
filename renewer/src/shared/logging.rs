//! Logs on stderr: readable lines on a terminal; one JSON object per line otherwise, with the
//! fields Cloud Logging understands (`severity`, `message`, `time`), so that a Cloud Run job's
//! logs are filterable by severity and by certificate without parsing text.
//!
//! `RENEWER_LOG` sets the filter (`info` by default; e.g. `debug`, `renewer=debug,warn`),
//! `RENEWER_LOG_FORMAT` forces `json` or `text`.

use std::io::{IsTerminal, Write};

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

/// Pick the format: `RENEWER_LOG_FORMAT`, else text on a terminal and JSON otherwise.
pub fn detect_format() -> Format {
    match std::env::var("RENEWER_LOG_FORMAT").ok().as_deref() {
        Some("json") => Format::Json,
        Some("text") => Format::Text,
        _ if std::io::stderr().is_terminal() => Format::Text,
        _ => Format::Json,
    }
}

/// Install the global subscriber. Calling it twice is harmless (the second call is ignored).
pub fn init(format: Format) {
    let filter = EnvFilter::try_from_env("RENEWER_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,hyper=warn,reqwest=warn,rustls=warn,h2=warn"));
    // The Google client crates trace whole requests and responses at debug level, secret
    // payloads (private keys) included: keep them at warn whatever RENEWER_LOG says.
    let filter = [
        "google_cloud_secretmanager_v1",
        "google_cloud_storage",
        "google_cloud_gax",
        "google_cloud_gax_internal",
        "google_cloud_auth",
    ]
    .iter()
    .filter_map(|c| format!("{c}=warn").parse().ok())
    .fold(filter, |f, d| f.add_directive(d));
    let registry = tracing_subscriber::registry().with(filter);
    let _ = match format {
        Format::Text => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_target(false),
            )
            .try_init(),
        Format::Json => registry.with(CloudLoggingLayer).try_init(),
    };
}

/// Formats events as Cloud Logging structured JSON.
struct CloudLoggingLayer;

/// Fields recorded on a span, kept in its extensions so events inside it carry them.
struct SpanFields(Map<String, Value>);

#[derive(Default)]
struct JsonVisitor(Map<String, Value>);

impl Visit for JsonVisitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0
            .insert(field.name().into(), Value::String(value.into()));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0
            .insert(field.name().into(), Value::String(format!("{value:?}")));
    }
}

impl<S> Layer<S> for CloudLoggingLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        ctx: Context<'_, S>,
    ) {
        let mut visitor = JsonVisitor::default();
        attrs.record(&mut visitor);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(SpanFields(visitor.0));
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut fields = Map::new();
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope.from_root() {
                if let Some(f) = span.extensions().get::<SpanFields>() {
                    fields.extend(f.0.clone());
                }
            }
        }
        let mut visitor = JsonVisitor::default();
        event.record(&mut visitor);
        fields.extend(visitor.0);
        let message = fields
            .remove("message")
            .unwrap_or(Value::String(String::new()));
        let severity = match *event.metadata().level() {
            tracing::Level::ERROR => "ERROR",
            tracing::Level::WARN => "WARNING",
            tracing::Level::INFO => "INFO",
            tracing::Level::DEBUG | tracing::Level::TRACE => "DEBUG",
        };
        let mut line = Map::new();
        line.insert("severity".into(), severity.into());
        line.insert("message".into(), message);
        line.insert(
            "time".into(),
            crate::shared::clock::rfc3339(time::OffsetDateTime::now_utc()).into(),
        );
        line.insert("target".into(), event.metadata().target().into());
        for (k, v) in fields {
            line.entry(k).or_insert(v);
        }
        if let Ok(mut text) = serde_json::to_vec(&Value::Object(line)) {
            text.push(b'\n');
            let _ = std::io::stderr().lock().write_all(&text);
        }
    }
}
