//! Number parsing with the exact leniency of C's number parsers as
//! memcached calls them, for the protocol and the command line alike:
//! memcached's `safe_strto*` helpers, which wrap `strtoul`/`strtol` (leading
//! white space and a sign are accepted, the digits must be followed by white
//! space or the end, and a minus sign on a number that wraps into the top
//! half is refused), and the bare `atoi`/`strtol`/`atof` its option parser
//! uses (garbage reads as 0: `-p abc` means port 0). Clients depend on these
//! corners (e.g. `incr` on "12 abc" yields 13).
//!
//! Every function reads its bytes as C reads a string: a NUL byte ends it.

fn is_c_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\x0b' | b'\x0c' | b'\r')
}

/// What C's `strtol`/`strtoul` read from `s`: white space, a sign, then
/// digits in `radix` (at most 10; nothing here reads hex integers).
struct Scan {
    negative: bool,
    magnitude: u64,
    overflow: bool,
    /// Index after the last digit; 0 when there is none (`endptr == str`).
    end: usize,
}

fn scan_integer(s: &[u8], radix: u32) -> Scan {
    let mut i = s.iter().take_while(|&&b| is_c_space(b)).count();
    let negative = s.get(i) == Some(&b'-');
    if matches!(s.get(i), Some(b'-' | b'+')) {
        i += 1;
    }
    let digits_start = i;
    let (mut magnitude, mut overflow) = (0u64, false);
    while let Some(digit) = s.get(i).and_then(|&b| (b as char).to_digit(radix)) {
        match magnitude
            .checked_mul(u64::from(radix))
            .and_then(|m| m.checked_add(u64::from(digit)))
        {
            Some(m) => magnitude = m,
            None => overflow = true,
        }
        i += 1;
    }
    let end = if i == digits_start { 0 } else { i };
    Scan {
        negative,
        magnitude,
        overflow,
        end,
    }
}

/// C `strtoull` in base 10: (value, bytes consumed, ERANGE). A minus sign
/// negates modulo 2^64, as in C. Consumed is 0 when no digits were found.
fn strtoull(s: &[u8]) -> (u64, usize, bool) {
    let scan = scan_integer(s, 10);
    if scan.overflow {
        return (u64::MAX, scan.end, true);
    }
    let value = if scan.negative {
        scan.magnitude.wrapping_neg()
    } else {
        scan.magnitude
    };
    (value, scan.end, false)
}

/// C `strtol` (64-bit `long`): the value, clamped to `long` on overflow,
/// the bytes consumed (0 when no digits were found), and ERANGE. memcached
/// calls it with base 8 for `-a`.
pub(crate) fn strtol(s: &[u8], radix: u32) -> (i64, usize, bool) {
    let scan = scan_integer(s, radix);
    let limit = if scan.negative {
        i64::MIN.unsigned_abs()
    } else {
        i64::MAX as u64
    };
    if scan.overflow || scan.magnitude > limit {
        let clamped = if scan.negative { i64::MIN } else { i64::MAX };
        return (clamped, scan.end, true);
    }
    let value = if scan.negative {
        (scan.magnitude as i64).wrapping_neg()
    } else {
        scan.magnitude as i64
    };
    (value, scan.end, false)
}

/// glibc's `atoi`: `(int) strtol(s, NULL, 10)`, so garbage is 0 and big
/// numbers wrap (memcached's option parser reads most numbers with it).
pub(crate) fn atoi(s: &[u8]) -> i32 {
    strtol(s, 10).0 as i32
}

/// The digits must end the string or be followed by white space (a NUL
/// ends a C string).
fn ends_cleanly(s: &[u8], end: usize) -> bool {
    end == s.len() || is_c_space(s[end]) || s[end] == 0
}

/// memcached's `strchr(str, '-')`: a minus sign anywhere in the C string,
/// not only before the digits ("18446744073709551615 -" is refused).
fn has_minus(s: &[u8]) -> bool {
    s.iter().take_while(|&&b| b != 0).any(|&b| b == b'-')
}

/// memcached's `safe_strtoull`.
pub(crate) fn safe_strtoull(s: &[u8]) -> Option<u64> {
    let (v, end, overflow) = strtoull(s);
    if overflow || end == 0 || !ends_cleanly(s, end) {
        return None;
    }
    if (v as i64) < 0 && has_minus(s) {
        return None;
    }
    Some(v)
}

