//! The watch program (`sockops`): notices when a connect the connect program redirected
//! fails, and marks its target in `refusals`, so the next connects to that route go to the
//! proxy's listener — which holds them and retries the server, as the relay path does for a
//! refused backend — instead of every reconnecting application being refused by a dead
//! primary until discovery catches up.
//!
//! ```text
//!  connect() ─▶ connect4/6: rewritten to A, cookies[c] = A
//!     TCP_CONNECT_CB  (SYN about to go)     c recorded? → ask for state callbacks
//!     STATE_CB  SYN_SENT → CLOSE (RST, SYN timeout, or closed while connecting)
//!                                           c recorded? → refusals[A] = c, count `failed`
//!  next connect() to the route ─▶ connect4/6: A in refusals → not rewritten: the listener
//!  proxy: a relayed connect to A succeeds, or discovery names another primary → unmark A
//! ```
//!
//! It is a `BPF_PROG_TYPE_SOCK_OPS` program on the same cgroup, attached through a link like
//! the connect programs. The kernel calls it for every TCP socket of the cgroup at a handful
//! of points; it acts at two and returns at once for the rest:
//!
//! - `BPF_SOCK_OPS_TCP_CONNECT_CB` (from `tcp_connect()`, before the SYN): if the socket's
//!   cookie is in `cookies` (the connect program redirected it a moment before), add
//!   `BPF_SOCK_OPS_STATE_CB_FLAG` to the socket's callback flags (read, or-ed, written back:
//!   another program's flags on the socket are kept). Other sockets never get state
//!   callbacks from us.
//! - `BPF_SOCK_OPS_STATE_CB` (`tcp_set_state()`, args[0] the old state, args[1] the new): a
//!   change from `SYN_SENT` to `CLOSE` is a connect that never completed — refused (RST),
//!   timed out, or abandoned by the application. If the cookie is recorded, write
//!   `refusals[target] = cookie`, the target being the first 24 bytes of the recorded value.
//!
//! Every path returns 1; a sock_ops program's return value only matters for the ops that ask
//! for a reply, none of which it handles.
//!
//! Why a server that *ends* a redirected connection is not marked too (it would catch a
//! crashed primary before the first reconnect reaches it): the server's FIN arriving first
//! (`ESTABLISHED → CLOSE_WAIT`) is no sign of a dead server. A client's normal exit sends
//! `COM_QUIT` and closes, and the server, woken by `COM_QUIT`, often closes before the
//! client process gets to — tried with the `mariadb` CLI: its next connect would have been
//! detoured, so ordinary connect-per-request clients would keep falling back to the relay.
#![forbid(unsafe_code)]

use std::os::fd::OwnedFd;

use super::FastPathError;
use super::asm::{Asm, AsmError, Insn, R0, R1, R2, R3, R4, R6, R7, R10, Size};
use super::maps::COUNT_FAILED;
use super::program::{
    BPF_ANY, GET_SOCKET_COOKIE, Kind, MAP_LOOKUP_ELEM, MAP_UPDATE_ELEM, MapFds, bump_counter,
    load_as,
};

/// `BPF_PROG_TYPE_SOCK_OPS`.
const PROG_TYPE_SOCK_OPS: u32 = 13;
/// `BPF_CGROUP_SOCK_OPS`.
pub(crate) const ATTACH_CGROUP_SOCK_OPS: u32 = 3;
pub(crate) const PROGRAM_NAME: &str = "cmp_watch";
pub(crate) const HOOK: &str = "cgroup/sock_ops";

/// `bpf_sock_ops_cb_flags_set(ctx, flags)`.
const SOCK_OPS_CB_FLAGS_SET: i32 = 59;

// `struct bpf_sock_ops` field offsets (include/uapi/linux/bpf.h).
const CTX_OP: i16 = 0;
/// `args[0]`: at `STATE_CB` the old TCP state.
const CTX_ARG0: i16 = 4;
/// `args[1]`: at `STATE_CB` the new TCP state.
const CTX_ARG1: i16 = 8;
const CTX_CB_FLAGS: i16 = 84;

// `BPF_SOCK_OPS_*` ops, and the flag asking for state callbacks.
const OP_TCP_CONNECT_CB: i32 = 3;
const OP_STATE_CB: i32 = 10;
const STATE_CB_FLAG: i32 = 1 << 2;
// TCP states (`BPF_TCP_*`, equal to the kernel's `TCP_*`).
const TCP_SYN_SENT: i32 = 2;
const TCP_CLOSE: i32 = 7;

// Stack: the cookie (the cookies key and the refusals value) at fp-8, the counter index at
// fp-16.
const STACK_COOKIE: i16 = -8;
const STACK_COUNTER: i16 = -16;

