//! Operations: what an operator and an orchestrator see and set.
//!
//! - [`admin`]: the HTTP endpoint (`/`, `/healthz`, `/readyz`, `/status`, `/metrics`), on the
//!   admin address and, read-only, on `metrics_listen`;
//! - [`status`]: what discovery last saw, for `/status`, with [`instances`]: the last answer's
//!   instances and why each is or is not the primary;
//! - [`history`]: the last failovers' timelines;
//! - [`fast_path`]: the kernel fast path's section of `/status` (active or not, and why);
//! - [`report`]: the `/status` document, typed, for its two views: [`page`] (the HTML status
//!   page) and `consul-mysql-proxy status`;
//! - [`metrics`]: counters and gauges every side updates;
//! - [`telemetry`]: logs (text or JSON) with a reloadable filter;
//! - [`limits`]: the open-files limit against `max_connections`.

pub(crate) mod admin;
pub(crate) mod fast_path;
pub(crate) mod history;
pub(crate) mod instances;
pub mod limits;
pub(crate) mod metrics;
pub(crate) mod page;
pub(crate) mod report;
pub(crate) mod status;
pub mod telemetry;
