//! `on_failover = idle` on real MariaDB: connections to a replaced primary are closed at their
//! first idle moment — never during a statement, a reply or a transaction — and TLS or
//! compressed sessions (which the proxy cannot read) by timing only.
//!
//! Each test runs two stand-alone MariaDB servers A and B behind a Consul KV leader key (the
//! cheapest failover: one KV write), a proxy with `--on-failover idle --drain-grace 20s`, and
//! moves the key from A to B while a client is in the middle of something on A. The long
//! grace makes a close at the deadline impossible within the test: every close seen is the
//! detector's.

mod support;

use std::process::Stdio;
use std::time::{Duration, Instant};

use mysql_async::prelude::*;
use mysql_async::{Conn, Row};
use support::consul::TestConsul;
use support::mariadb::{MariaDb, app_opts};
use support::proxy::{Proxy, ProxyArgs, parse_field};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

const T: Duration = Duration::from_secs(30);
const KEY: &str = "service/mysql/leader";
const CLOSED_IDLE: &str = "consul_mysql_proxy_connections_closed_idle_total";

struct Rig {
    consul: TestConsul,
    a: MariaDb,
    b: MariaDb,
    proxy: Proxy,
}

async fn rig_with(a: MariaDb, extra: &[&str]) -> Rig {
    let lo = "127.0.0.1".parse().unwrap();
    let (consul, b) = tokio::join!(TestConsul::start(), MariaDb::start(lo));
    assert!(consul.kv_put(KEY, &a.addr().to_string()).await);
    let proxy = ProxyArgs::consul_kv(consul.http_url(), KEY)
        .with(&["--on-failover", "idle", "--drain-grace", "20s"])
        .with(extra)
        .start();
    proxy.wait_for_log("primary changed", T).await;
    Rig {
        consul,
        a,
        b,
        proxy,
    }
}

async fn rig(extra: &[&str]) -> Rig {
    rig_with(MariaDb::start("127.0.0.1".parse().unwrap()).await, extra).await
}

/// [`rig`] with a table `app.t (id INT PRIMARY KEY)` on A.
async fn rig_with_table(extra: &[&str]) -> Rig {
    let rig = rig(extra).await;
    rig.a
        .admin_exec("CREATE TABLE app.t (id INT PRIMARY KEY)")
        .await;
    rig
}

impl Rig {
    async fn conn(&self) -> Conn {
        Conn::new(app_opts(self.proxy.addr())).await.unwrap()
    }

    /// Moves the leader key to B; returns once the proxy published B.
    async fn switch_to_b(&self) -> Instant {
        let mark = self.proxy.log.len();
        assert!(self.consul.kv_put(KEY, &self.b.addr().to_string()).await);
        self.proxy
            .wait_for_log_from(mark, "primary changed", T)
            .await;
        Instant::now()
    }

    /// Waits until `n` connections have been closed at an idle moment; returns when.
    async fn closed_idle(&self, n: f64) -> Instant {
        self.proxy.wait_for_metric(CLOSED_IDLE, n, T).await;
        Instant::now()
    }

    async fn closed_idle_now(&self) -> f64 {
        self.proxy.metric(CLOSED_IDLE).await.unwrap_or(0.0)
    }

    /// The "idle drain finished" line: (left idle, closed at the deadline).
    async fn drain_finished(&self) -> (usize, usize) {
        let line = self.proxy.wait_for_log("idle drain finished", T).await;
        (
            parse_field(&line, "left_idle=").expect("left_idle"),
            parse_field(&line, "closed_at_deadline=").expect("closed_at_deadline"),
        )
    }
}

/// The connection is gone: the next command fails.
async fn assert_closed(conn: &mut Conn, what: &str) {
    let r = tokio::time::timeout(T, conn.ping())
        .await
        .expect("ping answered");
    assert!(r.is_err(), "{what}: the connection is still open");
}

