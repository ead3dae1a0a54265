//! Commands that retune a running server: `lru` (the segmented-LRU knobs)
//! and `cache_memlimit`. Replies, limits and parsing follow memcached
//! 1.6's `process_lru_command` and `process_memlimit_command`.
//!
//! `lru tune|mode|temp_ttl` retune the segmented LRU (see
//! `items/maintainer.rs`) from the next item or tick on; `cache_memlimit` really moves the page budget, opening more of the arena
//! reserved at start or giving pooled pages back.

use super::request::{Ctx, Next, Reply, set_noreply_maybe};
use super::tokens::Tokens;
use crate::items::maintainer::LruTuning;
use crate::numbers::{safe_strtod, safe_strtol, safe_strtoul};

/// `lru tune <hot pct> <warm pct> <hot factor> <warm factor>`,
/// `lru mode flat|segmented`, `lru temp_ttl <ttl>`.
pub(super) fn process_lru(ctx: &mut Ctx, t: &Tokens, r: &mut Reply) -> Next {
    set_noreply_maybe(t, r);
    let n = t.ntokens();
    let lru = &mut ctx.settings.tuning;
    match t.get(1) {
        b"tune" if n >= 7 => {
            let (Some(hot), Some(warm), Some(hot_factor), Some(warm_factor)) = (
                safe_strtoul(t.get(2)),
                safe_strtoul(t.get(3)),
                safe_strtod(t.get(4)),
                safe_strtod(t.get(5)),
            ) else {
                return r.line("ERROR");
            };
            // memcached adds the two as uint32_t, wrap-around included, and
            // compares factors with `<=`, which lets a NaN through.
            if hot.wrapping_add(warm) > 80 {
                return r.line("ERROR hot and warm pcts must not exceed 80");
            }
            if warm_factor <= 0.0 || hot_factor <= 0.0 {
                return r.line("ERROR hot/warm age factors must be greater than 0");
            }
            lru.hot_lru_pct = hot as i32;
            lru.warm_lru_pct = warm as i32;
            lru.hot_max_factor = hot_factor;
            lru.warm_max_factor = warm_factor;
            ctx.cache.set_lru_tuning(LruTuning::from_settings(lru));
            r.line("OK")
        }
        b"mode" if n >= 4 && lru.lru_maintainer => match t.get(2) {
            b"flat" => {
                lru.lru_segmented = false;
                ctx.cache.set_lru_tuning(LruTuning::from_settings(lru));
                r.line("OK")
            }
            b"segmented" => {
                lru.lru_segmented = true;
                ctx.cache.set_lru_tuning(LruTuning::from_settings(lru));
                r.line("OK")
            }
            _ => r.line("ERROR"),
        },
        b"temp_ttl" if n >= 4 && lru.lru_maintainer => match safe_strtol(t.get(2)) {
            Some(ttl) => {
                lru.temp_lru = ttl >= 0;
                if ttl >= 0 {
                    lru.temporary_ttl = ttl;
                }
                ctx.cache.set_lru_tuning(LruTuning::from_settings(lru));
                r.line("OK")
            }
            None => r.line("ERROR"),
        },
        _ => r.line("ERROR"),
    }
}

/// The smallest limit memcached accepts, in megabytes.
const MEMLIMIT_MIN_MB: u32 = 8;
/// Above this the number was surely meant in bytes.
const MEMLIMIT_MAX_MB: u32 = 1_000_000_000;

/// `cache_memlimit <megabytes>`.
pub(super) fn process_memlimit(ctx: &mut Ctx, t: &Tokens, r: &mut Reply) -> Next {
    set_noreply_maybe(t, r);
    let Some(mb) = safe_strtoul(t.get(1)) else {
        return r.line("ERROR");
    };
    if mb < MEMLIMIT_MIN_MB {
        return r.line("MEMLIMIT_TOO_SMALL cannot set maxbytes to less than 8m");
    }
    if mb > MEMLIMIT_MAX_MB {
        return r.line("MEMLIMIT_ADJUST_FAILED input value is megabytes not bytes");
    }
    // memcached cannot move a preallocated limit (`-L`, or memory in a
    // file with `-e`); nor can this server go past the 32 GiB its chunk
    // references address (see `slab::set_mem_limit`).
    let bytes = mb as usize * 1024 * 1024;
    if !ctx.cache.slabs.set_mem_limit(bytes) {
        return r.line("MEMLIMIT_ADJUST_FAILED out of bounds or unable to adjust");
    }
    ctx.settings.max_bytes = bytes;
    if ctx.settings.verbose > 0 {
        eprintln!("maxbytes adjusted to {mb}m");
    }
    r.line("OK")
}
