//! `consul-mysql-proxy check` against real MariaDB servers: exit codes and the one-line reason
//! for a primary, a replica, a lagging and a broken replica, a hung and a stopped server, the
//! password sources, `--print-service-definition`, and the Consul double running the printed
//! definition.

mod support;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use serde_json::Value;
use support::consul::TestConsul;
use support::mariadb::{MariaDb, MariaDbPair};
use support::proxy::binary;

/// Bound for every "poll until the check says X" loop.
const LIMIT: Duration = Duration::from_secs(15);

/// One run of `consul-mysql-proxy check …`.
#[derive(Debug)]
struct Outcome {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    took: Duration,
}

impl Outcome {
    /// Asserts the exit code and that stdout is one line starting with `prefix`; returns it.
    fn expect(&self, code: i32, prefix: &str) -> &str {
        let line = self.stdout.trim_end();
        eprintln!("exit {:?} in {:?}: {line}", self.code, self.took);
        assert_eq!(self.code, Some(code), "{self:#?}");
        assert!(!line.contains('\n'), "more than one line: {self:#?}");
        assert!(line.starts_with(prefix), "want {prefix:?}: {self:#?}");
        line
    }
}

/// Runs the check (async: the Consul double may live on this test's runtime). `MYSQL_PWD` is
/// removed from the inherited environment; pass it in `env` when a run needs it.
async fn run_check(args: &[String], env: &[(&str, &str)]) -> Outcome {
    let start = Instant::now();
    let out = tokio::process::Command::new(binary())
        .arg("check")
        .args(args)
        .env_remove("MYSQL_PWD")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .await
        .expect("run consul-mysql-proxy check");
    Outcome {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        took: start.elapsed(),
    }
}

