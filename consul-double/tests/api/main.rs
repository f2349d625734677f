//! Behaviour tests of the Consul double against Consul's behaviour (each test names the
//! Consul source file it checks; see CONFORMANCE.md). Every wait is bounded; waits for state changes ride on
//! blocking queries rather than sleeps.

mod common;

mod acl;
mod blocking;
mod checks;
mod cli;
mod dns;
mod events;
mod faults;
mod filter;
mod health;
mod kv;
mod listeners;
mod query;
mod wait;
