//! The control side: who the primary is, and what happens when that changes.
//!
//! ```text
//!   sources::{static, consul, dns} ──Observation──▶ control_loop ──publish──▶ primary (watch)
//!                                                       │  selection: candidates → one primary
//!                                                       │  fence: writable? (own task)
//!                                                       └─ failover: policy for the old epoch
//! ```
//!
//! - [`sources`]: each source runs as a task and sends what it observes;
//! - [`selection`]: candidates → one primary (sticky, split-brain aware);
//! - [`writable`]: the one read-only check, shared by fencing and `check`;
//! - [`fence`]: with `verify_writable`, a read-only server is never adopted;
//! - [`primary`]: the published value the data side reads;
//! - [`failover`]: what happens to the connections of a replaced primary, and the timeline;
//! - [`pool`]: a replica route's published pool and how a new connection picks a member;
//! - [`replicas`]: the control loop's branch for `role = replica` (observation → pool);
//! - [`control_loop`]: the loop that ties them together;
//! - [`supervisor`]: restarts a discovery task that ended, so discovery is never blind.

pub(crate) mod control_loop;
pub(crate) mod failover;
pub(crate) mod fence;
pub(crate) mod pool;
pub(crate) mod primary;
pub(crate) mod replicas;
pub(crate) mod selection;
pub mod sources;
pub(crate) mod supervisor;
pub(crate) mod writable;
