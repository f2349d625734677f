//! Who is expected to speak next on one MySQL connection: the handshake, then per command the
//! shape of the server's reply, read from packet headers, the first bytes of each packet and the
//! status flags of the server's OK/EOF packets — nothing else of the payload.
//!
//! ```text
//!  Greeting ─▶ Response ─▶ Auth ─OK─▶ Ready ◀──────── reply complete ─────────┐
//!   (server)   (client:     (switch,    │ client packet, seq 0: command byte   │
//!               caps)        more data) ▼                                      │
//!                                     Command ─▶ Reply: OK | ERR | result set ─┘
//!                                                 | LOCAL INFILE | prepare OK | …
//!  anything not understood (TLS, compression, a cursor, an unknown command, an unexpected
//!  packet) ─▶ Opaque (for good)
//! ```
//!
//! [`Conversation::activity`] says whether the connection is at a point where closing it loses
//! nothing: no statement in flight (the server answered, the client has sent nothing since) and
//! no transaction open (`SERVER_STATUS_IN_TRANS` of the last OK/EOF). A few commands are
//! *preludes* — a client sends them just before the statement they prepare (a pool's `COM_PING`
//! validation at checkout, `COM_STMT_PREPARE` before its execute, the handshake itself): after
//! them the connection counts as idle only once it has been quiet for a while, so a close never
//! lands between a successful validation and the statement it validated.
//!
//! Sources: the MariaDB client/server protocol pages (connection, command and response packets,
//! result sets, `MARIADB_CLIENT_CACHE_METADATA`) and MySQL's protocol documentation.

use super::framing::{Framer, MAX_PAYLOAD, Packets};
use crate::data::relay::Side;

/// Capability flags (the 32 bits of the handshake).
mod cap {
    /// `CLIENT_LONG_PASSWORD` a.k.a. `CLIENT_MYSQL`: a MariaDB server clears it to say that the
    /// greeting carries extended capabilities (and a MariaDB client to send its own).
    pub const CLIENT_MYSQL: u32 = 0x0000_0001;
    pub const COMPRESS: u32 = 0x0000_0020;
    pub const PROTOCOL_41: u32 = 0x0000_0200;
    pub const SSL: u32 = 0x0000_0800;
    /// Result sets end with an OK packet (header 0xFE) instead of EOF; no EOF after definitions.
    pub const DEPRECATE_EOF: u32 = 0x0100_0000;
    /// MySQL 8: result sets may come without metadata (format change we do not follow).
    pub const OPTIONAL_RESULTSET_METADATA: u32 = 0x0200_0000;
    /// MySQL 8: zstd compression.
    pub const ZSTD: u32 = 0x0400_0000;
    /// MariaDB extended capability (bit 36, i.e. bit 4 of the extended 32 bits): the column
    /// count packet carries a "metadata follows" byte.
    pub const MARIADB_CACHE_METADATA: u32 = 0x0000_0010;
}

/// Server status flags of OK and EOF packets.
mod status {
    pub const IN_TRANS: u16 = 0x0001;
    pub const MORE_RESULTS: u16 = 0x0008;
}

/// Command bytes (first payload byte of a client packet with sequence id 0).
mod com {
    pub const QUIT: u8 = 0x01;
    pub const INIT_DB: u8 = 0x02;
    pub const QUERY: u8 = 0x03;
    pub const FIELD_LIST: u8 = 0x04;
    pub const REFRESH: u8 = 0x07;
    pub const SHUTDOWN: u8 = 0x08;
    pub const STATISTICS: u8 = 0x09;
    pub const PROCESS_INFO: u8 = 0x0a;
    pub const PROCESS_KILL: u8 = 0x0c;
    pub const DEBUG: u8 = 0x0d;
    pub const PING: u8 = 0x0e;
    pub const CHANGE_USER: u8 = 0x11;
    pub const STMT_PREPARE: u8 = 0x16;
    pub const STMT_EXECUTE: u8 = 0x17;
    pub const STMT_SEND_LONG_DATA: u8 = 0x18;
    pub const STMT_CLOSE: u8 = 0x19;
    pub const STMT_RESET: u8 = 0x1a;
    pub const SET_OPTION: u8 = 0x1b;
    pub const STMT_FETCH: u8 = 0x1c;
    pub const RESET_CONNECTION: u8 = 0x1f;
}

