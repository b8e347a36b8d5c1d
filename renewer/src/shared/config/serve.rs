//! `[serve]`: the HTTP function (`renewer serve`).

use serde::{Deserialize, Serialize};

use super::FieldError;

/// `[serve]`: the HTTP runtime's limits and shutdown budgets.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ServeConfig {
    /// Largest request body accepted, bytes (1 to 16 MiB); larger requests get 413.
    /// Default: 65536.
    pub max_body_bytes: usize,
    /// After SIGTERM, seconds a running renewal pass may still take before it is cancelled
    /// (its order abandoned, challenge answers removed, lease released), counted from the
    /// signal; less than `shutdown_timeout_seconds`. Default: 5.
    pub pass_grace_seconds: u64,
    /// After SIGTERM, seconds until the process exits whatever still runs (1 to 3600), counted
    /// from the signal. Cloud Run kills the instance 10 s after SIGTERM, hence the default, 9.
    pub shutdown_timeout_seconds: u64,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            max_body_bytes: 64 * 1024,
            pass_grace_seconds: 5,
            shutdown_timeout_seconds: 9,
        }
    }
}

impl ServeConfig {
    pub(super) fn validate(&self) -> Result<(), FieldError> {
        if self.max_body_bytes == 0 || self.max_body_bytes > 16 * 1024 * 1024 {
            return Err(FieldError::new(
                "serve.max_body_bytes",
                "must be 1 to 16777216",
            ));
        }
        if self.shutdown_timeout_seconds == 0 || self.shutdown_timeout_seconds > 3600 {
            return Err(FieldError::new(
                "serve.shutdown_timeout_seconds",
                "must be 1 to 3600",
            ));
        }
        if self.pass_grace_seconds >= self.shutdown_timeout_seconds {
            return Err(FieldError::new(
                "serve.pass_grace_seconds",
                format!(
                    "must be less than serve.shutdown_timeout_seconds ({}), to leave time to clean up",
                    self.shutdown_timeout_seconds
                ),
            ));
        }
        Ok(())
    }
}
