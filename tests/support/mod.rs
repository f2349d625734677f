//! Shared helpers for the integration tests (and `examples/demo.rs`), one module per concern.
#![allow(dead_code)]

/// Scripted TCP backends (echo, silent) for byte-level tests.
pub mod backends;
/// The Consul API double or a real agent, and a small client for both.
pub mod consul;
/// Per-test cgroups, witness servers and `/proc/net/tcp` for the kernel fast path.
pub mod fastpath;
/// Real MariaDB servers and primary/replica pairs, client options and probes.
pub mod mariadb;
/// A network namespace as a second host behind a link that can be cut or degraded.
pub mod netns;
/// Test certificate authorities and certificates (rcgen) for Consul's TLS settings.
pub mod pki;
/// `/proc` facts about a process: open descriptors, resident memory.
pub mod process;
/// The proxy binary under test, its captured log and its command line.
pub mod proxy;
/// The ERR packet a refused client gets from the proxy.
pub mod refusal;
/// A primary with several GTID replicas, each registered in Consul by role.
pub mod replica_set;
/// The demos' timeline printer.
pub mod timeline;
/// A write workload through the proxy, what it saw, and outage gaps.
pub mod workload;
