//! Unit tests of the conversation state machine: scripted sessions (byte for byte what MariaDB
//! and its clients send), fed whole, one byte at a time and split at every boundary; the idle
//! verdict may only change where a message ends.

use super::*;

const MARIADB_CAPS: u32 = 0xF7FE & !cap::CLIENT_MYSQL
    | cap::PROTOCOL_41
    | cap::SSL
    | cap::COMPRESS
    | cap::DEPRECATE_EOF
    | 0x0008_0000; // plugin auth
const CLIENT_CAPS: u32 = cap::CLIENT_MYSQL | cap::PROTOCOL_41 | 0x0008_0000 | 0x8000;

fn pkt(seq: u8, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut out = vec![len as u8, (len >> 8) as u8, (len >> 16) as u8, seq];
    out.extend_from_slice(payload);
    out
}

fn lenenc(v: u64) -> Vec<u8> {
    match v {
        0..=250 => vec![v as u8],
        251..=0xFFFF => vec![0xFC, v as u8, (v >> 8) as u8],
        0x1_0000..=0xFF_FFFF => vec![0xFD, v as u8, (v >> 8) as u8, (v >> 16) as u8],
        _ => {
            let mut out = vec![0xFE];
            out.extend_from_slice(&v.to_le_bytes());
            out
        }
    }
}

fn lenstr(s: &[u8]) -> Vec<u8> {
    let mut out = lenenc(s.len() as u64);
    out.extend_from_slice(s);
    out
}

fn greeting(caps: u32, ext: u32) -> Vec<u8> {
    let mut p = vec![10];
    p.extend_from_slice(b"5.5.5-10.11.6-MariaDB-0+deb12u1-log\0");
    p.extend_from_slice(&[7, 0, 0, 0]); // connection id
    p.extend_from_slice(b"abcdefgh\0"); // scramble, reserved
    p.extend_from_slice(&(caps as u16).to_le_bytes());
    p.push(0x2d); // collation
    p.extend_from_slice(&2u16.to_le_bytes()); // status: autocommit
    p.extend_from_slice(&((caps >> 16) as u16).to_le_bytes());
    p.push(21);
    p.extend_from_slice(&[0; 6]);
    p.extend_from_slice(&ext.to_le_bytes());
    p.extend_from_slice(b"ijklmnopqrst\0mysql_native_password\0");
    pkt(0, &p)
}

fn response(caps: u32, ext: u32) -> Vec<u8> {
    let mut p = caps.to_le_bytes().to_vec();
    p.extend_from_slice(&(16u32 << 20).to_le_bytes());
    p.push(0x2d);
    p.extend_from_slice(&[0; 19]);
    p.extend_from_slice(&ext.to_le_bytes());
    p.extend_from_slice(b"app\0");
    p.extend_from_slice(&lenstr(&[0x5a; 20]));
    p.extend_from_slice(b"mysql_native_password\0");
    pkt(1, &p)
}

fn ok_payload(header: u8, affected: u64, insert_id: u64, status: u16) -> Vec<u8> {
    let mut p = vec![header];
    p.extend(lenenc(affected));
    p.extend(lenenc(insert_id));
    p.extend_from_slice(&status.to_le_bytes());
    p.extend_from_slice(&[0, 0]); // warnings
    p
}

fn ok(seq: u8, status: u16) -> Vec<u8> {
    pkt(seq, &ok_payload(0, 0, 0, status))
}

fn eof(seq: u8, status: u16) -> Vec<u8> {
    let mut p = vec![0xFE, 0, 0];
    p.extend_from_slice(&status.to_le_bytes());
    pkt(seq, &p)
}

fn err(seq: u8, code: u16) -> Vec<u8> {
    let mut p = vec![0xFF];
    p.extend_from_slice(&code.to_le_bytes());
    p.extend_from_slice(b"#42000Something went wrong");
    pkt(seq, &p)
}

fn coldef(seq: u8, name: &str) -> Vec<u8> {
    let mut p = Vec::new();
    for s in [
        &b"def"[..],
        b"app",
        b"t",
        b"t",
        name.as_bytes(),
        name.as_bytes(),
    ] {
        p.extend(lenstr(s));
    }
    p.extend_from_slice(&[0x0c, 0x2d, 0, 0xff, 0, 0, 0, 0xfd, 0, 0, 0, 0, 0]);
    pkt(seq, &p)
}

