//! `wait` and `index` parsing as Consul does it (agent/http.go parseWait → Go's
//! time.ParseDuration / strconv.ParseUint) and the wait clamp (agent/consul/rpc.go
//! RPCQueryTimeout).

use std::time::Duration;

use consul_double::blocking::{DEFAULT_WAIT, MAX_WAIT, effective_timeout};
use consul_double::duration::parse_go;
use tokio::time::Instant;

use crate::common::*;

const S: i64 = 1_000_000_000;

#[test]
fn go_parse_duration_accepts_what_go_accepts() {
    assert_eq!(parse_go("90s"), Ok(90 * S));
    assert_eq!(parse_go("1m30s"), Ok(90 * S));
    assert_eq!(parse_go("1500ms"), Ok(1500 * 1_000_000));
    assert_eq!(parse_go("90000ms"), Ok(90 * S));
    assert_eq!(parse_go("1.5s"), Ok(1500 * 1_000_000));
    assert_eq!(parse_go("300ms"), Ok(300 * 1_000_000));
    assert_eq!(parse_go("1.5h"), Ok(5400 * S));
    assert_eq!(parse_go("2h45m"), Ok((2 * 3600 + 45 * 60) * S));
    assert_eq!(parse_go(".5s"), Ok(S / 2));
    assert_eq!(parse_go("1.s"), Ok(S));
    assert_eq!(parse_go("10ns"), Ok(10));
    assert_eq!(parse_go("10us"), Ok(10_000));
    assert_eq!(parse_go("10µs"), Ok(10_000)); // U+00B5
    assert_eq!(parse_go("10μs"), Ok(10_000)); // U+03BC
    assert_eq!(parse_go("1h1m1s1ms1us1ns"), Ok(3661 * S + 1_001_001));
    assert_eq!(parse_go("0"), Ok(0));
    assert_eq!(parse_go("+0"), Ok(0));
    assert_eq!(parse_go("-0"), Ok(0));
    assert_eq!(parse_go("0s"), Ok(0));
    assert_eq!(parse_go("-1.5s"), Ok(-1500 * 1_000_000));
    assert_eq!(parse_go("+5m"), Ok(300 * S));
    assert_eq!(parse_go("9223372036854775807ns"), Ok(i64::MAX));
    assert_eq!(parse_go("-9223372036854775808ns"), Ok(i64::MIN));
}

#[test]
fn go_parse_duration_rejects_what_go_rejects_with_go_messages() {
    let cases = [
        ("", "time: invalid duration \"\""),
        ("90", "time: missing unit in duration \"90\""),
        ("1", "time: missing unit in duration \"1\""),
        ("1m 30s", "time: unknown unit \"m \" in duration \"1m 30s\""),
        (" 90s", "time: invalid duration \" 90s\""),
        ("90s ", "time: unknown unit \"s \" in duration \"90s \""),
        ("1d", "time: unknown unit \"d\" in duration \"1d\""),
        ("5 m", "time: unknown unit \" m\" in duration \"5 m\""),
        ("-", "time: invalid duration \"-\""),
        (".s", "time: invalid duration \".s\""),
        ("s", "time: invalid duration \"s\""),
        ("1.5", "time: missing unit in duration \"1.5\""),
        (
            "9223372036854775808ns",
            "time: invalid duration \"9223372036854775808ns\"",
        ),
        ("3000000h", "time: invalid duration \"3000000h\""),
        (
            "1é",
            "time: unknown unit \"\\xc3\\xa9\" in duration \"1\\xc3\\xa9\"",
        ),
    ];
    for (input, msg) in cases {
        assert_eq!(parse_go(input), Err(msg.to_string()), "input {input:?}");
    }
}

#[test]
fn wait_is_clamped_like_rpc_query_timeout() {
    for _ in 0..50 {
        let t = effective_timeout(Duration::from_secs(3600));
        assert!(t >= MAX_WAIT && t < MAX_WAIT + MAX_WAIT / 16, "{t:?}");
        let t = effective_timeout(Duration::ZERO);
        assert!(
            t >= DEFAULT_WAIT && t < DEFAULT_WAIT + DEFAULT_WAIT / 16,
            "{t:?}"
        );
    }
    assert_eq!(MAX_WAIT, Duration::from_secs(600));
    assert_eq!(DEFAULT_WAIT, Duration::from_secs(300));
}

#[tokio::test]
async fn wait_and_index_over_http() {
    let d = start().await;
    let idx = get(&d, "/v1/kv/w").await.index();
    for bad in ["1m%2030s", "90", "1", "abc", "1d", "%2090s"] {
        for path in ["/v1/kv/w", "/v1/health/service/x", "/v1/catalog/service/x"] {
            let r = get(&d, &format!("{path}?index={idx}&wait={bad}")).await;
            assert_eq!(
                (r.status, r.text().as_str()),
                (400, "Invalid wait time"),
                "{path} wait={bad}"
            );
        }
    }
    for bad in ["-1", "%2B5", "abc", "1.5", "%205", "18446744073709551616"] {
        let r = get(&d, &format!("/v1/kv/w?index={bad}")).await;
        assert_eq!(
            (r.status, r.text().as_str()),
            (400, "Invalid index"),
            "index={bad}"
        );
    }
    let r = get(&d, "/v1/kv/w?max_stale=5").await;
    assert_eq!(
        (r.status, r.text()),
        (400, "Invalid max_stale value \"5\"".into())
    );
    let r = get(&d, "/v1/kv/w?max_stale=5s&consistent").await;
    assert_eq!(r.status, 400);

    // Go forms all block for about their value.
    for (w, ms) in [
        ("300ms", 300u64),
        ("0.3s", 300),
        ("1.5s", 1500),
        ("1500ms", 1500),
    ] {
        let t0 = Instant::now();
        let r = get(&d, &format!("/v1/kv/w?index={idx}&wait={w}")).await;
        let took = t0.elapsed();
        assert_eq!(r.status, 404, "wait={w}");
        assert!(
            took >= Duration::from_millis(ms),
            "wait={w} returned after {took:?}"
        );
        assert!(
            took < Duration::from_millis(ms + ms / 16 + 700),
            "wait={w} returned after {took:?}"
        );
    }
    // A bare "0" is a valid Go duration; with no index the read returns at once anyway.
    let r = get(&d, "/v1/kv/w?wait=0").await;
    assert_eq!(r.status, 404);
    // A negative wait is accepted (it means the default wait); index 0 returns at once.
    let r = get(&d, "/v1/kv/w?wait=-5s").await;
    assert_eq!(r.status, 404);
}
