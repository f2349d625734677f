//! DNS response bytes → `Message::from_vec` (as the transport does) → `answer::read_reply` for
//! each record type the proxy asks, then SRV targets and addresses as discovery uses them.
#![no_main]

use consul_mysql_proxy::control::sources::dns::answer::{
    Reply, address_candidates, addresses_of, pick_address, read_reply, srv_targets,
};
use hickory_resolver::proto::op::Message;
use hickory_resolver::proto::rr::{Name, RecordType};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(msg) = Message::from_vec(data) else {
        return;
    };
    let fixed = Name::from_ascii("mysql.service.consul.").unwrap();
    // The asked name: a fixed one, and the message's own first question (as a real answer has).
    let mut asked = vec![fixed];
    if let Some(q) = msg.queries.first() {
        asked.push(q.name().clone());
    }
    for name in &asked {
        for qtype in [
            RecordType::A,
            RecordType::AAAA,
            RecordType::SRV,
            RecordType::CNAME,
        ] {
            let Ok(Reply::Records { owner, data }) = read_reply(name, qtype, &msg) else {
                continue;
            };
            if qtype == RecordType::SRV {
                let srv = srv_targets(&data);
                for target in &srv.targets {
                    let addrs = addresses_of(&target.target, &msg.additionals);
                    let _ = pick_address(&addrs);
                }
            } else {
                let ips: Vec<_> = data
                    .iter()
                    .filter_map(consul_mysql_proxy::control::sources::dns::answer::rdata_ip)
                    .collect();
                let _ = address_candidates(&owner, &ips, 3306);
            }
        }
    }
});
