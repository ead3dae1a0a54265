//! Number parsing with the exact leniency of memcached's `safe_strto*`
//! helpers, which wrap C's `strtoul`/`strtol`: leading white space and a
//! sign are accepted, the digits must be followed by white space or the end,
//! and a minus sign on a number that wraps into the top half is refused.
//! Clients depend on these corners (e.g. `incr` on "12 abc" yields 13).

fn is_c_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\x0b' | b'\x0c' | b'\r')
}

/// C `strtoull` in base 10: (value, bytes consumed, overflowed). Consumed is
/// 0 when no digits were found.
fn strtoull(s: &[u8]) -> (u64, usize, bool) {
    let mut i = 0;
    while i < s.len() && is_c_space(s[i]) {
        i += 1;
    }
    let mut negative = false;
    if i < s.len() && (s[i] == b'+' || s[i] == b'-') {
        negative = s[i] == b'-';
        i += 1;
    }
    let digits_start = i;
    let mut value: u64 = 0;
    let mut overflow = false;
    while i < s.len() && s[i].is_ascii_digit() {
        let d = (s[i] - b'0') as u64;
        match value.checked_mul(10).and_then(|v| v.checked_add(d)) {
            Some(v) => value = v,
            None => overflow = true,
        }
        i += 1;
    }
    if i == digits_start {
        return (0, 0, false);
    }
    if overflow {
        return (u64::MAX, i, true);
    }
    (
        if negative {
            value.wrapping_neg()
        } else {
            value
        },
        i,
        false,
    )
}

/// The digits must end the token or be followed by white space.
fn ends_cleanly(s: &[u8], end: usize) -> bool {
    end == s.len() || is_c_space(s[end]) || s[end] == 0
}

/// memcached's `safe_strtoull`.
pub fn safe_strtoull(s: &[u8]) -> Option<u64> {
    let (v, end, overflow) = strtoull(s);
    if overflow || end == 0 || !ends_cleanly(s, end) {
        return None;
    }
    if (v as i64) < 0 && s[..end].contains(&b'-') {
        return None;
    }
    Some(v)
}

/// memcached's `safe_strtoul` on a 64-bit build, truncated to 32 bits the
/// way its callers store the result.
pub fn safe_strtoul(s: &[u8]) -> Option<u32> {
    safe_strtoull(s).map(|v| v as u32)
}

/// memcached's `safe_strtol`: a 64-bit `long`, refused only when it
/// overflows, then narrowed to `int32_t` by truncation (so 2147483648 reads
/// as a negative number, as it does in memcached).
pub fn safe_strtol(s: &[u8]) -> Option<i32> {
    let (v, end, overflow) = strtoull(s);
    if end == 0 || !ends_cleanly(s, end) {
        return None;
    }
    // strtol saturates instead of wrapping: overflow is ERANGE.
    let negative = s[..end].contains(&b'-');
    let magnitude = if negative { v.wrapping_neg() } else { v };
    if overflow || magnitude > i64::MAX as u64 + negative as u64 {
        return None;
    }
    let l = if negative {
        (magnitude as i64).wrapping_neg()
    } else {
        magnitude as i64
    };
    Some(l as i32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsigned_follows_c() {
        assert_eq!(safe_strtoull(b"12"), Some(12));
        assert_eq!(safe_strtoull(b" +7"), Some(7));
        assert_eq!(safe_strtoull(b"12 abc"), Some(12));
        assert_eq!(safe_strtoull(b"12\r\n"), Some(12));
        assert_eq!(safe_strtoull(b"1\0x"), Some(1));
        assert_eq!(safe_strtoull(b"12abc"), None);
        assert_eq!(safe_strtoull(b""), None);
        assert_eq!(safe_strtoull(b"abc"), None);
        assert_eq!(safe_strtoull(b"-1"), None);
        assert_eq!(safe_strtoull(b"-0"), Some(0));
        assert_eq!(safe_strtoull(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(safe_strtoull(b"18446744073709551616"), None);
    }

    #[test]
    fn signed_follows_c() {
        assert_eq!(safe_strtol(b"-5"), Some(-5));
        assert_eq!(safe_strtol(b"2147483647"), Some(i32::MAX));
        assert_eq!(safe_strtol(b"2147483648"), Some(i32::MIN));
        assert_eq!(safe_strtol(b"4294967297"), Some(1));
        // Below INT_MIN a long still fits and memcached only checks the top.
        assert_eq!(safe_strtol(b"-2147483649"), Some(2147483647));
        assert_eq!(safe_strtol(b"9223372036854775808"), None);
        assert_eq!(safe_strtol(b"x"), None);
    }
}
