//! TOML configuration text → `Settings::from_toml` → `Config::resolve`: any text is either a
//! configuration or an error naming the problem, never a panic.
#![no_main]

use consul_mysql_proxy::config::{Config, Settings};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(mut settings) = Settings::from_toml(text) else {
        return;
    };
    // Files named by the input are not read: a fuzzer that finds `/dev/zero` would only
    // measure the machine's memory. Reading them is covered by the unit tests.
    settings.consul_token_file = None;
    settings.monitor_password_file = None;
    if let Ok(config) = Config::resolve(settings) {
        // What `/status` prints of it must be buildable too.
        let _ = config.summary();
    }
});