/// MariaDB's progress report: an ERR packet with this code that is not the end of anything.
const PROGRESS_REPORT: u32 = 0xFFFF;

/// Where a conversation is, as the idle detector needs to know it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activity {
    /// A statement in flight, a reply being relayed, a transaction open, or the handshake.
    Busy,
    /// Nothing in flight and no transaction: closing now loses nothing.
    Idle,
    /// Nothing in flight after a prelude (ping, prepare, handshake): idle once quiet.
    IdleWhenQuiet,
    /// The protocol cannot be read (TLS, compression, or something not understood): only the
    /// timing of the bytes can tell.
    Opaque,
}

/// The protocol position of one connection: 68 bytes on x86_64 (see the `conversation_is_small`
/// test).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conversation {
    up: Framer,
    down: Framer,
    phase: Phase,
    /// What is being extracted from the current server packet.
    server: Scan,
    /// The client's capability bits being read from its handshake response.
    client_caps: u32,
    client_ext: u32,
    /// Negotiated protocol options.
    deprecate_eof: bool,
    cache_metadata: bool,
    compress: bool,
    /// The last command (or the handshake) is a prelude: idle only when quiet.
    prelude: bool,
    /// The command byte of the command being sent.
    command: u8,
    /// Status flags of the last OK/EOF packet.
    status: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for the server's greeting.
    Greeting,
    /// Waiting for the client's handshake response; the server's capabilities so far.
    Response { caps: u32, ext: u32 },
    /// Authentication: auth switch, more data, until OK or ERR.
    Auth,
    /// Nothing in flight.
    Ready,
    /// A client command packet is being sent.
    Command,
    /// Waiting for, or reading, the reply to the last command.
    Reply(Reply),
    /// Not readable any more.
    Opaque,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reply {
    /// The first packet of a (next) result: OK, ERR, LOCAL INFILE (queries) or a column count.
    First { query: bool },
    /// `left` definition packets, then (without DEPRECATE_EOF) an EOF, then rows if `rows`,
    /// else a second block of `next` definitions (prepared statements: params, then columns).
    Defs { left: u32, next: u16, rows: bool },
    /// The EOF after a block of definitions.
    DefsEof { next: u16, rows: bool },
    /// Rows until the terminator (0xFE, shorter than 0xFFFFFF) or ERR.
    Rows { query: bool },
    /// LOCAL INFILE: the client sends the file and then an empty packet.
    Infile,
    /// The first reply packet of COM_STMT_PREPARE.
    Prepare,
    /// One OK, EOF or ERR.
    Simple,
    /// One packet of any content (COM_STATISTICS).
    Single,
    /// Column definitions until EOF or ERR (COM_FIELD_LIST).
    FieldList,
    /// COM_CHANGE_USER: an authentication exchange.
    ChangeUser,
}

/// How the current server packet is read.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Only its first byte matters.
    #[default]
    Plain,
    /// Greeting: version string (NUL-terminated), then capabilities at fixed offsets after it.
    Greeting,
    /// OK packet: two length-encoded integers, then the status flags.
    Ok,
    /// EOF packet: warnings, then the status flags at offset 3.
    Eof,
    /// ERR packet: the error code at offset 1.
    Err,
    /// A column count (length-encoded), then maybe the "metadata follows" byte.
    ColumnCount,
    /// Prepare OK: statement id, columns at offset 5, params at offset 7.
    PrepareOk,
}