fn text_row(seq: u8, cols: &[Option<&[u8]>]) -> Vec<u8> {
    let mut p = Vec::new();
    for c in cols {
        match c {
            Some(v) => p.extend(lenstr(v)),
            None => p.push(0xFB),
        }
    }
    pkt(seq, &p)
}

fn command(cmd: u8, rest: &[u8]) -> Vec<u8> {
    let mut p = vec![cmd];
    p.extend_from_slice(rest);
    pkt(0, &p)
}

fn query(sql: &str) -> Vec<u8> {
    command(com::QUERY, sql.as_bytes())
}

const AUTOCOMMIT: u16 = 0x0002;
const IN_TRANS: u16 = status::IN_TRANS | AUTOCOMMIT;
const MORE: u16 = status::MORE_RESULTS | AUTOCOMMIT;

/// One message: who sends it, its bytes, and the activity once it is complete.
struct Step {
    from: Side,
    bytes: Vec<u8>,
    then: Activity,
}

fn step(from: Side, parts: Vec<Vec<u8>>, then: Activity) -> Step {
    Step {
        from,
        bytes: parts.concat(),
        then,
    }
}

use Activity::{Busy, Idle, IdleWhenQuiet, Opaque};
use Side::{Backend as S, Client as C};

fn handshake(client_caps: u32, client_ext: u32, server_ext: u32) -> Vec<Step> {
    vec![
        step(S, vec![greeting(MARIADB_CAPS, server_ext)], Busy),
        step(C, vec![response(client_caps, client_ext)], Busy),
        // Auth switch request, the client's answer, then OK.
        step(
            S,
            vec![pkt(2, b"\xfemysql_native_password\0abcdefghijklmnopqrst\0")],
            Busy,
        ),
        step(C, vec![pkt(3, &[0x11; 20])], Busy),
        step(S, vec![ok(4, AUTOCOMMIT)], IdleWhenQuiet),
    ]
}

/// Runs `steps` fed one byte at a time; returns the activity after every byte, and checks the
/// activity at every message end and that no verdict changes to idle inside a message.
fn run_bytewise(steps: &[Step]) -> Vec<Activity> {
    let mut conv = Conversation::new();
    let mut trace = Vec::new();
    for (i, st) in steps.iter().enumerate() {
        for (j, &b) in st.bytes.iter().enumerate() {
            conv.feed(st.from, &[b]);
            let a = conv.activity();
            if j + 1 < st.bytes.len() {
                assert!(
                    matches!(a, Busy | Opaque),
                    "step {i}: idle ({a:?}) inside a message, after byte {j} of {}",
                    st.bytes.len()
                );
            }
            trace.push(a);
        }
        assert_eq!(conv.activity(), st.then, "after step {i}");
    }
    trace
}

/// Feeds `steps` cut at every pair of split points of the whole stream (and each message
/// whole) and checks that the activity at each cut equals the byte-wise trace.
fn check_splits(steps: &[Step]) {
    let trace = run_bytewise(steps);
    let flat: Vec<(Side, u8)> = steps
        .iter()
        .flat_map(|s| s.bytes.iter().map(move |&b| (s.from, b)))
        .collect();
    let feed = |conv: &mut Conversation, range: std::ops::Range<usize>| {
        // Consecutive bytes of one side go in as one chunk.
        let mut i = range.start;
        while i < range.end {
            let side = flat[i].0;
            let mut j = i;
            while j < range.end && flat[j].0 == side {
                j += 1;
            }
            let chunk: Vec<u8> = flat[i..j].iter().map(|x| x.1).collect();
            conv.feed(side, &chunk);
            i = j;
        }
    };
    let n = flat.len();
    let step = (n / 120).max(1); // keeps the pairs below ~15k per script
    for a in (0..=n).step_by(step) {
        for b in (a..=n).step_by(step.max(3)) {
            let mut conv = Conversation::new();
            feed(&mut conv, 0..a);
            if a > 0 {
                assert_eq!(conv.activity(), trace[a - 1], "cut at {a}");
            }
            feed(&mut conv, a..b);
            if b > 0 {
                assert_eq!(conv.activity(), trace[b - 1], "cuts at {a}, {b}");
            }
            feed(&mut conv, b..n);
            assert_eq!(conv.activity(), trace[n - 1], "cuts at {a}, {b}, end");
        }
    }
    // Every single split point, exhaustively.
    for a in 0..=n {
        let mut conv = Conversation::new();
        feed(&mut conv, 0..a);
        feed(&mut conv, a..n);
        assert_eq!(conv.activity(), trace[n - 1], "cut at {a}");
    }
}