/// memcached's `safe_strtoul` on a 64-bit build, truncated to 32 bits the
/// way its callers store the result.
pub(crate) fn safe_strtoul(s: &[u8]) -> Option<u32> {
    safe_strtoull(s).map(|v| v as u32)
}

/// memcached's `safe_strtoll`: a 64-bit `long long`, refused on overflow
/// or trailing garbage.
pub(crate) fn safe_strtoll(s: &[u8]) -> Option<i64> {
    let (l, end, erange) = strtol(s, 10);
    if erange || end == 0 || !ends_cleanly(s, end) {
        return None;
    }
    Some(l)
}

/// memcached's `safe_strtol`: a 64-bit `long`, refused only when it
/// overflows, then narrowed to `int32_t` by truncation (so 2147483648 reads
/// as a negative number, as it does in memcached).
pub(crate) fn safe_strtol(s: &[u8]) -> Option<i32> {
    let (l, end, erange) = strtol(s, 10);
    if erange || end == 0 || !ends_cleanly(s, end) {
        return None;
    }
    Some(l as i32)
}

/// C `strtod`: (value, bytes consumed, ERANGE). Reads white space, a sign,
/// then `inf`/`infinity`/`nan` (any case; `nan(...)` too), a hex float
/// (`0x1.8p3`) or a decimal one with an optional exponent. Consumed is 0
/// when no number was found. ERANGE is set, as glibc sets it, when a finite
/// number overflows to infinity or underflows to zero or a subnormal.
pub(crate) fn strtod(s: &[u8]) -> (f64, usize, bool) {
    let start = s.iter().take_while(|&&b| is_c_space(b)).count();
    let (negative, sign) = match s.get(start) {
        Some(b'-') => (true, 1),
        Some(b'+') => (false, 1),
        _ => (false, 0),
    };
    let body = &s[start + sign..];
    let (value, used, finite) = match float_word(body) {
        Some((v, used)) => (v, used, false),
        None => match hex_float(body).or_else(|| decimal_float(body)) {
            Some((v, used)) => (v, used, true),
            None => return (0.0, 0, false),
        },
    };
    // A decimal subnormal is never exact; a hex one may be, and glibc
    // flags only inexact results.
    let hex = body.len() > 1 && body[1].eq_ignore_ascii_case(&b'x') && body[0] == b'0';
    let erange = finite
        && (value.is_infinite()
            || (value != 0.0 && !value.is_normal() && !hex)
            || (value == 0.0 && !mantissa_is_zero(&body[..used])));
    (
        if negative { -value } else { value },
        start + sign + used,
        erange,
    )
}

/// Whether a number's digits (not its exponent) are all zero: `0e-999`
/// is a true zero, `1e-999` an underflow.
fn mantissa_is_zero(text: &[u8]) -> bool {
    let (digits, exponent_mark): (&[u8], &[u8]) = match text
        .strip_prefix(b"0x")
        .or_else(|| text.strip_prefix(b"0X"))
    {
        Some(hex) => (hex, b"pP"),
        None => (text, b"eE"),
    };
    digits
        .iter()
        .take_while(|b| !exponent_mark.contains(b))
        .all(|&b| b == b'0' || b == b'.')
}

/// glibc's `atof`: `strtod` without an end pointer (0 when nothing reads).
pub(crate) fn atof(s: &[u8]) -> f64 {
    strtod(s).0
}

/// memcached's `safe_strtod`: a number that ends the token (or is followed
/// by white space) and neither overflows nor underflows.
pub(crate) fn safe_strtod(s: &[u8]) -> Option<f64> {
    let (value, end, erange) = strtod(s);
    (end > 0 && !erange && ends_cleanly(s, end)).then_some(value)
}

/// printf's `%.Nf`, including its spelling of infinities and NaNs.
pub(crate) fn c_fixed(value: f64, precision: usize) -> String {
    let sign = if value.is_sign_negative() { "-" } else { "" };
    if value.is_nan() {
        format!("{sign}nan")
    } else if value.is_infinite() {
        format!("{sign}inf")
    } else {
        format!("{value:.precision$}")
    }
}