/// Fields being extracted from the current server packet.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Scan {
    first: u8,
    kind: Kind,
    /// The logical packet is at least 0xFFFFFF bytes long (so a 0xFE first byte is a row).
    long: bool,
    /// Payload offsets below `need` are still wanted.
    need: u8,
    /// Offset of the next field (OK: next integer or the status; greeting: the NUL).
    mark: u8,
    /// The field at `mark` is complete (OK: status read; column count: value read).
    done: bool,
    /// The main value (status flags, error code, column count, greeting capabilities).
    value: u32,
    /// A second value (metadata-follows, prepare params, greeting extended capabilities).
    extra: u32,
}

/// Bytes a length-encoded integer takes, from its first byte; `None` for 0xFB (NULL) and 0xFF.
fn lenenc_len(first: u8) -> Option<u8> {
    match first {
        0..=0xFA => Some(1),
        0xFC => Some(3),
        0xFD => Some(4),
        0xFE => Some(9),
        0xFB | 0xFF => None,
    }
}

/// Longest server version string we look through for its NUL.
const MAX_VERSION: u8 = 160;

impl Default for Conversation {
    fn default() -> Self {
        Conversation::new()
    }
}

impl Conversation {
    /// A conversation that starts with the server's greeting (a fresh connection).
    pub fn new() -> Conversation {
        Conversation {
            up: Framer::default(),
            down: Framer::default(),
            phase: Phase::Greeting,
            server: Scan::default(),
            client_caps: 0,
            client_ext: 0,
            deprecate_eof: false,
            cache_metadata: false,
            compress: false,
            prelude: true,
            command: 0,
            status: 0,
        }
    }

    /// The next bytes relayed from `from`, in order.
    pub fn feed(&mut self, from: Side, bytes: &[u8]) {
        if self.phase == Phase::Opaque {
            return;
        }
        // The framer is moved out for the call so that the sink can borrow the rest mutably.
        let slot = match from {
            Side::Client => &mut self.up,
            Side::Backend => &mut self.down,
        };
        let mut framer = std::mem::take(slot);
        framer.feed(bytes, &mut Sink { conv: self, from });
        match from {
            Side::Client => self.up = framer,
            Side::Backend => self.down = framer,
        }
    }

    /// Where the conversation is.
    pub fn activity(&self) -> Activity {
        match self.phase {
            Phase::Opaque => Activity::Opaque,
            Phase::Ready if self.status & status::IN_TRANS != 0 => Activity::Busy,
            // Half a header relayed: a command in flight (or the server speaking out of turn).
            Phase::Ready if !self.up.at_boundary() || !self.down.at_boundary() => Activity::Busy,
            Phase::Ready if self.prelude => Activity::IdleWhenQuiet,
            Phase::Ready => Activity::Idle,
            _ => Activity::Busy,
        }
    }

    fn opaque(&mut self) {
        self.phase = Phase::Opaque;
    }

    /// The reply is complete: nothing in flight.
    fn answered(&mut self) {
        self.phase = Phase::Ready;
    }

    // -- client packets ------------------------------------------------------------------------

    fn client_start(&mut self, seq: u8, len: u32) {
        match self.phase {
            Phase::Response { .. } => {
                self.client_caps = 0;
                self.client_ext = 0;
            }
            // Auth data (switch response, password, public key request).
            Phase::Auth | Phase::Reply(Reply::ChangeUser) => {}
            // The file's content; the empty packet ends it, then the server answers.
            Phase::Reply(Reply::Infile) if len == 0 => {
                self.phase = Phase::Reply(Reply::First { query: true });
            }
            Phase::Reply(Reply::Infile) => {}
            Phase::Ready if seq == 0 && len > 0 => {
                self.phase = Phase::Command;
                self.command = 0;
            }
            // A command while a reply is due (pipelining), or a malformed one.
            _ => self.opaque(),
        }
    }

