//! The fast path: the proxy out of the data path. A BPF program on the applications' cgroup
//! rewrites, inside the kernel, the destination of a `connect()` to a route's listen address
//! into the route's current primary, so the application's socket talks to the MySQL server
//! directly; the proxy only decides where connects go and closes the ones that went to an
//! old primary.
//!
//! ```text
//!  application (in the cgroup)                                  MySQL primary
//!    connect(127.0.0.1:6033) ──▶ cgroup/connect4 program ──▶ SYN to 10.0.0.5:3306
//!                                 │ routes[netns, 127.0.0.1:6033] = 10.0.0.5:3306
//!                                 └ cookies[socket cookie] = (10.0.0.5:3306, generation)
//!  proxy:  set_route(listen, Some(new primary))  ── new connects go there at once
//!          destroy_redirected(old primary)       ── sock_diag dump ∩ cookies → SOCK_DESTROY
//!  sockops watch: a redirected connect to A failed ── refusals[A]: connects to the route
//!          reach the proxy's listener (held, relayed) until A accepts a relayed connect
//!          again (clear_refusal) or the route gets another target
//! ```
//!
//! Modules: `program` (the two connect programs as instruction lists, instruction by
//! instruction, and loading them), `watch` (the sockops program that marks a target whose
//! redirected connect failed), `asm` (the instruction encoding), `maps` (the four maps' layouts),
//! `routes` (listen address → exact map keys), `cgroup` (which cgroup), `sock_diag`
//! (finding and destroying sockets), `sys` (all the `unsafe`: bpf(2) and three libc calls),
//! `error`. The proxy uses it through [`steer`] (one task per route following the published
//! primary and applying `on_failover`) and `shared` (one `FastPath` per cgroup per process,
//! shared by the routes; its `/status` view).
//!
//! # Lifetime
//!
//! [`FastPath::load`] attaches the three programs through BPF *links*, whose fds this value owns.
//! When it is dropped — or the process exits, or is SIGKILLed — the fds close, the kernel
//! detaches the programs and frees the maps: new connects reach the listen addresses again
//! (the proxy's listener, if one is running). Connections already redirected are ordinary
//! TCP connections to the server and continue; nothing closes them any more at failover —
//! also not a restarted proxy: the cookies map died with the old process, so a new
//! [`FastPath`] does not know the sockets the previous one redirected (pinning the maps in
//! bpffs would keep them; not done).
//!
//! `FastPath` is `Send + Sync`: share it (`Arc`) between the control side, which calls
//! [`FastPath::set_route`] / [`FastPath::destroy_redirected`] at failover, and `/status`.
//! Every call is a few system calls; the ones that dump the socket table
//! ([`FastPath::destroy_redirected`], [`FastPath::redirected_to`], [`FastPath::sweep`]) take
//! milliseconds on a busy host, so run them on a blocking thread from async code.
//!
//! # What the fast path gives up
//!
//! - **No greeting wait, no hung-server detection per connection.** The relay path waits for
//!   each backend's greeting and holds the client on a failed connect; a redirected connect
//!   goes straight to the server the route names. Keeping that server right relies on
//!   discovery and `verify_writable`. One failure is caught in the kernel: a redirected
//!   connect that does not complete (refused, timed out) marks its target (`watch`), and
//!   later connects to the route are held and relayed by the proxy until that server accepts
//!   again or discovery names another — the first application to hit a dead primary gets
//!   the error, the ones after it are held. With `verify_writable` on, a primary whose
//!   process dies is caught before that first connect: [`liveness`] keeps one idle session
//!   on it as the monitor user and marks it the moment that session breaks.
//! - **No hold across "no primary".** While a route has no target (`set_route(listen,
//!   None)`), connects reach the proxy's own listener, which holds them as usual — and those
//!   connections stay relayed for their whole life, even after a primary is known.
//! - **Failover closes connections by destroying them** (`SOCK_DESTROY`): the client sees
//!   ECONNABORTED (locally) and the server a RST, not a MySQL ERR packet; a `drain` policy can
//!   only choose *when* to destroy.
//! - **Only what it can see**: sockets created by processes in the cgroup (and its
//!   descendants), in the proxy's network namespace, to a routed address exactly (see
//!   `routes` for wildcards), TCP only. The proxy's own per-connection metrics do not see
//!   redirected connections; [`FastPath::counters`] counts them.
//! - The application's `getpeername()` returns the server's address, not the listen address.
//!
//! # What it needs
//!
//! - Root, or CAP_BPF + CAP_NET_ADMIN (program load, cgroup attach and SOCK_DESTROY); on
//!   kernels before 5.8, CAP_SYS_ADMIN instead of CAP_BPF. A missing capability is
//!   [`FastPathError::Permission`] (EPERM), and the proxy keeps relaying.
//! - A cgroup v2 hierarchy (on hybrid hosts the `cgroup2` mount, e.g.
//!   `/sys/fs/cgroup/unified`) and the applications in the chosen cgroup: the v2 root for the
//!   whole host, or a pod's / service's own cgroup. Only sockets created after the process
//!   entered the cgroup are seen.
//! - Locked kernel memory (charged to the proxy's memory cgroup): about 7 MB for the
//!   65 536-entry cookies map, a few KiB for the rest.
//! - Linux ≥ 5.14 (BPF links for cgroups 5.7, `bpf_get_netns_cookie` 5.7, `SO_NETNS_COOKIE`
//!   5.14) built with `CONFIG_CGROUP_BPF` and `CONFIG_INET_DIAG_DESTROY`
//!   ([`FastPathError::NoSockDestroy`] otherwise: a fast path that could not close
//!   connections to a demoted primary is not used at all).
//!
//! # Seeing it is active
//!
//! [`FastPath::describe`] gives the cgroup, the program and link ids, the routes and the
//! counters. With bpftool: `bpftool cgroup show /sys/fs/cgroup/unified` lists the
//! `cmp_connect4` / `cmp_connect6` / `cmp_watch` programs on the cgroup, `bpftool link` the
//! links (type `cgroup`, attach `cgroup_inet4_connect` / `cgroup_inet6_connect` /
//! `sock_ops`), `bpftool map dump name cmp_routes` the routes, `name cmp_refusals` the
//! targets marked as refusing. `ss -tnp` shows an application's socket connected to the primary
//! directly.
// `deny`, not `forbid`: `sys` is the one child allowed unsafe; every other child forbids it.
#![deny(unsafe_code)]