#[test]
fn handshake_then_ping_and_statements() {
    let mut s = handshake(CLIENT_CAPS, 0, 0);
    s.extend([
        step(C, vec![command(com::PING, &[])], Busy),
        step(S, vec![ok(1, AUTOCOMMIT)], IdleWhenQuiet),
        step(C, vec![query("INSERT INTO t VALUES (1)")], Busy),
        // affected rows 1, a last insert id above 2^24 (9-byte integer)
        step(
            S,
            vec![pkt(1, &ok_payload(0, 1, 1 << 40, AUTOCOMMIT))],
            Idle,
        ),
        step(C, vec![command(com::INIT_DB, b"app")], Busy),
        step(S, vec![ok(1, AUTOCOMMIT)], IdleWhenQuiet),
        step(C, vec![command(com::RESET_CONNECTION, &[])], Busy),
        step(S, vec![ok(1, AUTOCOMMIT)], Idle),
        step(C, vec![command(com::STATISTICS, &[])], Busy),
        step(
            S,
            vec![pkt(1, b"Uptime: 5  Threads: 1  Questions: 9")],
            Idle,
        ),
        step(C, vec![command(com::QUIT, &[])], Idle),
    ]);
    check_splits(&s);
}

#[test]
fn not_idle_inside_a_transaction() {
    let mut s = handshake(CLIENT_CAPS, 0, 0);
    s.extend([
        step(C, vec![query("BEGIN")], Busy),
        step(S, vec![ok(1, IN_TRANS)], Busy),
        step(C, vec![query("INSERT INTO t VALUES (1)")], Busy),
        step(S, vec![pkt(1, &ok_payload(0, 300, 70_000, IN_TRANS))], Busy),
        // A ping inside the transaction is answered with the transaction still open.
        step(C, vec![command(com::PING, &[])], Busy),
        step(S, vec![ok(1, IN_TRANS)], Busy),
        // An error keeps the transaction open (ERR carries no status).
        step(C, vec![query("INSERT INTO nope VALUES (1)")], Busy),
        step(S, vec![err(1, 1146)], Busy),
        step(C, vec![query("COMMIT")], Busy),
        step(S, vec![ok(1, AUTOCOMMIT)], Idle),
        // autocommit=0: every statement opens a transaction.
        step(C, vec![query("SET autocommit = 0")], Busy),
        step(S, vec![ok(1, 0)], Idle),
        step(C, vec![query("UPDATE t SET a = 2")], Busy),
        step(S, vec![ok(1, status::IN_TRANS)], Busy),
        step(C, vec![query("ROLLBACK")], Busy),
        step(S, vec![ok(1, 0)], Idle),
    ]);
    check_splits(&s);
}

#[test]
fn result_sets_with_eof_more_results_and_errors() {
    let mut s = handshake(CLIENT_CAPS, 0, 0);
    s.extend([
        step(C, vec![query("SELECT a, b FROM t")], Busy),
        step(
            S,
            vec![
                pkt(1, &[2]),
                coldef(2, "a"),
                coldef(3, "b"),
                eof(4, AUTOCOMMIT),
                text_row(5, &[Some(b"1"), None]),
                // A value that looks like a terminator or an ERR inside a row.
                text_row(6, &[Some(&[0xFE, 0, 0, 2, 0]), Some(&[0xFF])]),
                text_row(7, &[Some(b""), Some(b"x")]),
                eof(8, AUTOCOMMIT),
            ],
            Idle,
        ),
        // A stored procedure: a result set with MORE_RESULTS, then the final OK.
        step(C, vec![query("CALL p()")], Busy),
        step(
            S,
            vec![
                pkt(1, &[1]),
                coldef(2, "x"),
                eof(3, AUTOCOMMIT),
                text_row(4, &[Some(b"42")]),
                eof(5, MORE),
                ok(6, AUTOCOMMIT),
            ],
            Idle,
        ),
        // Multi-statement: OK with MORE_RESULTS, then an ERR ends everything.
        step(C, vec![query("DO 1; SELECT nope")], Busy),
        step(S, vec![ok(1, MORE), err(2, 1054)], Idle),
        // An error in the middle of the rows (query killed) ends the reply.
        step(C, vec![query("SELECT SLEEP(100)")], Busy),
        step(
            S,
            vec![pkt(1, &[1]), coldef(2, "s"), eof(3, 2), err(4, 1317)],
            Idle,
        ),
        // 300 columns: a 3-byte column count.
        step(C, vec![query("SELECT * FROM wide")], Busy),
        step(
            S,
            {
                let mut v = vec![pkt(1, &lenenc(300))];
                for i in 0..300u32 {
                    v.push(coldef((2 + i) as u8, "c"));
                }
                v.push(eof(46, 2));
                v.push(eof(47, 2));
                v
            },
            Idle,
        ),
    ]);
    check_splits(&s);
}

