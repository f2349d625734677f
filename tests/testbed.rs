//! Tests of the MariaDB test bed itself (`tests/support/mariadb.rs`): real servers, replication,
//! failover and switchover as the other integration tests use them.

mod support;

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use mysql_async::Conn;
use mysql_async::prelude::Queryable;
use support::mariadb::{MariaDb, MariaDbPair, PairOptions, StopHow, ensure_template_in, port_via};

/// Prints the wall time of a test when dropped (run with `--nocapture` to see it).
struct Timer(&'static str, Instant);
impl Timer {
    fn new(name: &'static str) -> Timer {
        Timer(name, Instant::now())
    }
}
impl Drop for Timer {
    fn drop(&mut self) {
        eprintln!("[testbed] {} took {:.2?}", self.0, self.1.elapsed());
    }
}

fn server_code(e: &mysql_async::Error) -> Option<u16> {
    match e {
        mysql_async::Error::Server(s) => Some(s.code),
        _ => None,
    }
}

async fn app(db: &MariaDb) -> Conn {
    Conn::new(db.app_opts())
        .await
        .unwrap_or_else(|e| panic!("connect as app to {}: {e}", db.label()))
}

async fn count(db: &MariaDb, table: &str) -> u64 {
    db.admin_query_one(&format!("SELECT COUNT(*) FROM app.{table}"))
        .await
}

fn process_exists(pid: u32) -> bool {
    // SAFETY: signal 0 only checks for existence.
    unsafe { libc::kill(pid as libc::pid_t, 0) == 0 }
}

#[tokio::test]
async fn pair_replicates_and_replica_is_read_only() {
    let _t = Timer::new("pair_replicates_and_replica_is_read_only");
    let pair = MariaDbPair::start().await;
    assert_ne!(pair.primary.port(), pair.replica.port());
    assert_ne!(pair.primary.server_id(), pair.replica.server_id());

    let mut p = app(&pair.primary).await;
    p.query_drop("CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(20))")
        .await
        .unwrap();
    p.query_drop("INSERT INTO t VALUES (1, 'hello')")
        .await
        .unwrap();
    pair.wait_caught_up().await;

    let mut r = app(&pair.replica).await;
    let v: Option<String> = r.query_first("SELECT v FROM t WHERE id = 1").await.unwrap();
    assert_eq!(v.as_deref(), Some("hello"));
    let err = r
        .query_drop("INSERT INTO t VALUES (2, 'replica')")
        .await
        .expect_err("replica must be read-only");
    assert_eq!(server_code(&err), Some(1290), "{err}");
    p.query_drop("INSERT INTO t VALUES (2, 'primary')")
        .await
        .expect("primary is writable");

    assert_eq!(
        pair.replica
            .admin_query_one::<u8>("SELECT @@read_only")
            .await,
        1
    );
    assert_eq!(
        pair.primary
            .admin_query_one::<u8>("SELECT @@read_only")
            .await,
        0
    );
    assert_eq!(port_via(pair.primary.addr()).await, pair.primary.port());
    assert_eq!(port_via(pair.replica.addr()).await, pair.replica.port());
    // No anonymous users, and both nodes have the same accounts.
    let users = "SELECT GROUP_CONCAT(CONCAT(User, '@', Host) ORDER BY User, Host) FROM mysql.user";
    let on_primary: String = pair.primary.admin_query_one(users).await;
    assert_eq!(
        on_primary,
        pair.replica.admin_query_one::<String>(users).await
    );
    assert!(
        !on_primary.split(',').any(|u| u.starts_with('@')),
        "anonymous user in {on_primary}"
    );
    p.disconnect().await.unwrap();
    r.disconnect().await.unwrap();
}

#[tokio::test]
async fn promote_after_kill9_applies_relay_log() {
    let _t = Timer::new("promote_after_kill9_applies_relay_log");
    let mut pair = MariaDbPair::start().await;
    let (old_primary_port, old_replica_port) = (pair.primary.port(), pair.replica.port());
    let mut p = app(&pair.primary).await;
    p.query_drop("CREATE TABLE t (id INT PRIMARY KEY)")
        .await
        .unwrap();
    p.query_drop("INSERT INTO t SELECT seq FROM seq_1_to_100")
        .await
        .unwrap();
    pair.wait_caught_up().await;

    // Leave a backlog in the replica's relay log: received but not applied when the primary dies.
    pair.replica.admin_exec("STOP SLAVE SQL_THREAD").await;
    p.query_drop("INSERT INTO t SELECT seq FROM seq_101_to_150")
        .await
        .unwrap();
    let want: String = pair
        .primary
        .admin_query_one("SELECT @@gtid_binlog_pos")
        .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let st = pair
            .replica
            .slave_status()
            .await
            .unwrap()
            .expect("is a replica");
        let io_pos = st
            .iter()
            .find(|(k, _)| k == "Gtid_IO_Pos")
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        if io_pos == want {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "replica never received {want}: {st:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        count(&pair.replica, "t").await,
        100,
        "backlog must not be applied yet"
    );
    drop(p);

    let old_pid = pair.primary.pid();
    pair.promote(StopHow::Kill9).await;

    assert_eq!(pair.primary.port(), old_replica_port, "roles swapped");
    assert_eq!(pair.replica.port(), old_primary_port);
    assert!(!pair.replica.is_running());
    assert!(
        !process_exists(old_pid),
        "old mariadbd {old_pid} still exists"
    );
    assert!(pair.replica.try_admin_exec("SELECT 1").await.is_err());

    assert_eq!(
        count(&pair.primary, "t").await,
        150,
        "relay-log backlog applied before RESET SLAVE ALL"
    );
    assert!(
        pair.primary.slave_status().await.unwrap().is_none(),
        "SHOW SLAVE STATUS must be empty"
    );
    assert_eq!(
        pair.primary
            .admin_query_one::<u8>("SELECT @@read_only")
            .await,
        0
    );
    let mut n = app(&pair.primary).await;
    n.query_drop("INSERT INTO t VALUES (151)")
        .await
        .expect("new primary is writable");
    assert_eq!(count(&pair.primary, "t").await, 151);
    n.disconnect().await.unwrap();
}

#[tokio::test]
async fn switchover_repoint_and_fail_back() {
    let _t = Timer::new("switchover_repoint_and_fail_back");
    let mut pair = MariaDbPair::start().await;
    let (a, b) = (pair.primary.port(), pair.replica.port());
    let mut c = app(&pair.primary).await;
    c.query_drop("CREATE TABLE t (id INT PRIMARY KEY, note VARCHAR(20))")
        .await
        .unwrap();
    c.query_drop("INSERT INTO t VALUES (1, 'on a')")
        .await
        .unwrap();
    c.disconnect().await.unwrap();

    pair.switchover().await;
    assert_eq!(
        (pair.primary.port(), pair.replica.port()),
        (b, a),
        "roles swapped"
    );
    assert!(
        pair.replica.is_running(),
        "switchover keeps the old primary running"
    );
    let mut old = app(&pair.replica).await;
    let err = old
        .query_drop("INSERT INTO t VALUES (9, 'x')")
        .await
        .expect_err("old primary is read-only");
    assert_eq!(server_code(&err), Some(1290), "{err}");
    drop(old);

    pair.repoint_old_primary_as_replica().await;
    let mut c = app(&pair.primary).await;
    c.query_drop("INSERT INTO t VALUES (2, 'on b')")
        .await
        .expect("new primary is writable");
    c.disconnect().await.unwrap();
    pair.wait_caught_up().await;
    let mut old = app(&pair.replica).await;
    let rows: Vec<(i32, String)> = old
        .query("SELECT id, note FROM t ORDER BY id")
        .await
        .unwrap();
    assert_eq!(rows, vec![(1, "on a".to_string()), (2, "on b".to_string())]);
    old.disconnect().await.unwrap();

    // Fail back: the original primary is the primary again, replicating to the other one.
    pair.switchover().await;
    pair.repoint_old_primary_as_replica().await;
    assert_eq!((pair.primary.port(), pair.replica.port()), (a, b));
    pair.primary
        .admin_exec("INSERT INTO app.t VALUES (3, 'on a again')")
        .await;
    pair.wait_caught_up().await;
    assert_eq!(count(&pair.replica, "t").await, 3);
}

#[tokio::test]
async fn two_pairs_start_concurrently() {
    let _t = Timer::new("two_pairs_start_concurrently");
    let (x, y) = tokio::join!(MariaDbPair::start(), MariaDbPair::start());
    let mut ports = vec![
        x.primary.port(),
        x.replica.port(),
        y.primary.port(),
        y.replica.port(),
    ];
    ports.sort_unstable();
    ports.dedup();
    assert_eq!(ports.len(), 4, "distinct ports");
    for db in [&x.primary, &x.replica, &y.primary, &y.replica] {
        assert_eq!(port_via(db.addr()).await, db.port());
        let sid: u32 = db.admin_query_one("SELECT @@server_id").await;
        assert_eq!(sid, db.server_id());
    }
    // The pairs are independent: a table made on one pair's primary is not on the other pair.
    x.primary
        .admin_exec("CREATE TABLE app.only_x (id INT)")
        .await;
    x.wait_caught_up().await;
    y.wait_caught_up().await;
    let q = "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = 'app' AND table_name = 'only_x'";
    assert_eq!(x.replica.admin_query_one::<u64>(q).await, 1);
    assert_eq!(y.primary.admin_query_one::<u64>(q).await, 0);
    assert_eq!(y.replica.admin_query_one::<u64>(q).await, 0);
}

#[tokio::test]
async fn pair_on_other_loopback_ips_clean_failover_and_restart() {
    let _t = Timer::new("pair_on_other_loopback_ips_clean_failover_and_restart");
    let (ip2, ip3) = (
        IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)),
        IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3)),
    );
    let mut pair = MariaDbPair::start_with(PairOptions {
        primary_ip: ip2,
        replica_ip: ip3,
    })
    .await;
    assert_eq!((pair.primary.ip(), pair.replica.ip()), (ip2, ip3));
    assert_eq!(
        pair.primary
            .admin_query_one::<String>("SELECT @@bind_address")
            .await,
        "127.0.0.2"
    );
    assert_eq!(
        pair.replica
            .admin_query_one::<String>("SELECT @@bind_address")
            .await,
        "127.0.0.3"
    );
    let st = pair.replica.slave_status().await.unwrap().expect("replica");
    assert!(
        st.contains(&("Master_Host".to_string(), "127.0.0.2".to_string())),
        "{st:?}"
    );
    assert_eq!(port_via(pair.primary.addr()).await, pair.primary.port());

    pair.primary
        .admin_exec("CREATE TABLE app.t (id INT PRIMARY KEY); INSERT INTO app.t VALUES (1)")
        .await;
    pair.promote(StopHow::Clean).await;
    assert_eq!(pair.primary.ip(), ip3);
    assert!(!pair.replica.is_running());
    assert_eq!(count(&pair.primary, "t").await, 1);

    // The old primary comes back on the same address, then follows the new primary.
    let addr = pair.replica.addr();
    pair.replica.restart().await;
    assert!(pair.replica.is_running());
    assert_eq!(pair.replica.addr(), addr);
    assert_eq!(port_via(addr).await, addr.port());
    pair.repoint_old_primary_as_replica().await;
    pair.primary
        .admin_exec("INSERT INTO app.t VALUES (2)")
        .await;
    pair.wait_caught_up().await;
    assert_eq!(count(&pair.replica, "t").await, 2);
}

