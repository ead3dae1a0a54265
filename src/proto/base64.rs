//! memcached's base64 (from `base64.c`), used for meta-protocol keys sent
//! with the `b` flag. The decoder is deliberately memcached's own, not a
//! strict RFC 4648 one: bytes outside the alphabet are skipped, the count
//! of alphabet bytes (with `=`) must be a multiple of four, and decoding
//! stops after the first block that holds padding -- so `Zm9v!` and
//! `Zg==Zm9v` decode (to `foo` and `f`), and the replies match.

const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// The value of an alphabet byte (`=` counts as 0), or None.
fn value(b: u8) -> Option<u8> {
    match b {
        b'A'..=b'Z' => Some(b - b'A'),
        b'a'..=b'z' => Some(b - b'a' + 26),
        b'0'..=b'9' => Some(b - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        b'=' => Some(0),
        _ => None,
    }
}

/// Decodes `src` into `out` (which must hold `src.len()` bytes); returns
/// the decoded length, 0 meaning failure, as memcached's `base64_decode`.
pub(super) fn decode(src: &[u8], out: &mut [u8]) -> usize {
    let count = src.iter().filter(|&&b| value(b).is_some()).count();
    if count == 0 || count % 4 != 0 || count / 4 * 3 > out.len() {
        return 0;
    }
    let mut pos = 0;
    let mut block = [0u8; 4];
    let mut n = 0;
    let mut pad = 0;
    for &b in src {
        let Some(v) = value(b) else { continue };
        if b == b'=' {
            pad += 1;
        }
        block[n] = v;
        n += 1;
        if n == 4 {
            out[pos] = (block[0] << 2) | (block[1] >> 4);
            out[pos + 1] = (block[1] << 4) | (block[2] >> 2);
            out[pos + 2] = (block[2] << 6) | block[3];
            pos += 3;
            n = 0;
            if pad > 0 {
                match pad {
                    1 => pos -= 1,
                    2 => pos -= 2,
                    _ => return 0,
                }
                break;
            }
        }
    }
    pos
}

/// Appends the base64 encoding of `src` (with `=` padding) to `out`.
pub(super) fn encode_into(src: &[u8], out: &mut Vec<u8>) {
    let mut chunks = src.chunks_exact(3);
    for c in &mut chunks {
        out.extend_from_slice(&[
            TABLE[(c[0] >> 2) as usize],
            TABLE[(((c[0] & 3) << 4) | (c[1] >> 4)) as usize],
            TABLE[(((c[1] & 0x0f) << 2) | (c[2] >> 6)) as usize],
            TABLE[(c[2] & 0x3f) as usize],
        ]);
    }
    match *chunks.remainder() {
        [a] => out.extend_from_slice(&[
            TABLE[(a >> 2) as usize],
            TABLE[((a & 3) << 4) as usize],
            b'=',
            b'=',
        ]),
        [a, b] => out.extend_from_slice(&[
            TABLE[(a >> 2) as usize],
            TABLE[(((a & 3) << 4) | (b >> 4)) as usize],
            TABLE[((b & 0x0f) << 2) as usize],
            b'=',
        ]),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(s: &[u8]) -> Option<Vec<u8>> {
        let mut out = vec![0u8; s.len()];
        let n = decode(s, &mut out);
        (n > 0).then(|| out[..n].to_vec())
    }

    fn enc(s: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        encode_into(s, &mut v);
        v
    }

    #[test]
    fn round_trips() {
        for s in [&b"f"[..], b"fo", b"foo", b"foob", b"\x00\xff\r\n ", b""] {
            let e = enc(s);
            if s.is_empty() {
                assert!(e.is_empty());
            } else {
                assert_eq!(dec(&e).unwrap(), s);
            }
        }
        assert_eq!(enc(b"foo"), b"Zm9v");
        assert_eq!(enc(b"fo"), b"Zm8=");
        assert_eq!(enc(b"f"), b"Zg==");
    }

    #[test]
    fn decodes_like_memcached() {
        assert_eq!(dec(b"Zm9v!").unwrap(), b"foo");
        assert_eq!(dec(b"Zg==Zm9v").unwrap(), b"f");
        assert_eq!(dec(b"Zm9"), None);
        assert_eq!(dec(b"foo"), None);
        assert_eq!(dec(b"===="), None);
        assert_eq!(dec(b"A==="), None);
        assert_eq!(dec(b"!!!!"), None);
        assert_eq!(dec(b"Z=m9").unwrap(), b"d\x09");
    }
}