    fn client_byte(&mut self, pos: u32, b: u8) {
        match self.phase {
            Phase::Response { .. } => match pos {
                0..=3 => {
                    self.client_caps |= u32::from(b) << (8 * pos);
                    // An SSL request: the rest of the connection is TLS.
                    if pos == 3 && self.client_caps & cap::SSL != 0 {
                        self.opaque();
                    }
                }
                28..=31 => self.client_ext |= u32::from(b) << (8 * (pos - 28)),
                _ => {}
            },
            Phase::Command => match pos {
                0 => self.command = b,
                // COM_STMT_EXECUTE flags: a cursor changes the reply (fetches follow).
                5 if self.command == com::STMT_EXECUTE && b & 0x07 != 0 => self.opaque(),
                _ => {}
            },
            _ => {}
        }
    }

    fn client_need(&self) -> u32 {
        match self.phase {
            Phase::Response { .. } => 32,
            Phase::Command => 6,
            _ => 0,
        }
    }

    fn client_end(&mut self) {
        match self.phase {
            Phase::Response { caps, ext } => self.negotiate(caps, ext),
            Phase::Command => self.command_sent(),
            _ => {}
        }
    }

    /// The client's handshake response is complete: what the two sides agreed on.
    fn negotiate(&mut self, server_caps: u32, server_ext: u32) {
        let client = self.client_caps;
        let agreed = client & server_caps;
        // A client without CLIENT_MYSQL sends MariaDB extended capabilities at offset 28.
        let ext = if client & cap::CLIENT_MYSQL == 0 {
            self.client_ext & server_ext
        } else {
            0
        };
        if agreed & cap::PROTOCOL_41 == 0
            || client & cap::SSL != 0
            || agreed & cap::OPTIONAL_RESULTSET_METADATA != 0
        {
            self.opaque();
            return;
        }
        self.deprecate_eof = agreed & cap::DEPRECATE_EOF != 0;
        self.cache_metadata = ext & cap::MARIADB_CACHE_METADATA != 0;
        // Whoever asked for compression: the stream after the auth OK may be compressed.
        self.compress = client & (cap::COMPRESS | cap::ZSTD) != 0;
        self.phase = Phase::Auth;
    }

    /// A command packet is complete: what reply to expect.
    fn command_sent(&mut self) {
        let (phase, prelude) = match self.command {
            com::QUIT => (Phase::Ready, false),
            com::QUERY => (Phase::Reply(Reply::First { query: true }), false),
            com::STMT_EXECUTE | com::PROCESS_INFO => {
                (Phase::Reply(Reply::First { query: false }), false)
            }
            com::STMT_FETCH => (Phase::Reply(Reply::Rows { query: false }), false),
            com::STMT_PREPARE => (Phase::Reply(Reply::Prepare), true),
            // No reply; the statement they belong to follows.
            com::STMT_SEND_LONG_DATA | com::STMT_CLOSE => (Phase::Ready, true),
            com::PING | com::INIT_DB | com::STMT_RESET | com::SET_OPTION => {
                (Phase::Reply(Reply::Simple), true)
            }
            com::RESET_CONNECTION
            | com::REFRESH
            | com::PROCESS_KILL
            | com::DEBUG
            | com::SHUTDOWN => (Phase::Reply(Reply::Simple), false),
            com::STATISTICS => (Phase::Reply(Reply::Single), false),
            com::FIELD_LIST => (Phase::Reply(Reply::FieldList), false),
            com::CHANGE_USER => (Phase::Reply(Reply::ChangeUser), false),
            // Replication streams, bulk execute, daemon commands, …: not followed.
            _ => (Phase::Opaque, false),
        };
        self.phase = phase;
        self.prelude = prelude;
    }

    // -- server packets ------------------------------------------------------------------------

    fn server_start(&mut self, len: u32) {
        match self.phase {
            Phase::Greeting | Phase::Auth | Phase::Reply(_) => {}
            // The server speaks while the client has the word (an unsolicited ERR before a
            // close, or bytes we did not expect).
            _ => {
                self.opaque();
                return;
            }
        }
        self.server = Scan {
            long: len == MAX_PAYLOAD,
            need: 1,
            ..Scan::default()
        };
    }

