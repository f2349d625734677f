//! Failure 7 of the matrix. The link to the backend is degraded (50 ms delay, 1 % loss): every byte
//! still arrives intact both ways.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;

use crate::support::backends::closed_port;
use crate::support::consul::TestConsul;
use crate::support::mariadb::{MariaDb, app_opts};
use crate::support::netns::{Dir, Impairment, NetNs};
use crate::support::workload::{CREATE_TABLE, Writers};
use crate::{all_acked_present, long, ms, percentile, select_latencies, start_proxy};

/// CRC-32 (IEEE 802.3), the same as MariaDB's `CRC32()`.
fn crc32(data: &[u8]) -> u32 {
    let mut table = [0u32; 256];
    for (i, slot) in table.iter_mut().enumerate() {
        let mut c = i as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
        *slot = c;
    }
    let mut crc = 0xFFFF_FFFFu32;
    for &b in data {
        crc = table[((crc ^ u32::from(b)) & 0xFF) as usize] ^ (crc >> 8);
    }
    !crc
}

/// Sends `blob` up (`SET @b = ?`) and reads it back (`SELECT @b, CRC32(@b)`) through `addr`;
/// asserts that the server received exactly `blob` and that exactly `blob` came back.
/// Returns (upload time, download time).
async fn blob_round_trip(addr: SocketAddr, blob: &[u8]) -> (Duration, Duration) {
    let opts = app_opts(addr).max_allowed_packet(Some(64 << 20));
    let mut conn = mysql_async::Conn::new(opts).await.unwrap();
    let t = Instant::now();
    conn.exec_drop("SET @b = ?", (blob.to_vec(),))
        .await
        .expect("upload the blob");
    let up = t.elapsed();
    let t = Instant::now();
    let row: Option<(Vec<u8>, u32)> = conn
        .query_first("SELECT @b, CRC32(@b)")
        .await
        .expect("download the blob");
    let down = t.elapsed();
    let (back, server_crc) = row.expect("one row");
    assert_eq!(server_crc, crc32(blob), "the server received other bytes");
    assert_eq!(back.len(), blob.len(), "length changed on the way back");
    assert!(back == blob, "bytes changed on the way back");
    conn.disconnect().await.ok();
    (up, down)
}

fn mib_per_s(bytes: usize, d: Duration) -> String {
    format!(
        "{:.2} MiB/s",
        bytes as f64 / (1 << 20) as f64 / d.as_secs_f64()
    )
}

#[tokio::test]
async fn degraded_link_to_the_backend_keeps_every_byte_intact() {
    let ns = NetNs::create();
    let db = MariaDb::start_in_netns(ns.name(), ns.ip()).await;
    db.admin_exec("SET GLOBAL max_allowed_packet = 64 * 1024 * 1024")
        .await;
    db.admin_exec(CREATE_TABLE).await;
    let consul = TestConsul::start().await;
    consul.register_pair(db.addr(), closed_port()).await;
    let proxy = start_proxy(&consul, &[]);
    let size = if long() { 10 << 20 } else { 2 << 20 };
    let blob: Vec<u8> = (0..size).map(|_| fastrand::u8(..)).collect();

    let (clean_up, clean_down) = blob_round_trip(proxy.addr(), &blob).await;
    let clean_lat = select_latencies(proxy.addr(), Duration::ZERO, 50).await;

    // netem-style: 50 ms delay and 1 % loss toward the backend, 1 % loss back.
    let toward = Impairment {
        delay: Duration::from_millis(50),
        loss: 0.01,
    };
    ns.impair(Dir::In, toward);
    ns.impair(
        Dir::Out,
        Impairment {
            delay: Duration::ZERO,
            loss: 0.01,
        },
    );
    let dropped_before = ns.stats(Dir::In).dropped + ns.stats(Dir::Out).dropped;
    let (up, down) = blob_round_trip(proxy.addr(), &blob).await;
    let writers = Writers::start(proxy.addr(), 4);
    let lat = select_latencies(proxy.addr(), Duration::from_secs(3), 30).await;
    let report = writers.stop().await;
    let dropped = ns.stats(Dir::In).dropped + ns.stats(Dir::Out).dropped - dropped_before;
    ns.clear();
    all_acked_present(&report, db.addr(), "degraded link").await;
    assert!(dropped > 0, "the link did drop packets");
    eprintln!(
        "[7 degraded link] {} KiB blob, clean: up {up_c} down {down_c}; 50 ms + 1 % loss: up {up_d} ({up:?}) down {down_d} ({down:?}), \
         bytes and CRC32 intact, {dropped} packets dropped; SELECT p50/p99 clean {} / {}, degraded {} / {}; {} inserts acked, all present",
        size / 1024,
        ms(percentile(&clean_lat, 50.0)),
        ms(percentile(&clean_lat, 99.0)),
        ms(percentile(&lat, 50.0)),
        ms(percentile(&lat, 99.0)),
        report.acked.len(),
        up_c = mib_per_s(size, clean_up),
        down_c = mib_per_s(size, clean_down),
        up_d = mib_per_s(size, up),
        down_d = mib_per_s(size, down),
    );
}
