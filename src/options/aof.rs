//! This server's own `-o` keys for the append-only file (`aof`,
//! `aof_sync`, `aof_rewrite_pct`, `aof_rewrite_min`, `aof_fix`): not
//! memcached options, so their messages are ours.

use crate::settings::{AofSettings, AofSync};

/// The `-o` keys this server adds to memcached's.
pub(super) fn is_aof_key(key: &str) -> bool {
    matches!(
        key,
        "aof" | "aof_sync" | "aof_rewrite_pct" | "aof_rewrite_min" | "aof_fix"
    )
}

/// Applies `-o key[=value]` for one of [`is_aof_key`]; the
/// error is the line to print before exiting with status 1.
pub(super) fn set_aof(
    aof: &mut AofSettings,
    key: &str,
    value: Option<&[u8]>,
) -> Result<(), String> {
    let text = value.map(|v| String::from_utf8_lossy(v).into_owned());
    let need = |what: &str| text.clone().ok_or(format!("Missing {what} argument"));
    match key {
        "aof" => {
            let path = need("aof")?;
            if path.is_empty() {
                return Err("Missing aof argument".into());
            }
            aof.path = Some(path);
        }
        "aof_sync" => {
            aof.sync = match need("aof_sync")?.as_str() {
                "always" => AofSync::Always,
                "everysec" => AofSync::EverySec,
                "no" => AofSync::No,
                _ => return Err("aof_sync must be always, everysec or no".into()),
            }
        }
        "aof_rewrite_pct" => {
            aof.rewrite_pct = need("aof_rewrite_pct")?
                .parse()
                .map_err(|_| "aof_rewrite_pct must be a whole number of percent")?;
        }
        "aof_rewrite_min" => {
            aof.rewrite_min = parse_size(&need("aof_rewrite_min")?)
                .ok_or("aof_rewrite_min must be a size in bytes (suffix k, m or g allowed)")?;
        }
        "aof_fix" => aof.fix = true,
        _ => return Err(format!("Illegal suboption \"{key}\"")),
    }
    Ok(())
}

/// `123`, `64k`, `64m`, `1g` (binary multiples).
fn parse_size(text: &str) -> Option<u64> {
    let (digits, shift) = match text.as_bytes().last()?.to_ascii_lowercase() {
        b'k' => (&text[..text.len() - 1], 10),
        b'm' => (&text[..text.len() - 1], 20),
        b'g' => (&text[..text.len() - 1], 30),
        _ => (text, 0),
    };
    let n: u64 = digits.parse().ok()?;
    n.checked_mul(1 << shift)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aof_options_parse_and_refuse() {
        let mut a = AofSettings::default();
        set_aof(&mut a, "aof", Some(b"/tmp/x.aof")).unwrap();
        set_aof(&mut a, "aof_sync", Some(b"always")).unwrap();
        set_aof(&mut a, "aof_rewrite_pct", Some(b"50")).unwrap();
        set_aof(&mut a, "aof_rewrite_min", Some(b"2m")).unwrap();
        set_aof(&mut a, "aof_fix", None).unwrap();
        assert_eq!(a.path.as_deref(), Some("/tmp/x.aof"));
        assert_eq!(a.sync, AofSync::Always);
        assert_eq!((a.rewrite_pct, a.rewrite_min, a.fix), (50, 2 << 20, true));
        assert!(set_aof(&mut a, "aof_sync", Some(b"sometimes")).is_err());
        assert!(set_aof(&mut a, "aof_sync", None).is_err());
        assert!(set_aof(&mut a, "aof_rewrite_pct", Some(b"-1")).is_err());
        assert!(set_aof(&mut a, "aof_rewrite_min", Some(b"12q")).is_err());
        assert!(set_aof(&mut a, "aof", Some(b"")).is_err());
        assert_eq!(parse_size("123"), Some(123));
        assert_eq!(parse_size("1G"), Some(1 << 30));
        assert_eq!(parse_size(""), None);
    }
}
