//! Shared helpers for the integration tests: real MariaDB pairs (`mariadb`), the Consul API
//! double or a real agent (`consul`), and the proxy binary under test (`proxy`).
#![allow(dead_code)]

pub mod backends;
pub mod consul;
pub mod fastpath;
pub mod mariadb;
pub mod netns;
pub mod proxy;
pub mod workload;