    fn server_need(&self) -> u32 {
        u32::from(self.server.need)
    }

    /// How a server packet starting with `first` is read in the current phase.
    fn kind_of(&self, first: u8) -> Kind {
        let terminator = first == 0xFE && !self.server.long;
        let end_of = |eof: bool| {
            if !eof {
                Kind::Plain
            } else if self.deprecate_eof {
                Kind::Ok
            } else {
                Kind::Eof
            }
        };
        match self.phase {
            Phase::Greeting => Kind::Greeting,
            Phase::Auth | Phase::Reply(Reply::ChangeUser) => match first {
                0x00 => Kind::Ok,
                0xFF => Kind::Err,
                _ => Kind::Plain,
            },
            Phase::Reply(reply) => match (reply, first) {
                (_, 0xFF) => Kind::Err,
                (Reply::First { .. }, 0x00) | (Reply::Simple, 0x00) => Kind::Ok,
                (Reply::First { query }, 0xFB) if query => Kind::Plain,
                (Reply::First { .. }, 0xFE) => Kind::Plain,
                (Reply::First { .. }, _) => Kind::ColumnCount,
                (Reply::Prepare, 0x00) => Kind::PrepareOk,
                (Reply::Simple, _) => end_of(terminator),
                (Reply::Rows { .. } | Reply::DefsEof { .. } | Reply::FieldList, _) => {
                    end_of(terminator)
                }
                _ => Kind::Plain,
            },
            _ => Kind::Plain,
        }
    }

    fn server_byte(&mut self, pos: u32, b: u8) {
        let Ok(pos) = u8::try_from(pos) else {
            return;
        };
        let s = &mut self.server;
        if pos == 0 {
            s.first = b;
            let kind = self.kind_of(b);
            let s = &mut self.server;
            s.kind = kind;
            s.need = match kind {
                Kind::Plain => 0,
                Kind::Greeting if b != 10 => {
                    // Not protocol 10 (or an ERR: the server refuses and closes).
                    self.opaque();
                    return;
                }
                Kind::Greeting | Kind::Ok | Kind::ColumnCount => 2,
                Kind::Eof => 5,
                Kind::Err => 3,
                Kind::PrepareOk => 9,
            };
            if kind == Kind::ColumnCount {
                match lenenc_len(b) {
                    Some(1) => {
                        s.value = u32::from(b);
                        s.done = true;
                        s.mark = 1;
                        s.need = if self.cache_metadata { 2 } else { 0 };
                    }
                    Some(n) => {
                        s.mark = n;
                        s.need = n + u8::from(self.cache_metadata);
                    }
                    None => self.opaque(),
                }
            }
            return;
        }
        match s.kind {
            Kind::Plain => {}
            Kind::Greeting => {
                if s.mark == 0 {
                    if b == 0 {
                        s.mark = pos;
                        s.need = pos.saturating_add(32);
                    } else if pos >= MAX_VERSION {
                        self.opaque();
                    } else {
                        s.need = pos + 2;
                    }
                    return;
                }
                let v = s.mark;
                let at = |o: u8| v.checked_add(o) == Some(pos);
                if at(14) || at(15) {
                    s.value |= u32::from(b) << (8 * (pos - v - 14));
                } else if at(19) || at(20) {
                    s.value |= u32::from(b) << (8 * (pos - v - 19 + 2));
                } else if (28..=31).any(at) {
                    s.extra |= u32::from(b) << (8 * (pos - v - 28));
                }
            }
            Kind::Ok => {
                // Offset 1: affected rows; then last insert id; then the status flags.
                if pos == 1 {
                    let Some(n) = lenenc_len(b) else {
                        return self.opaque();
                    };
                    s.mark = 1 + n;
                    s.need = s.mark + 1;
                } else if pos == s.mark && s.extra == 0 {
                    let Some(n) = lenenc_len(b) else {
                        return self.opaque();
                    };
                    s.extra = 1;
                    s.mark += n;
                    s.need = s.mark + 2;
                } else if s.extra == 1 && pos == s.mark {
                    s.value = u32::from(b);
                } else if s.extra == 1 && pos == s.mark + 1 {
                    s.value |= u32::from(b) << 8;
                    s.done = true;
                }
            }
            Kind::Eof => match pos {
                3 => s.value = u32::from(b),
                4 => {
                    s.value |= u32::from(b) << 8;
                    s.done = true;
                }
                _ => {}
            },
            Kind::Err => match pos {
                1 => s.value = u32::from(b),
                2 => s.value |= u32::from(b) << 8,
                _ => {}
            },
            Kind::ColumnCount => {
                if pos < s.mark {
                    s.value |= u32::from(b) << (8 * (pos - 1)).min(24);
                    if pos + 1 == s.mark {
                        s.done = true;
                    }
                } else if pos == s.mark {
                    // MARIADB_CLIENT_CACHE_METADATA: 1 = definitions follow, 0 = skipped.
                    s.extra = 1 + u32::from(b != 0);
                }
            }
            Kind::PrepareOk => match pos {
                5 => s.value = u32::from(b),
                6 => s.value |= u32::from(b) << 8,
                7 => s.extra = u32::from(b),
                8 => {
                    s.extra |= u32::from(b) << 8;
                    s.done = true;
                }
                _ => {}
            },
        }
    }

