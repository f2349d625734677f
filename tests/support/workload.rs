//! A write workload through the proxy: N writers, each inserting `(writer, seq)` rows into
//! `app.writes` on its own connection, reconnecting after errors. Every acknowledged insert is
//! recorded with its time, so a test can check where the rows landed and measure the outage.
//! Bounded: each writer stops at `stop()`, after `MAX_RUN`, or after `MAX_ROWS` inserts.
//!
//! Two client [`Style`]s: a naive client that reuses its connection blindly, and a pool that
//! validates a connection before each use (`COM_PING`, as HikariCP's `isValid` or Go's
//! `database/sql` with a driver's liveness check do) and silently replaces it when the check
//! fails. Every error says [`During`] what it happened.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mysql_async::prelude::*;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::consul::TestConsul;
use super::mariadb::{MariaDbPair, app_opts};

const MAX_RUN: Duration = Duration::from_secs(90);
const MAX_ROWS: u64 = 200_000;

/// SQL creating the table the writers use (run it on the primary before starting).
pub const CREATE_TABLE: &str = "CREATE TABLE IF NOT EXISTS app.writes (writer INT NOT NULL, seq BIGINT NOT NULL, PRIMARY KEY (writer, seq))";

/// How a client error looked to the application.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The connection broke (closed by the proxy on failover, or the server died).
    ConnectionLost,
    /// The server said it is read-only (1290) — a demoted primary.
    ReadOnly,
    /// The proxy refused the client with its ERR packet (1105 / 1040).
    ProxyRefused,
    /// A retried insert was already there (1062): the first attempt committed but its
    /// acknowledgement was lost with the connection — the classic ambiguous commit.
    AlreadyApplied,
    /// Anything else.
    Other,
}

/// What the application was doing when it saw an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum During {
    /// Opening a connection.
    Connect,
    /// The pool's validation ping (the pool replaces the connection; the application sees
    /// nothing).
    Validate,
    /// A statement (the INSERT): the application sees this error.
    Statement,
}

/// How a writer treats its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Style {
    /// Reuses its connection blindly; reconnects after an error.
    Naive,
    /// Pings before each statement; a failed ping means: drop it, reconnect, ping again.
    Validating,
}

#[derive(Debug, Clone)]
pub struct ClientError {
    pub at: Instant,
    /// The write the writer was making (writer, seq): it retries the same one until it is
    /// acknowledged, so several errors can belong to one write.
    pub write: (u32, u64),
    pub kind: ErrorKind,
    pub during: During,
    pub message: String,
}

/// What the writers saw.
#[derive(Debug, Default)]
pub struct Report {
    /// (writer, seq, acknowledged at)
    pub acked: Vec<(u32, u64, Instant)>,
    pub errors: Vec<ClientError>,
}

impl Report {
    pub fn count(&self, kind: ErrorKind) -> usize {
        self.errors.iter().filter(|e| e.kind == kind).count()
    }

    /// The writes that failed at least once (each is retried until acknowledged): what the
    /// application had to retry, however often its own retry pace made it try.
    pub fn failed_writes(&self) -> usize {
        let writes: std::collections::HashSet<(u32, u64)> =
            self.errors.iter().map(|e| e.write).collect();
        writes.len()
    }

    /// Errors seen while doing `during`.
    pub fn during(&self, during: During) -> impl Iterator<Item = &ClientError> {
        self.errors.iter().filter(move |e| e.during == during)
    }

    /// Statement errors of `kind`.
    pub fn statement_errors(&self, kind: ErrorKind) -> usize {
        self.during(During::Statement)
            .filter(|e| e.kind == kind)
            .count()
    }

    /// The longest time without any acknowledged insert after `from` (the write outage).
    pub fn longest_gap_after(&self, from: Instant) -> Duration {
        let acked = self.acked.iter().map(|a| a.2).filter(|t| *t >= from);
        longest_gap(std::iter::once(from).chain(acked))
    }

    /// The longest time without any acknowledged insert in `[from, to)`, counted from `from`.
    pub fn longest_gap_between(&self, from: Instant, to: Instant) -> Duration {
        let acked = self
            .acked
            .iter()
            .map(|a| a.2)
            .filter(|t| *t >= from && *t < to);
        longest_gap(std::iter::once(from).chain(acked))
    }

    /// The messages of the errors no other [`ErrorKind`] explains.
    pub fn other_errors(&self) -> Vec<String> {
        self.errors
            .iter()
            .filter(|e| e.kind == ErrorKind::Other)
            .map(|e| e.message.clone())
            .collect()
    }

    /// Acknowledged inserts that `rows` (a server's table) does not have.
    pub fn missing_from(&self, rows: &std::collections::HashSet<(u32, u64)>) -> usize {
        self.acked
            .iter()
            .filter(|(w, s, _)| !rows.contains(&(*w, *s)))
            .count()
    }

    /// Whether every insert acknowledged after `t` is in `rows`.
    pub fn all_after_in(&self, t: Instant, rows: &std::collections::HashSet<(u32, u64)>) -> bool {
        self.acked
            .iter()
            .filter(|a| a.2 > t)
            .all(|(w, s, _)| rows.contains(&(*w, *s)))
    }

    pub fn acked_after(&self, t: Instant) -> usize {
        self.acked.iter().filter(|a| a.2 > t).count()
    }

    pub fn summary(&self) -> String {
        format!(
            "{} acked, errors: {} connection lost, {} read-only, {} proxy refused, {} ambiguous commits, {} other",
            self.acked.len(),
            self.count(ErrorKind::ConnectionLost),
            self.count(ErrorKind::ReadOnly),
            self.count(ErrorKind::ProxyRefused),
            self.count(ErrorKind::AlreadyApplied),
            self.count(ErrorKind::Other)
        )
    }
}

