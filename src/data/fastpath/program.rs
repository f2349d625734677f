//! The `cgroup/connect4` and `cgroup/connect6` programs, as instruction lists, and loading
//! them (`BPF_PROG_LOAD`, with the verifier's log when it refuses).
//!
//! The kernel runs the program inside connect(2) of every socket created in the cgroup (or
//! a descendant), before the TCP handshake starts, with a `struct bpf_sock_addr` context
//! holding the destination the application asked for. The program may rewrite it; the
//! socket then connects to the new address as if the application had asked for it.
//!
//! What it does, in order (the listing in [`instructions`] says it per instruction):
//!
//! 1. TCP only: `type == SOCK_STREAM && protocol == IPPROTO_TCP`, else allow unchanged.
//! 2. Build the routes key on the stack: this socket's network-namespace cookie, the family,
//!    `user_port` and `user_ip4` / `user_ip6[0..4]` (all as the context holds them: network
//!    byte order, copied without swapping).
//! 3. Look the key up in `routes`. Absent → allow unchanged (not a route's listen address).
//! 4. Present without the rewrite flag (the proxy knows no primary) → count `passed`, allow
//!    unchanged: the connect reaches the proxy's own listener, which holds the client.
//! 5. Present with a target that is in `refusals` (a redirected connect to it failed, see
//!    [`watch`](super::watch)) → count `detoured`, allow unchanged: the proxy's listener holds
//!    the client and retries the server as the relay does, instead of the application being
//!    refused again.
//! 6. Present with a target → write the target's address and port into the context.
//! 7. Record the socket's cookie → (target, generation) in `cookies`, so the proxy can find
//!    the sockets it redirected when that target stops being the primary; count
//!    `redirected` (or `unrecorded` if the map update failed).
//! 8. Return 1 (allow). The program never returns 0: a fast-path problem must not turn into
//!    a refused connect, and every path ends in the same `allow` exit.
//!
//! IPv4 and IPv6 are two programs because the verifier lets a `connect4` program touch only
//! `user_ip4` and a `connect6` one only `user_ip6`; they differ only in the address copies.
//! The license string is the project's own: none of the four helpers used is GPL-only.
#![forbid(unsafe_code)]

use std::ffi::CStr;
use std::os::fd::OwnedFd;

use super::FastPathError;
use super::asm::{Asm, AsmError, Insn, R0, R1, R2, R3, R4, R6, R7, R8, R10, Size};
use super::maps::{
    AF_INET, AF_INET6, COUNT_DETOURED, COUNT_PASSED, COUNT_REDIRECTED, COUNT_UNRECORDED,
    FLAG_REWRITE, KEY_ADDR, KEY_FAMILY, KEY_LEN, KEY_NETNS, KEY_PORT, VALUE_ADDR, VALUE_FLAGS,
    VALUE_PORT,
};
use super::sys;

/// `BPF_PROG_TYPE_CGROUP_SOCK_ADDR`.
const PROG_TYPE_CGROUP_SOCK_ADDR: u32 = 18;
/// `BPF_CGROUP_INET4_CONNECT` / `BPF_CGROUP_INET6_CONNECT`.
const ATTACH_INET4_CONNECT: u32 = 10;
const ATTACH_INET6_CONNECT: u32 = 11;

pub(super) const LICENSE: &CStr = c"Apache-2.0";

// Helper function ids (include/uapi/linux/bpf.h, `___BPF_FUNC_MAPPER`).
pub(super) const MAP_LOOKUP_ELEM: i32 = 1;
pub(super) const MAP_UPDATE_ELEM: i32 = 2;
pub(super) const GET_SOCKET_COOKIE: i32 = 46;
const GET_NETNS_COOKIE: i32 = 122;

// `struct bpf_sock_addr` field offsets.
const CTX_USER_IP4: i16 = 4;
const CTX_USER_IP6: i16 = 8;
const CTX_USER_PORT: i16 = 24;
const CTX_TYPE: i16 = 32;
const CTX_PROTOCOL: i16 = 36;

const SOCK_STREAM: i32 = libc::SOCK_STREAM;
const IPPROTO_TCP: i32 = libc::IPPROTO_TCP;
pub(super) const BPF_ANY: i32 = 0;

