//! The mutation record: one binary format for everything that changes the
//! cache, shared by the append-only file (AOF) and replication.
//!
//! A file (or a replication stream) is a magic header followed by records:
//!
//! ```text
//! file    := MAGIC (8 bytes: "MCAOF01\n") record*
//! record  := len:u32 crc:u32 body[len]       little endian; crc = CRC32C(body)
//! body    := kind:u8 ts:u64 payload          ts: unix seconds of the mutation
//!
//! kind 1 PUT     flags:u32 exptime:u64 cas:u64 mflags:u8 nkey:u8 key value
//!                (the value is the rest of the body)
//! kind 2 DELETE  nkey:u8 key [stamp:u64]
//! kind 3 TOUCH   exptime:u64 nkey:u8 key
//! kind 4 FLUSH   at:u64
//! ```
//!
//! Why this shape:
//!
//! - **Resulting state, not commands.** Every storage command (set, add,
//!   replace, append, prepend, cas, `ms`), `incr`/`decr`/`ma`, a vivifying
//!   `mg`, and an `md` that marks an item stale are all logged as a PUT of
//!   the item as it is afterwards. Replaying a PUT twice gives the same
//!   cache, so a rewrite racing with new writes, or a replica that receives
//!   a record it already has, cannot go wrong; and nothing on the replay
//!   side has to re-implement append or arithmetic.
//! - **Absolute times.** `exptime` is a unix time (0: never), so a restart
//!   keeps TTLs honest; an item whose time passed while the server was down
//!   is not resurrected. `ts` is when the mutation happened, which is what
//!   a delayed `flush_all` needs: FLUSH's `at` is the unix time the flush
//!   takes effect (`at == ts` for an immediate flush), and on replay it
//!   removes everything stored by a record whose `ts` is before `at`.
//! - **A DELETE's stamp** is there when the delete is this node's own (its
//!   clients'), with tombstones kept (replication on): the CAS counter when
//!   it deleted, which recovery rebuilds the tombstone set from (see
//!   `tombs.rs`). A delete applied from the peer, and every delete written
//!   by an older build, has none. An older build refuses a file holding a
//!   stamped DELETE as a malformed record.
//! - **`mflags`** keeps the meta protocol's item markers that are part of
//!   an item's state: bit 0 stale, bit 1 recache token sent, bit 2 the key
//!   was given base64 encoded.
//! - **Length and checksum.** `len` lets a reader skip and frame; CRC32C
//!   (Castagnoli, computed here with a table built at compile time) tells a
//!   torn tail (`len` runs past the end of the data) from corruption (the
//!   checksum or the layout is wrong).
//!
//! Encoding appends to a caller's `Vec<u8>`, whose capacity is reused from
//! one loop turn to the next, so steady-state logging does not allocate.
//! Decoding borrows from the input slice.

pub(crate) const MAGIC: &[u8; 8] = b"MCAOF01\n";

/// Bytes before the body: `len` and `crc`.
pub(crate) const FRAME: usize = 8;
/// `kind` and `ts`.
const BODY_HEAD: usize = 1 + 8;
/// The largest body accepted: a 1 GiB value (memcached's `-I` ceiling) plus
/// room for the fields. A larger `len` can only be corruption.
pub(crate) const MAX_BODY: usize = (1 << 30) + 512;

pub(crate) const KIND_PUT: u8 = 1;
pub(crate) const KIND_DELETE: u8 = 2;
pub(crate) const KIND_TOUCH: u8 = 3;
pub(crate) const KIND_FLUSH: u8 = 4;

/// `mflags` bits of a PUT.
pub(crate) const MF_STALE: u8 = 1;
pub(crate) const MF_TOKEN_SENT: u8 = 2;
pub(crate) const MF_KEY_BINARY: u8 = 4;

