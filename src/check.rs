//! `consul-mysql-proxy check` (being written): the Consul script check for a MySQL node.

/// Flags of `consul-mysql-proxy check`.
#[derive(Debug, Clone, clap::Args)]
pub struct CheckArgs {}

/// Runs the check; returns Consul's script-check exit code (0 passing, 1 warning, 2 critical).
pub async fn run(args: CheckArgs) -> u8 {
    let _ = args;
    println!("not implemented yet");
    2
}