// Stack layout (offsets from the frame pointer R10; each slot aligned to its size, as the
// verifier requires for stack access).
/// The routes key, 32 bytes: fp-32 .. fp-0.
const STACK_KEY: i16 = -(KEY_LEN as i16);
/// The socket cookie, the cookies map key: fp-40 .. fp-32.
const STACK_COOKIE: i16 = STACK_KEY - 8;
/// The counter index, the counters map key: fp-48 .. fp-44.
const STACK_COUNTER: i16 = STACK_COOKIE - 8;

/// Verifier log buffer for a refused program. Our programs verify in well under 100 lines;
/// a deliberately broken one needs a few.
pub(super) const LOG_SIZE: usize = 256 * 1024;

/// Which connect hook a program is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Family {
    V4,
    V6,
}

impl Family {
    pub(crate) fn attach_type(self) -> u32 {
        match self {
            Family::V4 => ATTACH_INET4_CONNECT,
            Family::V6 => ATTACH_INET6_CONNECT,
        }
    }

    /// The program name (what `bpftool prog` shows).
    pub(crate) fn program_name(self) -> &'static str {
        match self {
            Family::V4 => "cmp_connect4",
            Family::V6 => "cmp_connect6",
        }
    }
}

/// The fds of the maps the program refers to.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MapFds {
    pub routes: i32,
    pub cookies: i32,
    pub refusals: i32,
    pub counters: i32,
}

