//! Helpers for the fast-path tests (`tests/fastpath.rs`): a cgroup v2 directory per test and
//! processes started inside it, TCP "witness" servers that report who connected and how the
//! connection ended, and the kernel's own socket table (`/proc/net/tcp{,6}`) as an
//! independent view of who is connected to whom.
//!
//! * [`TestCgroup`]: `cmp-fastpath-<pid>-<n>` under the cgroup2 mount (found in
//!   `/proc/self/mountinfo`; `/sys/fs/cgroup/unified` on hybrid hosts). Dropping it (also on
//!   panic) kills what still runs inside (`cgroup.kill`), waits (bounded) until it is empty
//!   and removes it. Leftovers of killed test processes (directories of dead pids) are
//!   removed by the next [`TestCgroup::create`].
//! * [`TestCgroup::command`]: a `Command` whose process joins the cgroup before it execs the
//!   program (`sh -c 'echo $$ > cgroup.procs && exec …'`), so every socket it creates is the
//!   cgroup's.
//! * [`Witness`]: a std TCP server on its own threads that echoes lines and sends an
//!   [`Event`] per accept and per end (EOF or the errno that ended it, and when).
//! * [`tcp_sockets`] / [`socket_owned_by`]: `/proc/net/tcp{,6}` rows and the `/proc/<pid>/fd`
//!   check `ss -tnp` makes.

use std::fs;
use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const PREFIX: &str = "cmp-fastpath-";
const EMPTY_DEADLINE: Duration = Duration::from_secs(5);
const POLL: Duration = Duration::from_millis(10);

/// Whether this process runs with effective uid 0 (from `/proc/self/status`).
pub fn is_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

/// A cgroup v2 directory owned by one test.
pub struct TestCgroup {
    pub path: PathBuf,
}

impl TestCgroup {
    pub fn create(root: &Path) -> TestCgroup {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        sweep_leftovers(root);
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let path = root.join(format!("{PREFIX}{}-{n}", std::process::id()));
        fs::create_dir(&path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
        TestCgroup { path }
    }

    /// `program args…` run inside this cgroup: the shell joins it, then execs the program.
    pub fn command(&self, program: &Path) -> Command {
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(r#"echo $$ > "$1" && shift && exec "$@""#)
            .arg("sh")
            .arg(self.path.join("cgroup.procs"))
            .arg(program);
        cmd
    }

    /// The pids in the cgroup now.
    pub fn procs(&self) -> Vec<u32> {
        procs(&self.path)
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        remove(&self.path);
    }
}

fn procs(dir: &Path) -> Vec<u32> {
    fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// Kills everything inside, waits until it is empty, removes it (all bounded).
fn remove(dir: &Path) {
    let _ = fs::write(dir.join("cgroup.kill"), "1");
    let deadline = Instant::now() + EMPTY_DEADLINE;
    loop {
        for pid in procs(dir) {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
        match fs::remove_dir(dir) {
            Ok(()) => return,
            Err(e) if e.kind() == ErrorKind::NotFound => return,
            Err(e) if Instant::now() > deadline => {
                eprintln!("cannot remove test cgroup {}: {e}", dir.display());
                return;
            }
            Err(_) => std::thread::sleep(POLL), // processes still exiting: no signal for it
        }
    }
}

/// Removes `cmp-fastpath-<pid>-*` directories of processes that no longer exist.
fn sweep_leftovers(root: &Path) {
    let Ok(entries) = fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let pid = rest.split('-').next().unwrap_or_default();
        if !pid.is_empty() && !Path::new("/proc").join(pid).exists() {
            remove(&entry.path());
        }
    }
}

/// What a [`Witness`] saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Accepted {
        peer: SocketAddr,
    },
    Ended {
        peer: SocketAddr,
        how: End,
        at: Instant,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    Eof,
    /// The raw OS error that ended the connection (ECONNRESET for a RST).
    Errno(i32),
}

/// A TCP server that echoes lines and reports accepts and ends.
pub struct Witness {
    pub addr: SocketAddr,
    events: mpsc::Receiver<Event>,
}

impl Witness {
    pub fn start(bind: &str) -> Witness {
        let listener = TcpListener::bind(bind).unwrap_or_else(|e| panic!("bind {bind}: {e}"));
        let addr = listener.local_addr().unwrap();
        let (tx, events) = mpsc::channel();
        // The threads end when the test process does; a test ends in seconds.
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let Ok(peer) = conn.peer_addr() else { continue };
                if tx.send(Event::Accepted { peer }).is_err() {
                    return;
                }
                let tx = tx.clone();
                std::thread::spawn(move || {
                    let how = echo_lines(conn);
                    let _ = tx.send(Event::Ended {
                        peer,
                        how,
                        at: Instant::now(),
                    });
                });
            }
        });
        Witness { addr, events }
    }

    /// The next event within `timeout`.
    pub fn next(&self, timeout: Duration) -> Option<Event> {
        self.events.recv_timeout(timeout).ok()
    }

    /// The next accept within `timeout` (other events before it are dropped).
    pub fn accepted(&self, timeout: Duration) -> Option<SocketAddr> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            if let Event::Accepted { peer } = self.next(left)? {
                return Some(peer);
            }
        }
    }

    /// The end of the connection from `peer` within `timeout`.
    pub fn ended(&self, peer: SocketAddr, timeout: Duration) -> Option<(End, Instant)> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            if let Event::Ended { peer: p, how, at } = self.next(left)?
                && p == peer
            {
                return Some((how, at));
            }
        }
    }

    /// Events already delivered and not yet read.
    pub fn pending(&self) -> Vec<Event> {
        self.events.try_iter().collect()
    }
}