    fn server_end(&mut self) {
        let s = self.server;
        match self.phase {
            Phase::Greeting => {
                if s.kind != Kind::Greeting || s.mark == 0 {
                    return self.opaque();
                }
                let ext = if s.value & cap::CLIENT_MYSQL == 0 {
                    s.extra
                } else {
                    0
                };
                self.phase = Phase::Response { caps: s.value, ext };
            }
            Phase::Auth => match s.kind {
                Kind::Ok if s.done => {
                    self.status = s.value as u16;
                    if self.compress {
                        // From here on, packets are wrapped in compressed packets.
                        return self.opaque();
                    }
                    // A client that just logged in sends its first statements next.
                    self.prelude = true;
                    self.answered();
                }
                // Refused: the server closes the connection.
                Kind::Err | Kind::Ok => self.opaque(),
                // Auth switch (0xFE), more data (0x01), a plugin's prompt: the exchange goes on.
                _ => {}
            },
            Phase::Reply(reply) => self.reply_packet(reply, s),
            _ => {}
        }
    }

    /// A complete server packet of the reply `reply`.
    fn reply_packet(&mut self, reply: Reply, s: Scan) {
        if s.kind == Kind::Err {
            if s.value == PROGRESS_REPORT {
                return; // MariaDB progress report: the statement is still running
            }
            // An ERR ends the reply (no further results); a failed COM_CHANGE_USER too.
            return self.answered();
        }
        match reply {
            Reply::First { query } => match s.kind {
                Kind::Ok if s.done => self.status_then(s.value, Reply::First { query }),
                Kind::ColumnCount if s.done && s.value > 0 => {
                    let defs = match s.extra {
                        0 | 2 => s.value,
                        // Metadata skipped (cached by the client).
                        _ => 0,
                    };
                    self.defs(defs, 0, true, query);
                }
                Kind::Plain if s.first == 0xFB && query => self.phase = Phase::Reply(Reply::Infile),
                _ => self.opaque(),
            },
            Reply::Defs { left, next, rows } => self.defs(
                left.saturating_sub(1),
                next,
                rows,
                self.command == com::QUERY,
            ),
            Reply::DefsEof { next, rows } => match s.kind {
                Kind::Eof if s.done => {
                    self.status = s.value as u16;
                    if rows {
                        self.phase = Phase::Reply(Reply::Rows {
                            query: self.command == com::QUERY,
                        });
                    } else if next > 0 {
                        self.defs(u32::from(next), 0, false, false);
                    } else {
                        self.answered();
                    }
                }
                _ => self.opaque(),
            },
            Reply::Rows { query } => match s.kind {
                Kind::Ok | Kind::Eof if s.done => self.status_then(s.value, Reply::First { query }),
                Kind::Ok | Kind::Eof => self.opaque(),
                _ => {} // a row
            },
            Reply::Prepare => match s.kind {
                Kind::PrepareOk if s.done => {
                    let (columns, params) = (s.value as u16, s.extra as u16);
                    match (params, columns) {
                        (0, 0) => self.answered(),
                        (0, c) => self.defs(u32::from(c), 0, false, false),
                        (p, c) => self.defs(u32::from(p), c, false, false),
                    }
                }
                _ => self.opaque(),
            },
            Reply::Simple => match s.kind {
                Kind::Ok | Kind::Eof if s.done => {
                    self.status = s.value as u16;
                    self.answered();
                }
                _ => self.opaque(),
            },
            Reply::Single => self.answered(),
            Reply::FieldList => match s.kind {
                Kind::Ok | Kind::Eof if s.done => {
                    self.status = s.value as u16;
                    self.answered();
                }
                Kind::Ok | Kind::Eof => self.opaque(),
                _ => {} // a column definition
            },
            Reply::ChangeUser => match s.kind {
                Kind::Ok if s.done => {
                    self.status = s.value as u16;
                    self.answered();
                }
                Kind::Ok => self.opaque(),
                _ => {}
            },
            // The server does not speak while the client sends a file (server_start made the
            // connection opaque already).
            Reply::Infile => self.opaque(),
        }
    }

