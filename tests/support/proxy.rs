//! The proxy binary under test: started as a real process on a free loopback port, with its log
//! captured so tests can wait for log lines (a signal) instead of sleeping.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Path of the proxy binary: `$CONSUL_MYSQL_PROXY_TEST_BIN` when set (to measure another
/// build, e.g. an older commit, with the same test), else the one cargo built for these tests,
/// or (for the demo, an example) `$CONSUL_MYSQL_PROXY_BIN`, else the binary next to the running
/// example's directory.
pub fn binary() -> String {
    if let Ok(path) = std::env::var("CONSUL_MYSQL_PROXY_TEST_BIN") {
        return path;
    }
    if let Some(path) = option_env!("CARGO_BIN_EXE_consul-mysql-proxy") {
        return path.to_owned();
    }
    if let Ok(path) = std::env::var("CONSUL_MYSQL_PROXY_BIN") {
        return path;
    }
    // target/<profile>/examples/demo → target/<profile>/consul-mysql-proxy
    std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.join("consul-mysql-proxy")))
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "consul-mysql-proxy".to_owned())
}

/// Lines the process wrote to stderr, with a condition variable to wait on.
#[derive(Default)]
pub struct LogLines {
    lines: Mutex<Vec<String>>,
    grew: Condvar,
    closed: Mutex<bool>,
}

impl LogLines {
    fn push(&self, line: String) {
        self.lines.lock().unwrap().push(line);
        self.grew.notify_all();
    }

    fn close(&self) {
        *self.closed.lock().unwrap() = true;
        self.grew.notify_all();
    }

