//! Consul HTTP answer bodies → `decode_health`, `decode_catalog`, `decode_kv`: any body is either
//! servers or a `DecodeError`, never a panic.
#![no_main]

use consul_mysql_proxy::config::HealthRules;
use consul_mysql_proxy::control::sources::consul::decode::{decode_catalog, decode_health, decode_kv};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, body)) = data.split_first() else {
        return;
    };
    let rules = HealthRules::default();
    let _ = decode_health(body, 3306, &rules);
    let _ = decode_catalog(body, 3306);
    let key = "service/mysql/leader";
    let require_session = flags & 1 == 1;
    let default_port = if flags & 2 == 2 { 0 } else { 3306 };
    let _ = decode_kv(key, flags & 4 == 4, body, require_session, default_port);
    // An empty key matches any entry's key (a Consul answer for a prefix).
    let _ = decode_kv("", false, body, require_session, default_port);
});
