//! [`FastPathError`]: why the fast path cannot be loaded or operated, each variant naming
//! the missing piece and how to provide it. A caller that cannot load the fast path keeps
//! relaying through its listener: nothing here is fatal to the proxy.
#![forbid(unsafe_code)]

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

/// What stops the connect-redirect fast path.
#[derive(Debug, thiserror::Error)]
pub enum FastPathError {
    #[error(
        "no cgroup v2 hierarchy is mounted (no `cgroup2` line in /proc/self/mountinfo): \
         mount one (`mount -t cgroup2 none /sys/fs/cgroup/unified`) or configure the cgroup \
         directory the applications run in"
    )]
    NoCgroup2,
    #[error("cannot read /proc/self/mountinfo: {0}")]
    MountInfo(#[source] io::Error),
    #[error("cannot open the cgroup directory {}: {source}", path.display())]
    CgroupOpen {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "{} is not a cgroup v2 directory: BPF programs attach only to the cgroup2 hierarchy \
         (on a hybrid host that is the `cgroup2` mount, e.g. /sys/fs/cgroup/unified/…, not a \
         v1 controller directory)",
        path.display()
    )]
    NotCgroup2 { path: PathBuf },
    #[error(
        "{op}: permission denied (EPERM): the fast path needs root, or CAP_BPF + \
         CAP_NET_ADMIN (CAP_SYS_ADMIN instead of CAP_BPF on kernels before 5.8; and a \
         container runtime that allows bpf(2))"
    )]
    Permission { op: &'static str },
    #[error("the kernel verifier refused the {program} program ({source}); verifier log:\n{log}")]
    Verifier {
        program: &'static str,
        #[source]
        source: io::Error,
        log: String,
    },
    #[error(
        "this kernel cannot destroy sockets (SOCK_DESTROY is not supported): it needs \
         CONFIG_INET_DIAG_DESTROY=y; without it the connections redirected to an old primary \
         could not be closed at failover, so the fast path is not used"
    )]
    NoSockDestroy,
    #[error(
        "route {listen} → {target}: the target must have the listen address's family (a \
         connect() rewrite cannot change the socket's family)"
    )]
    FamilyMismatch {
        listen: SocketAddr,
        target: SocketAddr,
    },
    #[error("the connect program does not assemble: {0}")]
    Assemble(#[from] super::asm::AsmError),
    #[error("{op}: {source}")]
    Kernel {
        op: &'static str,
        #[source]
        source: io::Error,
    },
}

impl FastPathError {
    /// A failed system call: EPERM becomes [`FastPathError::Permission`] (the fix is the
    /// same whichever call hit it), anything else [`FastPathError::Kernel`].
    pub(crate) fn kernel(op: &'static str) -> impl FnOnce(io::Error) -> FastPathError {
        move |source| {
            if source.raw_os_error() == Some(libc::EPERM) {
                FastPathError::Permission { op }
            } else {
                FastPathError::Kernel { op, source }
            }
        }
    }

    /// Whether this is the verifier refusing a program.
    pub fn verifier_log(&self) -> Option<&str> {
        match self {
            FastPathError::Verifier { log, .. } => Some(log),
            _ => None,
        }
    }
}
