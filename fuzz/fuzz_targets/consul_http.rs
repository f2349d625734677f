//! Whole Consul HTTP answers (status, headers, body) as the client receives them →
//! `interpret` and the decoders: any answer is an observation or a named error, never a panic.
#![no_main]

use consul_mysql_proxy::control::sources::consul::fuzz_answer;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // [status hi, status lo, header count, (name len, name, value len, value)*, body]
    let Some((&[hi, lo, count], mut rest)) = data.split_first_chunk::<3>().map(|(h, r)| (h, r))
    else {
        return;
    };
    let status = u16::from_be_bytes([hi, lo]);
    let mut headers = Vec::new();
    for _ in 0..count.min(16) {
        let Some((&len, tail)) = rest.split_first() else {
            break;
        };
        let (name, tail) = tail.split_at(usize::from(len).min(tail.len()));
        let Some((&len, tail)) = tail.split_first() else {
            break;
        };
        let (value, tail) = tail.split_at(usize::from(len).min(tail.len()));
        headers.push((name.to_vec(), value.to_vec()));
        rest = tail;
    }
    fuzz_answer(status, &headers, rest);
});
