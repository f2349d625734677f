//! The status page (`GET /` on the admin address) as a browser sees it: headless Chromium loads
//! it from a proxy that follows the Consul double, and the tests assert on the DOM Chromium
//! built — before a failover (primary, every instance with its state), after one (the
//! timeline shows old → new), during a Consul outage (the last error, the primary kept), and
//! with a hostile node name and check output (shown as text, no script element). One run saves
//! a screenshot (`docs/status-page.png` is a copy of one).
//!
//! Needs `chromium` (Debian package; `scripts/install-deps.sh` installs it).

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use support::backends::{EchoBackend, closed_port, echoes, greeted};
use support::consul::{ServiceDef, TestConsul};
use support::proxy::Proxy;

const T: Duration = Duration::from_secs(30);
const HOSTILE: &str = "<script>alert(1)</script>";
/// What the `check` command says of a writable primary.
const WRITABLE: &str = "OK: primary, writable (read_only=OFF)";

/// Asserts that `text` contains `needle`, showing `text` when it does not.
#[track_caller]
fn has(text: &str, needle: &str) {
    assert!(text.contains(needle), "{needle:?} not in:\n{text}");
}

/// The Chromium binary on `PATH`.
fn chromium() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("chromium"))
        .find(|bin| bin.is_file())
        .expect("chromium is not installed: run scripts/install-deps.sh (apt-get install chromium)")
}

/// Runs headless Chromium with `args` and a fresh profile; returns its stdout.
async fn headless(args: &[&str]) -> String {
    let profile = tempfile::tempdir().unwrap();
    let mut cmd = tokio::process::Command::new(chromium());
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
    ])
    .arg(format!("--user-data-dir={}", profile.path().display()))
    .args(args)
    .stdin(std::process::Stdio::null())
    .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("chromium did not finish within 60 s")
        .expect("run chromium");
    assert!(
        out.status.success(),
        "chromium {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The DOM Chromium built from the page at `url`, serialized.
async fn dom(url: &str) -> String {
    let dom = headless(&["--dump-dom", url]).await;
    assert!(
        dom.contains("consul-mysql-proxy"),
        "not the status page: {dom}"
    );
    dom
}

/// A screenshot of the page at `url`, 1280×1400, written to `file`.
async fn screenshot(url: &str, file: &Path) {
    let target = format!("--screenshot={}", file.display());
    headless(&[&target, "--window-size=1280,1400", "--hide-scrollbars", url]).await;
}

/// The content of the element whose `id` is `id`, up to the end of its `tag`.
fn element<'a>(dom: &'a str, tag: &str, id: &str) -> &'a str {
    let attribute = format!("id=\"{id}\"");
    let start = dom
        .find(&attribute)
        .and_then(|at| dom[at..].find('>').map(|end| at + end + 1))
        .unwrap_or_else(|| panic!("no element #{id} in the DOM: {dom}"));
    let end = dom[start..]
        .find(&format!("</{tag}>"))
        .map_or(dom.len(), |e| start + e);
    &dom[start..end]
}

/// The text of an HTML fragment: each tag a space, whitespace folded, the few entities a DOM
/// serialization writes decoded.
fn text(html: &str) -> String {
    let mut out = String::new();
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => {
                in_tag = true;
                out.push(' ');
            }
            '>' if in_tag => in_tag = false,
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    let out = out
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&nbsp;", " ")
        .replace("&amp;", "&");
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The cells of the table row of the instance at `addr`.
fn row<'a>(dom: &'a str, addr: &str) -> &'a str {
    let attribute = format!("data-address=\"{addr}\">");
    let start = dom
        .find(&attribute)
        .map(|at| at + attribute.len())
        .unwrap_or_else(|| panic!("no row for {addr}: {dom}"));
    let end = dom[start..].find("</tr>").map_or(dom.len(), |e| start + e);
    &dom[start..end]
}

fn page_url(proxy: &Proxy) -> String {
    format!("http://{}/", proxy.admin())
}

/// Registers `id` (service `mysql`, tag `primary`, TTL check) on `node` at `addr`.
async fn register(consul: &TestConsul, id: &str, node: &str, addr: std::net::SocketAddr) {
    let def = ServiceDef::ttl_primary(id, addr).on_node(node, "127.0.0.1");
    consul.register(&def).await;
}

/// Sets the TTL check of service `id` with `verb` (pass, warn, fail) and `note` as its output.
async fn check(consul: &TestConsul, verb: &str, id: &str, note: &str) {
    consul
        .check_note(verb, &format!("service:{id}"), note)
        .await;
}

/// What the `check` command says of a read-only server.
fn read_only(addr: std::net::SocketAddr) -> String {
    format!("CRITICAL: {addr} is read-only (read_only=ON): not a primary")
}