/// The watch program. Registers: R6 = the context, R7 = the recorded cookie value once found.
pub(crate) fn instructions(maps: MapFds) -> Result<Vec<Insn>, AsmError> {
    let mut a = Asm::new();
    // Keep the context: R1 is the first argument of every call.
    a.mov64_reg(R6, R1);
    // R2 = ctx->op
    a.ldx(Size::W, R2, R6, CTX_OP);
    a.jeq_imm(R2, OP_TCP_CONNECT_CB, "connecting");
    // Every other op but STATE_CB: nothing to do.
    a.jne_imm(R2, OP_STATE_CB, "done");

    // -- STATE_CB: only SYN_SENT → CLOSE, a connect that did not complete.
    // R2 = ctx->args[0] (old state)
    a.ldx(Size::W, R2, R6, CTX_ARG0);
    a.jne_imm(R2, TCP_SYN_SENT, "done");
    // R2 = ctx->args[1] (new state)
    a.ldx(Size::W, R2, R6, CTX_ARG1);
    a.jne_imm(R2, TCP_CLOSE, "done");
    recorded_value(&mut a, maps);
    // R7 = the recorded value (target endpoint in its first 24 bytes, the refusals key)
    a.mov64_reg(R7, R0);
    // R0 = bpf_map_update_elem(&refusals, &value.target, &cookie, BPF_ANY): mark the target.
    a.ld_map_fd(R1, maps.refusals);
    a.mov64_reg(R2, R7);
    a.mov64_reg(R3, R10);
    a.add64_imm(R3, i32::from(STACK_COOKIE));
    a.mov64_imm(R4, BPF_ANY);
    a.call(MAP_UPDATE_ELEM);
    // counters[COUNT_FAILED] += 1
    a.st_imm(Size::W, R10, STACK_COUNTER, COUNT_FAILED);
    bump_counter(&mut a, maps.counters, STACK_COUNTER, "done");
    a.ja("done");

    // -- TCP_CONNECT_CB: ask for state callbacks on the sockets the connect program
    // redirected.
    a.label("connecting");
    recorded_value(&mut a, maps);
    // R2 = ctx->bpf_sock_ops_cb_flags | STATE_CB_FLAG: keep the flags others may have set
    a.ldx(Size::W, R2, R6, CTX_CB_FLAGS);
    a.or64_imm(R2, STATE_CB_FLAG);
    // bpf_sock_ops_cb_flags_set(ctx, R2); its result (an error for a request-only socket,
    // which never reaches here) changes nothing
    a.mov64_reg(R1, R6);
    a.call(SOCK_OPS_CB_FLAGS_SET);

    a.label("done");
    a.mov64_imm(R0, 1);
    a.exit();
    a.finish()
}

/// `R0 = cookies[bpf_get_socket_cookie(ctx)]`, the cookie left at fp-8; jumps to `done`
/// when the socket is not one the connect program redirected.
fn recorded_value(a: &mut Asm, maps: MapFds) {
    // R0 = bpf_get_socket_cookie(ctx): the same cookie the connect program recorded
    a.mov64_reg(R1, R6);
    a.call(GET_SOCKET_COOKIE);
    // cookie slot = R0
    a.stx(Size::DW, R10, STACK_COOKIE, R0);
    // R0 = bpf_map_lookup_elem(&cookies, &cookie)
    a.ld_map_fd(R1, maps.cookies);
    a.mov64_reg(R2, R10);
    a.add64_imm(R2, i32::from(STACK_COOKIE));
    a.call(MAP_LOOKUP_ELEM);
    // Not redirected by us: leave it alone.
    a.jeq_imm(R0, 0, "done");
}

/// Loads the watch program (attach it with [`ATTACH_CGROUP_SOCK_OPS`]).
pub(crate) fn load(insns: &[Insn]) -> Result<OwnedFd, FastPathError> {
    load_as(
        Kind {
            prog_type: PROG_TYPE_SOCK_OPS,
            attach_type: ATTACH_CGROUP_SOCK_OPS,
            name: PROGRAM_NAME,
            op: "loading the watch program (BPF_PROG_LOAD)",
        },
        insns,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watch_program_assembles_and_ends_in_one_exit_returning_1() {
        let fds = MapFds {
            routes: 3,
            cookies: 4,
            refusals: 5,
            counters: 6,
        };
        let insns = instructions(fds).unwrap();
        let n = insns.len();
        assert_eq!((insns[n - 2].code, insns[n - 2].imm), (0xb7, 1));
        assert_eq!(insns[n - 1].code, 0x95);
        assert_eq!(insns.iter().filter(|i| i.code == 0x95).count(), 1);
        assert!(n < 60, "the watch program grew to {n} instructions");
    }
}
