//! What runs on an app node, next to Envoy. Two small agents, each writing files Envoy
//! watches and swapping them atomically, so Envoy never restarts and never reads half a file:
//!
//! * [`sync`] (`renewer sync`): the certificate, as SDS files (`sds.yaml`, `current/`);
//!   with `--watch`, `ready` tells the health checks whether this node can take users.
//! * [`members`], [`eds`], [`compute`], `agent` (`renewer members`): the cluster's
//!   membership, as an EDS file: every healthy node's application, the same list on every
//!   node, so Envoy's Maglev maps a key to the same instance whichever node a client reached.
//!
//! Two processes rather than one, so a slow Compute Engine call never delays a certificate
//! and each restarts alone (deploy/node/startup.sh runs them as two units).

pub(crate) mod agent;
pub mod compute;
pub mod eds;
pub mod members;
pub(crate) mod ready;
pub mod sync;