fn args(db: &MariaDb, user: &str, role: &str, extra: &[&str]) -> Vec<String> {
    let mut a: Vec<String> = [
        "--host",
        &db.ip().to_string(),
        "--port",
        &db.port().to_string(),
        "--user",
        user,
        "--role",
        role,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

/// The check as `admin` with the password in `MYSQL_PWD`.
async fn check(db: &MariaDb, role: &str, extra: &[&str]) -> Outcome {
    run_check(&args(db, "admin", role, extra), &[("MYSQL_PWD", "admin")]).await
}

/// Re-runs the check until it exits with `code` (bounded by [`LIMIT`]); returns that run.
async fn wait_for_code(db: &MariaDb, role: &str, extra: &[&str], code: i32) -> Outcome {
    let deadline = Instant::now() + LIMIT;
    loop {
        let out = check(db, role, extra).await;
        if out.code == Some(code) {
            return out;
        }
        assert!(
            Instant::now() < deadline,
            "check never exited {code} within {LIMIT:?}; last run: {out:#?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn password_file(dir: &Path, password: &str) -> String {
    let path = dir.join("mysql.pw");
    std::fs::write(&path, format!("{password}\n")).expect("write password file");
    path.to_string_lossy().into_owned()
}

#[tokio::test]
async fn primary_and_replica_pass_only_in_their_own_role() {
    let pair = MariaDbPair::start().await;
    let (p, r) = (&pair.primary, &pair.replica);

    let line = check(p, "primary", &[]).await.expect(0, "OK:").to_owned();
    assert_eq!(
        line,
        format!(
            "OK: primary {} writable (read_only=OFF), not replicating",
            p.addr()
        )
    );
    let out = check(p, "replica", &[]).await;
    assert!(
        out.expect(2, "CRITICAL:")
            .contains("is not a replica: no replication configured"),
        "{out:#?}"
    );

    let out = check(r, "replica", &[]).await;
    let line = out.expect(0, "OK:");
    assert!(
        line.starts_with(&format!("OK: replica {} of {} running", r.addr(), p.addr())),
        "{line}"
    );
    let out = check(r, "primary", &[]).await;
    let line = out.expect(2, "CRITICAL:");
    assert!(
        line.contains("is read-only (read_only=ON)")
            && line.contains(&format!("replicates from {}", p.addr()))
            && line.ends_with("not a primary"),
        "{line}"
    );

    // Password sources: the file, and the file over a wrong MYSQL_PWD.
    let dir = tempfile::tempdir().unwrap();
    let file = password_file(dir.path(), "admin");
    let out = run_check(
        &args(p, "admin", "primary", &["--password-file", &file]),
        &[],
    )
    .await;
    out.expect(0, "OK:");
    let out = run_check(
        &args(r, "admin", "replica", &["--password-file", &file]),
        &[("MYSQL_PWD", "wrong")],
    )
    .await;
    out.expect(0, "OK:");

    // Wrong password: critical, naming the server's answer.
    let out = run_check(&args(p, "admin", "primary", &[]), &[("MYSQL_PWD", "wrong")]).await;
    let line = out.expect(2, "CRITICAL:");
    assert!(
        line.contains(&format!("cannot connect to {} as admin", p.addr()))
            && line.contains("Access denied"),
        "{line}"
    );
    let bad_file = password_file(dir.path(), "wrong");
    let out = run_check(
        &args(p, "admin", "primary", &["--password-file", &bad_file]),
        &[],
    )
    .await;
    assert!(out.expect(2, "CRITICAL:").contains("Access denied"));

    // A user without the replication-monitoring privilege: critical, saying which grant.
    let out = run_check(&args(p, "app", "primary", &[]), &[("MYSQL_PWD", "app")]).await;
    let line = out.expect(2, "CRITICAL:");
    assert!(
        line.contains("SHOW ALL SLAVES STATUS") && line.contains("SLAVE MONITOR"),
        "{line}"
    );
}

#[tokio::test]
async fn lagging_and_broken_replication_on_the_replica() {
    let pair = MariaDbPair::start().await;
    let (p, r) = (&pair.primary, &pair.replica);
    p.admin_exec("CREATE TABLE testbed.lag (id INT PRIMARY KEY, v INT NOT NULL); INSERT INTO testbed.lag VALUES (1, 0)")
        .await;
    pair.wait_replicated().await;

    // Lag: hold a row lock on the replica so its SQL thread blocks on the next update, and
    // write that update on the primary with a timestamp two minutes in the past: the replica
    // reports Seconds_Behind_Master ≈ 120 at once.
    let mut holder = r.admin_conn().await.unwrap();
    holder
        .query_drop("BEGIN; SELECT v FROM testbed.lag WHERE id = 1 FOR UPDATE")
        .await
        .unwrap();
    p.admin_exec(
        "SET TIMESTAMP = UNIX_TIMESTAMP() - 120; UPDATE testbed.lag SET v = v + 1 WHERE id = 1",
    )
    .await;
    let out = wait_for_code(r, "replica", &[], 1).await;
    let line = out.expect(1, "WARNING:");
    assert!(
        line.contains("replica lag ") && line.ends_with("> max 30s"),
        "{line}"
    );
    holder.query_drop("ROLLBACK").await.unwrap();
    holder.disconnect().await.unwrap();
    wait_for_code(r, "replica", &[], 0).await.expect(0, "OK:");

    // A stopped SQL thread: a row that exists on the replica only makes the primary's insert
    // of the same key fail there (1062).
    r.admin_exec("INSERT INTO testbed.lag VALUES (5, 0)").await;
    p.admin_exec("INSERT INTO testbed.lag VALUES (5, 1)").await;
    let out = wait_for_code(r, "replica", &[], 2).await;
    let line = out.expect(2, "CRITICAL:");
    assert!(
        line.contains("SQL thread not running (Slave_SQL_Running=No): Last_SQL_Error: ")
            && line.contains("Duplicate entry '5'"),
        "{line}"
    );
    assert!(!line.contains("IO thread"), "{line}");

    // Replication stopped on a writable node: still not a primary (it is configured as a
    // replica), and not a replica either.
    r.admin_exec("STOP SLAVE; SET GLOBAL read_only = OFF").await;
    let line = check(r, "primary", &[]).await;
    assert_eq!(
        line.expect(2, "CRITICAL:"),
        format!(
            "CRITICAL: {} is configured as a replica of {} (replication stopped): not a primary",
            r.addr(),
            p.addr()
        )
    );
    let out = check(r, "replica", &[]).await;
    let line = out.expect(2, "CRITICAL:");
    assert!(
        line.contains("is writable (read_only=OFF)")
            && line.contains("IO thread not running (Slave_IO_Running=No)"),
        "{line}"
    );
}

#[tokio::test]
async fn hung_and_stopped_servers_are_critical() {
    let db = MariaDb::start("127.0.0.1".parse().unwrap()).await;
    check(&db, "primary", &[]).await.expect(0, "OK:");

    // SIGSTOP: the kernel still accepts the TCP connection, the handshake never comes.
    db.sigstop();
    let out = check(&db, "primary", &["--timeout", "1s"]).await;
    db.sigcont();
    let line = out.expect(2, "CRITICAL:");
    assert!(
        line.contains(&format!("{}: timed out after 1s connecting", db.addr())),
        "{line}"
    );
    assert!(
        out.took >= Duration::from_millis(900) && out.took < Duration::from_secs(3),
        "took {:?}",
        out.took
    );

    db.stop_clean().await;
    let out = check(&db, "primary", &["--timeout", "1s"]).await;
    let line = out.expect(2, "CRITICAL:");
    assert!(
        line.contains(&format!("cannot connect to {} as admin", db.addr()))
            && line.contains("Connection refused"),
        "{line}"
    );
}

#[tokio::test]
async fn bad_flags_are_critical_on_stdout() {
    let run = |a: &[&str]| {
        let a: Vec<String> = a.iter().map(|s| s.to_string()).collect();
        async move { run_check(&a, &[]).await }
    };
    let out = run(&["--host", "127.0.0.1", "--user", "u", "--role", "boss"]).await;
    assert_eq!(
        out.expect(2, "CRITICAL:"),
        "CRITICAL: bad flags: --role must be primary or replica, not `boss`"
    );
    let out = run(&["--host", "127.0.0.1", "--role", "primary"]).await;
    assert!(out.expect(2, "CRITICAL:").contains("--user is required"));
    let out = run(&[
        "--host",
        "h",
        "--user",
        "u",
        "--role",
        "replica",
        "--max-lag",
        "x",
    ])
    .await;
    assert!(out.expect(2, "CRITICAL:").contains("--max-lag"));

    // No --password flag exists. clap rejects it before `check` runs; whatever main does with
    // that error, Consul must see it as critical (not 0 or 1) with the reason in its output.
    let out = run(&[
        "--host",
        "h",
        "--user",
        "u",
        "--role",
        "primary",
        "--password",
        "x",
    ])
    .await;
    assert!(!matches!(out.code, Some(0) | Some(1)), "{out:#?}");
    assert!(
        format!("{}{}", out.stdout, out.stderr).contains("--password"),
        "{out:#?}"
    );
}

#[tokio::test]
async fn print_service_definition_is_registration_json() {
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("monitor.pw");
    let a: Vec<String> = [
        "--print-service-definition",
        "--host",
        "127.0.0.1",
        "--port",
        "3307",
        "--user",
        "monitor",
        "--role",
        "replica",
        "--address",
        "10.0.0.7",
        "--tags",
        "replica,eu",
        "--meta",
        "priority=50",
        "--interval",
        "1500ms",
        "--timeout",
        "2s",
        "--max-lag",
        "10s",
        "--deregister-critical-after",
        "10m",
        "--password-file",
        pw.to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    // Must not connect: nothing listens on 3307 here, and it still exits 0 at once.
    let out = run_check(&a, &[]).await;
    assert_eq!(out.code, Some(0), "{out:#?}");
    let def: Value = serde_json::from_str(&out.stdout).expect("JSON on stdout");
    assert_eq!(def["ID"], "mysql-replica-127.0.0.1-3307");
    assert_eq!(def["Name"], "mysql");
    assert_eq!(def["Tags"], serde_json::json!(["replica", "eu"]));
    assert_eq!(def["Address"], "10.0.0.7");
    assert_eq!(def["Port"], 3307);
    assert_eq!(def["Meta"]["role"], "replica");
    assert_eq!(def["Meta"]["priority"], "50");
    let check = &def["Check"];
    assert_eq!(check["Interval"], "1500ms");
    assert_eq!(check["Timeout"], "3s");
    assert_eq!(check["DeregisterCriticalServiceAfter"], "600s");
    // Consul's run thresholds (api/agent.go AgentServiceCheck): defaults that keep one failed
    // or slow run from flipping the primary.
    assert_eq!(check["FailuresBeforeCritical"], 2);
    assert_eq!(check["SuccessBeforePassing"], 1);
    let args: Vec<&str> = check["Args"]
        .as_array()
        .expect("Args")
        .iter()
        .map(|v| v.as_str().expect("string arg"))
        .collect();
    let exe = std::fs::canonicalize(binary()).unwrap();
    assert_eq!(Path::new(args[0]), exe, "absolute path of the binary");
    assert_eq!(
        &args[1..],
        [
            "check",
            "--host",
            "127.0.0.1",
            "--port",
            "3307",
            "--user",
            "monitor",
            "--role",
            "replica",
            "--timeout",
            "2s",
            "--max-lag",
            "10s",
            "--password-file",
            pw.to_str().unwrap()
        ]
    );

    // The file format wraps it for `consul services register` and the agent's config dir,
    // whose decoder takes the thresholds only as snake_case keys (agent/config/config.go
    // CheckDefinition).
    let mut file_args = a.clone();
    file_args.extend([
        "--definition-format".into(),
        "file".into(),
        "--failures-before-critical".into(),
        "3".into(),
        "--success-before-passing".into(),
        "2".into(),
    ]);
    let out = run_check(&file_args, &[]).await;
    let wrapped: Value = serde_json::from_str(&out.stdout).expect("JSON");
    let mut expected = def.clone();
    let c = expected["Check"].as_object_mut().unwrap();
    c.remove("FailuresBeforeCritical");
    c.remove("SuccessBeforePassing");
    c.insert("failures_before_critical".into(), 3.into());
    c.insert("success_before_passing".into(), 2.into());
    assert_eq!(wrapped["Service"], expected);

    // Outside --print-service-definition they are refused like the other service flags.
    let mut plain: Vec<String> = a[1..].to_vec();
    plain.extend(["--failures-before-critical".into(), "3".into()]);
    let out = run_check(&plain, &[]).await;
    assert_eq!(out.code, Some(2), "{out:#?}");
    assert!(
        out.stdout
            .contains("--failures-before-critical only apply with --print-service-definition"),
        "{out:#?}"
    );
}

#[tokio::test]
async fn consul_runs_the_printed_definition() {
    let pair = MariaDbPair::start().await;
    let consul = TestConsul::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = password_file(dir.path(), "admin");
    // Both nodes registered as role primary, with the definition the binary prints.
    for (id, db) in [("mysql-a", &pair.primary), ("mysql-b", &pair.replica)] {
        let extra = [
            "--print-service-definition",
            "--id",
            id,
            "--interval",
            "1s",
            "--timeout",
            "2s",
            "--password-file",
            &file,
        ];
        let out = run_check(&args(db, "admin", "primary", &extra), &[]).await;
        assert_eq!(out.code, Some(0), "{out:#?}");
        let url = format!("{}/v1/agent/service/register", consul.http_url());
        let r = reqwest::Client::builder()
            .no_proxy()
            .build()
            .unwrap()
            .put(&url)
            .body(out.stdout)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "register {id}: {}", r.status());
    }
    let passing = consul.wait_passing("mysql", Some("primary"), 1).await;
    assert_eq!(passing[0]["Service"]["Port"], pair.primary.port());

    // The replica's check ran too and stays critical, with our reason as its output.
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let deadline = Instant::now() + LIMIT;
    let output = loop {
        let url = format!("{}/v1/health/service/mysql", consul.http_url());
        let entries: Vec<Value> = http.get(&url).send().await.unwrap().json().await.unwrap();
        let checks: Vec<&Value> = entries
            .iter()
            .filter_map(|e| e["Checks"].as_array())
            .flatten()
            .collect();
        let b = checks.iter().find(|c| c["ServiceID"] == "mysql-b");
        if let Some(c) = b
            && c["Output"].as_str().is_some_and(|o| !o.is_empty())
        {
            assert_eq!(c["Status"], "critical", "{c}");
            break c["Output"].as_str().unwrap_or_default().to_owned();
        }
        assert!(Instant::now() < deadline, "mysql-b never ran: {checks:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        output.starts_with("CRITICAL: ") && output.contains("not a primary"),
        "{output}"
    );
    assert_eq!(
        consul.health_passing("mysql", Some("primary")).await.len(),
        1
    );
}
