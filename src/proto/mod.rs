//! Protocol parsers and reply writers: one file per protocol (`text`,
//! `meta`, `binary`, the `-Y` gate in `auth`) or command family (`tuning`,
//! `watch`), all built on `request`, which holds what they share with the
//! connection that runs them.

pub(crate) mod auth;
mod base64;
pub(crate) mod binary;
mod meta;
pub(crate) mod request;
pub(crate) mod text;
mod tokens;
mod tuning;
mod watch;

/// The first `needle` in `hay`, eight bytes at a time: request lines are
/// searched for their end, their NULs and their spaces on every request.
pub(crate) fn find_byte(needle: u8, hay: &[u8]) -> Option<usize> {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    let pattern = u64::from_ne_bytes([needle; 8]);
    let mut words = hay.chunks_exact(8);
    let mut base = 0;
    for w in &mut words {
        let x = u64::from_le_bytes(w.try_into().unwrap()) ^ pattern;
        // The lowest set bit marks the first zero byte of `x` exactly;
        // bits above it may be false positives, never below.
        let zeros = x.wrapping_sub(ONES) & !x & HIGHS;
        if zeros != 0 {
            return Some(base + (zeros.trailing_zeros() / 8) as usize);
        }
        base += 8;
    }
    let rest = words.remainder();
    rest.iter().position(|&b| b == needle).map(|i| base + i)
}

#[cfg(test)]
mod find_byte_tests {
    use super::find_byte;

    #[test]
    fn agrees_with_a_plain_search() {
        let hay: Vec<u8> = (0..40u8).map(|i| i.wrapping_mul(37) ^ 0x5a).collect();
        for len in 0..hay.len() {
            for needle in [0u8, b' ', b'\n', 0x80, 0xff, 0x01, hay[len / 2]] {
                let h = &hay[..len];
                assert_eq!(find_byte(needle, h), h.iter().position(|&b| b == needle));
            }
        }
        assert_eq!(find_byte(b' ', b"get key:0000001 x"), Some(3));
        assert_eq!(find_byte(b' ', b"key:0000001 x"), Some(11));
        assert_eq!(find_byte(0x80, &[0x00, 0x81, 0x80]), Some(2));
        assert_eq!(
            find_byte(0x01, &[0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0]),
            Some(2)
        );
    }
}
