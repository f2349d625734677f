//! A second "host" for failure tests: a network namespace joined to the root namespace by a
//! point-to-point link that the test can degrade or cut.
//!
//! ```text
//!  root namespace (proxy, clients, Consul)          namespace `cmp-fm-<pid>-<n>-…` (a DB host)
//!  fmh<pid>n<n>  10.231.a.b+1  ──TUN──▶ [wire threads: delay, loss, blackhole] ──TUN──▶
//!                                  ◀──TUN── [wire threads] ◀──TUN──  fmn<pid>n<n>  10.231.a.b+2
//! ```
//!
//! The link is two TUN devices, one per namespace, and four threads of this test process that
//! copy IP packets between them (one reader and one delay line per direction). That is `tc
//! netem` in user space: this kernel has no `sch_netem` (only `tbf`/`htb`/`pfifo`), so
//! `netem delay 50ms loss 1%` is emulated here, per direction, on real IP packets — the
//! kernels at both ends see real loss, reordering-free delay and silence, and TCP retransmits,
//! probes keepalives and times out exactly as on a real network.
//!
//! - [`NetNs::blackhole`]: every packet both ways is dropped silently — no RST, no ICMP: a
//!   pulled cable or a host that lost power (what `ip link set down` / `netem loss 100%` give).
//! - [`NetNs::impair`] / [`NetNs::degrade`]: delay and random loss per direction.
//!
//! Network rule: the namespace has no route but the one to the root side of its link, and the
//! root namespace routes only the namespace's address (a /32 peer route) over the link; a
//! `blackhole` route for the link's /30 (metric [`SAFETY_METRIC`]) makes sure nothing for that
//! subnet leaves through the default route, also while the link is being torn down.
//!
//! Unique per test: names carry the pid and a counter, the /30 is picked at random among the
//! free ones of 10.231.0.0/16. Dropping a [`NetNs`] (also on panic) restores the link so
//! closing sockets can finish, kills what still runs inside, waits (bounded) until no socket
//! of the root namespace still talks to the namespace, then deletes the devices, the
//! namespace and the route. Leftovers of a killed test process (namespaces of dead pids, their
//! routes) are swept by the next [`NetNs::create`].

use std::fs::File;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Metric of the safety blackhole route (also marks our routes for the sweep).
pub const SAFETY_METRIC: u32 = 4231;
const NAME_PREFIX: &str = "cmp-fm-";

/// Which way packets flow on the link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// Root namespace → namespace (toward the DB host).
    In,
    /// Namespace → root namespace (from the DB host).
    Out,
}

/// Delay and random loss for one direction (netem's `delay` and `loss`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Impairment {
    pub delay: Duration,
    /// Fraction of packets dropped, 0.0 ..= 1.0.
    pub loss: f64,
}

/// Packets seen by one direction of the link.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DirStats {
    pub forwarded: u64,
    pub dropped: u64,
}

#[derive(Default)]
struct DirCtl {
    delay_us: AtomicU64,
    /// Loss in parts per million.
    loss_ppm: AtomicU32,
    forwarded: AtomicU64,
    dropped: AtomicU64,
}

#[derive(Default)]
struct WireCtl {
    blackhole: AtomicBool,
    stop: AtomicBool,
    dirs: [DirCtl; 2],
}

impl WireCtl {
    fn dir(&self, d: Dir) -> &DirCtl {
        &self.dirs[d as usize]
    }
}

/// A network namespace with its link. See the module doc.
pub struct NetNs {
    name: String,
    host_if: String,
    host_ip: Ipv4Addr,
    ns_ip: Ipv4Addr,
    /// `10.231.a.b/30`.
    subnet: String,
    ctl: Arc<WireCtl>,
    threads: Vec<JoinHandle<()>>,
}

static COUNTER: AtomicU32 = AtomicU32::new(0);
/// Serialises subnet picking and the sweep within this process.
static SETUP: Mutex<()> = Mutex::new(());

