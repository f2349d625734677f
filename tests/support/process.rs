//! What `/proc` says about a running process (the proxy): its open file descriptors and its
//! resident memory, for the leak and memory-bound checks of the load and bad-input tests.

use std::time::{Duration, Instant};

/// Number of open file descriptors of `pid` (entries of `/proc/<pid>/fd`).
pub fn fd_count(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("read /proc/<pid>/fd")
        .count()
}

/// Polls (every 50 ms, at most `limit`) until `pid` has at most `want` descriptors open;
/// returns the last count, which is above `want` only when `limit` ran out.
pub async fn wait_fds_at_most(pid: i32, want: usize, limit: Duration) -> usize {
    let deadline = Instant::now() + limit;
    loop {
        let n = fd_count(pid);
        if n <= want || Instant::now() >= deadline {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// VmRSS of `pid` in KiB (from `/proc/<pid>/status`).
pub fn rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/<pid>/status")
}