mod asm;
mod cgroup;
mod error;
mod liveness;
mod maps;
mod program;
mod routes;
mod shared;
mod sock_diag;
pub mod steer;
#[allow(unsafe_code)]
mod sys;
mod watch;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fs::File;
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use serde::Serialize;

pub use asm::AsmError;
pub use cgroup::cgroup2_root;
pub use error::FastPathError;
use maps::{COOKIE_VALUE_LEN, ENDPOINT_LEN, KEY_LEN};
use program::{Family, MapFds};
pub use shared::note_reachable;
use sock_diag::{DiagSocket, SockDiag};
use sys::Map;

/// `BPF_ANY`: create or replace.
const BPF_ANY: u64 = 0;
/// Bound on walking the cookies map: its size, twice (a key deleted under the walk restarts
/// it from the first key).
const COOKIE_WALK_LIMIT: usize = 2 * maps::COOKIES_MAX as usize;

/// The loaded and attached fast path. Dropping it detaches the programs.
pub struct FastPath {
    /// The three links; declared first so that on drop the programs detach before the maps go.
    attached: Vec<Attached>,
    /// The cgroup the programs are attached to.
    cgroup: PathBuf,
    /// Kept open with the links (the kernel needs it only at attach; it documents the target).
    _cgroup_dir: File,
    /// Cookie of the proxy's network namespace: part of every routes key.
    netns: u64,
    maps: Maps,
    /// What user space put in the routes map, so a route can be changed or removed as a whole.
    table: Mutex<Table>,
}