impl NetNs {
    /// Creates the namespace and its link (clean: no delay, no loss). Panics with the failing
    /// command when the machine does not allow it (needs root: `ip netns`, `/dev/net/tun`).
    pub fn create() -> NetNs {
        let _g = SETUP.lock().unwrap_or_else(|e| e.into_inner());
        sweep_dead();
        let pid = std::process::id();
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let (a, b) = pick_subnet();
        let host_ip = Ipv4Addr::new(10, 231, a, b + 1);
        let ns_ip = Ipv4Addr::new(10, 231, a, b + 2);
        let subnet = format!("10.231.{a}.{b}/30");
        let name = format!("{NAME_PREFIX}{pid}-{n}-{a}-{b}");
        let host_if = format!("fmh{pid}n{n}");
        let ns_if = format!("fmn{pid}n{n}");
        assert!(host_if.len() <= 15, "interface name too long: {host_if}");

        // From here on, a panic drops `partial`, which undoes what exists.
        let mut partial = NetNs {
            name: name.clone(),
            host_if: host_if.clone(),
            host_ip,
            ns_ip,
            subnet: subnet.clone(),
            ctl: Arc::new(WireCtl::default()),
            threads: Vec::new(),
        };
        ip(&[
            "route",
            "add",
            "blackhole",
            &subnet,
            "metric",
            &SAFETY_METRIC.to_string(),
        ]);
        ip(&["netns", "add", &name]);
        let host_tun = open_tun(&host_if);
        let ns_tun = open_tun(&ns_if);
        ip(&["link", "set", &ns_if, "netns", &name]);
        // No IPv6 link-local chatter on the link.
        let _ = try_ip(&["link", "set", "dev", &host_if, "addrgenmode", "none"]);
        ip(&[
            "addr",
            "add",
            &host_ip.to_string(),
            "peer",
            &ns_ip.to_string(),
            "dev",
            &host_if,
        ]);
        ip(&["link", "set", &host_if, "up"]);
        let in_ns = |args: &[&str]| {
            let mut full = vec!["netns", "exec", &name, "ip"];
            full.extend_from_slice(args);
            ip(&full);
        };
        let _ = try_ip(&[
            "netns",
            "exec",
            &name,
            "ip",
            "link",
            "set",
            "dev",
            &ns_if,
            "addrgenmode",
            "none",
        ]);
        in_ns(&[
            "addr",
            "add",
            &ns_ip.to_string(),
            "peer",
            &host_ip.to_string(),
            "dev",
            &ns_if,
        ]);
        in_ns(&["link", "set", &ns_if, "up"]);
        in_ns(&["link", "set", "lo", "up"]);

        let host_tun = Arc::new(host_tun);
        let ns_tun = Arc::new(ns_tun);
        partial.threads = [
            (Dir::In, host_tun.clone(), ns_tun.clone()),
            (Dir::Out, ns_tun, host_tun),
        ]
        .into_iter()
        .flat_map(|(dir, from, to)| spawn_direction(&partial.ctl, &name, dir, from, to))
        .collect();
        partial
    }

    /// The namespace's name (for `ip netns exec`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace's address (where its servers listen).
    pub fn ip(&self) -> IpAddr {
        IpAddr::V4(self.ns_ip)
    }

    /// The root namespace's end of the link.
    pub fn host_ip(&self) -> IpAddr {
        IpAddr::V4(self.host_ip)
    }

    /// Drops every packet both ways, silently (or lets them through again).
    pub fn blackhole(&self, on: bool) {
        self.ctl.blackhole.store(on, Ordering::SeqCst);
    }

    pub fn is_blackholed(&self) -> bool {
        self.ctl.blackhole.load(Ordering::SeqCst)
    }