/// The proxy, following `consul`'s health answers, with `extra` flags.
fn consul_proxy(consul: &TestConsul, extra: &[&str]) -> Proxy {
    let url = consul.http_url();
    let mut args = vec!["--consul", url.as_str(), "--discovery", "consul-health"];
    args.extend_from_slice(extra);
    Proxy::start(&args)
}

/// Polls `/status` until `ok` holds for it.
async fn wait_status(proxy: &Proxy, what: &str, ok: impl Fn(&serde_json::Value) -> bool) {
    let start = Instant::now();
    loop {
        let (_, body) = proxy.admin_get("/status").await;
        let status: serde_json::Value = serde_json::from_str(&body).unwrap();
        if ok(&status) {
            return;
        }
        assert!(start.elapsed() < T, "never {what}: {status}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn instance_count(status: &serde_json::Value) -> usize {
    status["discovery"]["instances"]["list"]
        .as_array()
        .map_or(0, Vec::len)
}

#[tokio::test]
async fn the_page_shows_instances_and_the_failover_timeline_and_escapes_consul_text() {
    let (a, b) = (EchoBackend::start().await, EchoBackend::start().await);
    let hostile_addr = closed_port();
    let consul = TestConsul::start_double(Default::default()).await;
    register(&consul, "mysql-a", "db-a", a.addr).await;
    register(&consul, "mysql-b", "db-b", b.addr).await;
    register(&consul, "mysql-x", HOSTILE, hostile_addr).await;
    check(&consul, "pass", "mysql-a", WRITABLE).await;
    let replica_note = read_only(b.addr);
    check(&consul, "fail", "mysql-b", &replica_note).await;
    check(&consul, "fail", "mysql-x", HOSTILE).await;
    consul.wait_passing("mysql", Some("primary"), 1).await;

    // withdrawn_grace 0s: a primary Consul withdraws is dropped at once (the outage test
    // shows a kept one).
    let proxy = consul_proxy(
        &consul,
        &["--hold-timeout", "20s", "--withdrawn-grace", "0s"],
    );
    proxy.wait_for_log("primary changed", T).await;
    wait_status(&proxy, "three instances", |s| instance_count(s) == 3).await;
    let mut client = greeted(proxy.addr()).await;
    assert!(echoes(&mut client).await);

    // Before a failover: the primary, and every instance with its state and why.
    let page = dom(&page_url(&proxy)).await;
    let (a_addr, b_addr) = (a.addr.to_string(), b.addr.to_string());
    let primary = text(element(&page, "section", "primary"));
    has(&primary, &format!("Primary {a_addr} db-a/mysql-a"));
    has(&primary, "epoch 1");
    has(&primary, &format!("ready: primary {a_addr}"));
    let a_row = text(row(&page, &a_addr));
    assert!(
        a_row.starts_with(&format!(
            "primary {a_addr} db-a/mysql-a candidate chosen: single candidate"
        )),
        "{a_row}"
    );
    let b_row = text(row(&page, &b_addr));
    has(&b_row, "db-b/mysql-b critical not a candidate");
    has(&b_row, &replica_note);
    let connections = text(element(&page, "section", "connections"));
    has(&connections, "1 active");
    has(&connections, &format!("{a_addr} primary 1"));
    let fast_path = text(element(&page, "section", "fast-path"));
    assert_eq!(fast_path, "Fast path not configured");
    assert!(text(element(&page, "section", "failovers")).contains("None since the proxy started"));

    // Hostile text from Consul is text: no script element anywhere, the words shown as written.
    assert!(!page.to_ascii_lowercase().contains("<script"), "{page}");
    let x_row = text(row(&page, &hostile_addr.to_string()));
    has(&x_row, &format!("{HOSTILE}/mysql-x critical"));
    assert!(x_row.ends_with(&format!("critical: {HOSTILE}")), "{x_row}");
    has(&page, "&lt;script&gt;alert(1)&lt;/script&gt;");

    // A failover (the hostile instance leaves first, so the saved screenshot reads well).
    consul.deregister("mysql-x").await;
    let mark = proxy.log.len();
    check(
        &consul,
        "fail",
        "mysql-a",
        &format!("CRITICAL: {a_addr} cannot connect: Connection refused"),
    )
    .await;
    check(&consul, "pass", "mysql-b", WRITABLE).await;
    proxy.wait_for_log_from(mark, "primary changed", T).await;
    assert!(
        !echoes(&mut client).await,
        "on_failover = close ends the old connection"
    );
    let mut client = greeted(proxy.addr()).await; // the first client routed to b
    assert!(echoes(&mut client).await);
    proxy.wait_for_log_from(mark, "failover timeline", T).await;
    wait_status(&proxy, "two instances", |s| instance_count(s) == 2).await;

    let page = dom(&page_url(&proxy)).await;
    let primary = text(element(&page, "section", "primary"));
    has(&primary, &format!("Primary {b_addr} db-b/mysql-b"));
    let timeline = text(element(&page, "section", "failovers"));
    let moved = format!("{a_addr} (db-a/mysql-a) → {b_addr} (db-b/mysql-b)");
    has(&timeline, &moved);
    has(&timeline, "connections closed 1");
    has(&timeline, "first client routed after");
    assert!(!timeline.contains("waiting"), "{timeline}");
    assert!(text(row(&page, &b_addr)).starts_with(&format!("primary {b_addr}")));
    assert!(text(row(&page, &a_addr)).contains("critical not a candidate"));
    assert!(
        !page.contains("mysql-x"),
        "deregistered instances leave the page"
    );

    // A second failover with a gap: b is lost, a client waits (held), then a is back.
    let mark = proxy.log.len();
    let demoted = read_only(b.addr);
    check(&consul, "fail", "mysql-b", &demoted).await;
    proxy.wait_for_log_from(mark, "primary lost", T).await;
    let held = tokio::spawn(greeted(proxy.addr()));
    wait_status(&proxy, "a held client", |s| s["connections"]["held"] == 1).await;
    check(&consul, "pass", "mysql-a", WRITABLE).await;
    let mut released = tokio::time::timeout(T, held).await.unwrap().unwrap();
    assert!(echoes(&mut released).await);
    proxy.wait_for_log_from(mark, "failover timeline", T).await;
    let page = dom(&page_url(&proxy)).await;
    let timeline = element(&page, "section", "failovers");
    assert_eq!(
        timeline.matches("class=\"failover\"").count(),
        2,
        "{timeline}"
    );
    let newest = text(&timeline[..timeline.find("</li>").unwrap()]);
    let back = format!("{b_addr} (db-b/mysql-b) → {a_addr} (db-a/mysql-a)");
    has(&newest, &back);
    has(&newest, "held clients released 1");

    // The screenshot (target/tmp/status-page.png; docs/status-page.png is a copy of one run).
    let file = Path::new(env!("CARGO_TARGET_TMPDIR")).join("status-page.png");
    let _ = std::fs::remove_file(&file);
    screenshot(&page_url(&proxy), &file).await;
    let png = std::fs::read(&file).expect("screenshot written");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 20_000,
        "{} bytes",
        png.len()
    );
    eprintln!("status page screenshot: {}", file.display());
}

#[tokio::test]
async fn during_a_consul_outage_or_a_withdrawal_the_page_shows_why_the_primary_is_kept() {
    let a = EchoBackend::start().await;
    let consul = TestConsul::start_double(Default::default()).await;
    register(&consul, "mysql-a", "db-a", a.addr).await;
    check(&consul, "pass", "mysql-a", "OK").await;
    consul.wait_passing("mysql", Some("primary"), 1).await;
    let proxy = consul_proxy(&consul, &["--consul-wait", "1s"]);
    proxy.wait_for_log("primary changed", T).await;
    let page = dom(&page_url(&proxy)).await;
    assert!(!page.contains("discovery-failing"), "{page}");

    let faults = consul.faults().expect("the double has fault switches");
    let mark = proxy.log.len();
    faults.fail_with(Some((500, "No cluster leader".into())));
    proxy
        .wait_for_log_from(mark, "discovery unavailable", T)
        .await;
    let page = dom(&page_url(&proxy)).await;
    let a_addr = a.addr.to_string();
    let discovery = text(element(&page, "section", "discovery"));
    has(&discovery, "Discovery is failing:");
    has(&discovery, "No cluster leader");
    has(
        &discovery,
        &format!("Keeping the last known primary {a_addr} db-a/mysql-a"),
    );
    let last_error = text(element(&page, "dd", "last-error"));
    has(&last_error, "No cluster leader");
    let primary = text(element(&page, "section", "primary"));
    has(&primary, &format!("Primary {a_addr}"));
    has(&primary, &format!("ready: primary {a_addr}"));

    // Consul answers again: the alarm goes, the error stays on record.
    faults.clear();
    proxy
        .wait_for_log_from(mark, "discovery recovered", T)
        .await;
    let page = dom(&page_url(&proxy)).await;
    assert!(!page.contains("discovery-failing"), "{page}");
    assert!(text(element(&page, "dd", "last-error")).contains("No cluster leader"));

    // Consul withdraws the primary with no replacement: still routed to (withdrawn_grace), and
    // the page says so.
    check(
        &consul,
        "fail",
        "mysql-a",
        "CRITICAL: agent lost sight of it",
    )
    .await;
    proxy
        .wait_for_log_from(mark, "primary withdrawn by Consul", T)
        .await;
    let page = dom(&page_url(&proxy)).await;
    let withdrawn = text(element(&page, "p", "withdrawn"));
    assert!(withdrawn.starts_with("Withdrawn by Consul"), "{withdrawn}");
    has(&withdrawn, "CRITICAL: agent lost sight of it");
    let a_row = text(row(&page, &a_addr));
    assert!(
        a_row.starts_with(&format!(
            "primary (withdrawn) {a_addr} db-a/mysql-a critical"
        )),
        "{a_row}"
    );
}
