//! The only `unsafe` code of the fast path: the `bpf(2)` commands it uses, `fstatfs`,
//! `getifaddrs` and `SO_NETNS_COOKIE`, each wrapped in a safe function whose arguments cannot
//! make the kernel read or write outside the buffers passed in.
//!
//! - [`Map`]: `BPF_MAP_CREATE`, and `LOOKUP`/`UPDATE`/`DELETE`/`GET_NEXT_KEY` on it. The
//!   kernel copies exactly `key_size`/`value_size` bytes from or to the pointers, so every
//!   call first checks the slices' lengths against the sizes the map was created with.
//! - [`prog_load`]: `BPF_PROG_LOAD` with an optional verifier log buffer.
//! - [`link_create`]: `BPF_LINK_CREATE` (a BPF link: detached when its last fd closes).
//! - [`prog_id`] / [`link_id`]: `BPF_OBJ_GET_INFO_BY_FD`, the ids `bpftool` shows.
//! - [`fs_magic`], [`netns_cookie`], [`host_addresses`]: the cgroup2 check, the network
//!   namespace's cookie and the addresses a wildcard listen address stands for.
//!
//! Every fd the kernel returns is owned (`OwnedFd`) and close-on-exec (bpf(2) sets
//! `O_CLOEXEC` on all of them), so a child process never keeps a program attached.

use std::ffi::CStr;
use std::io;
use std::mem::size_of;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use super::asm::Insn;

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_MAP_DELETE_ELEM: libc::c_long = 3;
const BPF_MAP_GET_NEXT_KEY: libc::c_long = 4;
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_LINK_CREATE: libc::c_long = 28;

/// `SO_NETNS_COOKIE` (Linux 5.14), not yet in every libc crate version.
const SO_NETNS_COOKIE: libc::c_int = 71;

/// Length of `map_name` / `prog_name` including the NUL.
const OBJ_NAME_LEN: usize = 16;

/// The `bpf_attr` prefix of `BPF_MAP_CREATE`.
#[repr(C)]
#[derive(Default)]
struct MapCreateAttr {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
    inner_map_fd: u32,
    numa_node: u32,
    map_name: [u8; OBJ_NAME_LEN],
}

/// The `bpf_attr` of the element commands.
#[repr(C)]
#[derive(Default)]
struct MapElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    /// `value` or `next_key`.
    value: u64,
    flags: u64,
}

/// The `bpf_attr` prefix of `BPF_PROG_LOAD`.
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; OBJ_NAME_LEN],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// The `bpf_attr` prefix of `BPF_LINK_CREATE`.
#[repr(C)]
#[derive(Default)]
struct LinkCreateAttr {
    prog_fd: u32,
    target_fd: u32,
    attach_type: u32,
    flags: u32,
}

/// The `bpf_attr` of `BPF_OBJ_GET_INFO_BY_FD`.
#[repr(C)]
#[derive(Default)]
struct InfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

/// Marker for the attribute structs: `repr(C)`, plain integers, no padding the kernel could
/// misread (the tail it checks for zeros is never part of them).
trait Attr {}
impl Attr for MapCreateAttr {}
impl Attr for MapElemAttr {}
impl Attr for ProgLoadAttr {}
impl Attr for LinkCreateAttr {}
impl Attr for InfoAttr {}

/// Runs one bpf(2) command.
///
/// # Safety
///
/// Every pointer inside `attr` must be valid, for the length the command uses, for reads
/// (and for writes where the kernel writes) for the duration of the call.
unsafe fn bpf<A: Attr>(cmd: libc::c_long, attr: &mut A) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a live, exclusively borrowed `repr(C)` struct of `size_of::<A>()`
    // bytes; the kernel reads (and for some commands writes) at most that many bytes of it.
    // The pointers it carries are valid by this function's contract.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut A as *mut libc::c_void,
            size_of::<A>() as libc::c_uint,
        )
    };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Runs a bpf(2) command that returns a new fd, and takes ownership of it.
///
/// # Safety
///
/// As [`bpf`]; and `cmd` must be a command whose success value is a new file descriptor.
unsafe fn bpf_fd<A: Attr>(cmd: libc::c_long, attr: &mut A) -> io::Result<OwnedFd> {
    // SAFETY: forwarded contract.
    let ret = unsafe { bpf(cmd, attr) }?;
    let fd = RawFd::try_from(ret).map_err(|_| io::Error::other("bpf(2) returned no fd"))?;
    // SAFETY: by the contract, `fd` is a descriptor the kernel just created for us; nothing
    // else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn name(text: &str) -> [u8; OBJ_NAME_LEN] {
    let mut out = [0u8; OBJ_NAME_LEN];
    for (slot, b) in out.iter_mut().zip(text.bytes().take(OBJ_NAME_LEN - 1)) {
        *slot = b;
    }
    out
}

fn ptr(bytes: &[u8]) -> u64 {
    bytes.as_ptr() as u64
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, what.to_string())
}

