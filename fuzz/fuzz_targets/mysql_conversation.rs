//! Relayed bytes → the idle detector's observer (`data::idle`): any bytes, from either side, in
//! any pieces, never panic, and the verdict does not depend on how the bytes were split (the
//! same stream fed one byte at a time ends in the same activity).
#![no_main]

use consul_mysql_proxy::data::idle::Observer;
use consul_mysql_proxy::data::relay::Side;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Segments: a control byte (bit 7: side, bits 0-6: length), then that many bytes.
    let mut segments = Vec::new();
    let mut rest = data;
    while let Some((&control, tail)) = rest.split_first() {
        let len = usize::from(control & 0x7F).min(tail.len());
        let side = if control & 0x80 == 0 {
            Side::Backend
        } else {
            Side::Client
        };
        segments.push((side, &tail[..len]));
        rest = &tail[len..];
    }
    let mut whole = Observer::new();
    let mut bytewise = Observer::new();
    for (side, bytes) in segments {
        whole.relayed(side, bytes);
        for b in bytes.chunks(1) {
            bytewise.relayed(side, b);
        }
        assert_eq!(whole.activity(), bytewise.activity());
    }
});