/// The connect program for `family`. Registers: R6 = the context for the whole program
/// (R1–R5 die at every helper call), R7 = the route value once found, R8 = which counter to
/// bump.
pub(crate) fn instructions(family: Family, maps: MapFds) -> Result<Vec<Insn>, AsmError> {
    let mut a = Asm::new();
    // Keep the context: R1 holds it on entry but is the first argument of every call.
    a.mov64_reg(R6, R1);

    // -- 1. TCP only. `type` and `protocol` are the socket's, read-only u32 fields.
    // R2 = ctx->type
    a.ldx(Size::W, R2, R6, CTX_TYPE);
    // UDP (and raw) sockets may "connect" to the same address; leave them alone.
    a.jne_imm(R2, SOCK_STREAM, "allow");
    // R2 = ctx->protocol (the resolved protocol: socket(…, SOCK_STREAM, 0) reads as TCP)
    a.ldx(Size::W, R2, R6, CTX_PROTOCOL);
    // SOCK_STREAM that is not TCP (MPTCP, SCTP): leave it alone.
    a.jne_imm(R2, IPPROTO_TCP, "allow");

    // -- 2. The routes key at fp-32.
    // R0 = bpf_get_netns_cookie(ctx): the same route key in another network namespace (a
    // container's own 127.0.0.1:3306 when attached host-wide) must not match.
    a.mov64_reg(R1, R6);
    a.call(GET_NETNS_COOKIE);
    // key.netns = R0
    a.stx(Size::DW, R10, STACK_KEY + KEY_NETNS, R0);
    // key.family = AF_INET / AF_INET6 (known per program; user_family would say the same)
    let af = match family {
        Family::V4 => AF_INET,
        Family::V6 => AF_INET6,
    };
    a.st_imm(Size::W, R10, STACK_KEY + KEY_FAMILY, af as i32);
    // R2 = ctx->user_port: network byte order in the low 16 bits, upper bits zero
    a.ldx(Size::W, R2, R6, CTX_USER_PORT);
    // key.port = R2
    a.stx(Size::W, R10, STACK_KEY + KEY_PORT, R2);
    match family {
        Family::V4 => {
            // R2 = ctx->user_ip4 (network order bytes, stored back as the same bytes)
            a.ldx(Size::W, R2, R6, CTX_USER_IP4);
            // key.addr[0..4] = R2
            a.stx(Size::W, R10, STACK_KEY + KEY_ADDR, R2);
            // key.addr[4..8] = 0, key.addr[8..16] = 0: the verifier refuses a lookup with a
            // key that has uninitialised stack bytes, and the zeros are part of the key.
            a.st_imm(Size::W, R10, STACK_KEY + KEY_ADDR + 4, 0);
            a.st_imm(Size::DW, R10, STACK_KEY + KEY_ADDR + 8, 0);
        }
        Family::V6 => {
            // key.addr[4i..4i+4] = ctx->user_ip6[i], i = 0..4 (the verifier allows 32-bit
            // access to each word)
            for i in 0..4 {
                a.ldx(Size::W, R2, R6, CTX_USER_IP6 + 4 * i);
                a.stx(Size::W, R10, STACK_KEY + KEY_ADDR + 4 * i, R2);
            }
        }
    }

    // -- 3. R0 = bpf_map_lookup_elem(&routes, &key)
    a.ld_map_fd(R1, maps.routes);
    a.mov64_reg(R2, R10);
    a.add64_imm(R2, i32::from(STACK_KEY));
    a.call(MAP_LOOKUP_ELEM);
    // Not a listen address of ours: allow unchanged, count nothing (most connects).
    a.jeq_imm(R0, 0, "allow");
    // R7 = the route value (a map value pointer, survives calls)
    a.mov64_reg(R7, R0);

    // -- 4. A route without a target: the connect goes to the proxy's listener.
    // R8 = COUNT_PASSED, the counter for the jump below
    a.mov64_imm(R8, COUNT_PASSED);
    // R2 = value.flags & FLAG_REWRITE
    a.ldx(Size::W, R2, R7, VALUE_FLAGS);
    a.and64_imm(R2, FLAG_REWRITE);
    a.jeq_imm(R2, 0, "count");

    // -- 5. A target that refused a redirected connect: the connect goes to the listener.
    // R0 = bpf_map_lookup_elem(&refusals, &value.target): the value's first 24 bytes are the
    // target endpoint, which is the refusals key, so the value pointer is the key pointer.
    a.ld_map_fd(R1, maps.refusals);
    a.mov64_reg(R2, R7);
    a.call(MAP_LOOKUP_ELEM);
    // R8 = COUNT_DETOURED, for the jump below
    a.mov64_imm(R8, COUNT_DETOURED);
    // Marked: leave the destination alone and count the detour.
    a.jne_imm(R0, 0, "count");

    // -- 6. Rewrite the destination.
    match family {
        Family::V4 => {
            // ctx->user_ip4 = value.target.addr[0..4]
            a.ldx(Size::W, R2, R7, VALUE_ADDR);
            a.stx(Size::W, R6, CTX_USER_IP4, R2);
        }
        Family::V6 => {
            // ctx->user_ip6[i] = value.target.addr[4i..4i+4], i = 0..4
            for i in 0..4 {
                a.ldx(Size::W, R2, R7, VALUE_ADDR + 4 * i);
                a.stx(Size::W, R6, CTX_USER_IP6 + 4 * i, R2);
            }
        }
    }
    // ctx->user_port = value.target.port (the verifier wants a 32-bit store; the kernel
    // writes its low 16 bits to sin_port)
    a.ldx(Size::W, R2, R7, VALUE_PORT);
    a.stx(Size::W, R6, CTX_USER_PORT, R2);

    // -- 7. Record the socket. R0 = bpf_get_socket_cookie(ctx): the number inet_diag
    // reports as `idiag_cookie` for this socket, unique for the life of the system.
    a.mov64_reg(R1, R6);
    a.call(GET_SOCKET_COOKIE);
    // cookie slot = R0
    a.stx(Size::DW, R10, STACK_COOKIE, R0);
    // R0 = bpf_map_update_elem(&cookies, &cookie, value, BPF_ANY). The value argument is
    // the route value itself: its first 32 bytes are (target, generation), exactly the
    // cookies map's value, so nothing is copied to the stack.
    a.ld_map_fd(R1, maps.cookies);
    a.mov64_reg(R2, R10);
    a.add64_imm(R2, i32::from(STACK_COOKIE));
    a.mov64_reg(R3, R7);
    a.mov64_imm(R4, BPF_ANY);
    a.call(MAP_UPDATE_ELEM);
    // R8 = COUNT_REDIRECTED if the update succeeded (R0 == 0), else COUNT_UNRECORDED: the
    // socket is redirected either way, but the proxy could not destroy it later.
    a.mov64_imm(R8, COUNT_REDIRECTED);
    a.jeq_imm(R0, 0, "count");
    a.mov64_imm(R8, COUNT_UNRECORDED);

    // -- Count: counters[R8] += 1, atomically (programs run on all CPUs at once).
    a.label("count");
    // counter slot = R8 (u32 array index)
    a.stx(Size::W, R10, STACK_COUNTER, R8);
    bump_counter(&mut a, maps.counters, STACK_COUNTER, "allow");

    // -- 8. Allow the connect (to the rewritten or the original destination).
    a.label("allow");
    a.mov64_imm(R0, 1);
    a.exit();
    a.finish()
}

