//! The `consul-double` binary: new flags (unix socket, streaming switch, ACL rule tokens)
//! and the start-up line.

use std::time::Duration;

use tokio::io::AsyncBufReadExt;

use crate::common::*;

#[tokio::test]
async fn binary_flags_and_startup_line() {
    let sock = std::env::temp_dir().join(format!(
        "consul-double-cli-{}-{}.sock",
        std::process::id(),
        fastrand::u64(..)
    ));
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_consul-double"))
        .args(["--http", "127.0.0.1:0", "--dns", "127.0.0.1:0"])
        .arg("--http-unix")
        .arg(format!("unix://{}", sock.display()))
        .args(["--use-streaming-backend", "false"])
        .args(["--acl-token", "root"])
        .args(["--acl-rules-token", "svc=service::read"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn consul-double");
    let stdout = child.stdout.take().unwrap();
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let line = tokio::time::timeout(LIMIT, lines.next_line())
        .await
        .expect("start-up line in time")
        .unwrap()
        .expect("a line");
    assert!(line.starts_with("consul-double http=127.0.0.1:"), "{line}");
    assert!(
        line.ends_with(&format!(" unix=unix://{}", sock.display())),
        "{line}"
    );
    let http: std::net::SocketAddr = line
        .split(' ')
        .find_map(|w| w.strip_prefix("http="))
        .unwrap()
        .parse()
        .unwrap();
    // The rules token may read services but no node: filtered, with the header.
    let r = request(
        http,
        "GET",
        "/v1/health/service/consul",
        b"",
        &[("X-Consul-Token", "svc")],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("X-Consul-Results-Filtered-By-ACLs"), Some("true"));
    // --use-streaming-backend false: blocking health queries stay on the RPC backend.
    let r = request(
        http,
        "GET",
        "/v1/health/service/consul?index=1&wait=50ms",
        b"",
        &[("X-Consul-Token", "root")],
    )
    .await;
    assert_eq!(r.header("X-Consul-Query-Backend"), Some("blocking-query"));
    // The unix socket answers too.
    let s = tokio::net::UnixStream::connect(&sock).await.unwrap();
    let r = request_on(s, "localhost", "GET", "/v1/status/leader", b"", &[])
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    child.start_kill().unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
    let _ = std::fs::remove_file(&sock);
}
