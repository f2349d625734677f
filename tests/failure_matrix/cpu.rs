//! Failure 6 of the matrix. CPU saturation: a busy loop pinned to each CPU the proxy may use;
//! relaying stays correct and the proxy does not starve.

use std::time::{Duration, Instant};

use crate::support::backends::closed_port;
use crate::support::consul::TestConsul;
use crate::support::mariadb::MariaDb;
use crate::support::workload::{CREATE_TABLE, Writers};
use crate::{all_acked_present, lo, ms, percentile, pick, select_latencies, start_proxy};

/// CPUs the process may run on.
fn cpus_of(pid: i32) -> Vec<usize> {
    // SAFETY: a zeroed cpu_set_t is valid; sched_getaffinity fills it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let rc =
        unsafe { libc::sched_getaffinity(pid, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if rc != 0 {
        return vec![0];
    }
    (0..libc::CPU_SETSIZE as usize)
        // SAFETY: index below CPU_SETSIZE.
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        .collect()
}

/// Busy loops, one thread pinned to each CPU the proxy may use; they stop after `run` or
/// when dropped (threads of this process: nothing can outlive the test).
struct Spinners {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    threads: Vec<std::thread::JoinHandle<u64>>,
}

impl Spinners {
    fn start(cpus: &[usize], run: Duration) -> Spinners {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let threads = cpus
            .iter()
            .map(|&cpu| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    // SAFETY: a zeroed cpu_set_t is valid; pid 0 is this thread.
                    unsafe {
                        let mut set: libc::cpu_set_t = std::mem::zeroed();
                        libc::CPU_SET(cpu, &mut set);
                        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
                    }
                    let end = Instant::now() + run;
                    let mut spins = 0u64;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) && Instant::now() < end {
                        for _ in 0..10_000 {
                            spins = std::hint::black_box(spins.wrapping_add(1));
                        }
                    }
                    spins
                })
            })
            .collect();
        Spinners { stop, threads }
    }
}

impl Drop for Spinners {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpu_saturation_keeps_relaying_correct() {
    let db = MariaDb::start(lo()).await;
    db.admin_exec(CREATE_TABLE).await;
    let consul = TestConsul::start().await;
    consul.register_pair(db.addr(), closed_port()).await;
    let proxy = start_proxy(&consul, &[]);
    let phase = pick(Duration::from_secs(4), Duration::from_secs(15));

    // Without saturation: 4 writers and the SELECT probe.
    let writers = Writers::start(proxy.addr(), 4);
    let calm = select_latencies(proxy.addr(), phase, 200).await;
    let direct = select_latencies(db.addr(), Duration::ZERO, 200).await;
    let calm_report = writers.stop().await;
    all_acked_present(&calm_report, db.addr(), "calm").await;
    // The next writers reuse the ids: start from an empty table.
    db.admin_exec("DELETE FROM app.writes").await;

    // With one busy loop per CPU the proxy may use.
    let cpus = cpus_of(proxy.pid());
    let spinners = Spinners::start(&cpus, phase + Duration::from_secs(5));
    let started = Instant::now();
    let writers = Writers::start(proxy.addr(), 4);
    let busy = select_latencies(proxy.addr(), phase, 50).await;
    let busy_report = writers.stop().await;
    let busy_secs = started.elapsed().as_secs_f64();
    drop(spinners);
    all_acked_present(&busy_report, db.addr(), "saturated").await;
    let p = |v: &[Duration], q| ms(percentile(v, q));
    eprintln!(
        "[6 CPU saturation] {} busy loops pinned to CPUs {cpus:?}: SELECT through the proxy p50 {} p99 {} (n={}) vs calm p50 {} p99 {} (n={}); \
         direct p50 {} p99 {}; writes: calm {} acked in {phase:?}, saturated {} acked in {busy_secs:.1}s, 0 errors, every acked row present",
        cpus.len(),
        p(&busy, 50.0),
        p(&busy, 99.0),
        busy.len(),
        p(&calm, 50.0),
        p(&calm, 99.0),
        calm.len(),
        p(&direct, 50.0),
        p(&direct, 99.0),
        calm_report.acked.len(),
        busy_report.acked.len(),
    );
    assert!(
        percentile(&busy, 99.0) < Duration::from_secs(2),
        "the proxy starves under CPU load: p99 {:?}",
        percentile(&busy, 99.0)
    );
}