#[test]
fn deprecate_eof_result_sets_end_with_an_ok() {
    let caps = CLIENT_CAPS | cap::DEPRECATE_EOF;
    let mut s = handshake(caps, 0, 0);
    s.extend([
        step(C, vec![query("SELECT a FROM t")], Busy),
        step(
            S,
            vec![
                pkt(1, &[1]),
                coldef(2, "a"),
                text_row(3, &[Some(b"1")]),
                pkt(4, &ok_payload(0xFE, 0, 0, IN_TRANS)),
            ],
            Busy, // the terminator says a transaction is open
        ),
        step(C, vec![query("COMMIT")], Busy),
        step(S, vec![ok(1, AUTOCOMMIT)], Idle),
        step(C, vec![command(com::SET_OPTION, &[0, 0])], Busy),
        step(
            S,
            vec![pkt(1, &ok_payload(0xFE, 0, 0, AUTOCOMMIT))],
            IdleWhenQuiet,
        ),
        // Prepare with DEPRECATE_EOF: no EOF after either block.
        step(C, vec![command(com::STMT_PREPARE, b"SELECT ? + ?")], Busy),
        step(
            S,
            vec![
                pkt(1, &[0, 1, 0, 0, 0, 1, 0, 2, 0, 0, 0, 0]),
                coldef(2, "?"),
                coldef(3, "?"),
                coldef(4, "x"),
            ],
            IdleWhenQuiet,
        ),
        step(
            C,
            vec![command(com::STMT_EXECUTE, &[1, 0, 0, 0, 0, 1, 0, 0, 0])],
            Busy,
        ),
        step(
            S,
            vec![
                pkt(1, &[1]),
                coldef(2, "x"),
                pkt(3, &[0, 0, 2, 0, 0, 0, 0, 0, 0, 0]),
                pkt(4, &ok_payload(0xFE, 0, 0, AUTOCOMMIT)),
            ],
            Idle,
        ),
    ]);
    check_splits(&s);
}

#[test]
fn prepared_statements_and_no_reply_commands() {
    let mut s = handshake(CLIENT_CAPS, 0, 0);
    let exec = command(
        com::STMT_EXECUTE,
        &[1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 0, 7, 0, 0, 0],
    );
    s.extend([
        step(
            C,
            vec![command(com::STMT_PREPARE, b"INSERT INTO t VALUES (?, ?)")],
            Busy,
        ),
        step(
            S,
            vec![
                pkt(1, &[0, 1, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0]),
                coldef(2, "?"),
                coldef(3, "?"),
                eof(4, AUTOCOMMIT),
            ],
            IdleWhenQuiet,
        ),
        step(
            C,
            vec![command(com::STMT_SEND_LONG_DATA, &[1, 0, 0, 0, 1, 0, b'x'])],
            IdleWhenQuiet,
        ),
        step(C, vec![exec.clone()], Busy),
        step(S, vec![pkt(1, &ok_payload(0, 1, 5, AUTOCOMMIT))], Idle),
        // A statement returning rows: params 0, columns 1 (definitions, EOF).
        step(
            C,
            vec![command(com::STMT_PREPARE, b"SELECT a FROM t")],
            Busy,
        ),
        step(
            S,
            vec![
                pkt(1, &[0, 2, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0]),
                coldef(2, "a"),
                eof(3, AUTOCOMMIT),
            ],
            IdleWhenQuiet,
        ),
        step(
            C,
            vec![command(com::STMT_EXECUTE, &[2, 0, 0, 0, 0, 1, 0, 0, 0])],
            Busy,
        ),
        step(
            S,
            vec![
                pkt(1, &[1]),
                coldef(2, "a"),
                eof(3, AUTOCOMMIT),
                pkt(4, &[0, 0, 1, 0, 0, 0]),
                pkt(5, &[0, 0, 2, 0, 0, 0]),
                eof(6, AUTOCOMMIT),
            ],
            Idle,
        ),
        step(C, vec![command(com::STMT_RESET, &[2, 0, 0, 0])], Busy),
        step(S, vec![ok(1, AUTOCOMMIT)], IdleWhenQuiet),
        step(
            C,
            vec![command(com::STMT_CLOSE, &[2, 0, 0, 0])],
            IdleWhenQuiet,
        ),
        // A prepare error.
        step(C, vec![command(com::STMT_PREPARE, b"SELEC")], Busy),
        step(S, vec![err(1, 1064)], IdleWhenQuiet),
    ]);
    check_splits(&s);
}

