//! PROXY protocol v2 toward a real MariaDB: with `--proxy-protocol v2` and
//! `proxy_protocol_networks` admitting the proxy, the server sees the application's address —
//! `USER()`, the processlist and a grant restricted to that address — not the proxy's. The
//! client runs from another loopback address (127.0.0.7) with the `mysql` CLI's
//! `--bind-address`.

mod support;

use std::net::SocketAddr;

use mysql_async::prelude::Queryable;
use tokio::net::{TcpListener, TcpSocket};

use support::mariadb::MariaDb;
use support::proxy::Proxy;

/// The application's own address; the proxy connects to the server from 127.0.0.1.
const CLIENT_IP: &str = "127.0.0.7";

/// A forwarder on 127.0.0.1 whose connections reach `proxy` from `client_ip`: what an
/// application on that address looks like to the proxy (the MariaDB client cannot bind).
async fn from_address(client_ip: &str, proxy: SocketAddr) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let source: SocketAddr = format!("{client_ip}:0").parse().unwrap();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            tokio::spawn(async move {
                let socket = TcpSocket::new_v4().unwrap();
                socket.bind(source).unwrap();
                let mut outbound = socket.connect(proxy).await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            });
        }
    });
    addr
}

/// Runs `sql` as `user` (password = user) from `client_ip` through `proxy`; the first column
/// of the first row as text.
async fn query_from(
    client_ip: &str,
    proxy: SocketAddr,
    user: &str,
    sql: &str,
) -> Result<String, String> {
    let via = from_address(client_ip, proxy).await;
    let opts = mysql_async::OptsBuilder::default()
        .ip_or_hostname(via.ip().to_string())
        .tcp_port(via.port())
        .user(Some(user))
        .pass(Some(user))
        .prefer_socket(false);
    let mut conn = mysql_async::Conn::new(opts)
        .await
        .map_err(|e| e.to_string())?;
    let value: Option<String> = conn.query_first(sql).await.map_err(|e| e.to_string())?;
    let _ = conn.disconnect().await;
    Ok(value.unwrap_or_default())
}

async fn server_admitting_the_proxy() -> MariaDb {
    let db = MariaDb::start("127.0.0.1".parse().unwrap()).await;
    // The proxy connects from 127.0.0.1; the application is 127.0.0.7.
    db.admin_exec("SET GLOBAL proxy_protocol_networks = '127.0.0.1'")
        .await;
    db.admin_exec(&format!(
        "CREATE USER 'only7'@'{CLIENT_IP}' IDENTIFIED BY 'only7'"
    ))
    .await;
    db.admin_exec(&format!("GRANT SELECT ON *.* TO 'only7'@'{CLIENT_IP}'"))
        .await;
    db
}

#[tokio::test]
async fn the_server_sees_the_clients_address_with_proxy_protocol_v2() {
    let db = server_admitting_the_proxy().await;
    let proxy = Proxy::start(&[
        "--backend",
        &db.addr().to_string(),
        "--proxy-protocol",
        "v2",
    ]);
    let user = query_from(CLIENT_IP, proxy.addr(), "app", "SELECT USER()")
        .await
        .unwrap();
    assert_eq!(
        user,
        format!("app@{CLIENT_IP}"),
        "USER() names the application"
    );
    // The processlist shows the application's address for the relayed session.
    let hosts = query_from(
        CLIENT_IP,
        proxy.addr(),
        "app",
        "SELECT HOST FROM information_schema.PROCESSLIST WHERE ID = CONNECTION_ID()",
    )
    .await
    .unwrap();
    assert!(hosts.starts_with(&format!("{CLIENT_IP}:")), "{hosts}");
    // A grant restricted to the application's address works through the proxy …
    assert_eq!(
        query_from(CLIENT_IP, proxy.addr(), "only7", "SELECT 7")
            .await
            .unwrap(),
        "7"
    );
    // … and not for anyone else behind the same proxy.
    let err = query_from("127.0.0.1", proxy.addr(), "only7", "SELECT 7")
        .await
        .unwrap_err();
    assert!(
        err.contains("Access denied for user 'only7'@'127.0.0.1'"),
        "{err}"
    );
}

#[tokio::test]
async fn without_proxy_protocol_the_server_sees_the_proxy() {
    let db = server_admitting_the_proxy().await;
    let proxy = Proxy::start(&["--backend", &db.addr().to_string()]);
    let user = query_from(CLIENT_IP, proxy.addr(), "app", "SELECT USER()")
        .await
        .unwrap();
    assert_eq!(user, "app@127.0.0.1", "the proxy's address");
    let err = query_from(CLIENT_IP, proxy.addr(), "only7", "SELECT 7")
        .await
        .unwrap_err();
    assert!(err.contains("Access denied"), "{err}");
}