struct Attached {
    /// The attach point, as `bpftool` names it (`cgroup/connect4`).
    hook: &'static str,
    name: &'static str,
    /// Open for as long as the program is attached; closing it detaches.
    _link: OwnedFd,
    _prog: OwnedFd,
    program_id: u32,
    link_id: u32,
}

/// The four maps (see `maps` for their layouts).
struct Maps {
    routes: Map,
    cookies: Map,
    refusals: Map,
    counters: Map,
}

impl Maps {
    fn create() -> Result<Maps, FastPathError> {
        let routes = Map::create(
            maps::MAP_HASH,
            KEY_LEN,
            maps::VALUE_LEN,
            maps::ROUTES_MAX,
            maps::F_NO_PREALLOC,
            "cmp_routes",
        )
        .map_err(FastPathError::kernel(
            "creating the routes map (BPF_MAP_CREATE)",
        ))?;
        let cookies = Map::create(
            maps::MAP_LRU_HASH,
            8,
            COOKIE_VALUE_LEN,
            maps::COOKIES_MAX,
            0,
            "cmp_cookies",
        )
        .map_err(FastPathError::kernel(
            "creating the cookies map (BPF_MAP_CREATE)",
        ))?;
        let refusals = Map::create(
            maps::MAP_HASH,
            ENDPOINT_LEN,
            8,
            maps::REFUSALS_MAX,
            0,
            "cmp_refusals",
        )
        .map_err(FastPathError::kernel(
            "creating the refusals map (BPF_MAP_CREATE)",
        ))?;
        let counters = Map::create(maps::MAP_ARRAY, 4, 8, maps::COUNTERS, 0, "cmp_counters")
            .map_err(FastPathError::kernel(
                "creating the counters map (BPF_MAP_CREATE)",
            ))?;
        Ok(Maps {
            routes,
            cookies,
            refusals,
            counters,
        })
    }

    fn fds(&self) -> MapFds {
        MapFds {
            routes: self.routes.raw_fd(),
            cookies: self.cookies.raw_fd(),
            refusals: self.refusals.raw_fd(),
            counters: self.counters.raw_fd(),
        }
    }
}

#[derive(Default)]
struct Table {
    routes: BTreeMap<SocketAddr, Route>,
    /// Bumped on every change; stored in the route value and recorded with each cookie.
    generation: u64,
    /// Cookies that the last [`FastPath::sweep`] found without a socket; removed if the next
    /// sweep finds them without one again (a socket being connected has its cookie recorded
    /// a moment before the kernel lists it).
    suspects: HashSet<u64>,
}

struct Route {
    target: Option<SocketAddr>,
    /// Every routes-map key written for this listen address.
    keys: BTreeSet<[u8; KEY_LEN]>,
}

/// Connects the programs have handled since load.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counters {
    /// Rewritten to a route's target, cookie recorded.
    pub redirected: u64,
    /// Matched a route without a target: left to reach the proxy's listener.
    pub passed: u64,
    /// Rewritten, but the cookie could not be recorded: invisible to `destroy_redirected`.
    pub unrecorded: u64,
    /// Redirected, and the connect did not complete (refused, timed out, abandoned): each
    /// marked its target as refusing.
    pub failed: u64,
    /// Matched a route whose target was marked as refusing: left to reach the proxy's
    /// listener, which holds and relays them.
    pub detoured: u64,
}

/// What one [`FastPath::sweep_counting`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Swept {
    /// Cookies of closed sockets removed.
    pub removed: usize,
    /// Redirected sockets still open.
    pub open: usize,
}

/// [`FastPath::describe`]: what `/status` shows.
#[derive(Debug, Clone, Serialize)]
pub struct FastPathStatus {
    pub cgroup: PathBuf,
    pub programs: Vec<ProgramStatus>,
    pub routes: Vec<RouteStatus>,
    /// Targets marked as refusing: connects to their routes are left to the proxy.
    pub refusing: Vec<SocketAddr>,
    pub counters: Counters,
}

/// One attached program, by the ids `bpftool prog` / `bpftool link` show.
#[derive(Debug, Clone, Serialize)]
pub struct ProgramStatus {
    pub hook: &'static str,
    pub name: &'static str,
    pub program_id: u32,
    pub link_id: u32,
}

