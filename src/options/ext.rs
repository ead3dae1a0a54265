//! `-o ext_*`: memcached's extstore options (`storage_read_config`), with
//! its messages, and its check after the option loop
//! (`storage_check_config`).

use super::state::{Outcome, ParseState};
use crate::numbers::{atoi, safe_strtod, safe_strtoul};
use crate::process::EX_USAGE;
use crate::settings::ExtPath;
use std::os::unix::ffi::OsStrExt as _;

/// The keys memcached hands to its extstore configuration.
pub(super) fn is_ext_key(key: &str) -> bool {
    matches!(
        key,
        "ext_page_size"
            | "ext_wbuf_size"
            | "ext_threads"
            | "ext_io_depth"
            | "ext_path"
            | "ext_item_size"
            | "ext_item_age"
            | "ext_low_ttl"
            | "ext_recache_rate"
            | "ext_compact_under"
            | "ext_drop_under"
            | "ext_max_sleep"
            | "ext_max_frag"
            | "ext_drop_unread"
            | "slab_automove_freeratio"
    )
}

impl ParseState {
    pub(super) fn ext_option(&mut self, key: &str, value: Option<&[u8]>) -> Outcome {
        match key {
            "ext_page_size" => {
                if self.settings.ext.enabled() {
                    return self.fail(
                        1,
                        "Must specify ext_page_size before any ext_path arguments\n",
                    );
                }
                let mb = self.ext_u32(key, value)?;
                self.settings.ext.page_size = mb.wrapping_mul(1 << 20);
            }
            "ext_wbuf_size" => {
                let mb = self.ext_u32(key, value)?;
                self.settings.ext.wbuf_size = mb.wrapping_mul(1 << 20);
            }
            "ext_threads" => self.settings.ext.threads = self.ext_u32(key, value)?,
            "ext_io_depth" => self.settings.ext.io_depth = self.ext_u32(key, value)?,
            "ext_item_size" => self.settings.ext.item_size = self.ext_u32(key, value)?,
            "ext_item_age" => self.settings.ext.item_age = self.ext_u32(key, value)?,
            "ext_low_ttl" => self.settings.ext.low_ttl = self.ext_u32(key, value)?,
            "ext_recache_rate" => self.settings.ext.recache_rate = self.ext_u32(key, value)?,
            "ext_compact_under" => self.settings.ext.compact_under = self.ext_u32(key, value)?,
            "ext_drop_under" => self.settings.ext.drop_under = self.ext_u32(key, value)?,
            "ext_max_sleep" => self.settings.ext.max_sleep = self.ext_u32(key, value)?,
            "ext_max_frag" => self.settings.ext.max_frag = self.ext_f64(key, value)?,
            "slab_automove_freeratio" => {
                self.settings.ext.slab_automove_freeratio = self.ext_f64(key, value)?
            }
            "ext_drop_unread" => self.settings.ext.drop_unread = true,
            _ => return self.ext_path(value),
        }
        Ok(())
    }

    fn ext_u32(&mut self, key: &str, value: Option<&[u8]>) -> Result<u32, crate::process::Exit> {
        let value = self.need(value, &format!("Missing {key} argument"))?;
        match safe_strtoul(value) {
            Some(v) => Ok(v),
            None => Err(self.exit(1, format!("could not parse argument to {key}\n"))),
        }
    }

    fn ext_f64(&mut self, key: &str, value: Option<&[u8]>) -> Result<f64, crate::process::Exit> {
        let value = self.need(value, &format!("Missing {key} argument"))?;
        match safe_strtod(value) {
            Some(v) => Ok(v),
            None => Err(self.exit(1, format!("could not parse argument to {key}\n"))),
        }
    }

    fn ext_path(&mut self, value: Option<&[u8]>) -> Outcome {
        let Some(value) = value else {
            return self.fail(1, "missing argument to ext_path, ie: ext_path=/d/file:5G\n");
        };
        match parse_path(value, self.settings.ext.page_size) {
            Ok(path) => {
                // memcached links each new file in front of the others.
                self.settings.ext.paths.insert(0, path);
                Ok(())
            }
            Err(why) => self.fail(1, format!("{why}failed to parse ext_path argument\n")),
        }
    }