#[test]
fn local_infile_and_progress_reports() {
    let mut s = handshake(CLIENT_CAPS, 0, 0);
    s.extend([
        step(
            C,
            vec![query("LOAD DATA LOCAL INFILE 'x' INTO TABLE t")],
            Busy,
        ),
        step(S, vec![pkt(1, b"\xfbx")], Busy),
        step(C, vec![pkt(2, b"1\n2\n"), pkt(3, b"3\n")], Busy),
        step(C, vec![pkt(4, b"")], Busy),
        step(S, vec![pkt(5, &ok_payload(0, 3, 0, AUTOCOMMIT))], Idle),
        // MariaDB progress reports (ERR 0xFFFF) while ALTER TABLE runs.
        step(C, vec![query("ALTER TABLE t ADD c INT")], Busy),
        step(S, vec![err(1, 0xFFFF), err(2, 0xFFFF)], Busy),
        step(S, vec![ok(3, AUTOCOMMIT)], Idle),
        step(C, vec![command(com::FIELD_LIST, b"t\0")], Busy),
        step(
            S,
            vec![coldef(1, "a"), coldef(2, "b"), eof(3, AUTOCOMMIT)],
            Idle,
        ),
        step(
            C,
            vec![command(com::CHANGE_USER, b"app\0\x14aaaaaaaaaaaaaaaaaaaa")],
            Busy,
        ),
        step(
            S,
            vec![pkt(1, b"\xfemysql_native_password\0abcdefghijklmnopqrst\0")],
            Busy,
        ),
        step(C, vec![pkt(2, &[0x22; 20])], Busy),
        step(S, vec![ok(3, AUTOCOMMIT)], Idle),
    ]);
    check_splits(&s);
}

#[test]
fn cached_metadata_skips_definitions() {
    let ext = cap::MARIADB_CACHE_METADATA;
    let caps = CLIENT_CAPS & !cap::CLIENT_MYSQL;
    let mut s = handshake(caps, ext, ext);
    s.extend([
        // Metadata follows (1): definitions as usual.
        step(
            C,
            vec![command(com::STMT_EXECUTE, &[1, 0, 0, 0, 0, 1, 0, 0, 0])],
            Busy,
        ),
        step(
            S,
            vec![
                pkt(1, &[1, 1]),
                coldef(2, "a"),
                eof(3, 2),
                pkt(4, &[0, 0, 1]),
                eof(5, 2),
            ],
            Idle,
        ),
        // Metadata skipped (0): the EOF, then the rows.
        step(
            C,
            vec![command(com::STMT_EXECUTE, &[1, 0, 0, 0, 0, 1, 0, 0, 0])],
            Busy,
        ),
        step(
            S,
            vec![pkt(1, &[1, 0]), eof(2, 2), pkt(3, &[0, 0, 1]), eof(4, 2)],
            Idle,
        ),
    ]);
    check_splits(&s);
}