/// A BPF map and the sizes it was created with.
#[derive(Debug)]
pub(crate) struct Map {
    fd: OwnedFd,
    key_size: usize,
    value_size: usize,
}

impl Map {
    /// `BPF_MAP_CREATE`.
    pub(crate) fn create(
        map_type: u32,
        key_size: usize,
        value_size: usize,
        max_entries: u32,
        flags: u32,
        map_name: &str,
    ) -> io::Result<Map> {
        let mut attr = MapCreateAttr {
            map_type,
            key_size: u32::try_from(key_size).map_err(|_| invalid("key size"))?,
            value_size: u32::try_from(value_size).map_err(|_| invalid("value size"))?,
            max_entries,
            map_flags: flags,
            map_name: name(map_name),
            ..Default::default()
        };
        // SAFETY: the attribute carries no pointers; MAP_CREATE returns a new fd.
        let fd = unsafe { bpf_fd(BPF_MAP_CREATE, &mut attr) }?;
        Ok(Map {
            fd,
            key_size,
            value_size,
        })
    }

    /// The fd a program's `ld_imm64` names the map by.
    pub(crate) fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    fn check(&self, key: &[u8], value: Option<usize>) -> io::Result<()> {
        if key.len() != self.key_size {
            return Err(invalid("key length differs from the map's key size"));
        }
        if value.is_some_and(|len| len != self.value_size) {
            return Err(invalid("value length differs from the map's value size"));
        }
        Ok(())
    }

    fn elem_attr(&self, key: u64, value: u64, flags: u64) -> MapElemAttr {
        MapElemAttr {
            map_fd: self.fd.as_raw_fd() as u32,
            key,
            value,
            flags,
            ..Default::default()
        }
    }

    /// `BPF_MAP_UPDATE_ELEM` with `flags` (`BPF_ANY` = 0).
    pub(crate) fn update(&self, key: &[u8], value: &[u8], flags: u64) -> io::Result<()> {
        self.check(key, Some(value.len()))?;
        let mut attr = self.elem_attr(ptr(key), ptr(value), flags);
        // SAFETY: the kernel reads key_size bytes at `key` and value_size bytes at `value`,
        // the lengths checked above; both slices are borrowed for the whole call.
        unsafe { bpf(BPF_MAP_UPDATE_ELEM, &mut attr) }.map(drop)
    }

