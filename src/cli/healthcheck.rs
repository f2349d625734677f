//! `consul-mysql-proxy healthcheck`: the container HEALTHCHECK. Asks the running proxy's admin
//! endpoint `GET /readyz` over plain HTTP/1.0 (so the image needs no curl) and exits 0 when it
//! answers 200, 1 otherwise, printing the answer's first line.

use super::http::Endpoint;

/// Flags of `consul-mysql-proxy healthcheck`.
#[derive(Debug, Clone, clap::Args)]
pub struct HealthcheckArgs {
    #[command(flatten)]
    pub endpoint: Endpoint,
}

/// Returns the exit code: 0 ready, 1 not ready or unreachable.
pub fn run(args: &HealthcheckArgs) -> u8 {
    match ask(args) {
        Ok((200, line)) => {
            println!("{line}");
            0
        }
        Ok((status, line)) => {
            println!("HTTP {status}: {line}");
            1
        }
        Err(e) => {
            println!("cannot ask {}: {e}", args.endpoint.admin);
            1
        }
    }
}

fn ask(args: &HealthcheckArgs) -> std::io::Result<(u16, String)> {
    let answer = args.endpoint.get("/readyz", 64 * 1024)?;
    let first_line = answer.body.trim().lines().next().unwrap_or("").to_owned();
    Ok((answer.status, first_line))
}