/// A PUT: an item as it is after a mutation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Put<'a> {
    pub(crate) flags: u32,
    /// Unix time, 0 for never.
    pub(crate) exptime: u64,
    pub(crate) cas: u64,
    pub(crate) mflags: u8,
    pub(crate) key: &'a [u8],
    pub(crate) value: &'a [u8],
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op<'a> {
    Put(Put<'a>),
    /// `stamp`: this node's own delete, a tombstone (see above).
    Delete {
        key: &'a [u8],
        stamp: Option<u64>,
    },
    Touch {
        key: &'a [u8],
        exptime: u64,
    },
    Flush {
        at: u64,
    },
}

/// One decoded record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Record<'a> {
    /// Unix seconds when the mutation happened.
    pub(crate) ts: u64,
    pub(crate) op: Op<'a>,
}

/// What [`decode`] found at the start of a slice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Decoded<'a> {
    /// A whole, valid record and the bytes it took.
    Complete(Record<'a>, usize),
    /// The data ends inside a record: this many bytes in all are needed.
    Torn(usize),
    /// Not a valid record; `offset` is where in the slice it went wrong
    /// (0: the record's own frame).
    Corrupt { offset: usize, why: &'static str },
}

// ----- CRC32C ----------------------------------------------------------------

const CRC32C_POLY: u32 = 0x82F6_3B78;

const fn crc_table() -> [u32; 256] {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ CRC32C_POLY
            } else {
                c >> 1
            };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
}

static CRC_TABLE: [u32; 256] = crc_table();

/// Continues a CRC32C over `bytes` (start with 0).
pub(crate) fn crc32c_update(crc: u32, bytes: &[u8]) -> u32 {
    let mut c = !crc;
    for &b in bytes {
        c = CRC_TABLE[((c ^ b as u32) & 0xff) as usize] ^ (c >> 8);
    }
    !c
}

pub(crate) fn crc32c(bytes: &[u8]) -> u32 {
    crc32c_update(0, bytes)
}

// ----- encoding --------------------------------------------------------------

/// Builds one record at the end of `out`: `begin` leaves room for the
/// frame, the caller pushes the body's fields, `finish` fills in the frame.
pub(crate) struct Encoder<'v> {
    out: &'v mut Vec<u8>,
    start: usize,
}

impl<'v> Encoder<'v> {
    pub(crate) fn begin(out: &'v mut Vec<u8>, kind: u8, ts: u64) -> Encoder<'v> {
        let start = out.len();
        out.extend_from_slice(&[0; FRAME]);
        out.push(kind);
        out.extend_from_slice(&ts.to_le_bytes());
        Encoder { out, start }
    }

    pub(crate) fn u8(&mut self, v: u8) -> &mut Self {
        self.out.push(v);
        self
    }

    pub(crate) fn u32(&mut self, v: u32) -> &mut Self {
        self.out.extend_from_slice(&v.to_le_bytes());
        self
    }

    pub(crate) fn u64(&mut self, v: u64) -> &mut Self {
        self.out.extend_from_slice(&v.to_le_bytes());
        self
    }

    /// A key, with its one-byte length (keys are at most 250 bytes).
    pub(crate) fn key(&mut self, key: &[u8]) -> &mut Self {
        debug_assert!(key.len() <= u8::MAX as usize);
        self.out.push(key.len() as u8);
        self.out.extend_from_slice(key);
        self
    }

    pub(crate) fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.out.extend_from_slice(b);
        self
    }

    /// Fills in the frame; returns the record's total length.
    pub(crate) fn finish(&mut self) -> usize {
        let body = &self.out[self.start + FRAME..];
        let len = body.len() as u32;
        let crc = crc32c(body);
        let frame = &mut self.out[self.start..self.start + FRAME];
        frame[..4].copy_from_slice(&len.to_le_bytes());
        frame[4..].copy_from_slice(&crc.to_le_bytes());
        self.out.len() - self.start
    }
}

/// A PUT whose value is given in pieces (a chunked item's segments).
pub(crate) fn encode_put<'s>(
    out: &mut Vec<u8>,
    ts: u64,
    put: &Put<'_>,
    value: impl Iterator<Item = &'s [u8]>,
) -> usize {
    let mut e = Encoder::begin(out, KIND_PUT, ts);
    e.u32(put.flags)
        .u64(put.exptime)
        .u64(put.cas)
        .u8(put.mflags)
        .key(put.key);
    for seg in value {
        e.bytes(seg);
    }
    e.finish()
}

