//! Real MariaDB servers for the integration tests (owned by the test-bed helper).
//!
//! * [`MariaDb`]: one running `mariadbd` (run as the `mysql` user, own dir with datadir, tmpdir,
//!   socket, `my.cnf` and `error.log`), bound to one loopback IP (127.0.0.1 by default; any
//!   127.x.y.z works) on a free port. Killed (SIGKILL) and deleted on drop, also when a test panics.
//! * [`MariaDbPair`]: a primary and a GTID replica (`read_only=ON`) with `promote`, `switchover`
//!   and `repoint_old_primary_as_replica`. **These swap the roles in the struct**: `pair.primary`
//!   is always the current primary and `pair.replica` the other node (after `promote`, the old
//!   primary, which is then dead, stopped or a stand-alone server, and not replicating).
//! * [`app_opts`], [`admin_opts`], [`port_via`]: client options and the "which server answers
//!   through this address" probe. Every option set uses `prefer_socket(false)`.
//! * Network namespaces (failure tests): [`MariaDb::start_in_netns`] and
//!   [`MariaDbPair::start_with_netns`] run `mariadbd` under `ip netns exec <ns>`, bound to an
//!   address inside that namespace (see `support::netns`); everything else works the same, the
//!   test process reaching the server at that address from the root namespace.
//!
//! Users on every instance (baked into the template datadir, so both nodes have them and a
//! promoted replica too): `app`/`app` with ALL on database `app`, and `admin`/`admin` with ALL
//! PRIVILEGES WITH GRANT OPTION on `'%'` (also the replication user). No anonymous users;
//! `root@localhost` is unix-socket auth only. The fixture keeps its own probe table in database
//! `testbed`.
//!
//! Speed: `mariadb-install-db` runs once per target dir into
//! `$CARGO_TARGET_TMPDIR/mariadb-template-v1` (built in a temp dir, then renamed into place, so
//! concurrent test processes are safe); every instance is a `cp -a` of it. Bump the `v1` if the
//! bootstrap SQL or the InnoDB sizes change.
//!
//! ```ignore
//! let mut pair = MariaDbPair::start().await;
//! let mut c = mysql_async::Conn::new(app_opts(pair.primary.addr())).await?;
//! pair.promote(StopHow::Kill9).await; // pair.primary is now the old replica
//! ```

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use mysql_async::prelude::{FromRow, Queryable};
use mysql_async::{Conn, OptsBuilder, Row};

const TEMPLATE_NAME: &str = "mariadb-template-v1";
/// Deadline for a server to accept connections, for replication to start, for catch-up waits.
const DEADLINE: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(50);
const INNODB_OPTS: [&str; 2] = ["--innodb-buffer-pool-size=32M", "--innodb-log-file-size=8M"];

/// Run once on the template datadir (mariadbd --bootstrap), so every instance has the same users.
const BOOTSTRAP_SQL: &str = "
FLUSH PRIVILEGES;
DELETE FROM mysql.global_priv WHERE User = '';
DELETE FROM mysql.proxies_priv WHERE Host NOT IN ('localhost', '%');
FLUSH PRIVILEGES;
CREATE DATABASE app;
CREATE USER 'app'@'%' IDENTIFIED BY 'app';
GRANT ALL ON app.* TO 'app'@'%';
CREATE USER 'admin'@'%' IDENTIFIED BY 'admin';
GRANT ALL PRIVILEGES ON *.* TO 'admin'@'%' WITH GRANT OPTION;
";

// ---------------------------------------------------------------------------------------------
// client helpers

/// Options for the `app` user (password `app`, database `app`) over TCP to `addr`.
pub fn app_opts(addr: SocketAddr) -> OptsBuilder {
    tcp_opts(addr, "app", "app").db_name(Some("app"))
}

/// Options for the `admin` user (password `admin`, no default database) over TCP to `addr`.
pub fn admin_opts(addr: SocketAddr) -> OptsBuilder {
    tcp_opts(addr, "admin", "admin")
}

fn tcp_opts(addr: SocketAddr, user: &str, pass: &str) -> OptsBuilder {
    OptsBuilder::default()
        .ip_or_hostname(addr.ip().to_string())
        .tcp_port(addr.port())
        .user(Some(user))
        .pass(Some(pass))
        .prefer_socket(false)
}

/// Connects as `app` through `addr` (e.g. the proxy) and returns the answering server's `@@port`.
pub async fn try_port_via(addr: SocketAddr) -> Result<u16> {
    let mut conn = Conn::new(app_opts(addr))
        .await
        .with_context(|| format!("connect as app via {addr}"))?;
    let port: Option<u16> = conn
        .query_first("SELECT @@port")
        .await
        .with_context(|| format!("SELECT @@port via {addr}"))?;
    conn.disconnect().await.ok();
    port.ok_or_else(|| anyhow!("SELECT @@port via {addr} returned no row"))
}

/// [`try_port_via`] that panics with the error.
pub async fn port_via(addr: SocketAddr) -> u16 {
    try_port_via(addr)
        .await
        .unwrap_or_else(|e| panic!("port_via({addr}): {e:#}"))
}

// ---------------------------------------------------------------------------------------------
// template datadir

static TEMPLATE: Mutex<Option<PathBuf>> = Mutex::new(None);