    /// `BPF_MAP_LOOKUP_ELEM` into `value`; `false` when the key is absent.
    pub(crate) fn lookup(&self, key: &[u8], value: &mut [u8]) -> io::Result<bool> {
        self.check(key, Some(value.len()))?;
        let mut attr = self.elem_attr(ptr(key), value.as_mut_ptr() as u64, 0);
        // SAFETY: the kernel reads key_size bytes at `key` and writes value_size bytes at
        // `value`, an exclusive borrow of that length (checked above).
        match unsafe { bpf(BPF_MAP_LOOKUP_ELEM, &mut attr) } {
            Ok(_) => Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// `BPF_MAP_DELETE_ELEM`; `false` when the key was absent.
    pub(crate) fn delete(&self, key: &[u8]) -> io::Result<bool> {
        self.check(key, None)?;
        let mut attr = self.elem_attr(ptr(key), 0, 0);
        // SAFETY: the kernel reads key_size bytes at `key` (length checked above).
        match unsafe { bpf(BPF_MAP_DELETE_ELEM, &mut attr) } {
            Ok(_) => Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// `BPF_MAP_GET_NEXT_KEY`: the key after `key` (the first key for `None`) into `next`;
    /// `false` at the end.
    pub(crate) fn next_key(&self, key: Option<&[u8]>, next: &mut [u8]) -> io::Result<bool> {
        self.check(next, None)?;
        if let Some(key) = key {
            self.check(key, None)?;
        }
        let mut attr = self.elem_attr(key.map_or(0, ptr), next.as_mut_ptr() as u64, 0);
        // SAFETY: a null key asks for the first key; otherwise the kernel reads key_size
        // bytes at `key`. It writes key_size bytes at `next`, an exclusive borrow of that
        // length (both checked above).
        match unsafe { bpf(BPF_MAP_GET_NEXT_KEY, &mut attr) } {
            Ok(_) => Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// `BPF_PROG_LOAD`. With `log`, the verifier writes its log there (log level 1) and a refusal
/// can be explained; the log is NUL-terminated inside the buffer.
pub(crate) fn prog_load(
    prog_type: u32,
    expected_attach_type: u32,
    insns: &[Insn],
    license: &CStr,
    prog_name: &str,
    log: Option<&mut [u8]>,
) -> io::Result<OwnedFd> {
    let (log_level, log_size, log_buf) = match log {
        Some(buf) => (
            1,
            u32::try_from(buf.len()).map_err(|_| invalid("log size"))?,
            buf.as_mut_ptr() as u64,
        ),
        None => (0, 0, 0),
    };
    let mut attr = ProgLoadAttr {
        prog_type,
        insn_cnt: u32::try_from(insns.len()).map_err(|_| invalid("program length"))?,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level,
        log_size,
        log_buf,
        prog_name: name(prog_name),
        expected_attach_type,
        ..Default::default()
    };
    // SAFETY: `Insn` is `repr(C)` and exactly `struct bpf_insn` (asserted in asm.rs); the
    // kernel reads insn_cnt of them from the borrowed slice. The license is a NUL-terminated
    // CStr; the log buffer is an exclusive borrow of log_size bytes. All outlive the call.
    // PROG_LOAD returns a new fd.
    unsafe { bpf_fd(BPF_PROG_LOAD, &mut attr) }
}

/// `BPF_LINK_CREATE`: attaches `prog` to `target` (here a cgroup directory) for as long as
/// the returned fd (or a dup of it) is open.
pub(crate) fn link_create(
    prog: BorrowedFd<'_>,
    target: BorrowedFd<'_>,
    attach_type: u32,
) -> io::Result<OwnedFd> {
    let mut attr = LinkCreateAttr {
        prog_fd: prog.as_raw_fd() as u32,
        target_fd: target.as_raw_fd() as u32,
        attach_type,
        flags: 0,
    };
    // SAFETY: the attribute carries fds, no pointers; LINK_CREATE returns a new fd.
    unsafe { bpf_fd(BPF_LINK_CREATE, &mut attr) }
}

/// The id (`bpf_prog_info.id` / `bpf_link_info.id`, both at offset 4) of a BPF object.
fn object_id(fd: BorrowedFd<'_>) -> io::Result<u32> {
    // type u32, id u32: the kernel copies at most info_len bytes into this buffer.
    let mut info = [0u32; 2];
    let mut attr = InfoAttr {
        bpf_fd: fd.as_raw_fd() as u32,
        info_len: size_of::<[u32; 2]>() as u32,
        info: info.as_mut_ptr() as u64,
    };
    // SAFETY: the kernel writes at most info_len (8) bytes at `info`, an exclusive borrow.
    unsafe { bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr) }?;
    Ok(info[1])
}

/// The program id `bpftool prog` shows.
pub(crate) fn prog_id(fd: BorrowedFd<'_>) -> io::Result<u32> {
    object_id(fd)
}

/// The link id `bpftool link` shows.
pub(crate) fn link_id(fd: BorrowedFd<'_>) -> io::Result<u32> {
    object_id(fd)
}

/// `fstatfs(fd).f_type`: the file system magic (cgroup2: `CGROUP2_SUPER_MAGIC`).
pub(crate) fn fs_magic(fd: BorrowedFd<'_>) -> io::Result<i64> {
    // SAFETY: an all-zero statfs is a valid value of this plain C struct.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: fstatfs writes one `struct statfs` into the exclusive borrow `st`.
    if unsafe { libc::fstatfs(fd.as_raw_fd(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    #[allow(clippy::unnecessary_cast)] // f_type's C type differs between architectures
    Ok(st.f_type as i64)
}

/// The cookie of the network namespace `sock` belongs to (`bpf_get_netns_cookie` in a
/// program returns the same number for sockets of that namespace).
pub(crate) fn netns_cookie(sock: BorrowedFd<'_>) -> io::Result<u64> {
    let mut cookie: u64 = 0;
    let mut len = size_of::<u64>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` (8) bytes into `cookie` and updates `len`.
    let ret = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_NETNS_COOKIE,
            &mut cookie as *mut u64 as *mut libc::c_void,
            &mut len,
        )
    };
    if ret != 0 {
        return Err(io::Error::last_os_error());
    }
    if len as usize != size_of::<u64>() {
        return Err(io::Error::other("SO_NETNS_COOKIE returned a short value"));
    }
    Ok(cookie)
}

/// Every IPv4 and IPv6 address assigned to an interface of this network namespace.
pub(crate) fn host_addresses() -> io::Result<Vec<IpAddr>> {
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs stores a list head in `list`, which we free below.
    if unsafe { libc::getifaddrs(&mut list) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut out = Vec::new();
    let mut cur = list;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, valid until freeifaddrs.
        let ifa = unsafe { &*cur };
        if !ifa.ifa_addr.is_null() {
            // SAFETY: a non-null ifa_addr points to a sockaddr whose sa_family says which
            // sockaddr_* it is; we read the larger struct only for that family.
            let family = i32::from(unsafe { (*ifa.ifa_addr).sa_family });
            if family == libc::AF_INET {
                // SAFETY: as above, AF_INET ⇒ a sockaddr_in.
                let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
                out.push(IpAddr::V4(Ipv4Addr::from(
                    sin.sin_addr.s_addr.to_ne_bytes(),
                )));
            } else if family == libc::AF_INET6 {
                // SAFETY: as above, AF_INET6 ⇒ a sockaddr_in6.
                let sin6 = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in6) };
                out.push(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)));
            }
        }
        cur = ifa.ifa_next;
    }
    // SAFETY: `list` came from getifaddrs and is freed once; no node is used after this.
    unsafe { libc::freeifaddrs(list) };
    out.sort();
    out.dedup();
    Ok(out)
}
