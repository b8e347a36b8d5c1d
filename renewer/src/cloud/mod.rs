//! What runs in Google Cloud (a Cloud Run job or function): the renewal pass and what it
//! needs. Depends on `shared`, never on `node`.
//!
//! * [`run`]: one renewal pass over the configured certificates (the job, `renewer run`).
//! * [`serve`] on [`function`]: the same pass behind an HTTP trigger (`renewer serve`).
//! * [`acme`]: the ACME account and order flow (RFC 8555) over `instant-acme`.
//! * [`policy`]: pure decisions — renew now, and why; [`backoff`]: how long a failure holds
//!   back the next order.
//! * [`lock`]: the renewal lease in the store; [`state`]: the last attempts;
//!   [`inflight`]: orders in flight; [`housekeeping`]: what interrupted runs left behind.
//! * [`status`]: the `renewer status` table.

pub mod acme;
pub mod backoff;
pub mod dns01;
pub mod function;
pub mod housekeeping;
pub mod inflight;
pub mod issuer;
pub mod lock;
pub mod policy;
pub mod run;
pub mod serve;
pub mod state;
pub mod status;