#[tokio::test]
async fn single_instance_signals_and_restart() {
    let _t = Timer::new("single_instance_signals_and_restart");
    let db = MariaDb::start(IpAddr::V4(Ipv4Addr::LOCALHOST)).await;
    assert!(db.socket_path().exists());
    assert!(db.datadir().join("mysql").is_dir());
    assert_eq!(db.admin_query_one::<u8>("SELECT @@read_only").await, 0);

    db.sigstop();
    assert!(db.is_stopped() && db.is_running());
    let frozen =
        tokio::time::timeout(Duration::from_millis(500), db.try_admin_exec("SELECT 1")).await;
    assert!(
        frozen.is_err(),
        "a SIGSTOPped server must not answer: {frozen:?}"
    );
    db.sigcont();
    assert!(!db.is_stopped());
    db.admin_exec("SELECT 1").await;

    let pid = db.pid();
    db.kill9();
    assert!(!db.is_running());
    assert!(!process_exists(pid));
    db.restart().await;
    assert_ne!(db.pid(), pid);
    assert_eq!(port_via(db.addr()).await, db.port());
    db.stop_clean().await;
    assert!(!db.is_running());
    assert!(db.error_log().exists());
    let dir = db.dir().to_path_buf();
    drop(db);
    assert!(!dir.exists(), "instance dir removed on drop");
}

#[test]
fn template_build_race_has_one_winner() {
    let _t = Timer::new("template_build_race_has_one_winner");
    let parent = tempfile::tempdir().unwrap();
    let p = parent.path().to_path_buf();
    let handles: Vec<_> = (0..2)
        .map(|_| {
            let p = p.clone();
            std::thread::spawn(move || ensure_template_in(&p))
        })
        .collect();
    let results: Vec<_> = handles
        .into_iter()
        .map(|h| h.join().unwrap().expect("template built"))
        .collect();
    assert_eq!(results[0], results[1]);
    assert!(results[0].join("mysql").join("global_priv.MAI").exists());
    let entries: Vec<_> = std::fs::read_dir(&p)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(entries.len(), 1, "only the template is left: {entries:?}");
}