#[test]
fn tls_compression_and_surprises_are_opaque() {
    // TLS: the SSL request (32 bytes), then records.
    let mut tls = vec![step(S, vec![greeting(MARIADB_CAPS, 0)], Busy)];
    let mut ssl_request = response(CLIENT_CAPS | cap::SSL, 0);
    ssl_request.truncate(4 + 32);
    ssl_request[0] = 32;
    tls.push(step(C, vec![ssl_request], Opaque));
    tls.push(step(C, vec![b"\x16\x03\x01\x02\x00".to_vec()], Opaque));
    check_splits(&tls);

    // Compression: readable up to the auth OK, opaque after it.
    let mut z = handshake(CLIENT_CAPS | cap::COMPRESS, 0, 0);
    z.last_mut().expect("auth OK").then = Opaque;
    check_splits(&z);

    // A cursor, an unknown command, the server speaking out of turn.
    for (cmd, rest) in [
        (com::STMT_EXECUTE, &[1u8, 0, 0, 0, 1, 1, 0, 0, 0][..]),
        (0x12, &[4, 0, 0, 0][..]), // COM_BINLOG_DUMP
        (0xFA, &[1, 0, 0, 0][..]), // COM_STMT_BULK_EXECUTE
    ] {
        let mut s = handshake(CLIENT_CAPS, 0, 0);
        s.push(step(C, vec![command(cmd, rest)], Opaque));
        check_splits(&s);
    }
    let mut s = handshake(CLIENT_CAPS, 0, 0);
    s.push(step(S, vec![err(0, 1927)], Opaque)); // "connection killed" while idle
    check_splits(&s);
    // Pipelining: a second command before the first is answered.
    let mut s = handshake(CLIENT_CAPS, 0, 0);
    s.push(step(C, vec![query("SELECT 1")], Busy));
    s.push(step(C, vec![query("SELECT 2")], Opaque));
    check_splits(&s);
    // A server that is not MySQL protocol 10, or refuses at once.
    check_splits(&[step(S, vec![err(0, 1040)], Opaque)]);
    check_splits(&[step(S, vec![pkt(0, b"\x09old")], Opaque)]);
}

/// A row longer than 16 MiB whose first byte is 0xFE (an 8-byte length prefix) is a row, not
/// the end of the result set.
#[test]
fn a_long_row_starting_with_0xfe_is_not_a_terminator() {
    let mut steps = handshake(CLIENT_CAPS, 0, 0);
    steps.push(step(C, vec![query("SELECT big FROM t")], Busy));
    let value = vec![b'x'; MAX_PAYLOAD as usize + 10];
    let row = {
        let mut p = lenenc(value.len() as u64);
        p.extend_from_slice(&value);
        p
    };
    assert_eq!(row[0], 0xFE);
    let mut reply = vec![pkt(1, &[1]), coldef(2, "big"), eof(3, 2)];
    reply.push(pkt(4, &row[..MAX_PAYLOAD as usize]));
    reply.push(pkt(5, &row[MAX_PAYLOAD as usize..]));
    let last = eof(6, 2);
    for chunk in [65_536usize, 1 << 20, 7_777_777] {
        let mut conv = Conversation::new();
        for st in &steps {
            conv.feed(st.from, &st.bytes);
        }
        for part in &reply {
            for c in part.chunks(chunk) {
                conv.feed(Side::Backend, c);
                assert_eq!(conv.activity(), Busy, "chunks of {chunk}");
            }
        }
        conv.feed(Side::Backend, &last);
        assert_eq!(conv.activity(), Idle, "chunks of {chunk}");
    }
}

#[test]
fn garbage_never_panics() {
    // xorshift: arbitrary bytes on both sides, with and without a proper handshake first.
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for round in 0..2000 {
        let mut conv = Conversation::new();
        if round % 2 == 0 {
            for st in handshake(CLIENT_CAPS, 0, 0) {
                conv.feed(st.from, &st.bytes);
            }
        }
        for _ in 0..20 {
            let len = (next() % 40) as usize;
            let bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            let side = if next() % 2 == 0 { C } else { S };
            conv.feed(side, &bytes);
            let _ = conv.activity();
        }
    }
}

#[test]
fn conversation_is_small() {
    let size = std::mem::size_of::<Conversation>();
    eprintln!("Conversation: {size} bytes");
    assert!(size <= 80, "Conversation grew to {size} bytes");
}