    /// Records the status of a final OK/EOF; more results follow if it says so.
    fn status_then(&mut self, value: u32, more: Reply) {
        self.status = value as u16;
        if self.status & status::MORE_RESULTS != 0 {
            self.phase = Phase::Reply(more);
        } else {
            self.answered();
        }
    }

    /// `left` definitions to go in the current block.
    fn defs(&mut self, left: u32, next: u16, rows: bool, query: bool) {
        self.phase = if left > 0 {
            Phase::Reply(Reply::Defs { left, next, rows })
        } else if !self.deprecate_eof {
            Phase::Reply(Reply::DefsEof { next, rows })
        } else if rows {
            Phase::Reply(Reply::Rows { query })
        } else if next > 0 {
            Phase::Reply(Reply::Defs {
                left: u32::from(next),
                next: 0,
                rows: false,
            })
        } else {
            Phase::Ready
        };
    }
}

/// Hands one direction's packets to the conversation.
struct Sink<'a> {
    conv: &'a mut Conversation,
    from: Side,
}

impl Packets for Sink<'_> {
    fn start(&mut self, seq: u8, len: u32) {
        match self.from {
            Side::Client => self.conv.client_start(seq, len),
            Side::Backend => self.conv.server_start(len),
        }
    }

    fn payload(&mut self, pos: u32, bytes: &[u8]) {
        for (i, &b) in bytes.iter().enumerate() {
            let pos = pos.saturating_add(i as u32);
            let need = match self.from {
                Side::Client => self.conv.client_need(),
                Side::Backend => self.conv.server_need(),
            };
            if pos >= need || self.conv.phase == Phase::Opaque {
                return;
            }
            match self.from {
                Side::Client => self.conv.client_byte(pos, b),
                Side::Backend => self.conv.server_byte(pos, b),
            }
        }
    }

    fn end(&mut self) {
        if self.conv.phase == Phase::Opaque {
            return;
        }
        match self.from {
            Side::Client => self.conv.client_end(),
            Side::Backend => self.conv.server_end(),
        }
    }
}

#[cfg(test)]
#[path = "conversation_tests.rs"]
mod tests;
