//! One value as it lies in a page: a small header, the key (so compaction
//! can find the item a record belongs to), the value, and a CRC over them.
//!
//! ```text
//!  0  len     u32  the whole record; 0 marks the zeroed end of a buffer
//!  4  crc     u32  CRC-32C of bytes 8..len
//!  8  nbytes  u32  value length
//! 12  nkey    u8
//! 13  key, then the value
//! ```

pub(crate) const HEADER: usize = 13;

/// Bytes a record of this key and value length takes.
pub(crate) fn len(nkey: usize, nbytes: usize) -> usize {
    HEADER + nkey + nbytes
}

/// Writes the record header and key into `buf` (exactly [`len`] bytes);
/// the caller has put the value at `buf[HEADER + key.len()..]`, then
/// calls [`seal`].
pub(crate) fn begin(buf: &mut [u8], key: &[u8], nbytes: usize) {
    let total = buf.len() as u32;
    buf[0..4].copy_from_slice(&total.to_le_bytes());
    buf[8..12].copy_from_slice(&(nbytes as u32).to_le_bytes());
    buf[12] = key.len() as u8;
    buf[HEADER..HEADER + key.len()].copy_from_slice(key);
}

/// Computes the CRC once the value is in.
pub(crate) fn seal(buf: &mut [u8]) {
    let crc = crc32c(&buf[8..]);
    buf[4..8].copy_from_slice(&crc.to_le_bytes());
}

/// A record read back: its key and value, if it is whole and intact.
pub(crate) struct Parsed<'a> {
    pub(crate) key: &'a [u8],
    pub(crate) value: &'a [u8],
}

pub(crate) enum Check<'a> {
    Good(Parsed<'a>),
    /// The bytes are not a record of this length (a reused page).
    Missing,
    /// The CRC does not match.
    BadCrc,
}

/// Parses the record at the start of `buf`, which should be `len` bytes.
pub(crate) fn check(buf: &[u8]) -> Check<'_> {
    match parse(buf) {
        Check::Good(_) if !crc_matches(buf) => Check::BadCrc,
        c => c,
    }
}

/// Whether a record's CRC matches its bytes (`buf` holds at least the
/// header).
pub(crate) fn crc_matches(buf: &[u8]) -> bool {
    buf.len() >= HEADER && crc32c(&buf[8..]) == read_u32(buf, 4)
}

/// [`check`] without the CRC, for a record whose CRC the I/O thread has
/// checked.
pub(crate) fn parse(buf: &[u8]) -> Check<'_> {
    if buf.len() < HEADER || read_u32(buf, 0) as usize != buf.len() {
        return Check::Missing;
    }
    let nbytes = read_u32(buf, 8) as usize;
    let nkey = buf[12] as usize;
    if HEADER + nkey + nbytes != buf.len() {
        return Check::Missing;
    }
    Check::Good(Parsed {
        key: &buf[HEADER..HEADER + nkey],
        value: &buf[HEADER + nkey..],
    })
}

/// The record starting at `buf[at..]` when walking a page: its length, or
/// None at the zeroed end (or at bytes that cannot start a record).
pub(crate) fn next_len(buf: &[u8], at: usize) -> Option<usize> {
    if buf.len().saturating_sub(at) < HEADER {
        return None;
    }
    let len = read_u32(buf, at) as usize;
    (len > HEADER && at + len <= buf.len()).then_some(len)
}

fn read_u32(buf: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(buf[at..at + 4].try_into().unwrap())
}

/// CRC-32C (Castagnoli), as memcached checks its extstore reads with:
/// the CPU's instruction where there is one, else eight bytes a step
/// (slicing-by-8).
pub(crate) fn crc32c(data: &[u8]) -> u32 {
    match crate::sys::crc32c_hw(!0, data) {
        Some(crc) => !crc,
        None => crc32c_tables(data),
    }
}

fn crc32c_tables(data: &[u8]) -> u32 {
    static TABLES: std::sync::OnceLock<[[u32; 256]; 8]> = std::sync::OnceLock::new();
    let t = TABLES.get_or_init(|| {
        let mut t = [[0u32; 256]; 8];
        for (i, slot) in t[0].iter_mut().enumerate() {
            let mut c = i as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    0x82F6_3B78 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
            *slot = c;
        }
        for i in 0..256 {
            for k in 1..8 {
                let prev = t[k - 1][i];
                t[k][i] = (prev >> 8) ^ t[0][(prev & 0xff) as usize];
            }
        }
        t
    });
    let mut crc = !0u32;
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let lo = u32::from_le_bytes([c[0], c[1], c[2], c[3]]) ^ crc;
        let hi = u32::from_le_bytes([c[4], c[5], c[6], c[7]]);
        crc = t[7][(lo & 0xff) as usize]
            ^ t[6][((lo >> 8) & 0xff) as usize]
            ^ t[5][((lo >> 16) & 0xff) as usize]
            ^ t[4][(lo >> 24) as usize]
            ^ t[3][(hi & 0xff) as usize]
            ^ t[2][((hi >> 8) & 0xff) as usize]
            ^ t[1][((hi >> 16) & 0xff) as usize]
            ^ t[0][(hi >> 24) as usize];
    }
    for &b in chunks.remainder() {
        crc = t[0][((crc ^ b as u32) & 0xff) as usize] ^ (crc >> 8);
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_of_the_standard_check_string() {
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        // Lengths around the 8-byte steps agree with a bytewise CRC.
        let data: Vec<u8> = (0..100u32).map(|i| (i * 37 % 251) as u8).collect();
        for n in 0..data.len() {
            let mut crc = !0u32;
            for &b in &data[..n] {
                crc ^= b as u32;
                for _ in 0..8 {
                    crc = if crc & 1 != 0 {
                        0x82F6_3B78 ^ (crc >> 1)
                    } else {
                        crc >> 1
                    };
                }
            }
            assert_eq!(crc32c(&data[..n]), !crc, "length {n}");
            assert_eq!(crc32c_tables(&data[..n]), !crc, "length {n}");
        }
    }

    #[test]
    fn a_record_round_trips_and_damage_is_seen() {
        let mut buf = vec![0u8; len(3, 5)];
        begin(&mut buf, b"key", 5);
        buf[HEADER + 3..].copy_from_slice(b"hello");
        seal(&mut buf);
        match check(&buf) {
            Check::Good(p) => {
                assert_eq!(p.key, b"key");
                assert_eq!(p.value, b"hello");
            }
            _ => panic!("record did not parse"),
        }
        assert_eq!(next_len(&buf, 0), Some(buf.len()));
        buf[HEADER + 4] ^= 1;
        assert!(matches!(check(&buf), Check::BadCrc));
        assert!(matches!(check(&buf[..buf.len() - 1]), Check::Missing));
        assert_eq!(next_len(&[0u8; 64], 0), None);
    }
}
