//! The proxy in front of a real MariaDB: queries reach the backend (mysql_async and the `mysql`
//! CLI), compression passes through, a 50 MB blob round-trips intact, and the CLI shows the
//! proxy's ERR packet.

mod support;

use std::process::Command;

use mysql_async::prelude::*;
use support::backends::closed_port;
use support::mariadb::{MariaDb, app_opts, port_via};
use support::proxy::Proxy;

fn mysql_cli(port: u16, extra: &[&str], sql: &str) -> std::process::Output {
    Command::new("mysql")
        .args([
            "-h",
            "127.0.0.1",
            "-P",
            &port.to_string(),
            "-u",
            "app",
            "-papp",
            "-N",
            "-B",
        ])
        .args(extra)
        .args(["-e", sql])
        .output()
        .expect("run the mysql client (apt-get install mariadb-client)")
}

#[tokio::test]
async fn queries_reach_the_backend_through_the_proxy() {
    let db = MariaDb::start("127.0.0.1".parse().unwrap()).await;
    let proxy = Proxy::start(&["--backend", &db.addr().to_string()]);
    assert_ne!(proxy.addr().port(), db.port());
    assert_eq!(port_via(proxy.addr()).await, db.port());

    let out = mysql_cli(proxy.addr().port(), &[], "SELECT @@port");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        db.port().to_string()
    );

    // The compressed protocol is negotiated end to end; the proxy only moves bytes.
    let out = mysql_cli(
        proxy.addr().port(),
        &["--compress"],
        "SELECT VARIABLE_VALUE FROM information_schema.SESSION_STATUS WHERE VARIABLE_NAME = 'COMPRESSION'",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ON");
}

#[tokio::test]
async fn a_50mb_blob_round_trips_intact() {
    let db = MariaDb::start("127.0.0.1".parse().unwrap()).await;
    db.admin_exec("SET GLOBAL max_allowed_packet = 128 * 1024 * 1024")
        .await;
    let proxy = Proxy::start(&["--backend", &db.addr().to_string()]);
    let opts = app_opts(proxy.addr()).max_allowed_packet(Some(128 * 1024 * 1024));
    let mut conn = mysql_async::Conn::new(opts).await.unwrap();
    conn.query_drop("CREATE TABLE blobs (id INT PRIMARY KEY, body LONGBLOB)")
        .await
        .unwrap();
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let blob: Vec<u8> = (0..50 * 1024 * 1024)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        })
        .collect();
    conn.exec_drop("INSERT INTO blobs VALUES (1, ?)", (blob.clone(),))
        .await
        .unwrap();
    let back: Option<Vec<u8>> = conn
        .query_first("SELECT body FROM blobs WHERE id = 1")
        .await
        .unwrap();
    let back = back.expect("row exists");
    assert_eq!(back.len(), blob.len());
    assert!(back == blob, "blob differs after the round trip");
    conn.disconnect().await.unwrap();
}

#[test]
fn mysql_cli_shows_the_proxy_error_message() {
    let proxy = Proxy::start(&[
        "--backend",
        &closed_port().to_string(),
        "--hold-timeout",
        "1s",
    ]);
    let out = mysql_cli(proxy.addr().port(), &[], "SELECT 1");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    // libmariadb prefixes pre-TLS errors with a warning but shows our code and message.
    assert!(err.contains("1105 - consul-mysql-proxy"), "{err}");
    assert!(
        err.contains("consul-mysql-proxy: primary 127.0.0.1:"),
        "{err}"
    );
    assert!(err.contains("unreachable after 1s"), "{err}");
}

/// TLS passes through: the `mysql` client negotiates TLS with MariaDB *through* the proxy and
/// verifies the server's certificate (CA made here with rcgen, SAN 127.0.0.1 — the proxy's
/// address too, since the proxy is invisible to TLS).
#[tokio::test]
async fn tls_sessions_pass_through_with_certificate_verification() {
    let db = MariaDb::start("127.0.0.1".parse().unwrap()).await;
    let ca_path = db.enable_tls().await;
    let proxy = Proxy::start(&["--backend", &db.addr().to_string()]);
    let out = mysql_cli(
        proxy.addr().port(),
        &[
            "--ssl",
            "--ssl-ca",
            ca_path.to_str().unwrap(),
            "--ssl-verify-server-cert",
        ],
        "SELECT VARIABLE_VALUE FROM information_schema.SESSION_STATUS WHERE VARIABLE_NAME = 'Ssl_cipher'",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cipher = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(
        !cipher.is_empty(),
        "the session through the proxy is encrypted"
    );
    eprintln!("TLS through the proxy: cipher {cipher}");
}