fn echo_lines(conn: std::net::TcpStream) -> End {
    let Ok(mut writer) = conn.try_clone() else {
        return End::Errno(0);
    };
    let mut reader = BufReader::new(conn);
    let mut line = String::new();
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) => return End::Eof,
            Ok(_) => {
                if let Err(e) = writer.write_all(line.as_bytes()) {
                    return End::Errno(e.raw_os_error().unwrap_or(0));
                }
            }
            Err(e) => return End::Errno(e.raw_os_error().unwrap_or(0)),
        }
    }
}

/// One row of `/proc/net/tcp` or `/proc/net/tcp6`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpRow {
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// The kernel's TCP state number (1 = ESTABLISHED).
    pub state: u8,
    pub inode: u64,
}

pub const TCP_ESTABLISHED: u8 = 1;

/// All TCP sockets of this network namespace, IPv4 and IPv6.
pub fn tcp_sockets() -> Vec<TcpRow> {
    let mut out: Vec<TcpRow> = Vec::new();
    for file in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = fs::read_to_string(file).unwrap_or_default();
        for row in text.lines().skip(1).filter_map(parse_row) {
            // The file is produced in chunks while other tests open and close sockets, and a
            // socket can be listed twice when the table moves between two reads: one row each.
            if !out.contains(&row) {
                out.push(row);
            }
        }
    }
    out
}

/// The rows with these exact endpoints (IPv4 endpoints also match their v4-mapped form).
pub fn rows_between(local: SocketAddr, remote: SocketAddr) -> Vec<TcpRow> {
    let norm = |a: SocketAddr| match a {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(v4.into(), v6.port()),
            None => SocketAddr::new(IpAddr::V6(*v6.ip()), v6.port()),
        },
        v4 => v4,
    };
    tcp_sockets()
        .into_iter()
        .filter(|r| norm(r.local) == norm(local) && norm(r.remote) == norm(remote))
        .collect()
}

/// Whether process `pid` holds the socket with `inode` (what `ss -p` looks up).
pub fn socket_owned_by(pid: u32, inode: u64) -> bool {
    let want = format!("socket:[{inode}]");
    fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| {
            dir.flatten()
                .any(|fd| fs::read_link(fd.path()).is_ok_and(|l| l.to_string_lossy() == want))
        })
        .unwrap_or(false)
}

fn parse_row(line: &str) -> Option<TcpRow> {
    let mut f = line.split_whitespace();
    let _sl = f.next()?;
    let local = parse_addr(f.next()?)?;
    let remote = parse_addr(f.next()?)?;
    let state = u8::from_str_radix(f.next()?, 16).ok()?;
    let inode = f.nth(5)?.parse().ok()?;
    Some(TcpRow {
        local,
        remote,
        state,
        inode,
    })
}

/// `0100007F:0CEA`: the address as the kernel's 32-bit words printed in host order, the port
/// in host order.
fn parse_addr(field: &str) -> Option<SocketAddr> {
    let (ip, port) = field.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let words: Option<Vec<[u8; 4]>> = (0..ip.len() / 8)
        .map(|i| {
            u32::from_str_radix(ip.get(i * 8..i * 8 + 8)?, 16)
                .ok()
                .map(u32::to_ne_bytes)
        })
        .collect();
    let bytes: Vec<u8> = words?.concat();
    let ip: IpAddr = match bytes.len() {
        4 => Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]).into(),
        16 => Ipv6Addr::from(<[u8; 16]>::try_from(bytes).ok()?).into(),
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}
