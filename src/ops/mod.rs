//! Operations: what an operator and an orchestrator see and set.
//!
//! - [`admin`]: the HTTP endpoint (`/healthz`, `/readyz`, `/status`, `/metrics`);
//! - [`status`]: what discovery last saw, for `/status`;
//! - [`metrics`]: counters and gauges every side updates;
//! - [`telemetry`]: logs (text or JSON) with a reloadable filter;
//! - [`limits`]: the open-files limit against `max_connections`.

pub(crate) mod admin;
pub mod limits;
pub(crate) mod metrics;
pub(crate) mod status;
pub mod telemetry;