pub(crate) fn encode_delete(out: &mut Vec<u8>, ts: u64, key: &[u8]) -> usize {
    Encoder::begin(out, KIND_DELETE, ts).key(key).finish()
}

/// A DELETE carrying its tombstone stamp (this node's own delete).
pub(crate) fn encode_stamped_delete(out: &mut Vec<u8>, ts: u64, key: &[u8], stamp: u64) -> usize {
    Encoder::begin(out, KIND_DELETE, ts)
        .key(key)
        .u64(stamp)
        .finish()
}

pub(crate) fn encode_touch(out: &mut Vec<u8>, ts: u64, key: &[u8], exptime: u64) -> usize {
    Encoder::begin(out, KIND_TOUCH, ts)
        .u64(exptime)
        .key(key)
        .finish()
}

pub(crate) fn encode_flush(out: &mut Vec<u8>, ts: u64, at: u64) -> usize {
    Encoder::begin(out, KIND_FLUSH, ts).u64(at).finish()
}

/// Any record, re-encoded (a replica forwarding to its AOF, tests).
pub(crate) fn encode(out: &mut Vec<u8>, rec: &Record<'_>) -> usize {
    match rec.op {
        Op::Put(p) => encode_put(out, rec.ts, &p, std::iter::once(p.value)),
        Op::Delete { key, stamp: None } => encode_delete(out, rec.ts, key),
        Op::Delete {
            key,
            stamp: Some(stamp),
        } => encode_stamped_delete(out, rec.ts, key, stamp),
        Op::Touch { key, exptime } => encode_touch(out, rec.ts, key, exptime),
        Op::Flush { at } => encode_flush(out, rec.ts, at),
    }
}

// ----- decoding --------------------------------------------------------------

fn le_u32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

fn le_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

/// Decodes the record at the start of `buf`.
pub(crate) fn decode(buf: &[u8]) -> Decoded<'_> {
    if buf.len() < FRAME {
        return Decoded::Torn(FRAME);
    }
    let len = le_u32(buf) as usize;
    if !(BODY_HEAD..=MAX_BODY).contains(&len) {
        return Decoded::Corrupt {
            offset: 0,
            why: "impossible record length",
        };
    }
    let total = FRAME + len;
    if buf.len() < total {
        return Decoded::Torn(total);
    }
    let body = &buf[FRAME..total];
    if crc32c(body) != le_u32(&buf[4..]) {
        return Decoded::Corrupt {
            offset: 0,
            why: "checksum mismatch",
        };
    }
    match parse_body(body) {
        Some(rec) => Decoded::Complete(rec, total),
        None => Decoded::Corrupt {
            offset: 0,
            why: "malformed record body",
        },
    }
}

/// A body whose checksum matched; None if its fields do not fit.
fn parse_body(body: &[u8]) -> Option<Record<'_>> {
    let ts = le_u64(&body[1..]);
    let rest = &body[BODY_HEAD..];
    let op = match body[0] {
        KIND_PUT => {
            let fixed = 4 + 8 + 8 + 1;
            let (key, value) = take_key(rest.get(fixed..)?)?;
            Op::Put(Put {
                flags: le_u32(rest),
                exptime: le_u64(&rest[4..]),
                cas: le_u64(&rest[12..]),
                mflags: rest[20],
                key,
                value,
            })
        }
        KIND_DELETE => {
            let (key, tail) = take_key(rest)?;
            let stamp = match tail.len() {
                0 => None,
                8 => Some(le_u64(tail)),
                _ => return None,
            };
            Op::Delete { key, stamp }
        }
        KIND_TOUCH => {
            let (key, tail) = take_key(rest.get(8..)?)?;
            if !tail.is_empty() {
                return None;
            }
            Op::Touch {
                key,
                exptime: le_u64(rest),
            }
        }
        KIND_FLUSH if rest.len() == 8 => Op::Flush { at: le_u64(rest) },
        _ => return None,
    };
    Some(Record { ts, op })
}

