//! `watch`: parses the command and turns the connection into a log stream
//! (`logger/`), answering as memcached 1.6.18 does.

use super::request::{Ctx, Next, Reply, set_noreply_maybe};
use super::tokens::Tokens;
use crate::logger::{
    AddError, CONNEVENTS, EVICTIONS, FETCHERS, MUTATIONS, PROXYEVENTS, PROXYREQS, PROXYUSER,
    RAWCMDS, SYSEVENTS,
};

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
            match flag_for(t.get(i)) {
                Some(f) => flags |= f,
                None => return r.line("ERROR"),
            }
        }
    } else {
        flags = FETCHERS;
    }
    match ctx.cache.logger.add_watcher(ctx.fd, flags) {
        Ok(()) => Next::Watch,
        Err(AddError::TooMany) => r.line("WATCHER_TOO_MANY log watcher limit reached"),
    }
}

/// The flag a `watch` argument names, as 1.6.18 (built without the proxy,
/// whose arguments it still accepts) parses them; None for anything else.
fn flag_for(arg: &[u8]) -> Option<u16> {
    Some(match arg {
        b"rawcmds" => RAWCMDS,
        b"evictions" => EVICTIONS,
        b"fetchers" => FETCHERS,
        b"mutations" => MUTATIONS,
        b"sysevents" => SYSEVENTS,
        b"connevents" => CONNEVENTS,
        b"proxyreqs" => PROXYREQS,
        b"proxyevents" => PROXYEVENTS,
        b"proxyuser" => PROXYUSER,
        _ => return None,
    })
}
