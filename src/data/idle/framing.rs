//! MySQL packet framing of one direction, across arbitrary read boundaries.
//!
//! Every MySQL packet is a 4-byte header — payload length (3 bytes, little endian) and a
//! sequence id — followed by the payload. A payload of exactly `0xFFFFFF` bytes means the
//! *logical* packet continues in the next physical packet (whose header repeats the scheme); the
//! logical packet ends with the first physical packet shorter than that (possibly empty).
//!
//! A [`Framer`] is fed the bytes of one direction in whatever pieces the socket delivered them
//! and tells a [`Packets`] sink where each logical packet starts (sequence id, first physical
//! length), which payload bytes it carries (with their offset in the logical payload) and where
//! it ends. It keeps 12 bytes of state and copies nothing: the payload slices it hands on are
//! the caller's.

/// Length of a physical packet that is continued by the next one.
pub const MAX_PAYLOAD: u32 = 0xFF_FFFF;

/// Receives the logical packets of one direction.
pub trait Packets {
    /// A logical packet starts: its sequence id and the length of its first physical packet
    /// ([`MAX_PAYLOAD`] when it continues).
    fn start(&mut self, seq: u8, len: u32);
    /// Payload bytes of the current logical packet; `pos` is the offset of `bytes[0]` in it
    /// (saturating at `u32::MAX` for packets beyond 4 GiB).
    fn payload(&mut self, pos: u32, bytes: &[u8]);
    /// The current logical packet ended.
    fn end(&mut self);
}

/// Framing state of one direction.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Framer {
    /// Header bytes read of the next physical packet (0..=3); 4 while inside a payload.
    header: u8,
    /// The sequence id of the header being read.
    seq: u8,
    /// The current physical packet is `MAX_PAYLOAD` long: the logical packet goes on.
    continues: bool,
    /// While reading a header: the length assembled so far. Inside a payload: bytes left.
    left: u32,
    /// Offset of the next payload byte in the logical packet.
    pos: u32,
}

impl Framer {
    /// Frames `bytes`, the next bytes of this direction, into `sink`.
    pub fn feed(&mut self, mut bytes: &[u8], sink: &mut impl Packets) {
        while !bytes.is_empty() {
            if self.header < 4 {
                let b = bytes[0];
                bytes = &bytes[1..];
                match self.header {
                    0..=2 => self.left |= u32::from(b) << (8 * self.header),
                    _ => self.seq = b,
                }
                self.header += 1;
                if self.header == 4 {
                    self.header_done(sink);
                }
                continue;
            }
            let n = bytes.len().min(self.left as usize);
            sink.payload(self.pos, &bytes[..n]);
            self.pos = self
                .pos
                .saturating_add(u32::try_from(n).unwrap_or(u32::MAX));
            // `n` is at most `left`, which is a u32.
            self.left -= n as u32;
            bytes = &bytes[n..];
            if self.left == 0 {
                self.physical_done(sink);
            }
        }
    }

    /// A complete header: a new logical packet, or the next part of the current one.
    fn header_done(&mut self, sink: &mut impl Packets) {
        let len = self.left;
        if !self.continues {
            self.pos = 0;
            sink.start(self.seq, len);
        }
        self.continues = len == MAX_PAYLOAD;
        if len == 0 {
            self.physical_done(sink);
        }
    }

    /// The payload of a physical packet is complete: next comes a header.
    fn physical_done(&mut self, sink: &mut impl Packets) {
        self.header = 0;
        self.left = 0;
        if !self.continues {
            sink.end();
        }
    }