/// A one-byte-length key (1..=250 bytes) and what follows it.
fn take_key(b: &[u8]) -> Option<(&[u8], &[u8])> {
    let (&n, rest) = b.split_first()?;
    let n = n as usize;
    if n == 0 || n > 250 || rest.len() < n {
        return None;
    }
    Some(rest.split_at(n))
}

/// Walks the records of a byte slice (a whole file after its magic, or a
/// replication buffer), tracking absolute offsets for error messages.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    /// Offset of `buf[0]` in the file or stream.
    base: u64,
}

/// Where a [`Reader`] stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum End {
    /// Every byte was a whole record.
    Clean,
    /// The last record is incomplete; it starts at this offset.
    Torn(u64),
    /// A bad record starts at this offset.
    Corrupt(u64, &'static str),
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8], base: u64) -> Reader<'a> {
        Reader { buf, pos: 0, base }
    }

    /// Offset just after the last whole record returned.
    pub(crate) fn offset(&self) -> u64 {
        self.base + self.pos as u64
    }

    /// The next record, or why there is none.
    pub(crate) fn next_record(&mut self) -> Result<Record<'a>, End> {
        let rest = &self.buf[self.pos..];
        if rest.is_empty() {
            return Err(End::Clean);
        }
        match decode(rest) {
            Decoded::Complete(rec, used) => {
                self.pos += used;
                Ok(rec)
            }
            Decoded::Torn(_) => Err(End::Torn(self.offset())),
            Decoded::Corrupt { offset, why } => {
                Err(End::Corrupt(self.offset() + offset as u64, why))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_put(value: &[u8]) -> Put<'_> {
        Put {
            flags: 0xdead_beef,
            exptime: 1_900_000_000,
            cas: 42,
            mflags: MF_STALE | MF_KEY_BINARY,
            key: b"some:key",
            value,
        }
    }

    #[test]
    fn crc32c_known_answer() {
        // The check value of CRC-32C (RFC 3720, appendix B.4).
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(&[0u8; 32]), 0x8A91_36AA);
        let split = crc32c_update(crc32c(b"1234"), b"56789");
        assert_eq!(split, 0xE306_9283);
    }

    #[test]
    fn every_kind_round_trips() {
        let put = sample_put(b"the value\r\nwith bytes \0\xff");
        let records = [
            Record {
                ts: 7,
                op: Op::Put(put),
            },
            Record {
                ts: 8,
                op: Op::Put(sample_put(b"")),
            },
            Record {
                ts: 9,
                op: Op::Delete {
                    key: b"k",
                    stamp: None,
                },
            },
            Record {
                ts: 9,
                op: Op::Delete {
                    key: b"gone",
                    stamp: Some(1 << 40),
                },
            },
            Record {
                ts: 10,
                op: Op::Touch {
                    key: &[b'x'; 250],
                    exptime: 0,
                },
            },
            Record {
                ts: 11,
                op: Op::Flush { at: 99 },
            },
        ];
        let mut buf = Vec::new();
        let mut ends = Vec::new();
        for r in &records {
            encode(&mut buf, r);
            ends.push(buf.len());
        }
        let mut reader = Reader::new(&buf, 8);
        for (r, end) in records.iter().zip(&ends) {
            assert_eq!(reader.next_record().as_ref(), Ok(r));
            assert_eq!(reader.offset(), 8 + *end as u64);
        }
        assert_eq!(reader.next_record(), Err(End::Clean));
    }

    #[test]
    fn a_value_in_segments_encodes_like_one_slice() {
        let whole = b"abcdefghij";
        let mut one = Vec::new();
        encode_put(&mut one, 5, &sample_put(whole), std::iter::once(&whole[..]));
        let mut pieces = Vec::new();
        let segs = [&whole[..3], &whole[3..4], &whole[4..]];
        encode_put(&mut pieces, 5, &sample_put(whole), segs.into_iter());
        assert_eq!(one, pieces);
    }

    #[test]
    fn every_truncation_is_torn_never_corrupt() {
        let mut buf = Vec::new();
        encode_put(
            &mut buf,
            1,
            &sample_put(b"0123456789"),
            std::iter::once(&b"0123456789"[..]),
        );
        let total = buf.len();
        for cut in 0..total {
            match decode(&buf[..cut]) {
                Decoded::Torn(need) => assert!(need > cut && need <= total, "cut {cut}"),
                other => panic!("cut at {cut}: {other:?}"),
            }
        }
        assert!(matches!(decode(&buf), Decoded::Complete(_, n) if n == total));
    }

    #[test]
    fn every_flipped_byte_is_detected() {
        let mut buf = Vec::new();
        encode_touch(&mut buf, 3, b"key", 12345);
        for i in 0..buf.len() {
            for bit in [0x01u8, 0x80] {
                let mut bad = buf.clone();
                bad[i] ^= bit;
                let d = decode(&bad);
                let ok = matches!(d, Decoded::Corrupt { .. } | Decoded::Torn(_));
                assert!(ok, "byte {i} bit {bit:#x}: {d:?}");
                // Only a longer length can look like a torn tail.
                if let Decoded::Torn(_) = d {
                    assert!(i < 4);
                }
            }
        }
    }

    #[test]
    fn corruption_in_the_middle_names_its_offset() {
        let mut buf = Vec::new();
        encode_delete(&mut buf, 1, b"first");
        let second = buf.len();
        encode_delete(&mut buf, 2, b"second");
        encode_delete(&mut buf, 3, b"third");
        buf[second + FRAME + 3] ^= 0x55;
        let mut r = Reader::new(&buf, 8);
        assert!(r.next_record().is_ok());
        assert_eq!(
            r.next_record(),
            Err(End::Corrupt(8 + second as u64, "checksum mismatch"))
        );
    }

    #[test]
    fn a_torn_tail_reports_where_it_starts() {
        let mut buf = Vec::new();
        encode_flush(&mut buf, 1, 1);
        let whole = buf.len();
        encode_flush(&mut buf, 2, 2);
        buf.truncate(buf.len() - 3);
        let mut r = Reader::new(&buf, 0);
        assert!(r.next_record().is_ok());
        assert_eq!(r.next_record(), Err(End::Torn(whole as u64)));
    }

    #[test]
    fn bad_layouts_with_good_checksums_are_corrupt() {
        let cases: [&[u8]; 5] = [
            &[9, 0, 0, 0, 0, 0, 0, 0, 0],                          // unknown kind
            &[KIND_DELETE, 0, 0, 0, 0, 0, 0, 0, 0, 0],             // empty key
            &[KIND_DELETE, 0, 0, 0, 0, 0, 0, 0, 0, 2, b'a'],       // short key
            &[KIND_DELETE, 0, 0, 0, 0, 0, 0, 0, 0, 1, b'a', b'b'], // trailing
            &[KIND_FLUSH, 0, 0, 0, 0, 0, 0, 0, 0, 1],              // short flush
        ];
        for body in cases {
            let mut buf = (body.len() as u32).to_le_bytes().to_vec();
            buf.extend_from_slice(&crc32c(body).to_le_bytes());
            buf.extend_from_slice(body);
            assert!(matches!(decode(&buf), Decoded::Corrupt { .. }), "{body:?}");
        }
        let huge = [0xff, 0xff, 0xff, 0x7f, 0, 0, 0, 0];
        assert!(matches!(decode(&huge), Decoded::Corrupt { .. }));
    }

    #[test]
    fn encoding_reuses_the_buffer() {
        let mut buf = Vec::with_capacity(256);
        let cap = buf.capacity();
        for _ in 0..100 {
            buf.clear();
            encode_delete(&mut buf, 1, b"key");
        }
        assert_eq!(buf.capacity(), cap);
    }
}