    /// All lines so far, joined.
    pub fn text(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    /// Blocks until a line *after index `from`* contains `needle`; returns (index, line).
    pub fn wait_for_from(
        &self,
        from: usize,
        needle: &str,
        timeout: Duration,
    ) -> Option<(usize, String)> {
        let deadline = Instant::now() + timeout;
        let mut lines = self.lines.lock().unwrap();
        loop {
            if let Some((i, l)) = lines
                .iter()
                .enumerate()
                .skip(from)
                .find(|(_, l)| l.contains(needle))
            {
                return Some((i, l.clone()));
            }
            if *self.closed.lock().unwrap() {
                return None;
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            lines = self.grew.wait_timeout(lines, deadline - now).unwrap().0;
        }
    }

    pub fn len(&self) -> usize {
        self.lines.lock().unwrap().len()
    }
}

/// A running proxy process.
pub struct Proxy {
    child: Child,
    addr: SocketAddr,
    admin: Option<SocketAddr>,
    pub log: Arc<LogLines>,
}

/// Default log filter for tests: our debug lines (connection open/close), others at info.
pub const TEST_LOG_LEVEL: &str = "info,consul_mysql_proxy=debug";

impl Proxy {
    /// Starts the proxy with `args` (plus `--listen 127.0.0.1:0` unless `--listen` is given) and
    /// waits for its "listening" line.
    pub fn start(args: &[&str]) -> Proxy {
        Self::start_with_env(args, &[])
    }

    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Proxy {
        let (child, log) = spawn(args, env);
        // The proxy's own line (the admin endpoint logs "admin endpoint listening" first);
        // `workers=` in text logs, `"workers":` in JSON logs.
        let json = args.windows(2).any(|w| w == ["--log-format", "json"]);
        let started = if json { "\"workers\":" } else { "workers=" };
        let line = log.wait_for_from(0, started, Duration::from_secs(20));
        let mut proxy = Proxy {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            admin: None,
            log,
        };
        let Some((_, line)) = line else {
            let status = proxy.child.try_wait().ok().flatten();
            panic!(
                "proxy did not start (exit {status:?}); log:\n{}",
                proxy.log.text()
            );
        };
        proxy.addr = parse_field(&line, "addr=").expect("listening line has addr=");
        proxy.admin = proxy
            .log
            .wait_for_from(0, "admin endpoint listening", Duration::ZERO)
            .and_then(|(_, l)| parse_field(&l, "addr="));
        proxy
    }

    /// The admin endpoint's address (tests start it on a free port).
    pub fn admin(&self) -> SocketAddr {
        self.admin.expect("admin endpoint enabled")
    }

    /// `GET path` on the admin endpoint: (status, body).
    pub async fn admin_get(&self, path: &str) -> (u16, String) {
        let url = format!("http://{}{path}", self.admin());
        // reqwest is built with `rustls-no-provider`: a provider must exist even for plain HTTP.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let r = client
            .get(&url)
            .timeout(Duration::from_secs(10))
            .send()
            .await;
        let r = r.unwrap_or_else(|e| panic!("GET {url}: {e}"));
        let status = r.status().as_u16();
        (status, r.text().await.unwrap_or_default())
    }

    /// The value of a metric sample line starting with `prefix` (name plus labels).
    pub async fn metric(&self, prefix: &str) -> Option<f64> {
        let (_, text) = self.admin_get("/metrics").await;
        text.lines()
            .find(|l| l.starts_with(prefix) && l[prefix.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }

    /// The sum of every sample of the family `name` across its labels (e.g. every `reason` of
    /// `…_backend_connect_errors_total`); 0 when there is none.
    pub async fn metric_sum(&self, name: &str) -> f64 {
        let (_, text) = self.admin_get("/metrics").await;
        text.lines()
            .filter(|l| {
                l.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// Polls `/metrics` (every 20 ms, at most `timeout`) until the sample `prefix` is at least
    /// `at_least`; returns its value. Panics with the last value and the log on timeout.
    pub async fn wait_for_metric(&self, prefix: &str, at_least: f64, timeout: Duration) -> f64 {
        let start = Instant::now();
        loop {
            let value = self.metric(prefix).await;
            if let Some(v) = value.filter(|v| *v >= at_least) {
                return v;
            }
            assert!(
                start.elapsed() < timeout,
                "metric {prefix} did not reach {at_least} within {timeout:?} (last: {value:?}); log:\n{}",
                self.log.text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Waits (off the async runtime) for a log line containing `needle` after line `from`.
    pub async fn wait_for_log_from(&self, from: usize, needle: &str, timeout: Duration) -> String {
        let log = self.log.clone();
        let needle_owned = needle.to_owned();
        let found =
            tokio::task::spawn_blocking(move || log.wait_for_from(from, &needle_owned, timeout))
                .await
                .unwrap();
        match found {
            Some((_, line)) => line,
            None => panic!(
                "no log line with {needle:?} within {timeout:?}; log:\n{}",
                self.log.text()
            ),
        }
    }

    pub async fn wait_for_log(&self, needle: &str, timeout: Duration) -> String {
        self.wait_for_log_from(0, needle, timeout).await
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: sending a signal to our own child process.
        unsafe {
            libc::kill(self.pid(), sig);
        }
    }

    /// Waits for the process to exit (off the async runtime).
    pub async fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "proxy did not exit within {timeout:?}; log:\n{}",
                self.log.text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "--- proxy log ---\n{}\n--- end proxy log ---",
                self.log.text()
            );
        }
    }
}

fn spawn(args: &[&str], env: &[(&str, &str)]) -> (Child, Arc<LogLines>) {
    let mut cmd = Command::new(binary());
    if !args.contains(&"--listen") {
        cmd.args(["--listen", "127.0.0.1:0"]);
    }
    if !args.contains(&"--log-level") {
        cmd.args(["--log-level", TEST_LOG_LEVEL]);
    }
    if !args.contains(&"--admin") {
        cmd.args(["--admin", "127.0.0.1:0"]);
    }
    cmd.args(args)
        .envs(env.iter().copied())
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn consul-mysql-proxy");
    let stderr = child.stderr.take().unwrap();
    let log = Arc::new(LogLines::default());
    let sink = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            sink.push(strip_ansi(&line));
        }
        sink.close();
    });
    (child, log)
}

/// A proxy command line: how the proxy finds its primary first (a fixed backend, Consul, the
/// Consul KV leader key, DNS), then a test file's shared settings, then a test's own extras,
/// in that order (a later `--hold-timeout` overrides an earlier one).
///
/// ```ignore
/// ProxyArgs::consul(consul.http_url()).with(&["--hold-timeout", "20s"]).with(extra).start()
/// ```
#[derive(Clone, Debug)]
pub struct ProxyArgs(Vec<String>);

impl ProxyArgs {
    /// `--backend <addr>`: one fixed backend, no discovery.
    pub fn backend(addr: SocketAddr) -> ProxyArgs {
        ProxyArgs(vec!["--backend".into(), addr.to_string()])
    }

    /// `--consul <url>`: Consul discovery (health mode unless `--discovery` follows).
    pub fn consul(url: impl Into<String>) -> ProxyArgs {
        ProxyArgs(vec!["--consul".into(), url.into()])
    }

    /// `--consul <url> --discovery consul-kv --kv-key <key>`: the primary is the address stored
    /// under a KV leader key.
    pub fn consul_kv(url: impl Into<String>, key: &str) -> ProxyArgs {
        Self::consul(url).with(&["--discovery", "consul-kv", "--kv-key", key])
    }

    /// `--discovery dns --dns-server <server> --dns-name <name>`: the primary is what a DNS
    /// server (the Consul DNS interface) answers for `name`.
    pub fn dns(server: SocketAddr, name: &str) -> ProxyArgs {
        let server = server.to_string();
        ProxyArgs(Vec::new()).with(&[
            "--discovery",
            "dns",
            "--dns-server",
            &server,
            "--dns-name",
            name,
        ])
    }

    /// Appends `args`.
    pub fn with(mut self, args: &[&str]) -> ProxyArgs {
        self.0.extend(args.iter().map(|&a| a.to_owned()));
        self
    }

    /// The arguments, to hand to [`Proxy::start`] or [`run_to_exit`].
    pub fn to_vec(&self) -> Vec<&str> {
        self.0.iter().map(String::as_str).collect()
    }

    /// [`Proxy::start`] with these arguments.
    pub fn start(&self) -> Proxy {
        Proxy::start(&self.to_vec())
    }

    /// [`Proxy::start_with_env`] with these arguments.
    pub fn start_with_env(&self, env: &[(&str, &str)]) -> Proxy {
        Proxy::start_with_env(&self.to_vec(), env)
    }
}

/// Runs the binary to completion (for bad-config tests): (exit status, stderr).
pub fn run_to_exit(args: &[&str], env: &[(&str, &str)]) -> (ExitStatus, String) {
    let out = Command::new(binary())
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("run consul-mysql-proxy");
    (
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Parses `key=value` (value up to the next space) out of a text log line, or the field `key`
/// (without its `=`) out of a JSON log line.
pub fn parse_field<T: std::str::FromStr>(line: &str, key: &str) -> Option<T> {
    if line.starts_with('{') {
        let v: serde_json::Value = serde_json::from_str(line).ok()?;
        let field = &v[key.trim_end_matches('=')];
        let text = field
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| field.to_string());
        return text.parse().ok();
    }
    let start = line.find(key)? + key.len();
    let rest = &line[start..];
    let end = rest.find(' ').unwrap_or(rest.len());
    rest[..end].trim_matches('"').parse().ok()
}

fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
