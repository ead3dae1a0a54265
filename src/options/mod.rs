//! The command line, parsed exactly as memcached 1.6.18's `main()` parses it.
//!
//! memcached acts on each option the moment `getopt_long` returns it, so the
//! first bad option wins, `-h` prints whatever the settings are *so far*, and
//! warnings come out interleaved with errors. To reproduce its messages byte
//! for byte this module therefore brings its own GNU `getopt_long` (the
//! `getopts` crate parses everything before reporting, does not accept
//! abbreviated long options, and words its errors differently) and applies
//! options one at a time to a `ParseState` holding memcached's C-typed
//! values. Numbers go through `crate::numbers`' `atoi`/`atof`/`strtol`
//! look-alikes because memcached is lenient there: `-p abc` means port 0.
//!
//! The files: `getopt.rs` (the getopt_long mechanics), `table.rs` (which
//! options there are), `state.rs` (what is held while walking them),
//! `rules.rs` (each short option and its validation), `suboptions.rs`
//! (`-o`), `checks.rs` (the checks after the loop), `help.rs` (`-h`, `-i`).
//!
//! Parsing is pure: it never exits nor touches process state (the only I/O
//! is reading the transparent-huge-pages switch for `-L`, as memcached
//! does). What the process should print and its exit code come back as an
//! [`Exit`]; the side effects (rlimits, user switch, daemon, mlock) are
//! the `process` room's.
//!
//! Deliberate differences from the Debian build of memcached 1.6.18: no TLS
//! (`-Z`, `ssl_*`) in a build without the `tls` feature, and no help text
//! for `-N`; and
//! where memcached crashes on a bad `-o` value (`slab_chunk_max`,
//! `slab_sizes` without a value) we print its message and exit 1 instead.

mod aof;
mod checks;
mod ext;
mod getopt;
mod help;
mod rules;
mod state;
mod suboptions;
mod table;
#[cfg(test)]
mod tests;

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

use crate::process::Exit;
use crate::settings::Settings;
use getopt::{GetoptLong, Step};
use state::ParseState;

/// A command line that should start the server.
#[derive(Debug)]
pub struct Parsed {
    pub settings: Settings,
    /// Warnings memcached prints while parsing (e.g. for `-t 100`), to be
    /// written to stderr before anything else happens.
    pub warnings: Vec<u8>,
}

/// Parses `argv` (program name first) like memcached 1.6.18.
pub fn parse_args<S: AsRef<OsStr>>(argv: &[S]) -> Result<Parsed, Exit> {
    let argv: Vec<&[u8]> = argv.iter().map(|a| a.as_ref().as_bytes()).collect();
    let prog = argv.first().copied().unwrap_or(b"memcached");
    let mut state = ParseState::new();
    let mut getopt = GetoptLong::new(&table::OPTIONS, &argv);
    while let Some(step) = getopt.next_step() {
        match step {
            // repcached's `-X <port>`: memcached's `-X` takes no argument
            // (disable dumping), and getopt would skip a number after it
            // as a non-option, which memcached ignores. So a number right
            // after a short `-X` is taken as the replication port (as in
            // repcached); a bare `-X` -- the next element an option, a
            // non-number, or nothing -- keeps memcached's meaning.
            Step::Opt(b'X', None) => match getopt.number_after_flag() {
                Some(port) => state.repl_port(port)?,
                None => state.option(b'X', None)?,
            },
            Step::Opt(c, arg) => state.option(c, arg)?,
            Step::Bad(message) => {
                state.stderr.extend_from_slice(prog);
                state.stderr.extend_from_slice(&message);
                return Err(state.exit(1, "Illegal argument \"?\"\n"));
            }
        }
    }
    state.finish()
}