#[derive(Debug, Clone, Serialize)]
pub struct RouteStatus {
    pub listen: SocketAddr,
    /// `None`: connects are not rewritten (they reach the proxy's listener).
    pub target: Option<SocketAddr>,
    /// Exact destinations matched (see `routes` for the expansion).
    pub destinations: usize,
}

impl FastPath {
    /// Loads the programs and attaches them to `cgroup` (default: the cgroup v2 root, i.e.
    /// every process of the host). Fails, without leaving anything attached, when a piece is
    /// missing; the error names it and the fix.
    pub fn load(cgroup: Option<&Path>) -> Result<FastPath, FastPathError> {
        let (cgroup, dir) = cgroup::open(cgroup)?;
        // SOCK_DESTROY first: cheap, needs no privilege, and without it nothing else matters.
        let mut diag = SockDiag::open()
            .map_err(FastPathError::kernel("opening a NETLINK_SOCK_DIAG socket"))?;
        if !diag
            .probe_destroy()
            .map_err(FastPathError::kernel("probing SOCK_DESTROY"))?
        {
            return Err(FastPathError::NoSockDestroy);
        }
        let netns = own_netns_cookie()?;
        let maps = Maps::create()?;
        let mut attached = Vec::with_capacity(3);
        for family in [Family::V4, Family::V6] {
            let insns = program::instructions(family, maps.fds())?;
            let prog = program::load(family, &insns)?;
            let hook = match family {
                Family::V4 => "cgroup/connect4",
                Family::V6 => "cgroup/connect6",
            };
            let name = family.program_name();
            attached.push(attach(prog, &dir, family.attach_type(), hook, name)?);
        }
        // The watch program last: it only acts on sockets the connect programs recorded.
        let prog = watch::load(&watch::instructions(maps.fds())?)?;
        attached.push(attach(
            prog,
            &dir,
            watch::ATTACH_CGROUP_SOCK_OPS,
            watch::HOOK,
            watch::PROGRAM_NAME,
        )?);
        tracing::info!(
            cgroup = %cgroup.display(),
            programs = ?attached.iter().map(|a| a.program_id).collect::<Vec<_>>(),
            "fast path attached: connects to routed addresses are rewritten in the kernel"
        );
        Ok(FastPath {
            attached,
            cgroup,
            _cgroup_dir: dir,
            netns,
            maps,
            table: Mutex::new(Table::default()),
        })
    }

    /// The cgroup the programs are attached to.
    pub fn cgroup(&self) -> &Path {
        &self.cgroup
    }

    /// Points connects to `listen` at `target` from now on (new connects only; see
    /// [`FastPath::destroy_redirected`] for the existing ones). `None`: not rewritten — the
    /// connect reaches the proxy's own listener, which holds it. A wildcard `listen` is
    /// expanded to the interface addresses present now (see `routes`).
    pub fn set_route(
        &self,
        listen: SocketAddr,
        target: Option<SocketAddr>,
    ) -> Result<(), FastPathError> {
        if let Some(target) = target
            && target.is_ipv4() != listen.is_ipv4()
        {
            return Err(FastPathError::FamilyMismatch { listen, target });
        }
        let host = if listen.ip().is_unspecified() {
            sys::host_addresses().map_err(FastPathError::kernel(
                "listing the interface addresses (getifaddrs)",
            ))?
        } else {
            Vec::new()
        };
        let destinations = routes::destinations(listen, target, &host);
        let mut table = self.lock();
        table.generation += 1;
        let generation = table.generation;
        let route = table.routes.entry(listen).or_insert_with(|| Route {
            target,
            keys: BTreeSet::new(),
        });
        route.target = target;
        let mut fresh = BTreeSet::new();
        for (dest, target) in destinations {
            let key = maps::route_key(self.netns, dest);
            let value = maps::route_value(target, generation);
            // Remember the key before writing it: after a failed write, a later change or
            // removal still knows every key that may be in the map.
            route.keys.insert(key);
            self.maps
                .routes
                .update(&key, &value, BPF_ANY)
                .map_err(FastPathError::kernel(
                    "writing a route (BPF_MAP_UPDATE_ELEM)",
                ))?;
            fresh.insert(key);
        }
        // Destinations that went away (an interface address removed since the last set).
        let stale: Vec<_> = route.keys.difference(&fresh).copied().collect();
        for key in stale {
            self.delete_route_key(&key)?;
            route.keys.remove(&key);
        }
        tracing::debug!(%listen, ?target, generation, "fast path route set");
        Ok(())
    }