#[tokio::test]
async fn a_long_statement_finishes_then_the_connection_closes() {
    let rig = rig(&[]).await;
    let mut conn = rig.conn().await;
    let running = tokio::spawn(async move {
        let r: Option<i64> = conn.query_first("SELECT SLEEP(1.5)").await.unwrap();
        (r, Instant::now(), conn)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let switched = rig.switch_to_b().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        rig.closed_idle_now().await,
        0.0,
        "closed during the statement"
    );
    let (r, answered, mut conn) = running.await.unwrap();
    assert_eq!(r, Some(0), "SLEEP ran to its end (not interrupted)");
    let closed = rig.closed_idle(1.0).await;
    assert!(answered > switched);
    assert_closed(&mut conn, "after SLEEP").await;
    assert_eq!(rig.drain_finished().await, (1, 0));
    eprintln!(
        "SELECT SLEEP(1.5): answered {:?} after the switch, closed {:?} after the answer",
        answered - switched,
        closed.saturating_duration_since(answered)
    );
    // New connections reach B.
    let port: Option<u16> = rig.conn().await.query_first("SELECT @@port").await.unwrap();
    assert_eq!(port, Some(rig.b.port()));
}

#[tokio::test]
async fn a_transaction_is_never_cut() {
    let rig = rig_with_table(&[]).await;
    let mut conn = rig.conn().await;
    conn.query_drop("BEGIN").await.unwrap();
    conn.query_drop("INSERT INTO t VALUES (1)").await.unwrap();
    rig.switch_to_b().await;
    // Inside the transaction for longer than the quiet time: still open, still usable.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    conn.query_drop("INSERT INTO t VALUES (2)").await.unwrap();
    conn.ping().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let n: Option<i64> = conn.query_first("SELECT COUNT(*) FROM t").await.unwrap();
    assert_eq!(n, Some(2));
    assert_eq!(
        rig.closed_idle_now().await,
        0.0,
        "closed inside the transaction"
    );
    conn.query_drop("COMMIT").await.unwrap();
    let committed = Instant::now();
    let closed = rig.closed_idle(1.0).await;
    assert_closed(&mut conn, "after COMMIT").await;
    let rows: Vec<i64> = rig
        .a
        .admin_conn()
        .await
        .unwrap()
        .query("SELECT id FROM app.t ORDER BY id")
        .await
        .unwrap();
    assert_eq!(rows, vec![1, 2], "the whole transaction committed on A");
    eprintln!(
        "transaction: closed {:?} after COMMIT",
        closed.saturating_duration_since(committed)
    );
}

/// What is not idle by `drain_grace` is closed then: here a transaction left open.
#[tokio::test]
async fn what_never_gets_idle_is_closed_at_drain_grace() {
    let rig = rig_with_table(&["--drain-grace", "1s"]).await;
    let mut conn = rig.conn().await;
    conn.query_drop("BEGIN").await.unwrap();
    conn.query_drop("INSERT INTO t VALUES (1)").await.unwrap();
    let switched = rig.switch_to_b().await;
    assert_eq!(rig.drain_finished().await, (0, 1));
    let after = switched.elapsed();
    assert!(
        (Duration::from_millis(900)..Duration::from_secs(5)).contains(&after),
        "closed {after:?} after the switch, drain_grace 1s"
    );
    assert_closed(&mut conn, "at the deadline").await;
    let n: i64 = rig.a.admin_query_one("SELECT COUNT(*) FROM app.t").await;
    assert_eq!(n, 0, "the open transaction was rolled back, not committed");
}

/// A 30 MB result set read slowly across the switch arrives whole; the close comes after it.
async fn large_result_set(relay: &str) {
    let rig = rig(&["--relay", relay]).await;
    let mut conn = rig.conn().await;
    const ROWS: usize = 30_000;
    let mut result = conn
        .query_iter(format!(
            "SELECT seq, REPEAT('x', 1000) FROM seq_1_to_{ROWS}"
        ))
        .await
        .unwrap();
    let mut got = 0usize;
    let mut switched = None;
    while let Some(row) = result.next().await.unwrap() {
        let row: Row = row;
        let (seq, text): (usize, String) = mysql_async::from_row(row);
        got += 1;
        assert_eq!((seq, text.len()), (got, 1000));
        if got == 100 {
            switched = Some(rig.switch_to_b().await);
        }
        if got < 600 {
            // Slow reader: the reply spans longer than the quiet time.
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
    }
    drop(result);
    let done = Instant::now();
    assert_eq!(got, ROWS, "every row arrived");
    assert!(done - switched.unwrap() > Duration::from_millis(1000));
    rig.closed_idle(1.0).await;
    assert_closed(&mut conn, "after the result set").await;
    assert_eq!(rig.drain_finished().await, (1, 0));
}

#[tokio::test]
async fn a_large_result_set_is_never_cut_pump() {
    large_result_set("pump").await;
}

#[tokio::test]
async fn a_large_result_set_is_never_cut_copy() {
    large_result_set("copy").await;
}

#[tokio::test]
async fn prepared_statements_execute_before_the_close() {
    let rig = rig(&[]).await;
    let mut conn = rig.conn().await;
    let stmt = conn.prep("SELECT ? + 1, SLEEP(?)").await.unwrap();
    let r: Option<(i64, i64)> = conn.exec_first(&stmt, (1, 0)).await.unwrap();
    assert_eq!(r, Some((2, 0)));
    // An execute in flight when the drain starts completes.
    let running = tokio::spawn(async move {
        let r: Option<(i64, i64)> = conn.exec_first(&stmt, (41, 1)).await.unwrap();
        (r, conn)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    rig.switch_to_b().await;
    let (r, mut conn) = running.await.unwrap();
    assert_eq!(r, Some((42, 0)));
    rig.closed_idle(1.0).await;
    assert_closed(&mut conn, "after the execute").await;

    // A prepare right before the drain is a prelude: its execute follows and is not cut off.
    let rig = rig_with(rig.b, &[]).await;
    let mut conn = rig.conn().await;
    let stmt = conn.prep("SELECT ? * 2").await.unwrap();
    rig.switch_to_b().await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let r: Option<i64> = conn.exec_first(&stmt, (21,)).await.unwrap();
    assert_eq!(r, Some(42));
    rig.closed_idle(1.0).await;
    assert_closed(&mut conn, "after the execute that followed the prepare").await;
}

/// A pool's checkout: `COM_PING`, then at once the statement. The drain never lands between
/// the two, so the statement never fails; the ping of the next checkout does.
#[tokio::test]
async fn a_ping_is_followed_by_its_statement() {
    let rig = rig_with_table(&[]).await;
    let mut conns = Vec::new();
    for _ in 0..8 {
        conns.push(rig.conn().await);
    }
    // Each writer runs until its connection is closed (bounded by the timeout below).
    let tasks: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(w, mut conn)| {
            tokio::spawn(async move {
                let mut done = 0u32;
                // Ends only when a ping (the pool's checkout) finds the connection closed.
                while conn.ping().await.is_ok() {
                    let id = w as u32 * 1_000_000 + done;
                    conn.exec_drop("INSERT INTO t VALUES (?)", (id,))
                        .await
                        .unwrap_or_else(|e| panic!("writer {w}: a statement failed: {e}"));
                    done += 1;
                }
                done
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    rig.switch_to_b().await;
    rig.closed_idle(8.0).await;
    for t in tasks {
        let done = tokio::time::timeout(T, t).await.unwrap().unwrap();
        assert!(done > 0);
    }
    assert_eq!(rig.drain_finished().await, (8, 0));
}

/// Clients that run big queries back to back: whatever was in flight at the switch arrives
/// whole, and the query that fails is the next one, before any of its rows.
#[tokio::test]
async fn never_closed_in_the_middle_of_a_reply() {
    let rig = rig(&[]).await;
    // Each client runs until its connection is closed (bounded by the timeout below).
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let mut conn = rig.conn().await;
        tasks.push(tokio::spawn(async move {
            let mut complete = 0u32;
            loop {
                let mut result = match conn
                    .query_iter("SELECT seq, REPEAT('y', 500) FROM seq_1_to_2000")
                    .await
                {
                    Ok(r) => r,
                    Err(e) => return (complete, (0usize, e.to_string())),
                };
                let mut rows = 0usize;
                loop {
                    match result.next().await {
                        Ok(Some(_)) => rows += 1,
                        Ok(None) => break,
                        Err(e) => return (complete, (rows, e.to_string())),
                    }
                }
                assert_eq!(rows, 2000, "a reply ended early without an error");
                complete += 1;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    rig.switch_to_b().await;
    rig.closed_idle(8.0).await;
    for t in tasks {
        let (complete, (rows, error)) = tokio::time::timeout(T, t).await.unwrap().unwrap();
        assert!(complete > 0);
        assert_eq!(rows, 0, "closed after {rows} rows of a reply: {error}");
    }
}

/// Runs the `mysql` CLI through the proxy, reading statements from a pipe.
struct Cli {
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
}

impl Cli {
    fn start(proxy: &Proxy, extra: &[&str]) -> Cli {
        let mut child = tokio::process::Command::new("mysql")
            .args(["-h", "127.0.0.1", "-P", &proxy.addr().port().to_string()])
            .args(["-u", "app", "-papp", "-N", "-B", "--unbuffered"])
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("run the mysql client (apt-get install mariadb-client)");
        let stdin = child.stdin.take().unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        Cli {
            child,
            stdin,
            lines,
        }
    }

    async fn run(&mut self, sql: &str) -> String {
        self.stdin
            .write_all(format!("{sql};\n").as_bytes())
            .await
            .unwrap();
        tokio::time::timeout(T, self.lines.next_line())
            .await
            .expect("answer in time")
            .unwrap()
            .unwrap_or_default()
    }
}

/// TLS and compression hide the protocol: the session is closed once both directions have
/// been quiet after the server spoke — not while a statement runs.
async fn opaque_session(tls: bool) {
    let a = MariaDb::start("127.0.0.1".parse().unwrap()).await;
    let ca = if tls {
        Some(a.enable_tls().await)
    } else {
        None
    };
    let rig = rig_with(a, &[]).await;
    let ca_path = ca.as_ref().map(|p| p.display().to_string());
    let extra: Vec<&str> = match &ca_path {
        Some(ca) => vec!["--ssl", "--ssl-ca", ca, "--ssl-verify-server-cert"],
        None => vec!["--compress"],
    };
    let mut cli = Cli::start(&rig.proxy, &extra);
    let probe = if tls {
        "SELECT VARIABLE_VALUE FROM information_schema.SESSION_STATUS WHERE VARIABLE_NAME = 'Ssl_cipher'"
    } else {
        "SELECT VARIABLE_VALUE FROM information_schema.SESSION_STATUS WHERE VARIABLE_NAME = 'Compression'"
    };
    let answer = cli.run(probe).await;
    assert!(
        if tls {
            !answer.is_empty()
        } else {
            answer == "ON"
        },
        "session is {}: {answer:?}",
        if tls { "TLS" } else { "compressed" }
    );
    // A statement that runs across the switch: the client spoke last, so it is not idle.
    cli.stdin.write_all(b"SELECT SLEEP(1.2);\n").await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mark = rig.proxy.log.len();
    let switched = rig.switch_to_b().await;
    let slept = tokio::time::timeout(T, cli.lines.next_line())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        slept.as_deref(),
        Some("0"),
        "SLEEP finished through the proxy"
    );
    let answered = Instant::now();
    let closed = rig.closed_idle(1.0).await;
    let line = rig
        .proxy
        .wait_for_log_from(mark, "at=\"idle moment\"", T)
        .await;
    assert!(line.contains("protocol=\"opaque\""), "{line}");
    assert_eq!(rig.drain_finished().await, (1, 0));
    let quiet = closed.saturating_duration_since(answered);
    eprintln!(
        "{}: SLEEP answered {:?} after the switch; closed {quiet:?} after the answer (quiet rule: 1 s)",
        if tls { "TLS" } else { "compressed" },
        answered - switched
    );
    assert!(
        quiet < Duration::from_secs(3),
        "closed by the quiet rule, not the deadline"
    );
    drop(cli.stdin);
    let _ = cli.child.wait().await;
}

#[tokio::test]
async fn tls_sessions_are_closed_by_timing_only() {
    opaque_session(true).await;
}

#[tokio::test]
async fn compressed_sessions_are_closed_by_timing_only() {
    opaque_session(false).await;
}
