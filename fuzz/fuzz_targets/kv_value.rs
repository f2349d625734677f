//! A leader key's value (`host:port`, `[v6]:port`, `host`, JSON) → `parse_primary_value`.
//! Checks beyond "no panic": an accepted value has a non-empty host without surrounding space.
#![no_main]

use consul_mysql_proxy::control::sources::consul::decode::parse_primary_value;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let default_port = u16::from_le_bytes([data[0], data[1]]);
    let Ok(text) = std::str::from_utf8(&data[2..]) else {
        return;
    };
    if let Ok((host, _port)) = parse_primary_value(text, default_port) {
        assert!(!host.is_empty(), "empty host accepted from {text:?}");
        assert_eq!(
            host.trim(),
            host,
            "host with surrounding space from {text:?}"
        );
    }
});