    /// Removes one destination of a route from the kernel map (`false`: it was not there).
    fn delete_route_key(&self, key: &[u8; KEY_LEN]) -> Result<bool, FastPathError> {
        self.maps.routes.delete(key).map_err(FastPathError::kernel(
            "removing a route (BPF_MAP_DELETE_ELEM)",
        ))
    }

    /// Stops matching `listen` at all (connects are neither rewritten nor counted); `false`
    /// if it had no route.
    pub fn remove_route(&self, listen: SocketAddr) -> Result<bool, FastPathError> {
        let mut table = self.lock();
        let Some(route) = table.routes.get_mut(&listen) else {
            return Ok(false);
        };
        while let Some(key) = route.keys.first().copied() {
            self.delete_route_key(&key)?;
            route.keys.remove(&key);
        }
        table.routes.remove(&listen);
        Ok(true)
    }

    /// Cookies of the live sockets that the program redirected to `target` (connected or
    /// connecting, in this network namespace).
    pub fn redirected_to(&self, target: SocketAddr) -> Result<Vec<u64>, FastPathError> {
        let mut diag = open_diag()?;
        Ok(self
            .redirected_sockets(&mut diag, target)?
            .iter()
            .map(|s| s.cookie)
            .collect())
    }

    /// Destroys (`SOCK_DESTROY`) every live socket the program redirected to `target`, and
    /// forgets their cookies; returns how many were destroyed. Sockets to `target` that the
    /// program did not redirect — replication, admin tools, processes outside the cgroup,
    /// connects made directly to `target` — are never touched: only sockets whose cookie the
    /// program recorded with this target are.
    ///
    /// Call it after [`FastPath::set_route`] has moved the route away from `target`, else
    /// clients reconnect to it. It dumps the namespace's TCP sockets: milliseconds on a busy
    /// host, so from async code run it on a blocking thread.
    pub fn destroy_redirected(&self, target: SocketAddr) -> Result<usize, FastPathError> {
        let mut diag = open_diag()?;
        let sockets = self.redirected_sockets(&mut diag, target)?;
        let mut destroyed = 0;
        for sock in &sockets {
            match diag.destroy(sock) {
                Ok(()) => destroyed += 1,
                // Closed (or replaced: a new socket with the same addresses has another
                // cookie) between the dump and now: nothing left to destroy.
                Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ESTALE)) => {}
                Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {
                    return Err(FastPathError::NoSockDestroy);
                }
                Err(e) => {
                    return Err(FastPathError::kernel(
                        "destroying a redirected socket (SOCK_DESTROY)",
                    )(e));
                }
            }
            self.forget_cookie(sock.cookie)?;
        }
        tracing::debug!(%target, destroyed, found = sockets.len(), "fast path: redirected sockets destroyed");
        Ok(destroyed)
    }

    /// Removes the cookies of sockets that no longer exist (closed by the application) so
    /// the LRU cookies map evicts nothing live; returns how many were removed. A cookie is
    /// removed when two sweeps in a row find no socket for it, so call it periodically (every
    /// few seconds or minutes), not back to back.
    pub fn sweep(&self) -> Result<usize, FastPathError> {
        Ok(self.sweep_counting()?.removed)
    }

    /// [`FastPath::sweep`], also counting the redirected sockets that are still open (recorded
    /// cookies with a live socket): the same dump serves both.
    pub fn sweep_counting(&self) -> Result<Swept, FastPathError> {
        let recorded = self.recorded_cookies()?;
        let mut diag = open_diag()?;
        let mut live = HashSet::new();
        for family in [libc::AF_INET as u8, libc::AF_INET6 as u8] {
            let sockets = diag
                .dump(family, sock_diag::CONNECTED)
                .map_err(FastPathError::kernel("listing TCP sockets (sock_diag)"))?;
            live.extend(sockets.iter().map(|s| s.cookie));
        }
        let dead: HashSet<u64> = recorded.difference(&live).copied().collect();
        let mut table = self.lock();
        let mut removed = 0;
        for cookie in dead.intersection(&table.suspects) {
            self.forget_cookie(*cookie)?;
            removed += 1;
        }
        table.suspects = dead.difference(&table.suspects).copied().collect();
        Ok(Swept {
            removed,
            open: recorded.len() - dead.len(),
        })
    }

    /// The counters since load.
    pub fn counters(&self) -> Result<Counters, FastPathError> {
        let read = |index: u32| -> Result<u64, FastPathError> {
            let mut value = [0u8; 8];
            self.maps
                .counters
                .lookup(&index.to_ne_bytes(), &mut value)
                .map_err(FastPathError::kernel(
                    "reading the counters (BPF_MAP_LOOKUP_ELEM)",
                ))?;
            Ok(u64::from_ne_bytes(value))
        };
        Ok(Counters {
            redirected: read(maps::COUNT_REDIRECTED as u32)?,
            passed: read(maps::COUNT_PASSED as u32)?,
            unrecorded: read(maps::COUNT_UNRECORDED as u32)?,
            failed: read(maps::COUNT_FAILED as u32)?,
            detoured: read(maps::COUNT_DETOURED as u32)?,
        })
    }

    /// Lets connects be rewritten to `target` again after the watch program marked it as
    /// refusing (it accepted a connection since, or discovery named it anew); `false`: it was
    /// not marked.
    pub fn clear_refusal(&self, target: SocketAddr) -> Result<bool, FastPathError> {
        let mut cleared = false;
        for key in maps::refusal_keys(target) {
            cleared |= self
                .maps
                .refusals
                .delete(&key)
                .map_err(FastPathError::kernel(
                    "clearing a refusal (BPF_MAP_DELETE_ELEM)",
                ))?;
        }
        Ok(cleared)
    }

    /// Marks `target` as refusing from user space, as the watch program does for a failed
    /// redirected connect: connects to routes pointing at it reach the proxy's listener
    /// until the mark is cleared. The value is cookie 0 (no socket: the proxy's own finding).
    pub fn mark_refusing(&self, target: SocketAddr) -> Result<(), FastPathError> {
        for key in maps::refusal_keys(target) {
            self.maps
                .refusals
                .update(&key, &0u64.to_ne_bytes(), BPF_ANY)
                .map_err(FastPathError::kernel(
                    "marking a server as refusing (BPF_MAP_UPDATE_ELEM)",
                ))?;
        }
        Ok(())
    }

    /// The targets marked as refusing now (a redirected connect to them failed, and nothing
    /// has cleared the mark since).
    pub fn refusing(&self) -> Result<Vec<SocketAddr>, FastPathError> {
        let mut out = BTreeSet::new();
        let mut key = [0u8; ENDPOINT_LEN];
        let mut prev: Option<[u8; ENDPOINT_LEN]> = None;
        // Bounded: the map holds at most REFUSALS_MAX keys; twice that covers a restart of
        // the walk when a key is deleted under it.
        for _ in 0..2 * maps::REFUSALS_MAX {
            let more = self
                .maps
                .refusals
                .next_key(prev.as_ref().map(|k| &k[..]), &mut key)
                .map_err(FastPathError::kernel(
                    "walking the refusals (BPF_MAP_GET_NEXT_KEY)",
                ))?;
            if !more {
                break;
            }
            out.extend(maps::decode_refusal_key(&key));
            prev = Some(key);
        }
        Ok(out.into_iter().collect())
    }

    /// Cgroup, programs, routes and counters, for `/status`.
    pub fn describe(&self) -> Result<FastPathStatus, FastPathError> {
        let counters = self.counters()?;
        let routes = self
            .lock()
            .routes
            .iter()
            .map(|(listen, route)| RouteStatus {
                listen: *listen,
                target: route.target,
                destinations: route.keys.len(),
            })
            .collect();
        let programs = self
            .attached
            .iter()
            .map(|a| ProgramStatus {
                hook: a.hook,
                name: a.name,
                program_id: a.program_id,
                link_id: a.link_id,
            })
            .collect();
        Ok(FastPathStatus {
            cgroup: self.cgroup.clone(),
            programs,
            routes,
            refusing: self.refusing()?,
            counters,
        })
    }

    /// The live sockets to `target` whose cookie the program recorded with that target.
    fn redirected_sockets(
        &self,
        diag: &mut SockDiag,
        target: SocketAddr,
    ) -> Result<Vec<DiagSocket>, FastPathError> {
        // A dual-stack socket redirected through a v4-mapped key is an AF_INET6 socket whose
        // peer is the mapped target.
        let mut forms = vec![(family_of(target), target)];
        if let Some(mapped) = maps::v4_mapped(target) {
            forms.push((libc::AF_INET6 as u8, mapped));
        }
        let mut out = Vec::new();
        for (family, dest) in forms {
            let sockets = diag
                .dump(family, sock_diag::CONNECTED)
                .map_err(FastPathError::kernel("listing TCP sockets (sock_diag)"))?;
            for sock in sockets {
                if !same_endpoint(sock.remote, dest) {
                    continue;
                }
                if self
                    .recorded(sock.cookie)?
                    .is_some_and(|r| same_endpoint(r.target, dest))
                {
                    out.push(sock);
                }
            }
        }
        Ok(out)
    }

    fn recorded(&self, cookie: u64) -> Result<Option<maps::Recorded>, FastPathError> {
        let mut value = [0u8; COOKIE_VALUE_LEN];
        let found = self
            .maps
            .cookies
            .lookup(&cookie.to_ne_bytes(), &mut value)
            .map_err(FastPathError::kernel(
                "reading a cookie (BPF_MAP_LOOKUP_ELEM)",
            ))?;
        Ok(found.then(|| maps::decode_cookie_value(&value)).flatten())
    }

    fn forget_cookie(&self, cookie: u64) -> Result<(), FastPathError> {
        self.maps
            .cookies
            .delete(&cookie.to_ne_bytes())
            .map_err(FastPathError::kernel(
                "removing a cookie (BPF_MAP_DELETE_ELEM)",
            ))?;
        Ok(())
    }

    fn recorded_cookies(&self) -> Result<HashSet<u64>, FastPathError> {
        let mut out = HashSet::new();
        let mut key = [0u8; 8];
        let mut prev: Option<[u8; 8]> = None;
        for _ in 0..COOKIE_WALK_LIMIT {
            let more = self
                .maps
                .cookies
                .next_key(prev.as_ref().map(|k| &k[..]), &mut key)
                .map_err(FastPathError::kernel(
                    "walking the cookies (BPF_MAP_GET_NEXT_KEY)",
                ))?;
            if !more {
                break;
            }
            out.insert(u64::from_ne_bytes(key));
            prev = Some(key);
        }
        Ok(out)
    }

    /// The table stays consistent at every step (keys are recorded before they are written),
    /// so a panic elsewhere while it was held does not make it unusable.
    fn lock(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for FastPath {
    fn drop(&mut self) {
        tracing::info!(cgroup = %self.cgroup.display(), "fast path detached");
    }
}

impl std::fmt::Debug for FastPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FastPath")
            .field("cgroup", &self.cgroup)
            .field(
                "programs",
                &self
                    .attached
                    .iter()
                    .map(|a| a.program_id)
                    .collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

/// Attaches `prog` to the cgroup `dir` through a link at `attach_type`.
fn attach(
    prog: OwnedFd,
    dir: &File,
    attach_type: u32,
    hook: &'static str,
    name: &'static str,
) -> Result<Attached, FastPathError> {
    let link = sys::link_create(prog.as_fd(), dir.as_fd(), attach_type).map_err(
        FastPathError::kernel("attaching a program to the cgroup (BPF_LINK_CREATE)"),
    )?;
    let program_id =
        sys::prog_id(prog.as_fd()).map_err(FastPathError::kernel("reading the program id"))?;
    let link_id =
        sys::link_id(link.as_fd()).map_err(FastPathError::kernel("reading the link id"))?;
    Ok(Attached {
        hook,
        name,
        _link: link,
        _prog: prog,
        program_id,
        link_id,
    })
}

fn open_diag() -> Result<SockDiag, FastPathError> {
    SockDiag::open().map_err(FastPathError::kernel("opening a NETLINK_SOCK_DIAG socket"))
}

/// The cookie of this process's network namespace, from any socket of it.
fn own_netns_cookie() -> Result<u64, FastPathError> {
    let op = "reading the network namespace cookie (SO_NETNS_COOKIE, Linux ≥ 5.14)";
    let probe = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)
        .map_err(FastPathError::kernel(op))?;
    sys::netns_cookie(probe.as_fd()).map_err(FastPathError::kernel(op))
}

fn family_of(addr: SocketAddr) -> u8 {
    if addr.is_ipv4() {
        libc::AF_INET as u8
    } else {
        libc::AF_INET6 as u8
    }
}

/// Address and port equality, ignoring IPv6 flow info and scope (neither is in a map key).
fn same_endpoint(a: SocketAddr, b: SocketAddr) -> bool {
    a.ip() == b.ip() && a.port() == b.port()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Loads `insns` if the kernel lets this process load BPF; `None` (test skipped, reason
    /// printed) when it does not — unit tests also run unprivileged on developer machines.
    fn load_or_skip(
        test: &str,
        family: Family,
        insns: &[asm::Insn],
    ) -> Option<Result<OwnedFd, FastPathError>> {
        match program::load(family, insns) {
            Err(FastPathError::Permission { .. }) => {
                eprintln!("skipping {test}: needs root (or CAP_BPF + CAP_NET_ADMIN)");
                None
            }
            other => Some(other),
        }
    }

    #[test]
    fn a_fast_path_can_be_shared_between_tasks() {
        fn shared<T: Send + Sync>() {}
        shared::<FastPath>();
    }

    #[test]
    fn a_refused_program_returns_the_verifier_log() {
        // `exit` without setting R0: the verifier refuses to return an uninitialised value.
        let mut a = asm::Asm::new();
        a.exit();
        let bad = a.finish().unwrap();
        let Some(result) = load_or_skip("verifier log", Family::V4, &bad) else {
            return;
        };
        let err = result.expect_err("the verifier must refuse this program");
        let log = err.verifier_log().expect("a verifier error");
        assert!(log.contains("R0 !read_ok"), "log: {log}");
        let text = err.to_string();
        assert!(
            text.contains("cmp_connect4") && text.contains("R0 !read_ok"),
            "{text}"
        );

        // A store to a read-only context field (`type`): a different refusal, also explained.
        let mut a = asm::Asm::new();
        a.st_imm(asm::Size::W, asm::R1, 32, 0)
            .mov64_imm(asm::R0, 1)
            .exit();
        let err = load_or_skip("verifier log", Family::V6, &a.finish().unwrap())
            .unwrap()
            .expect_err("the verifier must refuse a write to ctx->type");
        assert!(
            err.verifier_log()
                .is_some_and(|l| l.contains("invalid bpf_context access")),
            "{err}"
        );
    }

    #[test]
    fn the_programs_pass_the_verifier() {
        let maps = match Maps::create() {
            Ok(maps) => maps,
            Err(FastPathError::Permission { .. }) => {
                eprintln!("skipping program verification: needs root");
                return;
            }
            Err(e) => panic!("{e}"),
        };
        for family in [Family::V4, Family::V6] {
            let insns = program::instructions(family, maps.fds()).unwrap();
            if let Some(Err(e)) = load_or_skip("program verification", family, &insns) {
                panic!("{family:?}: {e}");
            }
        }
        let insns = watch::instructions(maps.fds()).unwrap();
        if let Err(e) = watch::load(&insns) {
            panic!("watch: {e}");
        }
    }
}