    /// True between packets (nothing of a packet read yet).
    pub fn at_boundary(&self) -> bool {
        self.header == 0 && !self.continues
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default, PartialEq, Eq)]
    struct Log {
        events: Vec<(u8, u32, Vec<u8>)>,
        open: Option<(u8, u32, Vec<u8>)>,
    }

    impl Packets for Log {
        fn start(&mut self, seq: u8, len: u32) {
            assert!(self.open.is_none(), "start inside a packet");
            self.open = Some((seq, len, Vec::new()));
        }
        fn payload(&mut self, pos: u32, bytes: &[u8]) {
            let open = self.open.as_mut().expect("payload outside a packet");
            assert_eq!(pos as usize, open.2.len(), "payload offset");
            open.2.extend_from_slice(bytes);
        }
        fn end(&mut self) {
            let done = self.open.take().expect("end outside a packet");
            self.events.push(done);
        }
    }

    fn packet(seq: u8, payload: &[u8]) -> Vec<u8> {
        let len = payload.len() as u32;
        let mut out = vec![len as u8, (len >> 8) as u8, (len >> 16) as u8, seq];
        out.extend_from_slice(payload);
        out
    }

    fn frame_in(chunks: &[&[u8]]) -> Log {
        let mut framer = Framer::default();
        let mut log = Log::default();
        for c in chunks {
            framer.feed(c, &mut log);
        }
        assert!(framer.at_boundary(), "stream ends between packets");
        log
    }

    #[test]
    fn packets_split_at_every_boundary_frame_the_same() {
        let mut stream = Vec::new();
        stream.extend(packet(0, &[0x03, b'S', b'E', b'L']));
        stream.extend(packet(1, &[]));
        stream.extend(packet(2, &[0xFE, 0, 0, 2, 0]));
        stream.extend(packet(0, &[0x0e]));
        let whole = frame_in(&[&stream]);
        assert_eq!(whole.events.len(), 4);
        assert_eq!(whole.events[1], (1, 0, vec![]));
        for i in 0..=stream.len() {
            assert_eq!(
                frame_in(&[&stream[..i], &stream[i..]]),
                whole,
                "split at {i}"
            );
            for j in i..=stream.len() {
                assert_eq!(
                    frame_in(&[&stream[..i], &stream[i..j], &stream[j..]]),
                    whole,
                    "split at {i} and {j}"
                );
            }
        }
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(frame_in(&bytes), whole, "one byte at a time");
    }

    #[test]
    fn a_continued_packet_is_one_logical_packet() {
        // 0xFFFFFF + 0xFFFFFF + 3 bytes, then an exact multiple (0xFFFFFF + empty).
        let big = vec![7u8; MAX_PAYLOAD as usize];
        let mut stream = Vec::new();
        stream.extend(packet(0, &big));
        stream.extend(packet(1, &big));
        stream.extend(packet(2, &[1, 2, 3]));
        stream.extend(packet(3, &big));
        stream.extend(packet(4, &[]));
        stream.extend(packet(5, &[9]));
        for chunk in [stream.len(), 65_536, 1_000_003] {
            let chunks: Vec<&[u8]> = stream.chunks(chunk).collect();
            let log = frame_in(&chunks);
            let lens: Vec<(u8, u32, usize)> = log
                .events
                .iter()
                .map(|(s, l, p)| (*s, *l, p.len()))
                .collect();
            assert_eq!(
                lens,
                vec![
                    (0, MAX_PAYLOAD, 2 * MAX_PAYLOAD as usize + 3),
                    (3, MAX_PAYLOAD, MAX_PAYLOAD as usize),
                    (5, 1, 1)
                ],
                "chunks of {chunk}"
            );
        }
    }

    #[test]
    fn boundary_is_known_mid_header_and_mid_payload() {
        let stream = packet(0, &[1, 2, 3]);
        let mut framer = Framer::default();
        let mut log = Log::default();
        assert!(framer.at_boundary());
        framer.feed(&stream[..2], &mut log);
        assert!(!framer.at_boundary());
        framer.feed(&stream[2..5], &mut log);
        assert!(!framer.at_boundary());
        framer.feed(&stream[5..], &mut log);
        assert!(framer.at_boundary());
    }
}