/// The shared template datadir for this target dir (built on first use).
fn template() -> Result<PathBuf> {
    let mut slot = TEMPLATE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(p) = slot.as_ref() {
        return Ok(p.clone());
    }
    // Integration tests get CARGO_TARGET_TMPDIR from cargo; the demo (an example) uses the
    // system temp dir.
    let parent = option_env!("CARGO_TARGET_TMPDIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let p = ensure_template_in(&parent)?;
    *slot = Some(p.clone());
    Ok(p)
}

/// Makes sure `<parent>/mariadb-template-v1` exists and returns its path. Safe to call from
/// several processes (or threads) at once: each builds in its own temp dir and the first
/// `rename` wins; losers use the winner's. Public so a test can exercise the race.
pub fn ensure_template_in(parent: &Path) -> Result<PathBuf> {
    let target = parent.join(TEMPLATE_NAME);
    if target.is_dir() {
        return Ok(target);
    }
    std::fs::create_dir_all(parent).with_context(|| format!("create {}", parent.display()))?;
    let build = tempfile::Builder::new()
        .prefix(&format!("{TEMPLATE_NAME}.build-"))
        .tempdir_in(parent)
        .context("create template build dir")?;
    let (data, tmp) = (build.path().join("data"), build.path().join("tmp"));
    for d in [&data, &tmp] {
        std::fs::create_dir(d).with_context(|| format!("mkdir {}", d.display()))?;
    }
    chown_mysql(build.path(), true)?;
    let log = build.path().join("install.log");
    let logf = || {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
    };
    let status = Command::new("mariadb-install-db")
        .arg("--no-defaults")
        .arg(format!("--datadir={}", data.display()))
        .arg(format!("--tmpdir={}", tmp.display()))
        .args([
            "--user=mysql",
            "--auth-root-authentication-method=socket",
            "--skip-test-db",
        ])
        .args(INNODB_OPTS)
        .stdin(Stdio::null())
        .stdout(logf()?)
        .stderr(logf()?)
        .status()
        .context("spawn mariadb-install-db (is mariadb-server installed?)")?;
    if !status.success() {
        bail!("mariadb-install-db failed ({status}):\n{}", tail(&log, 40));
    }
    let mut boot = Command::new("mariadbd")
        .arg("--no-defaults")
        .arg("--bootstrap")
        .arg(format!("--datadir={}", data.display()))
        .arg(format!("--tmpdir={}", tmp.display()))
        .arg(format!("--log-error={}", log.display()))
        .args(["--user=mysql", "--skip-log-bin"])
        .args(INNODB_OPTS)
        .stdin(Stdio::piped())
        .stdout(logf()?)
        .stderr(logf()?)
        .spawn()
        .context("spawn mariadbd --bootstrap")?;
    {
        use std::io::Write;
        let mut stdin = boot.stdin.take().expect("bootstrap stdin");
        stdin
            .write_all(BOOTSTRAP_SQL.as_bytes())
            .context("write bootstrap SQL")?;
    }
    let status = boot.wait().context("wait for mariadbd --bootstrap")?;
    if !status.success() {
        bail!(
            "mariadbd --bootstrap failed ({status}):\n{}",
            tail(&log, 40)
        );
    }
    match std::fs::rename(&data, &target) {
        Ok(()) => Ok(target),
        Err(_) if target.is_dir() => Ok(target), // lost the race: use the winner's
        Err(e) => Err(e).with_context(|| format!("rename template into {}", target.display())),
    }
}

// ---------------------------------------------------------------------------------------------
// one server

static NEXT_SERVER_ID: AtomicU32 = AtomicU32::new(1);

/// One running `mariadbd`. All methods take `&self`, so it can be shared (e.g. in an `Arc`).
pub struct MariaDb {
    label: String,
    ip: IpAddr,
    /// Network namespace the process runs in (`ip netns exec`); `None`: the root namespace.
    netns: Option<String>,
    port: u16,
    server_id: u32,
    dir: tempfile::TempDir,
    child: Mutex<Option<Child>>,
    stopped: AtomicBool,
    read_only_on_start: AtomicBool,
    /// Extra `[mariadbd]` lines (e.g. TLS settings), applied at the next (re)start.
    extra_config: Mutex<String>,
}

impl MariaDb {
    /// Starts a fresh stand-alone (writable) instance bound to `ip` on a free port.
    pub async fn start(ip: IpAddr) -> MariaDb {
        Self::try_start(ip, false)
            .await
            .unwrap_or_else(|e| panic!("start mariadb on {ip}: {e:#}"))
    }

    /// Starts a fresh stand-alone (writable) instance inside network namespace `netns`, bound
    /// to `ip` (an address of that namespace). The port is 3306 (the namespace is the test's
    /// own, so it is free), or the next one up if another server of the test took it.
    pub async fn start_in_netns(netns: &str, ip: IpAddr) -> MariaDb {
        Self::try_start_in(ip, false, Some(netns.to_owned()))
            .await
            .unwrap_or_else(|e| panic!("start mariadb on {ip} in netns {netns}: {e:#}"))
    }

    /// The network namespace the server runs in, if not the root one.
    pub fn netns(&self) -> Option<&str> {
        self.netns.as_deref()
    }

    async fn try_start(ip: IpAddr, read_only: bool) -> Result<MariaDb> {
        Self::try_start_in(ip, read_only, None).await
    }

    async fn try_start_in(ip: IpAddr, read_only: bool, netns: Option<String>) -> Result<MariaDb> {
        let template = tokio::task::spawn_blocking(template)
            .await
            .context("template task")??;
        let dir = tempfile::Builder::new()
            .prefix("mariadb-")
            .tempdir()
            .context("instance dir")?;
        let status = tokio::process::Command::new("cp")
            .arg("-a")
            .arg("--")
            .arg(&template)
            .arg(dir.path().join("data"))
            .status()
            .await
            .context("spawn cp -a")?;
        if !status.success() {
            bail!("cp -a {} failed: {status}", template.display());
        }
        std::fs::create_dir(dir.path().join("tmp")).context("mkdir tmp")?;
        chown_mysql(dir.path(), false)?;
        chown_mysql(&dir.path().join("tmp"), false)?;
        let server_id = NEXT_SERVER_ID.fetch_add(1, Ordering::Relaxed);
        let mut db = MariaDb {
            label: format!("mariadb#{server_id}"),
            ip,
            netns,
            port: 0,
            server_id,
            dir,
            child: Mutex::new(None),
            stopped: AtomicBool::new(false),
            read_only_on_start: AtomicBool::new(read_only),
            extra_config: Mutex::new(String::new()),
        };
        // A free port can be taken between probing and mariadbd's bind: retry with a new one.
        for attempt in 1..=5 {
            db.port = match &db.netns {
                // The address is not local here: no probe; the namespace is the test's own.
                Some(_) => 3306 + attempt - 1,
                None => free_port(ip).with_context(|| format!("find a free port on {ip}"))?,
            };
            db.label = match &db.netns {
                Some(ns) => format!("mariadb#{server_id}@{}[netns {ns}]", db.addr()),
                None => format!("mariadb#{server_id}@{}", db.addr()),
            };
            match db.spawn_and_wait().await {
                Ok(()) => return Ok(db),
                Err(e) if attempt < 5 && db.bind_failed() => {
                    eprintln!("{}: port busy, retrying ({e:#})", db.label);
                    db.kill9();
                }
                Err(e) => return Err(e),
            }
        }
        unreachable!()
    }

    pub fn ip(&self) -> IpAddr {
        self.ip
    }
    pub fn port(&self) -> u16 {
        self.port
    }
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.ip, self.port)
    }
    pub fn server_id(&self) -> u32 {
        self.server_id
    }
    /// Short name for messages, e.g. `mariadb#3@127.0.0.1:40123`.
    pub fn label(&self) -> &str {
        &self.label
    }
    /// The instance directory (holds `data/`, `tmp/`, `my.cnf`, `error.log`, the socket).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
    pub fn datadir(&self) -> PathBuf {
        self.dir.path().join("data")
    }
    pub fn socket_path(&self) -> PathBuf {
        self.dir.path().join("mysqld.sock")
    }
    pub fn error_log(&self) -> PathBuf {
        self.dir.path().join("error.log")
    }
    /// Last `n` lines of the error log (and of mariadbd's own stderr), for failure messages.
    pub fn log_tail(&self, n: usize) -> String {
        let stderr = tail(&self.dir.path().join("stderr.log"), n);
        format!(
            "--- {} error.log ---\n{}{}",
            self.label,
            tail(&self.error_log(), n),
            if stderr.trim().is_empty() {
                String::new()
            } else {
                format!("--- stderr ---\n{stderr}")
            }
        )
    }
    /// Pid of the current (or last) mariadbd process.
    pub fn pid(&self) -> u32 {
        self.lock()
            .as_ref()
            .map(|c| c.id())
            .expect("mariadbd was started")
    }
    pub fn app_opts(&self) -> OptsBuilder {
        app_opts(self.addr())
    }
    pub fn admin_opts(&self) -> OptsBuilder {
        admin_opts(self.addr())
    }

    /// True while the process exists (also when SIGSTOPped).
    pub fn is_running(&self) -> bool {
        match self.lock().as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// True between [`sigstop`](Self::sigstop) and [`sigcont`](Self::sigcont) (or a kill/stop).
    pub fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::SeqCst)
    }

    /// SIGKILL (after SIGCONT if stopped) and reap. No-op if not running.
    pub fn kill9(&self) {
        let mut guard = self.lock();
        if let Some(c) = guard.as_mut()
            && let Ok(None) = c.try_wait()
        {
            signal(c.id(), libc::SIGCONT);
            signal(c.id(), libc::SIGKILL);
            let _ = c.wait();
        }
        self.stopped.store(false, Ordering::SeqCst);
    }

    /// SIGTERM and wait (bounded) for a clean shutdown. No-op if not running.
    pub async fn stop_clean(&self) {
        if !self.is_running() {
            return;
        }
        let pid = self.pid();
        signal(pid, libc::SIGCONT);
        self.stopped.store(false, Ordering::SeqCst);
        signal(pid, libc::SIGTERM);
        let deadline = Instant::now() + DEADLINE;
        while self.is_running() {
            if Instant::now() > deadline {
                self.kill9();
                panic!(
                    "{}: no clean shutdown within {DEADLINE:?}\n{}",
                    self.label,
                    self.log_tail(30)
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// SIGSTOP: the process freezes (connections hang, the port still accepts TCP handshakes).
    /// Returns once every thread of the process is stopped (`T` in `/proc/<pid>/task/*/stat`):
    /// `kill` returns before a busy thread on another CPU has actually stopped.
    pub fn sigstop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        let pid = self.pid();
        signal(pid, libc::SIGSTOP);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let all_stopped = || {
            let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
                return false;
            };
            tasks.flatten().all(|t| {
                std::fs::read_to_string(t.path().join("stat"))
                    .ok()
                    .and_then(|stat| {
                        // `pid (comm) S …`: the state follows the last `)`.
                        let rest = &stat[stat.rfind(')')? + 1..];
                        rest.split_whitespace()
                            .next()
                            .map(|state| state == "T" || state == "t")
                    })
                    .unwrap_or(false)
            })
        };
        while !all_stopped() {
            assert!(
                std::time::Instant::now() < deadline,
                "mariadbd {pid} did not stop within 10 s of SIGSTOP"
            );
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    /// SIGCONT after [`sigstop`](Self::sigstop).
    pub fn sigcont(&self) {
        signal(self.pid(), libc::SIGCONT);
        self.stopped.store(false, Ordering::SeqCst);
    }

    /// Starts mariadbd again on the same port and datadir (cleanly stopping it first if it still
    /// runs) and waits until it accepts connections. `read_only` at start follows the node's last
    /// role given by the fixture (replica: ON, primary / stand-alone: OFF); a replica resumes
    /// replicating by itself.
    pub async fn restart(&self) {
        self.stop_clean().await;
        self.spawn_and_wait()
            .await
            .unwrap_or_else(|e| panic!("restart {}: {e:#}", self.label));
    }

    /// Whether the next (re)start sets `read_only=ON` in the config (the fixture maintains this).
    pub fn set_read_only_on_start(&self, on: bool) {
        self.read_only_on_start.store(on, Ordering::SeqCst);
    }

    /// Adds `[mariadbd]` option lines for the next (re)start, e.g. `ssl-cert = …`.
    pub fn set_extra_config(&self, lines: &str) {
        *self.extra_config.lock().unwrap_or_else(|e| e.into_inner()) = lines.to_owned();
    }

    /// Turns TLS on: a CA made here with rcgen, a server certificate for this server's IP
    /// (which is also the proxy's, since the proxy is invisible to TLS), then a restart.
    /// Returns the CA file, for a client's `--ssl-ca`.
    pub async fn enable_tls(&self) -> PathBuf {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "consul-mysql-proxy test CA");
        let ca_key = KeyPair::generate().expect("CA key");
        let ca = ca_params.self_signed(&ca_key).expect("CA cert");
        let server_key = KeyPair::generate().expect("server key");
        let server = CertificateParams::new(vec![self.ip.to_string()])
            .expect("server params")
            .signed_by(&server_key, &Issuer::from_params(&ca_params, &ca_key))
            .expect("server cert");
        let dir = self.dir().join("tls");
        std::fs::create_dir_all(&dir).expect("tls dir");
        for (name, pem) in [
            ("ca.pem", ca.pem()),
            ("server.pem", server.pem()),
            ("server-key.pem", server_key.serialize_pem()),
        ] {
            std::fs::write(dir.join(name), pem).expect("write PEM");
        }
        // mariadbd runs as mysql: make the files readable.
        Command::new("chmod")
            .args(["-R", "a+rX"])
            .arg(&dir)
            .status()
            .expect("chmod");
        self.set_extra_config(&format!(
            "ssl-ca = {0}/ca.pem\nssl-cert = {0}/server.pem\nssl-key = {0}/server-key.pem\n",
            dir.display()
        ));
        self.restart().await;
        dir.join("ca.pem")
    }

    /// Polls the processlist until `user` has no session left (`true`), or `limit` passes
    /// (`false`): how a failover tool sees that every proxy drained this server.
    pub async fn wait_no_sessions_of(&self, user: &str, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        let sql =
            format!("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = '{user}'");
        loop {
            if self.try_admin_query_one::<i64>(&sql).await.ok() == Some(0) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Opens an admin connection over TCP.
    pub async fn admin_conn(&self) -> Result<Conn> {
        Conn::new(self.admin_opts())
            .await
            .with_context(|| format!("{}: connect as admin", self.label))
    }

    /// Runs `sql` (may be several statements) as admin over TCP.
    pub async fn try_admin_exec(&self, sql: &str) -> Result<()> {
        let mut conn = self.admin_conn().await?;
        let r = conn
            .query_drop(sql)
            .await
            .with_context(|| format!("{}: {sql}", self.label));
        conn.disconnect().await.ok();
        r
    }

    /// [`try_admin_exec`](Self::try_admin_exec) that panics with the error.
    pub async fn admin_exec(&self, sql: &str) {
        self.try_admin_exec(sql)
            .await
            .unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// First row of `sql` as `T` (a scalar like `u16`/`String`/`Option<String>`, or a tuple).
    pub async fn try_admin_query_one<T: FromRow + Send + 'static>(&self, sql: &str) -> Result<T> {
        let mut conn = self.admin_conn().await?;
        let r = conn
            .query_first::<T, _>(sql)
            .await
            .with_context(|| format!("{}: {sql}", self.label));
        conn.disconnect().await.ok();
        r?.ok_or_else(|| anyhow!("{}: {sql}: no row", self.label))
    }

    /// [`try_admin_query_one`](Self::try_admin_query_one) that panics with the error.
    pub async fn admin_query_one<T: FromRow + Send + 'static>(&self, sql: &str) -> T {
        self.try_admin_query_one(sql)
            .await
            .unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// Waits until at least `count` sessions are executing exactly `sql` (polls
    /// `information_schema.PROCESSLIST` every 50 ms on one admin connection); panics with the
    /// process list when that does not happen within `limit`. For a test that must act while a
    /// client's statement is running on the server, not merely sent.
    pub async fn wait_for_running(&self, sql: &str, count: u64, limit: Duration) {
        let mut conn = self.admin_conn().await.unwrap_or_else(|e| panic!("{e:#}"));
        let start = Instant::now();
        loop {
            let running: Option<u64> = conn
                .exec_first(
                    "SELECT COUNT(*) FROM information_schema.PROCESSLIST \
                     WHERE COMMAND = 'Query' AND INFO = ?",
                    (sql,),
                )
                .await
                .unwrap_or_else(|e| panic!("{}: read the process list: {e}", self.label));
            if running.unwrap_or(0) >= count {
                conn.disconnect().await.ok();
                return;
            }
            if start.elapsed() >= limit {
                let list: Vec<String> = conn
                    .query(
                        "SELECT CONCAT_WS(' | ', ID, USER, COMMAND, STATE, INFO) \
                         FROM information_schema.PROCESSLIST",
                    )
                    .await
                    .unwrap_or_default();
                panic!(
                    "{}: {count} session(s) running {sql:?} not seen within {limit:?} ({} seen); process list: {list:?}",
                    self.label,
                    running.unwrap_or(0)
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// `SHOW SLAVE STATUS` as (column, value) pairs; `None` when the server is no replica.
    pub async fn slave_status(&self) -> Result<Option<Vec<(String, String)>>> {
        let mut conn = self.admin_conn().await?;
        let row: Option<Row> = conn
            .query_first("SHOW SLAVE STATUS")
            .await
            .with_context(|| format!("{}: SHOW SLAVE STATUS", self.label))?;
        conn.disconnect().await.ok();
        Ok(row.map(|row| {
            let names: Vec<String> = row
                .columns_ref()
                .iter()
                .map(|c| c.name_str().into_owned())
                .collect();
            names
                .into_iter()
                .enumerate()
                .map(|(i, n)| {
                    (
                        n,
                        row.get::<Option<String>, _>(i)
                            .flatten()
                            .unwrap_or_default(),
                    )
                })
                .collect()
        }))
    }

    // -- internals ---------------------------------------------------------------------------

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Child>> {
        self.child.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn write_config(&self) -> Result<PathBuf> {
        let d = self.dir.path();
        let cnf = format!(
            "[mariadbd]\nuser = mysql\ndatadir = {data}\ntmpdir = {tmp}\nsocket = {sock}\n\
             pid-file = {d}/mysqld.pid\nlog-error = {err}\nport = {port}\nbind-address = {ip}\n\
             server-id = {id}\nlog-bin = mysql-bin\nrelay-log = relay-bin\nbinlog-format = ROW\n\
             log-slave-updates = ON\nread-only = {ro}\nskip-name-resolve\n\
             max-connections = 1000\nmax-connect-errors = 4294967295\nslave-net-timeout = 10\n\
             innodb-buffer-pool-size = 32M\ninnodb-log-file-size = 8M\n\
             innodb-flush-log-at-trx-commit = 2\ninnodb-doublewrite = 0\n\
             character-set-server = utf8mb4\ncollation-server = utf8mb4_general_ci\n",
            data = self.datadir().display(),
            tmp = d.join("tmp").display(),
            sock = self.socket_path().display(),
            d = d.display(),
            err = self.error_log().display(),
            port = self.port,
            ip = self.ip,
            id = self.server_id,
            ro = if self.read_only_on_start.load(Ordering::SeqCst) {
                "ON"
            } else {
                "OFF"
            },
        );
        let extra = self
            .extra_config
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let cnf = format!("{cnf}{extra}\n");
        let path = d.join("my.cnf");
        std::fs::write(&path, cnf).with_context(|| format!("write {}", path.display()))?;
        Ok(path)
    }

    fn bind_failed(&self) -> bool {
        let log = tail(&self.error_log(), 30);
        log.contains("Address already in use") || log.contains("Bind on TCP/IP port")
    }

    /// Spawns mariadbd with the current config and waits until `SELECT 1` works over TCP.
    async fn spawn_and_wait(&self) -> Result<()> {
        let cnf = self.write_config()?;
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("stderr.log"))?;
        let mut command = match &self.netns {
            Some(ns) => {
                // `ip netns exec` execs mariadbd in place: the child's pid is mariadbd's.
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "mariadbd"]);
                c
            }
            None => Command::new("mariadbd"),
        };
        let child = command
            .arg(format!("--defaults-file={}", cnf.display()))
            .stdin(Stdio::null())
            .stdout(stderr.try_clone()?)
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("{}: spawn mariadbd", self.label))?;
        *self.lock() = Some(child);
        self.stopped.store(false, Ordering::SeqCst);
        let deadline = Instant::now() + DEADLINE;
        let mut last_err: Option<String>;
        loop {
            if !self.is_running() {
                bail!(
                    "{}: mariadbd exited during startup\n{}",
                    self.label,
                    self.log_tail(30)
                );
            }
            let attempt = async {
                let mut conn = self.admin_conn().await?;
                // Our own server, not another instance that got the same port first.
                let id: Option<u32> = conn.query_first("SELECT @@server_id").await?;
                conn.disconnect().await.ok();
                anyhow::ensure!(
                    id == Some(self.server_id),
                    "port answered by server_id {id:?}, not ours ({})",
                    self.server_id
                );
                anyhow::Ok(())
            };
            match tokio::time::timeout(Duration::from_secs(5), attempt).await {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(e)) => last_err = Some(format!("{e:#}")),
                Err(_) => last_err = Some("connect attempt timed out".into()),
            }
            if Instant::now() > deadline {
                let log = self.log_tail(30);
                self.kill9();
                bail!(
                    "{}: not ready within {DEADLINE:?} (last error: {last_err:?})\n{log}",
                    self.label
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        self.kill9();
        // TempDir's drop removes the instance dir.
    }
}

// ---------------------------------------------------------------------------------------------
// primary + replica

/// What `promote` does with the old primary first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopHow {
    /// SIGTERM and wait for the shutdown.
    Clean,
    /// SIGKILL.
    Kill9,
    /// Leave it running (and writable: a split brain unless the test handles it).
    LeaveRunning,
}

/// Bind addresses of the two nodes (both 127.0.0.1 by default).
#[derive(Clone, Copy, Debug)]
pub struct PairOptions {
    pub primary_ip: IpAddr,
    pub replica_ip: IpAddr,
}

impl Default for PairOptions {
    fn default() -> Self {
        let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
        PairOptions {
            primary_ip: lo,
            replica_ip: lo,
        }
    }
}

/// A primary and a GTID replica. `primary` is always the *current* primary: `promote` and
/// `switchover` swap the two fields.
pub struct MariaDbPair {
    pub primary: MariaDb,
    pub replica: MariaDb,
}

impl MariaDbPair {
    /// Both nodes on 127.0.0.1.
    pub async fn start() -> MariaDbPair {
        Self::start_with(PairOptions::default()).await
    }

    /// Starts both nodes (in parallel), sets up GTID replication and waits until a probe row
    /// written on the primary is visible on the replica.
    pub async fn start_with(opts: PairOptions) -> MariaDbPair {
        Self::start_with_netns(opts, None, None).await
    }

    /// Like [`start_with`](Self::start_with), with either node inside a network namespace
    /// (`opts` then names an address of that namespace for it). The replica must be able to
    /// reach the primary's address from where it runs.
    pub async fn start_with_netns(
        opts: PairOptions,
        primary_netns: Option<&str>,
        replica_netns: Option<&str>,
    ) -> MariaDbPair {
        let (p, r) = tokio::join!(
            MariaDb::try_start_in(opts.primary_ip, false, primary_netns.map(str::to_owned)),
            MariaDb::try_start_in(opts.replica_ip, true, replica_netns.map(str::to_owned))
        );
        let pair = MariaDbPair {
            primary: p.unwrap_or_else(|e| panic!("start primary: {e:#}")),
            replica: r.unwrap_or_else(|e| panic!("start replica: {e:#}")),
        };
        create_probe_table(&pair.primary).await;
        replicate_from(&pair.replica, &pair.primary, false).await;
        pair.wait_replicated().await;
        pair
    }

    /// Writes a probe row on the primary and waits (bounded) until the replica has it.
    pub async fn wait_replicated(&self) {
        wait_probe_replicated(&self.primary, &[&self.replica]).await;
    }

    /// Turns on semi-synchronous replication (built into MariaDB): the primary acknowledges a
    /// commit only once the replica has received it, so a write acknowledged before a kill -9
    /// is on the replica when it is promoted. The long timeout keeps the primary from falling
    /// back to asynchronous replication quietly. Waits (bounded) until it is active.
    pub async fn enable_semi_sync(&self) {
        self.primary
            .admin_exec("SET GLOBAL rpl_semi_sync_master_timeout = 30000; SET GLOBAL rpl_semi_sync_master_enabled = ON")
            .await;
        self.replica
            .admin_exec("SET GLOBAL rpl_semi_sync_slave_enabled = ON; STOP SLAVE IO_THREAD; START SLAVE IO_THREAD")
            .await;
        let deadline = Instant::now() + DEADLINE;
        let sql = "SELECT VARIABLE_VALUE FROM information_schema.global_status WHERE VARIABLE_NAME = 'RPL_SEMI_SYNC_MASTER_STATUS'";
        while self
            .primary
            .try_admin_query_one::<String>(sql)
            .await
            .ok()
            .as_deref()
            != Some("ON")
        {
            assert!(
                Instant::now() < deadline,
                "{}: semi-synchronous replication not active within {DEADLINE:?}",
                self.primary.label
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the replica applied everything in the primary's binlog (`MASTER_GTID_WAIT`).
    pub async fn wait_caught_up(&self) {
        wait_gtid(&self.replica, &self.primary)
            .await
            .unwrap_or_else(|e| panic!("{e:#}"));
    }

    /// Failover as the runbooks do it: stop the old primary as `how` says; let the replica apply
    /// what it received (`MASTER_GTID_WAIT` on the primary's position if it still runs, else until
    /// the SQL thread applied the relay log); `STOP SLAVE; RESET SLAVE ALL; SET GLOBAL
    /// read_only=OFF`. Then swaps the fields: `self.primary` is the promoted node, `self.replica`
    /// the old primary (not replicating; use `repoint_old_primary_as_replica` to make it one).
    pub async fn promote(&mut self, how: StopHow) {
        let (old, new) = (&self.primary, &self.replica);
        match how {
            StopHow::LeaveRunning => wait_gtid(new, old)
                .await
                .unwrap_or_else(|e| panic!("{e:#}")),
            StopHow::Clean => {
                // Best effort: a clean stop should not lose what the replica could still fetch.
                if let Err(e) = wait_gtid(new, old).await {
                    eprintln!("promote: pre-stop catch-up failed: {e:#}");
                }
                old.stop_clean().await;
                wait_relay_applied(new).await;
            }
            StopHow::Kill9 => {
                old.kill9();
                wait_relay_applied(new).await;
            }
        }
        new.admin_exec("STOP SLAVE; RESET SLAVE ALL; SET GLOBAL read_only = OFF")
            .await;
        new.set_read_only_on_start(false);
        std::mem::swap(&mut self.primary, &mut self.replica);
    }

    /// Planned switchover: old primary `read_only=ON`, wait until the replica caught up, promote
    /// it. Both keep running; afterwards `self.primary` is the new primary and `self.replica` the
    /// old one (read-only, not yet replicating: see `repoint_old_primary_as_replica`).
    pub async fn switchover(&mut self) {
        self.primary.admin_exec("SET GLOBAL read_only = ON").await;
        self.primary.set_read_only_on_start(true);
        self.promote(StopHow::LeaveRunning).await;
    }

    /// Makes `self.replica` (the old primary after `switchover`, or after `promote` + `restart`)
    /// a read-only GTID replica of `self.primary`, and waits until replication runs. It starts
    /// from its own `@@gtid_binlog_pos`, so it must not have diverged (fine after `switchover`;
    /// after a kill -9 failover it may have unshipped transactions and replication then fails).
    pub async fn repoint_old_primary_as_replica(&self) {
        replicate_from(&self.replica, &self.primary, true).await;
        self.wait_replicated().await;
    }
}

/// Creates the fixture's probe table (`testbed.probe`) on `primary`.
pub async fn create_probe_table(primary: &MariaDb) {
    primary.admin_exec("CREATE DATABASE testbed; CREATE TABLE testbed.probe (id INT AUTO_INCREMENT PRIMARY KEY, token VARCHAR(64) NOT NULL)").await;
}

/// Writes a probe row on `primary` and waits (bounded) until every one of `replicas` has it.
pub async fn wait_probe_replicated(primary: &MariaDb, replicas: &[&MariaDb]) {
    let token = format!("probe-{}", fastrand::u64(..));
    primary
        .admin_exec(&format!(
            "INSERT INTO testbed.probe (token) VALUES ('{token}')"
        ))
        .await;
    let deadline = Instant::now() + DEADLINE;
    let sql = format!("SELECT COUNT(*) FROM testbed.probe WHERE token = '{token}'");
    for replica in replicas {
        while replica.try_admin_query_one::<u64>(&sql).await.ok() != Some(1) {
            if Instant::now() > deadline {
                let status = replica.slave_status().await;
                panic!(
                    "{}: probe row from {} not replicated within {DEADLINE:?}; slave status: {status:?}\n{}",
                    replica.label,
                    primary.label,
                    replica.log_tail(20)
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

/// `CHANGE MASTER TO` + `START SLAVE` on `replica`, then waits until both threads run.
pub async fn replicate_from(replica: &MariaDb, primary: &MariaDb, from_own_binlog: bool) {
    let mut sql = String::from("SET GLOBAL read_only = ON; ");
    if from_own_binlog {
        sql += "SET GLOBAL gtid_slave_pos = @@gtid_binlog_pos; ";
    }
    sql += &format!(
        "CHANGE MASTER TO MASTER_HOST = '{}', MASTER_PORT = {}, MASTER_USER = 'admin', \
         MASTER_PASSWORD = 'admin', MASTER_USE_GTID = slave_pos, MASTER_CONNECT_RETRY = 1; START SLAVE",
        primary.ip, primary.port
    );
    replica.admin_exec(&sql).await;
    replica.set_read_only_on_start(true);
    let deadline = Instant::now() + DEADLINE;
    loop {
        let st = replica
            .slave_status()
            .await
            .unwrap_or_else(|e| panic!("{e:#}"))
            .unwrap_or_default();
        let get = |k: &str| {
            st.iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.as_str())
                .unwrap_or("")
        };
        if get("Slave_IO_Running") == "Yes" && get("Slave_SQL_Running") == "Yes" {
            return;
        }
        if Instant::now() > deadline {
            panic!(
                "{}: replication from {} not running within {DEADLINE:?}: IO={} SQL={} io_err={:?} sql_err={:?}\n{}",
                replica.label,
                primary.label,
                get("Slave_IO_Running"),
                get("Slave_SQL_Running"),
                get("Last_IO_Error"),
                get("Last_SQL_Error"),
                replica.log_tail(20)
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

/// `MASTER_GTID_WAIT(<primary's @@gtid_binlog_pos>)` on the replica.
async fn wait_gtid(replica: &MariaDb, primary: &MariaDb) -> Result<()> {
    let pos: String = primary
        .try_admin_query_one("SELECT @@gtid_binlog_pos")
        .await?;
    let secs = DEADLINE.as_secs();
    let r: i64 = replica
        .try_admin_query_one(&format!("SELECT MASTER_GTID_WAIT('{pos}', {secs})"))
        .await?;
    if r != 0 {
        bail!(
            "{}: MASTER_GTID_WAIT('{pos}') timed out after {secs}s; slave status: {:?}",
            replica.label,
            replica.slave_status().await
        );
    }
    Ok(())
}

/// With the primary gone: (re)start the SQL thread and wait until it applied the relay log. The IO
/// thread is left alone (it retries the dead primary): in GTID mode, stopping both threads makes
/// the next start discard the relay log, i.e. exactly the received-but-unapplied rows
/// (executed position == read position on the same master binlog file; or, when the primary died
/// in the middle of sending a transaction, the SQL thread idles on that incomplete tail for 1 s).
async fn wait_relay_applied(replica: &MariaDb) {
    replica.admin_exec("START SLAVE SQL_THREAD").await;
    let deadline = Instant::now() + DEADLINE;
    let mut idle_since: Option<(String, Instant)> = None;
    loop {
        let st = replica
            .slave_status()
            .await
            .unwrap_or_else(|e| panic!("{e:#}"))
            .unwrap_or_default();
        let get = |k: &str| {
            st.iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        let exec = get("Exec_Master_Log_Pos");
        if get("Master_Log_File") == get("Relay_Master_Log_File")
            && get("Read_Master_Log_Pos") == exec
        {
            return;
        }
        if get("Slave_SQL_Running_State").contains("read all relay log") {
            match &idle_since {
                Some((pos, t)) if *pos == exec && t.elapsed() > Duration::from_secs(1) => return,
                Some((pos, _)) if *pos == exec => {}
                _ => idle_since = Some((exec.clone(), Instant::now())),
            }
        } else {
            idle_since = None;
        }
        if get("Slave_SQL_Running") != "Yes" || Instant::now() > deadline {
            panic!(
                "{}: relay log not applied (SQL thread {:?}, error {:?}); status: {st:?}",
                replica.label,
                get("Slave_SQL_Running"),
                get("Last_SQL_Error")
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

// ---------------------------------------------------------------------------------------------
// small helpers

fn free_port(ip: IpAddr) -> Result<u16> {
    Ok(TcpListener::bind((ip, 0))?.local_addr()?.port())
}

fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: plain kill(2) on a child we spawned and have not reaped yet.
    unsafe { libc::kill(pid as libc::pid_t, sig) };
}

fn mysql_ids() -> Result<(u32, u32)> {
    let name = std::ffi::CString::new("mysql").expect("no NUL");
    // SAFETY: getpwnam returns a pointer to static storage or NULL; read immediately.
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    if pw.is_null() {
        bail!("no `mysql` user (install mariadb-server)");
    }
    // SAFETY: non-null, points to a valid passwd.
    Ok(unsafe { ((*pw).pw_uid, (*pw).pw_gid) })
}

/// chown `path` to mysql:mysql (recursively if asked) and make it 0755 so mysql can enter it.
fn chown_mysql(path: &Path, recursive: bool) -> Result<()> {
    let (uid, gid) = mysql_ids()?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("chmod {}", path.display()))?;
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
        .with_context(|| format!("chown {}", path.display()))?;
    if recursive {
        for entry in std::fs::read_dir(path)? {
            let p = entry?.path();
            if p.is_dir() {
                chown_mysql(&p, true)?;
            } else {
                std::os::unix::fs::chown(&p, Some(uid), Some(gid))?;
            }
        }
    }
    Ok(())
}

/// Last `n` lines of a (possibly missing) text file.
fn tail(path: &Path, n: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(n)..].join("\n") + "\n"
        }
        Err(e) => format!("(cannot read {}: {e})\n", path.display()),
    }
}

/// Connects through `proxy` until `SELECT @@port` answers `port` (bounded); returns how long it
/// took. A connection that fails or lands elsewhere is retried after a short pause.
pub async fn wait_routed_to(proxy: &super::proxy::Proxy, port: u16) -> std::time::Duration {
    wait_reaches(proxy.addr(), port, proxy).await
}

/// Connects through `via` (one of `proxy`'s routes) until the server on `port` answers; returns
/// how long that took.
pub async fn wait_reaches(
    via: SocketAddr,
    port: u16,
    proxy: &super::proxy::Proxy,
) -> std::time::Duration {
    let limit = std::time::Duration::from_secs(30);
    let start = std::time::Instant::now();
    loop {
        if try_port_via(via).await.ok() == Some(port) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "{via} never reached port {port}; log:\n{}",
            proxy.log.text()
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}