fn float_word(s: &[u8]) -> Option<(f64, usize)> {
    let starts = |word: &[u8]| s.len() >= word.len() && s[..word.len()].eq_ignore_ascii_case(word);
    if starts(b"infinity") {
        Some((f64::INFINITY, 8))
    } else if starts(b"inf") {
        Some((f64::INFINITY, 3))
    } else if starts(b"nan") {
        // `nan(chars)`: the parenthesised part is read too when it closes.
        let chars = s[3..].strip_prefix(b"(").map(|rest| {
            rest.iter()
                .take_while(|b| b.is_ascii_alphanumeric() || **b == b'_')
                .count()
        });
        match chars {
            Some(n) if s.get(4 + n) == Some(&b')') => Some((f64::NAN, 5 + n)),
            _ => Some((f64::NAN, 3)),
        }
    } else {
        None
    }
}

fn hex_float(s: &[u8]) -> Option<(f64, usize)> {
    let digits = s.strip_prefix(b"0x").or_else(|| s.strip_prefix(b"0X"))?;
    let mut mantissa = 0f64;
    let mut exponent = 0i64;
    let (mut seen_digit, mut seen_point, mut i) = (false, false, 0);
    while let Some(&b) = digits.get(i) {
        if b == b'.' && !seen_point {
            seen_point = true;
        } else if let Some(d) = (b as char).to_digit(16) {
            mantissa = mantissa * 16.0 + f64::from(d);
            exponent -= if seen_point { 4 } else { 0 };
            seen_digit = true;
        } else {
            break;
        }
        i += 1;
    }
    if !seen_digit {
        return None; // "0x" alone reads as the 0, then garbage
    }
    if matches!(digits.get(i), Some(b'p' | b'P')) {
        let rest = &digits[i + 1..];
        let sign = usize::from(matches!(rest.first(), Some(b'-' | b'+')));
        let n = rest[sign..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
        if n > 0 {
            let power: i64 = std::str::from_utf8(&rest[sign..sign + n])
                .ok()
                .and_then(|t| t.parse().ok())
                .unwrap_or(i64::MAX)
                .min(100_000);
            exponent += if rest[0] == b'-' { -power } else { power };
            i += 1 + sign + n;
        }
    }
    Some((scale_by_two(mantissa, exponent), 2 + i))
}

/// `m * 2^e` in steps that stay within f64's normal range, so results near
/// the subnormal end are not flushed to zero by an intermediate power.
fn scale_by_two(mut m: f64, mut e: i64) -> f64 {
    e = e.clamp(-100_000, 100_000);
    while e != 0 && m != 0.0 && m.is_finite() {
        let step = e.clamp(-1000, 1000);
        m *= 2f64.powi(step as i32);
        e -= step;
    }
    m
}

fn decimal_float(s: &[u8]) -> Option<(f64, usize)> {
    let digits = |from: usize| s[from..].iter().take_while(|b| b.is_ascii_digit()).count();
    let int_len = digits(0);
    let mut end = int_len;
    if s.get(end) == Some(&b'.') {
        end += 1 + digits(end + 1);
    }
    if end == 0 || (int_len == 0 && end == 1) {
        return None;
    }
    if matches!(s.get(end), Some(b'e' | b'E')) {
        let sign = usize::from(matches!(s.get(end + 1), Some(b'-' | b'+')));
        let exp_digits = digits(end + 1 + sign);
        if exp_digits > 0 {
            end += 1 + sign + exp_digits;
        }
    }
    let value = std::str::from_utf8(&s[..end]).ok()?.parse().ok()?;
    Some((value, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_follow_c() {
        assert_eq!(atof(b"1.5abc"), 1.5);
        assert_eq!(atof(b" 2e1x"), 20.0);
        assert_eq!(atof(b"3e"), 3.0);
        assert_eq!(atof(b".5"), 0.5);
        assert_eq!(atof(b"5."), 5.0);
        assert_eq!(atof(b"-.5e1"), -5.0);
        assert_eq!(atof(b"."), 0.0);
        assert_eq!(atof(b"0x1p3"), 8.0);
        assert_eq!(atof(b"0x1.8p1"), 3.0);
        assert_eq!(atof(b"0x"), 0.0);
        assert!(atof(b"nan").is_nan());
        assert_eq!(atof(b"-INFINITY"), f64::NEG_INFINITY);
        assert_eq!(strtod(b"infinityx"), (f64::INFINITY, 8, false));
        assert_eq!(strtod(b"nan(0x1)").1, 8);
        assert_eq!(strtod(b"nan(").1, 3);
        assert_eq!(strtod(b"1e5e").1, 3);
        assert_eq!(strtod(b"0x1p").1, 3);
    }

    #[test]
    fn safe_strtod_refuses_what_memcached_refuses() {
        assert_eq!(safe_strtod(b"0.1"), Some(0.1));
        assert_eq!(safe_strtod(b"2"), Some(2.0));
        assert_eq!(safe_strtod(b"1.5 "), Some(1.5));
        assert_eq!(safe_strtod(b"1.5x"), None);
        assert_eq!(safe_strtod(b""), None);
        assert_eq!(safe_strtod(b"x"), None);
        assert_eq!(safe_strtod(b"1e999"), None);
        assert_eq!(safe_strtod(b"1e-999"), None);
        assert_eq!(safe_strtod(b"1e-310"), None);
        assert_eq!(safe_strtod(b"0e-999"), Some(0.0));
        assert_eq!(safe_strtod(b"0x0p-99999"), Some(0.0));
        assert_eq!(safe_strtod(b"0x1p-1074"), Some(f64::from_bits(1)));
        assert_eq!(safe_strtod(b"0x1p-1080"), None);
        assert_eq!(safe_strtod(b"-inf"), Some(f64::NEG_INFINITY));
        assert!(safe_strtod(b"NaN").is_some_and(f64::is_nan));
    }

    #[test]
    fn fixed_point_is_printf() {
        assert_eq!(c_fixed(1.25, 2), "1.25");
        assert_eq!(c_fixed(0.2, 2), "0.20");
        assert_eq!(c_fixed(f64::NAN, 2), "nan");
        assert_eq!(c_fixed(-f64::NAN, 2), "-nan");
        assert_eq!(c_fixed(f64::NEG_INFINITY, 2), "-inf");
    }

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

    /// The command line's helpers (moved from the option parser's tests).
    #[test]
    fn c_number_helpers() {
        assert_eq!(atoi(b"4294967297"), 1);
        assert_eq!(atoi(b"99999999999999999999"), -1);
        assert_eq!(atoi(b"-12"), -12);
        assert_eq!(safe_strtoul(b"12"), Some(12));
        assert_eq!(safe_strtoul(b"12 "), Some(12));
        assert_eq!(safe_strtoul(b"12x"), None);
        assert_eq!(safe_strtoul(b"-1"), None);
        assert_eq!(safe_strtoul(b""), None);
        assert_eq!(safe_strtoul(b"4294967296"), Some(0));
        assert_eq!(safe_strtol(b"-2"), Some(-2));
    }

    #[test]
    fn atoi_and_strtol_are_lenient() {
        assert_eq!(atoi(b"abc"), 0);
        assert_eq!(atoi(b" 12x"), 12);
        assert_eq!(atoi(b"+7"), 7);
        assert_eq!(atoi(b""), 0);
        assert_eq!(atoi(b"-99999999999999999999"), 0);
        assert_eq!(strtol(b"644", 8), (0o644, 3, false));
        assert_eq!(strtol(b"9", 8), (0, 0, false));
        assert_eq!(strtol(b"-17x", 8), (-0o17, 3, false));
        assert_eq!(strtol(b"99999999999999999999", 10), (i64::MAX, 20, true));
        assert_eq!(strtol(b"-9223372036854775808", 10), (i64::MIN, 20, false));
    }

    /// memcached looks for a minus sign with `strchr` over the whole C
    /// string, so one after the number counts too, and a NUL ends the
    /// string (both for a value `incr` reads and for a `-o` argument).
    #[test]
    fn minus_signs_and_nul_bytes_are_c_strings() {
        assert_eq!(safe_strtoull(b"18446744073709551615 -"), None);
        assert_eq!(safe_strtoull(b"18446744073709551615\0-"), Some(u64::MAX));
        assert_eq!(safe_strtoul(b"18446744073709551615\t-"), None);
        assert_eq!(safe_strtoul(b"12 -"), Some(12));
        assert_eq!(safe_strtoul(b"12\0x"), Some(12));
        assert_eq!(safe_strtol(b"12\0x"), Some(12));
        assert_eq!(safe_strtoul(b"\x0012"), None);
        assert_eq!(atoi(b"1\x002"), 1);
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
