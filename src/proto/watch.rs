//! `watch`: turns the connection into a log stream (`stats/logger.rs`),
//! answering as memcached 1.6.18 does.

use super::request::{Ctx, Next, Reply, set_noreply_maybe};
use super::tokens::Tokens;
use crate::logger::{self, AddError};

pub(super) fn process_watch(ctx: &mut Ctx, t: &Tokens, r: &mut Reply) -> Next {
    set_noreply_maybe(t, r);
    if !ctx.settings.tuning.watch_enabled {
        return r.line("CLIENT_ERROR watch commands not allowed");
    }
    // memcached hands the socket to its logger thread, which cannot send
    // replies still queued for earlier commands.
    if r.out.len() > r.written {
        return r.line("ERROR cannot pipeline other commands before watch");
    }
    let n = t.ntokens();
    let mut flags = 0;
    if n > 2 {
        for i in 1..n - 1 {
            match logger::flag_for(t.get(i)) {
                Some(f) => flags |= f,
                None => return r.line("ERROR"),
            }
        }
    } else {
        flags = logger::FETCHERS;
    }
    match ctx.cache.logger.add_watcher(ctx.fd, flags) {
        Ok(()) => Next::Watch,
        Err(AddError::TooMany) => r.line("WATCHER_TOO_MANY log watcher limit reached"),
    }
}