/// Running writers.
pub struct Writers {
    stop: CancellationToken,
    tasks: Vec<JoinHandle<Report>>,
}

impl Writers {
    /// Starts `n` naive writers against `addr` (the proxy).
    pub fn start(addr: SocketAddr, n: u32) -> Writers {
        Self::start_styled(addr, n, Style::Naive)
    }

    /// Starts `n` writers of `style` against `addr`.
    pub fn start_styled(addr: SocketAddr, n: u32, style: Style) -> Writers {
        let stop = CancellationToken::new();
        let tasks = (0..n)
            .map(|writer| tokio::spawn(write_loop(addr, writer, style, stop.clone())))
            .collect();
        Writers { stop, tasks }
    }

    /// Stops the writers and merges what they saw.
    pub async fn stop(self) -> Report {
        self.stop.cancel();
        let mut report = Report::default();
        for task in self.tasks {
            let r = task.await.expect("writer task");
            report.acked.extend(r.acked);
            report.errors.extend(r.errors);
        }
        report
    }
}

fn classify(e: &mysql_async::Error) -> ErrorKind {
    match e {
        mysql_async::Error::Server(s) if s.code == 1290 => ErrorKind::ReadOnly,
        mysql_async::Error::Server(s) if s.code == 1062 => ErrorKind::AlreadyApplied,
        mysql_async::Error::Server(s)
            if (s.code == 1105 || s.code == 1040) && s.message.contains("consul-mysql-proxy") =>
        {
            ErrorKind::ProxyRefused
        }
        mysql_async::Error::Io(_) | mysql_async::Error::Driver(_) => ErrorKind::ConnectionLost,
        _ => ErrorKind::Other,
    }
}

async fn write_loop(
    addr: SocketAddr,
    writer: u32,
    style: Style,
    stop: CancellationToken,
) -> Report {
    let mut report = Report::default();
    let started = Instant::now();
    let mut seq = 0u64;
    let mut conn: Option<mysql_async::Conn> = None;
    while !stop.is_cancelled() && started.elapsed() < MAX_RUN && seq < MAX_ROWS {
        let c = match conn.as_mut() {
            Some(c) => c,
            None => {
                let opts = app_opts(addr).wait_timeout(Some(60));
                let attempt = tokio::select! {
                    c = mysql_async::Conn::new(opts) => c,
                    () = stop.cancelled() => break,
                };
                match attempt {
                    Ok(c) => conn.insert(c),
                    Err(e) => {
                        report.errors.push(ClientError {
                            at: Instant::now(),
                            write: (writer, seq + 1),
                            kind: classify(&e),
                            during: During::Connect,
                            message: e.to_string(),
                        });
                        // An application's reconnect pause; bounded by the loop condition.
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                }
            }
        };
        if style == Style::Validating {
            let checked = tokio::select! {
                r = c.ping() => r,
                () = stop.cancelled() => break,
            };
            if let Err(e) = checked {
                // The pool's business: replace the connection at once, nothing to report upward.
                report.errors.push(ClientError {
                    at: Instant::now(),
                    write: (writer, seq + 1),
                    kind: classify(&e),
                    during: During::Validate,
                    message: e.to_string(),
                });
                conn = None;
                continue;
            }
        }
        let next = seq + 1;
        let result = tokio::select! {
            r = c.exec_drop("INSERT INTO app.writes (writer, seq) VALUES (?, ?)", (writer, next)) => r,
            () = stop.cancelled() => break,
        };
        match result {
            Ok(()) => {
                seq = next;
                report.acked.push((writer, seq, Instant::now()));
            }
            Err(e) => {
                let kind = classify(&e);
                report.errors.push(ClientError {
                    at: Instant::now(),
                    write: (writer, seq + 1),
                    kind,
                    during: During::Statement,
                    message: e.to_string(),
                });
                // A duplicate means the previous attempt was applied but its ack was lost: the
                // write is there, so move on at once on the same connection (no retry pause).
                if kind == ErrorKind::AlreadyApplied {
                    seq = next;
                    continue;
                }
                conn = None;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    report
}

/// The gaps between consecutive instants of `times`, in time order (acknowledged writes, requests
/// a server saw, ...).
pub fn gaps(times: impl IntoIterator<Item = Instant>) -> Vec<Duration> {
    let mut times: Vec<Instant> = times.into_iter().collect();
    times.sort();
    times.windows(2).map(|w| w[1] - w[0]).collect()
}

/// The longest of [`gaps`]; zero for fewer than two instants.
pub fn longest_gap(times: impl IntoIterator<Item = Instant>) -> Duration {
    gaps(times).into_iter().max().unwrap_or_default()
}

/// All `(writer, seq)` rows in `app.writes` on a server (queried directly, not via the proxy).
pub async fn rows_on(addr: SocketAddr) -> std::collections::HashSet<(u32, u64)> {
    let mut conn = mysql_async::Conn::new(app_opts(addr))
        .await
        .expect("connect to read rows");
    let rows: Vec<(u32, u64)> = conn
        .query("SELECT writer, seq FROM app.writes")
        .await
        .expect("read rows");
    let _ = conn.disconnect().await;
    rows.into_iter().collect()
}

/// The writers' usual stage: a primary + replica pair with [`CREATE_TABLE`] replicated, and the
/// Consul double with the pair registered (`mysql-a` passing, `mysql-b` critical).
pub async fn pair_in_consul() -> (MariaDbPair, TestConsul) {
    let pair = MariaDbPair::start().await;
    pair.primary.admin_exec(CREATE_TABLE).await;
    pair.wait_replicated().await;
    let consul = TestConsul::start().await;
    consul
        .register_pair(pair.primary.addr(), pair.replica.addr())
        .await;
    (pair, consul)
}