    /// Delay and loss for one direction (applied to packets read from now on).
    pub fn impair(&self, dir: Dir, imp: Impairment) {
        let d = self.ctl.dir(dir);
        d.delay_us
            .store(imp.delay.as_micros() as u64, Ordering::SeqCst);
        d.loss_ppm.store(
            (imp.loss.clamp(0.0, 1.0) * 1_000_000.0).round() as u32,
            Ordering::SeqCst,
        );
    }

    /// The same impairment both ways.
    pub fn degrade(&self, imp: Impairment) {
        self.impair(Dir::In, imp);
        self.impair(Dir::Out, imp);
    }

    /// No delay, no loss, no blackhole.
    pub fn clear(&self) {
        self.degrade(Impairment::default());
        self.blackhole(false);
    }

    pub fn stats(&self, dir: Dir) -> DirStats {
        let d = self.ctl.dir(dir);
        DirStats {
            forwarded: d.forwarded.load(Ordering::Relaxed),
            dropped: d.dropped.load(Ordering::Relaxed),
        }
    }

    /// Pids of the processes running inside the namespace.
    pub fn pids(&self) -> Vec<i32> {
        let out = Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output();
        match out {
            Ok(o) => String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    /// Sockets of the root namespace still connected to the namespace (TIME-WAIT excluded).
    fn open_sockets(&self) -> usize {
        let out = Command::new("ss")
            .args(["-Htan", "dst", &self.ns_ip.to_string()])
            .output();
        match out {
            Ok(o) => String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter(|l| !l.trim().is_empty() && !l.starts_with("TIME-WAIT"))
                .count(),
            Err(_) => 0,
        }
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        // Let closing connections finish over a clean link.
        self.clear();
        for pid in self.pids() {
            // SAFETY: kill(2) on processes inside our own namespace.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        let deadline = Instant::now() + Duration::from_secs(3);
        while !self.threads.is_empty() && self.open_sockets() > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        self.ctl.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        // The TUN devices went with their last file descriptor (held by the threads).
        let _ = try_ip(&["link", "del", &self.host_if]);
        let _ = try_ip(&["netns", "del", &self.name]);
        let _ = try_ip(&[
            "route",
            "del",
            "blackhole",
            &self.subnet,
            "metric",
            &SAFETY_METRIC.to_string(),
        ]);
    }
}

// ---------------------------------------------------------------------------------------------
// the wire

fn spawn_direction(
    ctl: &Arc<WireCtl>,
    name: &str,
    dir: Dir,
    from: Arc<File>,
    to: Arc<File>,
) -> [JoinHandle<()>; 2] {
    let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>();
    let reader = {
        let ctl = ctl.clone();
        std::thread::Builder::new()
            .name(format!("{name}-{dir:?}-rd"))
            .spawn(move || read_loop(&ctl, dir, &from, tx))
            .expect("spawn wire reader")
    };
    let writer = {
        let ctl = ctl.clone();
        std::thread::Builder::new()
            .name(format!("{name}-{dir:?}-wr"))
            .spawn(move || delay_line(&ctl, dir, &to, rx))
            .expect("spawn wire writer")
    };
    [reader, writer]
}

/// Reads packets, drops the ones blackholed or lost, queues the rest with their due time.
fn read_loop(ctl: &WireCtl, dir: Dir, from: &File, tx: mpsc::Sender<(Instant, Vec<u8>)>) {
    let d = ctl.dir(dir);
    let mut buf = vec![0u8; 65536];
    while !ctl.stop.load(Ordering::SeqCst) {
        let mut pfd = libc::pollfd {
            fd: from.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, for the duration of the call.
        let ready = unsafe { libc::poll(&mut pfd, 1, 100) };
        if ready <= 0 {
            continue;
        }
        let n = match (&*from).read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        let loss = d.loss_ppm.load(Ordering::Relaxed);
        if ctl.blackhole.load(Ordering::SeqCst) || (loss > 0 && fastrand::u32(0..1_000_000) < loss)
        {
            d.dropped.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let due = Instant::now() + Duration::from_micros(d.delay_us.load(Ordering::Relaxed));
        if tx.send((due, buf[..n].to_vec())).is_err() {
            break;
        }
    }
}

/// Delivers queued packets in order at their due time (dropped if blackholed meanwhile).
fn delay_line(ctl: &WireCtl, dir: Dir, to: &File, rx: mpsc::Receiver<(Instant, Vec<u8>)>) {
    let d = ctl.dir(dir);
    loop {
        let (due, packet) = match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(p) => p,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if ctl.stop.load(Ordering::SeqCst) {
                    return;
                }
                continue;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        };
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        if ctl.blackhole.load(Ordering::SeqCst) {
            d.dropped.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        // A full queue or a device going away: the packet is lost, as on a wire.
        // A TUN write takes the whole packet or fails.
        match (&*to).write(&packet) {
            Ok(n) if n == packet.len() => d.forwarded.fetch_add(1, Ordering::Relaxed),
            _ => d.dropped.fetch_add(1, Ordering::Relaxed),
        };
    }
}

const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const IFF_TUN: libc::c_short = 0x0001;
const IFF_NO_PI: libc::c_short = 0x1000;

/// `struct ifreq` as TUNSETIFF reads it: the name and the flags of the union.
#[repr(C)]
struct IfReq {
    name: [libc::c_char; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// A new TUN device (no packet-info header) owned by the returned file: it disappears when the
/// file is closed, whichever namespace it was moved to.
fn open_tun(name: &str) -> File {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .unwrap_or_else(|e| panic!("open /dev/net/tun (needs root): {e}"));
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        flags: IFF_TUN | IFF_NO_PI,
        _pad: [0; 22],
    };
    for (dst, src) in req.name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    // SAFETY: TUNSETIFF reads and writes one `struct ifreq`, which `req` lays out.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF, &mut req) };
    if rc != 0 {
        panic!("TUNSETIFF {name}: {}", std::io::Error::last_os_error());
    }
    file
}

// ---------------------------------------------------------------------------------------------
// setup helpers

fn try_ip(args: &[&str]) -> Result<String, String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("spawn ip: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "ip {}: {} {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn ip(args: &[&str]) -> String {
    try_ip(args).unwrap_or_else(|e| panic!("{e} (network namespaces need root)"))
}

/// A random /30 of 10.231.0.0/16 that no address or route of the root namespace uses.
fn pick_subnet() -> (u8, u8) {
    let used = format!(
        "{}\n{}",
        try_ip(&["-4", "-o", "addr", "show"]).unwrap_or_default(),
        try_ip(&["-4", "route", "show", "table", "all"]).unwrap_or_default()
    );
    for _ in 0..1000 {
        let a = fastrand::u8(..);
        let b = fastrand::u8(0..64) * 4;
        let taken = (0..4).any(|i| used.contains(&format!("10.231.{a}.{} ", b + i)))
            || used.contains(&format!("10.231.{a}.{b}/"));
        if !taken {
            return (a, b);
        }
    }
    panic!("no free /30 in 10.231.0.0/16");
}

/// Removes namespaces (and their safety routes) left by test processes that no longer run.
fn sweep_dead() {
    let Ok(list) = try_ip(&["netns", "list"]) else {
        return;
    };
    for line in list.lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(rest) = name.strip_prefix(NAME_PREFIX) else {
            continue;
        };
        let parts: Vec<&str> = rest.split('-').collect();
        let [pid, _n, a, b] = parts.as_slice() else {
            continue;
        };
        let Ok(pid) = pid.parse::<i32>() else {
            continue;
        };
        if std::path::Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let _ = try_ip(&["netns", "del", name]);
        let _ = try_ip(&[
            "route",
            "del",
            "blackhole",
            &format!("10.231.{a}.{b}/30"),
            "metric",
            &SAFETY_METRIC.to_string(),
        ]);
    }
}