/// `counters[index] += 1`, atomically (programs run on all CPUs at once), the u32 index
/// already at `fp + slot`; clobbers R0–R2. Ends by falling through, or by jumping to `out` on
/// the NULL lookup the verifier insists is handled (an index < max_entries never fails).
pub(super) fn bump_counter(a: &mut Asm, counters: i32, slot: i16, out: &'static str) {
    // R0 = bpf_map_lookup_elem(&counters, &index)
    a.ld_map_fd(R1, counters);
    a.mov64_reg(R2, R10);
    a.add64_imm(R2, i32::from(slot));
    a.call(MAP_LOOKUP_ELEM);
    a.jeq_imm(R0, 0, out);
    // lock *(u64 *)(R0 + 0) += 1
    a.mov64_imm(R1, 1);
    a.atomic_add64(R0, 0, R1);
}

/// Loads `insns` as a cgroup sock_addr program for `family`'s connect hook.
///
/// The first attempt runs without a log (the kernel skips formatting it); if the verifier
/// refuses, the same program is loaded again with a log buffer so the error carries the
/// verifier's explanation — what libbpf does too.
pub(crate) fn load(family: Family, insns: &[Insn]) -> Result<OwnedFd, FastPathError> {
    load_as(
        Kind {
            prog_type: PROG_TYPE_CGROUP_SOCK_ADDR,
            attach_type: family.attach_type(),
            name: family.program_name(),
            op: "loading the connect program (BPF_PROG_LOAD)",
        },
        insns,
    )
}

/// What a program is to the kernel, and how errors name it.
pub(super) struct Kind {
    pub prog_type: u32,
    pub attach_type: u32,
    pub name: &'static str,
    /// For errors: what was being done.
    pub op: &'static str,
}

/// Loads `insns` as a program of `kind` (see [`load`] for the two attempts).
pub(super) fn load_as(kind: Kind, insns: &[Insn]) -> Result<OwnedFd, FastPathError> {
    let Kind {
        prog_type,
        attach_type,
        name,
        op,
    } = kind;
    let attempt =
        |log: Option<&mut [u8]>| sys::prog_load(prog_type, attach_type, insns, LICENSE, name, log);
    let first = match attempt(None) {
        Ok(fd) => return Ok(fd),
        Err(e) => e,
    };
    match first.raw_os_error() {
        Some(libc::EPERM) => return Err(FastPathError::Permission { op }),
        // EACCES: the verifier refused; EINVAL: malformed (bad opcode, bad map fd, unknown
        // helper on this kernel). Both are explained by the log.
        Some(libc::EACCES) | Some(libc::EINVAL) => {}
        _ => return Err(FastPathError::Kernel { op, source: first }),
    }
    let mut log = vec![0u8; LOG_SIZE];
    let second = match attempt(Some(&mut log)) {
        // Not refused the second time (should not happen): take it.
        Ok(fd) => return Ok(fd),
        Err(e) => e,
    };
    let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
    let text = String::from_utf8_lossy(&log[..end]).trim_end().to_string();
    Err(FastPathError::Verifier {
        program: name,
        source: second,
        log: if text.is_empty() {
            "(the kernel wrote no log)".to_string()
        } else {
            text
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const FDS: MapFds = MapFds {
        routes: 3,
        cookies: 4,
        refusals: 5,
        counters: 6,
    };

    #[test]
    fn both_programs_assemble_and_end_in_allow() {
        for family in [Family::V4, Family::V6] {
            let insns = instructions(family, FDS).unwrap();
            let n = insns.len();
            // The last two instructions are `r0 = 1; exit`: the only exit, so every path
            // allows the connect.
            assert_eq!((insns[n - 2].code, insns[n - 2].imm), (0xb7, 1));
            assert_eq!(insns[n - 1].code, 0x95);
            assert_eq!(insns.iter().filter(|i| i.code == 0x95).count(), 1);
            assert!(n < 80, "{family:?} program grew to {n} instructions");
        }
    }
}