    /// memcached's `storage_check_config`, after its slab_chunk_max checks.
    pub(super) fn check_ext(&mut self) -> Outcome {
        if !self.settings.ext.enabled() {
            return Ok(());
        }
        let (item, wbuf) = (self.c_ints.item_size_max, self.settings.ext.wbuf_size);
        if item as i64 > wbuf as i64 {
            // memcached prints both with %d.
            let message = format!(
                "-I (item_size_max: {item}) cannot be larger than ext_wbuf_size: {}\n",
                wbuf as i32
            );
            return self.fail(EX_USAGE, message);
        }
        if self.c_ints.udp_port != 0 {
            return self.fail(
                EX_USAGE,
                "Cannot use UDP with extstore enabled (-U 0 to disable)\n",
            );
        }
        Ok(())
    }
}

/// `FILE:SIZE[:BUCKET]`, split with `strtok_r` as memcached does; the size
/// takes a unit letter (m, g, t, p), and without one counts as nothing.
fn parse_path(arg: &[u8], page_size: u32) -> Result<ExtPath, String> {
    let mut tokens = arg.split(|&b| b == b':').filter(|t| !t.is_empty());
    let Some(file) = tokens.next() else {
        return Err(String::new());
    };
    let Some(size) = tokens.next() else {
        return Err(
            "must supply size to ext_path, ie: ext_path=/f/e:64m (M|G|T|P supported)\n".into(),
        );
    };
    let (digits, unit) = size.split_at(size.len() - 1);
    let multiplier: u64 = match unit[0].to_ascii_lowercase() {
        b'm' => 1 << 20,
        b'g' => 1 << 30,
        b't' => 1 << 40,
        b'p' => 1 << 50,
        _ => 0,
    };
    let bytes = multiplier.wrapping_mul(atoi(digits) as i64 as u64);
    let page_count = bytes.checked_div(page_size as u64).unwrap_or(0) as u32;
    // The rest of the argument up to a comma names a free bucket; only
    // the default one is supported by 1.6.18.
    let rest: Vec<&[u8]> = tokens.collect();
    if let Some(bucket) = rest.first() {
        let bucket = String::from_utf8_lossy(bucket).into_owned();
        let bucket = if rest.len() > 1 {
            format!(
                "{bucket}:{}",
                String::from_utf8_lossy(&rest[1..].join(&b':'))
            )
        } else {
            bucket
        };
        return Err(match bucket.as_str() {
            "default" => return Ok(path_of(file, page_count)),
            "compact" | "lowttl" | "chunked" => {
                "ext_path only presently supports the default bucket\n".to_string()
            }
            _ => format!("Unknown extstore bucket: {bucket}\n"),
        });
    }
    Ok(path_of(file, page_count))
}

fn path_of(file: &[u8], page_count: u32) -> ExtPath {
    ExtPath {
        file: std::ffi::OsStr::from_bytes(file).into(),
        page_count,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_buckets_parse_as_memcached_parses_them() {
        let p = parse_path(b"/tmp/f:64m", 8 << 20).unwrap();
        assert_eq!(p.page_count, 8);
        assert_eq!(p.file, std::path::PathBuf::from("/tmp/f"));
        assert_eq!(parse_path(b"/tmp/f:1G", 64 << 20).unwrap().page_count, 16);
        // No unit letter: memcached's multiplier stays 0.
        assert_eq!(parse_path(b"/tmp/f:64", 8 << 20).unwrap().page_count, 0);
        assert!(
            parse_path(b"/tmp/f", 8 << 20)
                .unwrap_err()
                .starts_with("must supply")
        );
        assert!(
            parse_path(b"/tmp/f:64m:compact", 8 << 20)
                .unwrap_err()
                .contains("default bucket")
        );
        assert_eq!(
            parse_path(b"/tmp/f:64m:bogus", 8 << 20).unwrap_err(),
            "Unknown extstore bucket: bogus\n"
        );
        assert!(parse_path(b"/tmp/f:64m:default", 8 << 20).is_ok());
    }
}
