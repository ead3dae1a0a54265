//! The command line, parsed exactly as memcached 1.6.18's `main()` parses it.
//!
//! memcached acts on each option the moment `getopt_long` returns it, so the
//! first bad option wins, `-h` prints whatever the settings are *so far*, and
//! warnings come out interleaved with errors. To reproduce its messages byte
//! for byte this module therefore brings its own GNU `getopt_long` (the
//! `getopts` crate parses everything before reporting, does not accept
//! abbreviated long options, and words its errors differently) and applies
//! options one at a time to a [`Parser`] holding memcached's C-typed values.
//! Numbers go through `atoi`/`atof`/`strtol` look-alikes because memcached
//! is lenient there: `-p abc` means port 0.
//!
//! Parsing is pure: it never exits nor touches process state (the only I/O
//! is reading the transparent-huge-pages switch for `-L`, as memcached
//! does). What the process should print and its exit code come back as an
//! [`Exit`]; the side effects (rlimits, user switch, daemon, mlock) are
//! `main.rs`'s.
//!
//! Deliberate differences from the Debian build of memcached 1.6.18: no TLS
//! (`-Z`, `ssl_*`), no extstore (`ext_*`), and no help text for `-N`; and
//! where memcached crashes on a bad `-o` value (`slab_chunk_max`,
//! `slab_sizes` without a value) we print its message and exit 1 instead.

use std::ffi::OsStr;
use std::io::Write as _;
use std::os::unix::ffi::OsStrExt;

use memcached::numbers::{atof, c_fixed};
use memcached::settings::{AofSettings, Protocol, Settings, VERSION};

/// `sysexits.h` codes, as memcached uses them.
pub const EX_USAGE: i32 = 64;
pub const EX_NOUSER: i32 = 67;
pub const EX_OSERR: i32 = 71;

/// memcached's `ITEM_SIZE_MAX_LOWER_LIMIT` and `_UPPER_LIMIT`.
const ITEM_SIZE_MAX_LOWER_LIMIT: i32 = 1024;
const ITEM_SIZE_MAX_UPPER_LIMIT: i32 = 1024 * 1024 * 1024;
/// memcached's `CHUNK_ALIGN_BYTES` and `MAX_NUMBER_OF_SLAB_CLASSES`, which
/// bound a custom `-o slab_sizes` list.
const CHUNK_ALIGN_BYTES: u32 = 8;
const MAX_NUMBER_OF_SLAB_CLASSES: usize = 63 + 1;

/// The process must end now: print `stderr`, then `stdout`, and exit with
/// `code` (0 for `-h`, `-V`, `-i`).
#[derive(Debug)]
pub struct Exit {
    pub code: i32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Exit {
    /// An error exit with one message (used by `main.rs`'s start-up steps).
    pub fn error(code: i32, message: impl Into<Vec<u8>>) -> Exit {
        Exit {
            code,
            stdout: Vec::new(),
            stderr: message.into(),
        }
    }
}

/// A command line that should start the server.
#[derive(Debug)]
pub struct Parsed {
    pub settings: Settings,
    /// The same values as `settings.tuning`, kept for the parser's tests.
    #[allow(dead_code)]
    pub extra: Extra,
    /// Warnings memcached prints while parsing (e.g. for `-t 100`), to be
    /// written to stderr before anything else happens.
    pub warnings: Vec<u8>,
}

pub use memcached::settings::{HashAlgorithm, Tuning as Extra};

/// Parses `argv` (program name first) like memcached 1.6.18.
pub fn parse_args<S: AsRef<OsStr>>(argv: &[S]) -> Result<Parsed, Exit> {
    let argv: Vec<&[u8]> = argv.iter().map(|a| a.as_ref().as_bytes()).collect();
    let prog = argv.first().copied().unwrap_or(b"memcached");
    let mut parser = Parser::new();
    let mut getopt = GetoptLong::new(&argv);
    while let Some(step) = getopt.next_step() {
        match step {
            Step::Opt(c, arg) => parser.option(c, arg)?,
            Step::Bad(message) => {
                parser.err.extend_from_slice(prog);
                parser.err.extend_from_slice(&message);
                return Err(parser.exit(1, "Illegal argument \"?\"\n"));
            }
        }
    }
    parser.finish()
}

// ---------------------------------------------------------------------------
// GNU getopt_long
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum HasArg {
    No,
    Required,
    Optional,
}

struct LongOpt {
    name: &'static str,
    has_arg: HasArg,
    val: u8,
}

const fn long(name: &'static str, has_arg: HasArg, val: u8) -> LongOpt {
    LongOpt { name, has_arg, val }
}

/// memcached's `longopts`, in its order (the order of getopt's
/// "possibilities" list for an ambiguous abbreviation).
const LONG_OPTS: &[LongOpt] = &[
    long("unix-mask", HasArg::Required, b'a'),
    long("enable-shutdown", HasArg::No, b'A'),
    long("enable-ssl", HasArg::No, b'Z'),
    long("port", HasArg::Required, b'p'),
    long("unix-socket", HasArg::Required, b's'),
    long("udp-port", HasArg::Required, b'U'),
    long("memory-limit", HasArg::Required, b'm'),
    long("disable-evictions", HasArg::No, b'M'),
    long("conn-limit", HasArg::Required, b'c'),
    long("lock-memory", HasArg::No, b'k'),
    long("help", HasArg::No, b'h'),
    long("license", HasArg::No, b'i'),
    long("version", HasArg::No, b'V'),
    long("enable-coredumps", HasArg::No, b'r'),
    long("verbose", HasArg::Optional, b'v'),
    long("daemon", HasArg::No, b'd'),
    long("listen", HasArg::Required, b'l'),
    long("user", HasArg::Required, b'u'),
    long("pidfile", HasArg::Required, b'P'),
    long("slab-growth-factor", HasArg::Required, b'f'),
    long("slab-min-size", HasArg::Required, b'n'),
    long("threads", HasArg::Required, b't'),
    long("enable-largepages", HasArg::No, b'L'),
    long("max-reqs-per-event", HasArg::Required, b'R'),
    long("disable-cas", HasArg::No, b'C'),
    long("listen-backlog", HasArg::Required, b'b'),
    long("protocol", HasArg::Required, b'B'),
    long("max-item-size", HasArg::Required, b'I'),
    long("enable-sasl", HasArg::No, b'S'),
    long("disable-flush-all", HasArg::No, b'F'),
    long("disable-dumping", HasArg::No, b'X'),
    long("disable-watch", HasArg::No, b'W'),
    long("auth-file", HasArg::Required, b'Y'),
    long("memory-file", HasArg::Required, b'e'),
    long("extended", HasArg::Required, b'o'),
    long("napi-ids", HasArg::Required, b'N'),
    // Not memcached's: this server's append-only file and replication.
    long("aof-file", HasArg::Required, AOF_FILE),
    long("repl-peer", HasArg::Required, b'x'),
    long("repl-port", HasArg::Required, REPL_PORT_OPT),
];

/// Long options memcached does not have (the AOF, replication): never
/// abbreviated.
fn is_our_extension(opt: &LongOpt) -> bool {
    matches!(opt.val, AOF_FILE | b'x' | REPL_PORT_OPT)
}

/// The values getopt returns for `--aof-file` and `--repl-port`: not
/// short option letters.
const AOF_FILE: u8 = 1;
const REPL_PORT_OPT: u8 = 0x80;

/// memcached's short option string "a:AZp:s:U:m:Mc:khiVrvdl:u:P:f:n:t:D:LR:Cb:B:I:SFXWY:e:o:N:",
/// plus our `x:` (repcached's replication peer; memcached has no `-x`).
fn short_opt(c: u8) -> Option<HasArg> {
    match c {
        b'a' | b'p' | b's' | b'U' | b'm' | b'c' | b'l' | b'u' | b'P' | b'f' | b'n' | b't'
        | b'D' | b'R' | b'b' | b'B' | b'I' | b'Y' | b'e' | b'o' | b'N' | b'x' => {
            Some(HasArg::Required)
        }
        b'A' | b'Z' | b'M' | b'k' | b'h' | b'i' | b'V' | b'r' | b'v' | b'd' | b'L' | b'C'
        | b'S' | b'F' | b'X' | b'W' => Some(HasArg::No),
        _ => None,
    }
}

/// What getopt returns: an option with its argument, or the text of
/// getopt's own complaint (after the program name) for which memcached
/// then prints `Illegal argument "?"`.
#[derive(Debug, PartialEq)]
enum Step<'a> {
    Opt(u8, Option<&'a [u8]>),
    Bad(Vec<u8>),
}

/// glibc's `getopt_long` in its default (permuting) mode: non-options are
/// skipped, `--` ends the options, short options cluster, long options may
/// be abbreviated to any unambiguous prefix.
struct GetoptLong<'a, 'b> {
    argv: &'b [&'a [u8]],
    /// Next element of `argv` to look at.
    optind: usize,
    /// Inside a cluster of short options: the element and the byte offset.
    cluster: Option<(usize, usize)>,
}

impl<'a, 'b> GetoptLong<'a, 'b> {
    fn new(argv: &'b [&'a [u8]]) -> Self {
        GetoptLong {
            argv,
            optind: 1,
            cluster: None,
        }
    }

    fn next_step(&mut self) -> Option<Step<'a>> {
        if self.cluster.is_some() {
            return Some(self.short_step());
        }
        loop {
            let arg = *self.argv.get(self.optind)?;
            if arg == b"--" {
                self.optind = self.argv.len();
                return None;
            }
            self.optind += 1;
            if let Some(body) = arg.strip_prefix(b"--") {
                return Some(self.long_step(body));
            }
            if arg.len() > 1 && arg[0] == b'-' {
                self.cluster = Some((self.optind - 1, 1));
                return Some(self.short_step());
            }
        }
    }

    /// The next argument element, consumed as an option's value.
    fn take_next(&mut self) -> Option<&'a [u8]> {
        let arg = *self.argv.get(self.optind)?;
        self.optind += 1;
        Some(arg)
    }

    fn short_step(&mut self) -> Step<'a> {
        let (index, offset) = self.cluster.take().expect("inside a cluster");
        let arg = self.argv[index];
        let c = arg[offset];
        let rest = &arg[offset + 1..];
        if !rest.is_empty() {
            self.cluster = Some((index, offset + 1));
        }
        match short_opt(c) {
            None => Step::Bad(getopt_message(b": invalid option -- '", &[c], b"'\n")),
            Some(HasArg::Required) if !rest.is_empty() => {
                self.cluster = None;
                Step::Opt(c, Some(rest))
            }
            Some(HasArg::Required) => match self.take_next() {
                Some(value) => Step::Opt(c, Some(value)),
                None => Step::Bad(getopt_message(
                    b": option requires an argument -- '",
                    &[c],
                    b"'\n",
                )),
            },
            Some(_) => Step::Opt(c, None),
        }
    }

    /// `body` is the element after its leading `--`.
    fn long_step(&mut self, body: &'a [u8]) -> Step<'a> {
        let eq = body.iter().position(|&b| b == b'=');
        let (name, value) = match eq {
            Some(at) => (&body[..at], Some(&body[at + 1..])),
            None => (body, None),
        };
        let opt = match find_long(name) {
            Ok(opt) => opt,
            Err(candidates) if candidates.is_empty() => {
                return Step::Bad(getopt_message(b": unrecognized option '--", body, b"'\n"));
            }
            Err(candidates) => return Step::Bad(ambiguous(body, &candidates)),
        };
        let quoted = |text: &[u8]| getopt_message(b": option '--", opt.name.as_bytes(), text);
        match (value, opt.has_arg) {
            (Some(_), HasArg::No) => Step::Bad(quoted(b"' doesn't allow an argument\n")),
            (Some(value), _) => Step::Opt(opt.val, Some(value)),
            (None, HasArg::Required) => match self.take_next() {
                Some(value) => Step::Opt(opt.val, Some(value)),
                None => Step::Bad(quoted(b"' requires an argument\n")),
            },
            (None, _) => Step::Opt(opt.val, None),
        }
    }
}

/// An exact match, else the one option `name` abbreviates; on failure the
/// options it could abbreviate (none, or several: ambiguous).
fn find_long(name: &[u8]) -> Result<&'static LongOpt, Vec<&'static LongOpt>> {
    if let Some(opt) = LONG_OPTS.iter().find(|o| o.name.as_bytes() == name) {
        return Ok(opt);
    }
    // Our own long options are never abbreviated, so every abbreviation
    // means what it means to memcached.
    let candidates: Vec<&LongOpt> = LONG_OPTS
        .iter()
        .filter(|o| !is_our_extension(o) && o.name.as_bytes().starts_with(name))
        .collect();
    match candidates.as_slice() {
        [one] => Ok(one),
        _ => Err(candidates),
    }
}

fn ambiguous(body: &[u8], candidates: &[&LongOpt]) -> Vec<u8> {
    let mut message = getopt_message(b": option '--", body, b"' is ambiguous; possibilities:");
    for opt in candidates {
        message.extend_from_slice(b" '--");
        message.extend_from_slice(opt.name.as_bytes());
        message.push(b'\'');
    }
    message.push(b'\n');
    message
}

fn getopt_message(before: &[u8], middle: &[u8], after: &[u8]) -> Vec<u8> {
    [before, middle, after].concat()
}

// ---------------------------------------------------------------------------
// C number parsing, as memcached's libc does it (C locale)
// ---------------------------------------------------------------------------

fn is_c_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

/// What `strtol`/`strtoul` read from `s`: white space, a sign, digits.
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

/// `strtol`: the value (clamped to `long`), where it stopped, and ERANGE.
fn strtol(s: &[u8], radix: u32) -> (i64, usize, bool) {
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

/// `strtoul`: a minus sign negates modulo 2^64, as in C.
fn strtoul(s: &[u8]) -> (u64, usize, bool) {
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

/// glibc's `atoi`: `(int) strtol(s, NULL, 10)`, so garbage is 0 and big
/// numbers wrap.
fn atoi(s: &[u8]) -> i32 {
    strtol(s, 10).0 as i32
}

/// memcached's `safe_strtoul`: digits, then only white space; the result is
/// truncated to 32 bits like memcached's `uint32_t` out-parameter.
pub fn safe_strtoul(s: &[u8]) -> Option<u32> {
    let (value, end, erange) = strtoul(s);
    if erange || end == 0 || !ends_cleanly(s, end) {
        return None;
    }
    if (value as i64) < 0 && s.contains(&b'-') {
        return None;
    }
    Some(value as u32)
}

/// memcached's `safe_strtol`, truncated to its `int32_t` out-parameter.
fn safe_strtol(s: &[u8]) -> Option<i32> {
    let (value, end, erange) = strtol(s, 10);
    if erange || end == 0 || !ends_cleanly(s, end) {
        return None;
    }
    Some(value as i32)
}

fn ends_cleanly(s: &[u8], end: usize) -> bool {
    s.get(end).is_none_or(|&b| is_c_space(b))
}

// ---------------------------------------------------------------------------
// Applying options
// ---------------------------------------------------------------------------

/// memcached's `int`/`uint32_t` settings, kept in their C types while
/// parsing so that wrap-around and signs behave as in memcached (and `-h`
/// prints them the same way); converted into `Settings` at the end.
struct CInts {
    port: i32,
    udp_port: i32,
    access: i32,
    max_conns: i32,
    chunk_size: i32,
    num_threads: i32,
    reqs_per_event: i32,
    item_size_max: i32,
    slab_chunk_max: i32,
    slab_page_size: i32,
    hashpower: i32,
    tail_repair_time: i32,
    lru_crawler_sleep: i32,
    lru_crawler_tocrawl: u32,
    slab_automove: i32,
    idle_timeout: i32,
    read_buf_mem_limit: u32,
}

impl CInts {
    fn from_settings(s: &Settings) -> CInts {
        CInts {
            port: i32::from(s.port),
            udp_port: i32::from(s.udp_port),
            access: s.access_mask as i32,
            max_conns: s.max_conns as i32,
            chunk_size: s.chunk_size as i32,
            num_threads: s.num_threads as i32,
            reqs_per_event: s.reqs_per_event as i32,
            item_size_max: s.item_size_max as i32,
            slab_chunk_max: s.slab_chunk_size_max as i32,
            slab_page_size: s.slab_page_size as i32,
            hashpower: s.hashpower_init as i32,
            tail_repair_time: s.tail_repair_time as i32,
            lru_crawler_sleep: s.lru_crawler_sleep as i32,
            lru_crawler_tocrawl: s.lru_crawler_tocrawl,
            slab_automove: i32::from(s.slab_automove),
            idle_timeout: s.idle_timeout as i32,
            read_buf_mem_limit: s.read_buf_mem_limit as u32,
        }
    }
}

type Outcome = Result<(), Exit>;

/// memcached's `main()` state while it walks the options.
struct Parser {
    s: Settings,
    n: CInts,
    x: Extra,
    /// What memcached has printed to stderr so far (warnings).
    err: Vec<u8>,
    /// `settings.inter`: the `-l` values joined with commas.
    inter: Option<Vec<u8>>,
    protocol_specified: bool,
    tcp_specified: bool,
    udp_specified: bool,
    slab_chunk_size_changed: bool,
    slab_sizes_unparsed: Option<Vec<u8>>,
}

impl Parser {
    fn new() -> Parser {
        let s = Settings::default();
        Parser {
            n: CInts::from_settings(&s),
            s,
            x: Extra::default(),
            err: Vec::new(),
            inter: None,
            protocol_specified: false,
            tcp_specified: false,
            udp_specified: false,
            slab_chunk_size_changed: false,
            slab_sizes_unparsed: None,
        }
    }

    /// Ends the parse: everything printed so far plus `message`.
    fn exit(&mut self, code: i32, message: impl AsRef<[u8]>) -> Exit {
        let mut stderr = std::mem::take(&mut self.err);
        stderr.extend_from_slice(message.as_ref());
        Exit {
            code,
            stdout: Vec::new(),
            stderr,
        }
    }

    fn fail(&mut self, code: i32, message: impl AsRef<[u8]>) -> Outcome {
        Err(self.exit(code, message))
    }

    /// The value of a `-o key=value`, or memcached's "missing" message.
    fn need<'v>(&mut self, value: Option<&'v [u8]>, missing: &str) -> Result<&'v [u8], Exit> {
        value.ok_or_else(|| self.exit(1, format!("{missing}\n")))
    }

    /// Ends the parse successfully with text on stdout (`-h`, `-V`, `-i`).
    fn print_and_exit(&mut self, code: i32, stdout: Vec<u8>) -> Outcome {
        Err(Exit {
            code,
            stdout,
            stderr: std::mem::take(&mut self.err),
        })
    }

    /// One option, as memcached's big `switch`.
    fn option(&mut self, c: u8, arg: Option<&[u8]>) -> Outcome {
        let arg = arg.unwrap_or_default();
        match c {
            b'A' => self.s.shutdown_command = true,
            b'Z' => return self.fail(EX_USAGE, "This server is not built with TLS support.\n"),
            b'a' => self.n.access = strtol(arg, 8).0 as i32,
            b'U' => {
                self.n.udp_port = atoi(arg);
                self.udp_specified = true;
            }
            b'p' => {
                self.n.port = atoi(arg);
                self.tcp_specified = true;
            }
            b's' => self.s.socket_path = Some(lossy(arg)),
            b'm' => self.s.max_bytes = (atoi(arg) as i64 as usize).wrapping_mul(1024 * 1024),
            b'M' => self.s.evict_to_free = false,
            b'c' => return self.max_conns(arg),
            b'h' => return self.print_and_exit_usage(),
            b'i' => return self.print_and_exit(0, license()),
            b'V' => return self.print_and_exit(0, format!("memcached {VERSION}\n").into_bytes()),
            b'k' => self.s.lock_memory = true,
            b'v' => self.s.verbose = self.s.verbose.saturating_add(1),
            b'l' => self.listen(arg),
            b'd' => self.s.daemonize = true,
            b'r' => self.s.max_core = true,
            b'R' => return self.reqs_per_event(arg),
            b'u' => self.s.user = Some(lossy(arg)),
            b'P' => self.s.pid_file = Some(lossy(arg)),
            b'e' => self.s.memory_file = Some(lossy(arg)),
            b'f' => {
                self.s.slab_config = lossy(arg);
                return self.factor(arg);
            }
            b'n' => return self.chunk_size(arg),
            b't' => return self.threads(arg),
            b'D' => return self.delimiter(arg),
            b'L' => return self.large_pages(),
            b'C' => self.s.use_cas = false,
            b'b' => self.s.backlog = atoi(arg),
            b'B' => return self.protocol(arg),
            b'I' => self.n.item_size_max = item_size(arg),
            b'S' => self.s.sasl = true,
            b'F' => self.s.flush_enabled = false,
            b'X' => self.s.dump_enabled = false,
            b'W' => self.x.watch_enabled = false,
            b'Y' => self.s.auth_file = Some(lossy(arg)),
            b'N' => return self.napi_ids(arg),
            b'o' => return self.suboptions(arg),
            b'x' => return self.repl_peer(arg),
            REPL_PORT_OPT => return self.repl_port(arg),
            AOF_FILE => self.s.aof.path = Some(lossy(arg)),
            _ => unreachable!("getopt only returns listed options"),
        }
        Ok(())
    }

    fn max_conns(&mut self, arg: &[u8]) -> Outcome {
        self.n.max_conns = atoi(arg);
        if self.n.max_conns <= 0 {
            return self.fail(1, "Maximum connections must be greater than 0\n");
        }
        Ok(())
    }

    /// memcached appends each `-l` to a comma-joined string, skipping one
    /// that is a substring of what it already has (so `-l 10.0.0.10 -l
    /// 10.0.0.1` keeps only the first).
    fn listen(&mut self, arg: &[u8]) {
        match &mut self.inter {
            Some(inter) if contains(inter, arg) => {}
            Some(inter) => {
                inter.push(b',');
                inter.extend_from_slice(arg);
            }
            None => self.inter = Some(arg.to_vec()),
        }
    }

    fn reqs_per_event(&mut self, arg: &[u8]) -> Outcome {
        self.n.reqs_per_event = atoi(arg);
        if self.n.reqs_per_event == 0 {
            return self.fail(1, "Number of requests per event must be greater than 0\n");
        }
        Ok(())
    }

    fn factor(&mut self, arg: &[u8]) -> Outcome {
        self.s.factor = atof(arg);
        // Written as memcached's `factor <= 1.0` so that NaN passes, as there.
        if self.s.factor <= 1.0 {
            return self.fail(1, "Factor must be greater than 1\n");
        }
        Ok(())
    }

    fn chunk_size(&mut self, arg: &[u8]) -> Outcome {
        self.n.chunk_size = atoi(arg);
        if self.n.chunk_size == 0 {
            return self.fail(1, "Chunk size must be greater than 0\n");
        }
        Ok(())
    }

    fn threads(&mut self, arg: &[u8]) -> Outcome {
        self.n.num_threads = atoi(arg);
        if self.n.num_threads <= 0 {
            return self.fail(1, "Number of threads must be greater than 0\n");
        }
        if self.n.num_threads > 64 {
            self.err.extend_from_slice(
                b"WARNING: Setting a high number of workerthreads is not recommended.\n \
                  Set this value to the number of cores in your machine or less.\n",
            );
        }
        Ok(())
    }

    fn delimiter(&mut self, arg: &[u8]) -> Outcome {
        let Some(&delimiter) = arg.first() else {
            return self.fail(1, "No delimiter specified\n");
        };
        self.s.prefix_delimiter = delimiter;
        self.s.detail_enabled = true;
        Ok(())
    }

    fn large_pages(&mut self) -> Outcome {
        match transparent_huge_pages() {
            Ok(()) => {
                self.s.large_pages = true;
                Ok(())
            }
            Err(why) => {
                self.err.extend_from_slice(why.as_bytes());
                self.fail(
                    1,
                    "Cannot enable large pages on this system\n\
                     (There is no support as of this version)\n",
                )
            }
        }
    }

    fn protocol(&mut self, arg: &[u8]) -> Outcome {
        self.protocol_specified = true;
        self.s.protocol = match arg {
            b"auto" => Protocol::Negotiating,
            b"binary" => Protocol::Binary,
            b"ascii" => Protocol::Ascii,
            _ => {
                let mut message = b"Invalid value for binding protocol: ".to_vec();
                message.extend_from_slice(arg);
                message.extend_from_slice(b"\n -- should be one of auto, binary, or ascii\n");
                return self.fail(EX_USAGE, message);
            }
        };
        Ok(())
    }

    fn napi_ids(&mut self, arg: &[u8]) -> Outcome {
        self.x.napi_ids = atoi(arg);
        if self.x.napi_ids <= 0 {
            return self.fail(1, "Maximum number of NAPI IDs must be greater than 0\n");
        }
        Ok(())
    }

    /// `-o a,b=c,...`, split the way glibc's `getsubopt` splits it.
    fn suboptions(&mut self, list: &[u8]) -> Outcome {
        let mut rest = list;
        while !rest.is_empty() {
            let end = rest.iter().position(|&b| b == b',').unwrap_or(rest.len());
            let token = &rest[..end];
            rest = rest.get(end + 1..).unwrap_or_default();
            let (key, value) = match token.iter().position(|&b| b == b'=') {
                Some(at) => (&token[..at], Some(&token[at + 1..])),
                None => (token, None),
            };
            self.suboption(token, key, value)?;
        }
        Ok(())
    }

    fn suboption(&mut self, token: &[u8], key: &[u8], value: Option<&[u8]>) -> Outcome {
        let key_text = std::str::from_utf8(key).unwrap_or("");
        match key_text {
            "maxconns_fast" => self.s.maxconns_fast = true,
            "no_maxconns_fast" => self.s.maxconns_fast = false,
            "hashpower" => return self.hashpower(value),
            "no_hashexpand" => self.s.hash_expand = false,
            "slab_reassign" => self.s.slab_reassign = true,
            "no_slab_reassign" => self.s.slab_reassign = false,
            "slab_automove" => return self.slab_automove(value),
            "no_slab_automove" => self.n.slab_automove = 0,
            "slab_automove_ratio" => return self.slab_automove_ratio(value),
            "slab_automove_window" => return self.slab_automove_window(value),
            "tail_repair_time" => return self.tail_repair_time(value),
            "hash_algorithm" => return self.hash_algorithm(value),
            "lru_crawler" => self.s.lru_crawler = true,
            "no_lru_crawler" => self.s.lru_crawler = false,
            "lru_crawler_sleep" => return self.lru_crawler_sleep(value),
            "lru_crawler_tocrawl" => return self.lru_crawler_tocrawl(value),
            "lru_maintainer" | "no_lru_maintainer" => {
                self.x.lru_maintainer = key_text == "lru_maintainer";
                self.x.lru_segmented = self.x.lru_maintainer;
            }
            "hot_lru_pct" | "warm_lru_pct" => return self.lru_pct(key_text, value),
            "hot_max_factor" | "warm_max_factor" => return self.max_factor(key_text, value),
            "temporary_ttl" => return self.temporary_ttl(value),
            "idle_timeout" => {
                let value = self.need(value, "Missing numeric argument for idle_timeout")?;
                self.n.idle_timeout = atoi(value);
            }
            "watcher_logbuf_size" | "worker_logbuf_size" => return self.logbuf(key_text, value),
            "slab_sizes" => {
                let value = self.need(value, "Missing slab_sizes argument")?;
                self.slab_sizes_unparsed = Some(value.to_vec());
            }
            "slab_chunk_max" => return self.slab_chunk_max(value),
            "track_sizes" => self.s.track_sizes = true,
            // Accepted no-ops in 1.6.18 too.
            "inline_ascii_resp" | "no_inline_ascii_resp" | "modern" => {}
            "no_chunked_items" => self.n.slab_chunk_max = self.n.slab_page_size,
            "no_modern" => self.no_modern(),
            "drop_privileges" | "no_drop_privileges" => {
                self.x.drop_privileges = key_text == "drop_privileges";
            }
            "resp_obj_mem_limit" => self.err.extend_from_slice(
                b"DEPRECATED: resp_obj_mem_limit no longer used. See read_buf_mem_limit,\n",
            ),
            "read_buf_mem_limit" => return self.read_buf_mem_limit(value),
            "repl_peer" => {
                let value = self.need(value, "Missing repl_peer argument")?;
                return self.repl_peer(value);
            }
            "repl_port" => {
                let value = self.need(value, "Missing repl_port argument")?;
                return self.repl_port(value);
            }
            "sock_cookie_id" => {
                self.x.sock_cookie_id = value.and_then(safe_strtoul).unwrap_or(0);
            }
            _ if AofSettings::is_key(key_text) => {
                if let Err(why) = self.s.aof.set(key_text, value) {
                    return self.fail(1, format!("{why}\n"));
                }
            }
            _ if is_tls_key(key_text) => {
                let message =
                    format!("This server is not built with TLS support (-o {key_text}).\n");
                return self.fail(EX_USAGE, message);
            }
            _ if is_extstore_key(key_text) => {
                let message =
                    format!("This server is not built with extstore support (-o {key_text}).\n");
                return self.fail(EX_USAGE, message);
            }
            _ => {
                let mut message = b"Illegal suboption \"".to_vec();
                message.extend_from_slice(token);
                message.extend_from_slice(b"\"\n");
                return self.fail(1, message);
            }
        }
        Ok(())
    }

    /// `-x host[:port]`: the replication peer. The host is resolved when
    /// the server starts; only the shape is checked here.
    fn repl_peer(&mut self, arg: &[u8]) -> Outcome {
        let text = lossy(arg);
        if memcached::repl::split_peer(&text).is_none() {
            let message = format!("Invalid replication peer \"{text}\": want host[:port]\n");
            return self.fail(EX_USAGE, message);
        }
        self.s.repl.peer = Some(text);
        Ok(())
    }

    /// `--repl-port`: 1 to 65535.
    fn repl_port(&mut self, arg: &[u8]) -> Outcome {
        match safe_strtoul(arg) {
            Some(port @ 1..=65535) => {
                self.s.repl.port = port as u16;
                Ok(())
            }
            _ => {
                let message = format!("Invalid replication port \"{}\"\n", lossy(arg));
                self.fail(EX_USAGE, message)
            }
        }
    }

    fn hashpower(&mut self, value: Option<&[u8]>) -> Outcome {
        let value = self.need(value, "Missing numeric argument for hashpower")?;
        let power = atoi(value);
        self.n.hashpower = power;
        if power < 12 {
            return self.fail(
                1,
                format!("Initial hashtable multiplier of {power} is too low\n"),
            );
        }
        if power > 32 {
            let message = format!(
                "Initial hashtable multiplier of {power} is too high\n\
                 Choose a value based on \"STAT hash_power_level\" from a running instance\n"
            );
            return self.fail(1, message);
        }
        Ok(())
    }

    fn slab_automove(&mut self, value: Option<&[u8]>) -> Outcome {
        // A bare `slab_automove` means 1.
        self.n.slab_automove = value.map_or(1, atoi);
        if !(0..=2).contains(&self.n.slab_automove) {
            return self.fail(1, "slab_automove must be between 0 and 2\n");
        }
        Ok(())
    }

    fn slab_automove_ratio(&mut self, value: Option<&[u8]>) -> Outcome {
        let value = self.need(value, "Missing slab_automove_ratio argument")?;
        let ratio = atof(value);
        self.x.slab_automove_ratio = ratio;
        if ratio <= 0.0 || ratio > 1.0 {
            return self.fail(1, "slab_automove_ratio must be > 0 and < 1\n");
        }
        Ok(())
    }

    fn slab_automove_window(&mut self, value: Option<&[u8]>) -> Outcome {
        let value = self.need(value, "Missing slab_automove_window argument")?;
        self.x.slab_automove_window = atoi(value);
        if self.x.slab_automove_window < 3 {
            return self.fail(1, "slab_automove_window must be > 2\n");
        }
        Ok(())
    }

    fn tail_repair_time(&mut self, value: Option<&[u8]>) -> Outcome {
        let value = self.need(value, "Missing numeric argument for tail_repair_time")?;
        self.n.tail_repair_time = atoi(value);
        if self.n.tail_repair_time < 10 {
            return self.fail(1, "Cannot set tail_repair_time to less than 10 seconds\n");
        }
        Ok(())
    }

    fn hash_algorithm(&mut self, value: Option<&[u8]>) -> Outcome {
        let value = self.need(value, "Missing hash_algorithm argument")?;
        self.x.hash_algorithm = match value {
            b"jenkins" => HashAlgorithm::Jenkins,
            b"murmur3" => HashAlgorithm::Murmur3,
            b"xxh3" => HashAlgorithm::Xxh3,
            _ => {
                return self.fail(
                    1,
                    "Unknown hash_algorithm option (jenkins, murmur3, xxh3)\n",
                );
            }
        };
        Ok(())
    }

    fn lru_crawler_sleep(&mut self, value: Option<&[u8]>) -> Outcome {
        let value = self.need(value, "Missing lru_crawler_sleep value")?;
        self.n.lru_crawler_sleep = atoi(value);
        if !(0..=1_000_000).contains(&self.n.lru_crawler_sleep) {
            return self.fail(1, "LRU crawler sleep must be between 0 and 1 second\n");
        }
        Ok(())
    }

    fn lru_crawler_tocrawl(&mut self, value: Option<&[u8]>) -> Outcome {
        let value = self.need(value, "Missing lru_crawler_tocrawl value")?;
        match safe_strtoul(value) {
            Some(tocrawl) => self.n.lru_crawler_tocrawl = tocrawl,
            None => return self.fail(1, "lru_crawler_tocrawl takes a numeric 32bit value\n"),
        }
        Ok(())
    }

    /// `hot_lru_pct` / `warm_lru_pct`.
    fn lru_pct(&mut self, key: &str, value: Option<&[u8]>) -> Outcome {
        let value = self.need(value, &format!("Missing {key} argument"))?;
        let pct = atoi(value);
        if key == "hot_lru_pct" {
            self.x.hot_lru_pct = pct;
        } else {
            self.x.warm_lru_pct = pct;
        }
        if !(1..80).contains(&pct) {
            return self.fail(1, format!("{key} must be > 1 and < 80\n"));
        }
        Ok(())
    }

    /// `hot_max_factor` / `warm_max_factor`.
    fn max_factor(&mut self, key: &str, value: Option<&[u8]>) -> Outcome {
        let value = self.need(value, &format!("Missing {key} argument"))?;
        let factor = atof(value);
        if key == "hot_max_factor" {
            self.x.hot_max_factor = factor;
        } else {
            self.x.warm_max_factor = factor;
        }
        if factor <= 0.0 {
            return self.fail(1, format!("{key} must be > 0\n"));
        }
        Ok(())
    }

    fn temporary_ttl(&mut self, value: Option<&[u8]>) -> Outcome {
        let value = self.need(value, "Missing temporary_ttl argument")?;
        self.x.temp_lru = true;
        self.x.temporary_ttl = atoi(value);
        Ok(())
    }

    /// `watcher_logbuf_size` / `worker_logbuf_size`, in kilobytes.
    fn logbuf(&mut self, key: &str, value: Option<&[u8]>) -> Outcome {
        let value = self.need(value, &format!("Missing {key} argument"))?;
        let Some(kilobytes) = safe_strtoul(value) else {
            return self.fail(1, format!("could not parse argument to {key}\n"));
        };
        let bytes = kilobytes.wrapping_mul(1024);
        if key == "watcher_logbuf_size" {
            self.x.watcher_logbuf_size = bytes;
        } else {
            self.x.worker_logbuf_size = bytes;
            // memcached 1.6.18 lacks a `break` here and falls through into
            // `slab_sizes`: the same value also becomes the slab size list.
            self.slab_sizes_unparsed = Some(value.to_vec());
        }
        Ok(())
    }

    /// In bytes, whatever the help text says; memcached carries on after a
    /// bad value and then crashes, so here the message ends the parse.
    fn slab_chunk_max(&mut self, value: Option<&[u8]>) -> Outcome {
        let value = self.need(value, "Missing slab_chunk_max argument")?;
        match safe_strtol(value) {
            Some(bytes) => self.n.slab_chunk_max = bytes,
            None => return self.fail(1, "could not parse argument to slab_chunk_max\n"),
        }
        self.slab_chunk_size_changed = true;
        Ok(())
    }

    /// The 1.4-era defaults.
    fn no_modern(&mut self) {
        if !self.slab_chunk_size_changed {
            self.n.slab_chunk_max = self.n.slab_page_size;
        }
        self.s.slab_reassign = false;
        self.n.slab_automove = 0;
        self.s.maxconns_fast = false;
        self.x.lru_segmented = false;
        self.x.hash_algorithm = HashAlgorithm::Jenkins;
        self.s.lru_crawler = false;
        self.x.lru_maintainer = false;
    }

    fn read_buf_mem_limit(&mut self, value: Option<&[u8]>) -> Outcome {
        let value = self.need(value, "Missing read_buf_mem_limit argument")?;
        match safe_strtoul(value) {
            // Megabytes, multiplied in memcached's `uint32_t`.
            Some(mb) => self.n.read_buf_mem_limit = mb.wrapping_mul(1024 * 1024),
            None => return self.fail(1, "could not parse argument to read_buf_mem_limit\n"),
        }
        Ok(())
    }

    /// The checks memcached makes after the option loop, in its order.
    fn finish(mut self) -> Result<Parsed, Exit> {
        self.check_napi()?;
        self.check_item_size()?;
        self.check_slab_chunk_max()?;
        self.parse_slab_sizes()?;
        self.check_lru()?;
        self.check_auth()?;
        self.check_port()?;
        let mut settings = self.to_settings();
        settings.tuning = self.x.clone();
        Ok(Parsed {
            settings,
            extra: self.x,
            warnings: self.err,
        })
    }

    fn check_napi(&mut self) -> Outcome {
        let (napi, threads) = (self.x.napi_ids, self.n.num_threads);
        if napi > threads {
            let message = format!(
                "Number of napi_ids({napi}) cannot be greater than number of threads({threads})\n"
            );
            return self.fail(EX_USAGE, message);
        }
        Ok(())
    }

    fn check_item_size(&mut self) -> Outcome {
        let item = self.n.item_size_max;
        if item < ITEM_SIZE_MAX_LOWER_LIMIT {
            return self.fail(EX_USAGE, "Item max size cannot be less than 1024 bytes.\n");
        }
        if item as usize > self.s.max_bytes / 2 {
            let message = "Cannot set item size limit higher than 1/2 of memory max.\n";
            return self.fail(EX_USAGE, message);
        }
        if item > ITEM_SIZE_MAX_UPPER_LIMIT {
            return self.fail(
                EX_USAGE,
                "Cannot set item size limit higher than a gigabyte.\n",
            );
        }
        if item > 1024 * 1024 && !self.slab_chunk_size_changed {
            // memcached: "Ideal new default is 16k, but needs stitching."
            self.n.slab_chunk_max = self.n.slab_page_size / 2;
        }
        Ok(())
    }

    fn check_slab_chunk_max(&mut self) -> Outcome {
        let (chunk, item, page) = (
            self.n.slab_chunk_max,
            self.n.item_size_max,
            self.n.slab_page_size,
        );
        if chunk > item {
            let message = format!(
                "slab_chunk_max (bytes: {chunk}) cannot be larger than -I (item_size_max {item})\n"
            );
            return self.fail(EX_USAGE, message);
        }
        // memcached divides by zero here; refuse instead.
        if chunk == 0 {
            return self.fail(
                EX_USAGE,
                "slab_chunk_max (bytes: 0) must be greater than 0\n",
            );
        }
        // `wrapping_rem` is C's `%` (the sign follows the dividend).
        if item.wrapping_rem(chunk) != 0 {
            let message = format!(
                "-I (item_size_max: {item}) must be evenly divisible by slab_chunk_max (bytes: {chunk})\n"
            );
            return self.fail(EX_USAGE, message);
        }
        if page.wrapping_rem(chunk) != 0 {
            let message = format!(
                "slab_chunk_max (bytes: {chunk}) must divide evenly into {page} (slab_page_size)\n"
            );
            return self.fail(EX_USAGE, message);
        }
        // Negative powers of two pass memcached's checks and then break
        // its slab allocator; refuse them.
        if chunk < 0 {
            return self.fail(
                EX_USAGE,
                format!("slab_chunk_max (bytes: {chunk}) must be greater than 0\n"),
            );
        }
        Ok(())
    }

    /// memcached's `_parse_slab_sizes`: increasing sizes separated by `-`.
    fn parse_slab_sizes(&mut self) -> Outcome {
        let Some(list) = self.slab_sizes_unparsed.take() else {
            return Ok(());
        };
        if list.is_empty() {
            return self.fail(EX_USAGE, ""); // memcached exits without a word
        }
        // memcached compares these `int`s with a `uint32_t` size, so C's
        // conversions make a negative -n reject every size.
        let min = self.n.chunk_size as u32;
        let max = self.n.slab_chunk_max as u32;
        let mut sizes: Vec<u32> = Vec::new();
        for part in list.split(|&b| b == b'-').filter(|p| !p.is_empty()) {
            let last = sizes.last().copied().unwrap_or(0);
            let size = match safe_strtoul(part) {
                Some(size) if (min..=max).contains(&size) => size,
                // memcached's out-parameter is 0 after a failed parse.
                parsed => {
                    let size = parsed.unwrap_or(0);
                    return self.fail(
                        EX_USAGE,
                        format!("slab size {size} is out of valid range\n"),
                    );
                }
            };
            if last >= size {
                let message = format!(
                    "slab size {size} cannot be lower than or equal to a previous class size\n"
                );
                return self.fail(EX_USAGE, message);
            }
            if size <= last.wrapping_add(CHUNK_ALIGN_BYTES) {
                let message = format!(
                    "slab size {size} must be at least {CHUNK_ALIGN_BYTES} bytes larger than previous class\n"
                );
                return self.fail(EX_USAGE, message);
            }
            sizes.push(size);
            if sizes.len() >= MAX_NUMBER_OF_SLAB_CLASSES - 1 {
                return self.fail(EX_USAGE, "too many slab classes specified\n");
            }
        }
        self.x.slab_sizes = Some(sizes);
        self.s.slab_config = String::from_utf8_lossy(&list).into_owned();
        Ok(())
    }

    fn check_lru(&mut self) -> Outcome {
        if self.x.hot_lru_pct + self.x.warm_lru_pct > 80 {
            let message = "hot_lru_pct + warm_lru_pct cannot be more than 80% combined\n";
            return self.fail(EX_USAGE, message);
        }
        if self.x.temp_lru && !self.x.lru_maintainer {
            return self.fail(
                EX_USAGE,
                "temporary_ttl requires lru_maintainer to be enabled\n",
            );
        }
        Ok(())
    }

    /// SASL forces the binary protocol and ascii auth the ascii one, unless
    /// `-B` said otherwise (then it is an error).
    fn check_auth(&mut self) -> Outcome {
        if self.s.sasl {
            if !self.protocol_specified {
                self.s.protocol = Protocol::Binary;
            } else if self.s.protocol != Protocol::Binary {
                let message = "ERROR: You cannot allow the ASCII protocol while using SASL.\n";
                return self.fail(EX_USAGE, message);
            }
            if self.n.udp_port != 0 {
                let message = "ERROR: Cannot enable UDP while using binary SASL authentication.\n";
                return self.fail(EX_USAGE, message);
            }
        }
        if self.s.auth_file.is_some() {
            if !self.protocol_specified {
                self.s.protocol = Protocol::Ascii;
            } else if self.s.protocol != Protocol::Ascii {
                let message = "ERROR: You cannot allow the BINARY protocol while using ascii \
                               authentication tokens.\n";
                return self.fail(EX_USAGE, message);
            }
        }
        Ok(())
    }

    /// `-U` alone also moves the TCP port; only the TCP port is range-checked.
    fn check_port(&mut self) -> Outcome {
        if self.udp_specified && self.n.udp_port != 0 && !self.tcp_specified {
            self.n.port = self.n.udp_port;
        }
        if self.n.port > 65535 {
            return self.fail(
                EX_USAGE,
                format!("ERROR: Invalid port number {}.\n", self.n.port),
            );
        }
        Ok(())
    }

    /// The validated C values, in `Settings`' types. Out-of-range values
    /// memcached lets through map onto what memcached does with them: ports
    /// wrap to 16 bits as in its `bind`, negative counts become their floor.
    fn to_settings(&self) -> Settings {
        let n = &self.n;
        let mut s = self.s.clone();
        s.port = n.port as u16;
        s.udp_port = n.udp_port as u16;
        s.access_mask = n.access as u32;
        s.max_conns = n.max_conns as usize;
        s.chunk_size = n.chunk_size.max(0) as usize;
        s.num_threads = n.num_threads as usize;
        // memcached livelocks on a negative value; one request per event is
        // the nearest sane reading.
        s.reqs_per_event = n.reqs_per_event.max(1) as usize;
        s.item_size_max = n.item_size_max as usize;
        s.slab_chunk_size_max = n.slab_chunk_max as usize;
        s.hashpower_init = n.hashpower as u32;
        s.tail_repair_time = n.tail_repair_time as u32;
        s.lru_crawler_sleep = n.lru_crawler_sleep as u32;
        s.lru_crawler_tocrawl = n.lru_crawler_tocrawl;
        s.slab_automove = n.slab_automove as u8;
        // memcached subtracts it from an unsigned clock, so wrapping keeps
        // its arithmetic.
        s.idle_timeout = n.idle_timeout as u32;
        s.read_buf_mem_limit = n.read_buf_mem_limit as usize;
        s.listen = self.listen_list();
        s
    }

    /// memcached later splits `inter` on `;` and `,`, skipping empties.
    fn listen_list(&self) -> Vec<String> {
        let Some(inter) = &self.inter else {
            return Vec::new();
        };
        inter
            .split(|&b| b == b',' || b == b';')
            .filter(|part| !part.is_empty())
            .map(lossy)
            .collect()
    }

    fn print_and_exit_usage(&mut self) -> Outcome {
        let (text, code) = self.usage();
        self.print_and_exit(code, text)
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `-I`: a number with an optional k/m suffix, in memcached's `int`.
fn item_size(arg: &[u8]) -> i32 {
    let (number, scale) = match arg.split_last() {
        Some((b'k' | b'K', number)) => (number, 1024),
        Some((b'm' | b'M', number)) => (number, 1024 * 1024),
        _ => (arg, 1),
    };
    atoi(number).wrapping_mul(scale)
}

fn is_tls_key(key: &str) -> bool {
    matches!(
        key,
        "ssl_chain_cert"
            | "ssl_key"
            | "ssl_verify_mode"
            | "ssl_keyformat"
            | "ssl_ciphers"
            | "ssl_ca_cert"
            | "ssl_wbuf_size"
            | "ssl_session_cache"
            | "ssl_kernel_tls"
            | "ssl_min_version"
    )
}

/// The keys memcached hands to its extstore configuration.
fn is_extstore_key(key: &str) -> bool {
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

/// memcached's Linux `enable_large_pages()`: fine unless transparent huge
/// pages are missing or set to `never`; the error is its explanation.
fn transparent_huge_pages() -> Result<(), &'static str> {
    const PATHS: [&str; 2] = [
        "/sys/kernel/mm/transparent_hugepage/enabled",
        "/sys/kernel/mm/redhat_transparent_hugepage/enabled",
    ];
    let Some(mut file) = PATHS.iter().find_map(|p| std::fs::File::open(p).ok()) else {
        return Err("Transparent huge pages support not detected.\nWill use default page size.\n");
    };
    let mut buf = [0u8; 127];
    let read = std::io::Read::read(&mut file, &mut buf).unwrap_or(0);
    if read == 0 {
        return Err(
            "Transparent huge pages could not read the configuration.\nWill use default page size.\n",
        );
    }
    if contains(&buf[..read], b"[never]") {
        return Err("Transparent huge pages support disabled.\nWill use default page size.\n");
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// -h and -i
// ---------------------------------------------------------------------------

impl Parser {
    /// memcached's `usage()`, which prints the *current* values as the
    /// defaults and gives up (exit 1) when some of them differ from the
    /// defaults its text hard-codes. TLS, extstore and -N lines are left
    /// out: this server has none of them.
    fn usage(&self) -> (Vec<u8>, i32) {
        let mut out = Vec::new();
        if let Err(param) = self.usage_into(&mut out) {
            let _ = writeln!(
                out,
                "Default value of [{param}] has changed. Modify the help text and default value check."
            );
            return (out, 1);
        }
        (out, 0)
    }

    fn usage_into(&self, out: &mut Vec<u8>) -> Result<(), &'static str> {
        self.usage_basics(out);
        verify_default("udp-port", self.n.udp_port == 0)?;
        self.usage_tuning(out);
        self.usage_extended(out);
        verify_default("read_buf_mem_limit", self.n.read_buf_mem_limit == 0)?;
        self.usage_lru(out);
        verify_default("tail_repair_time", self.n.tail_repair_time == 0)?;
        verify_default("lru_crawler_tocrawl", self.n.lru_crawler_tocrawl == 0)?;
        verify_default("idle_timeout", self.n.idle_timeout == 0)?;
        out.extend_from_slice(
            b"   - sock_cookie_id:      attributes an ID to a socket for ip filtering/firewalls \n",
        );
        self.usage_aof(out);
        self.usage_replication(out);
        Ok(())
    }

    fn usage_basics(&self, out: &mut Vec<u8>) {
        let (s, n) = (&self.s, &self.n);
        let _ = write!(
            out,
            "memcached {VERSION}\n\
             -p, --port=<num>          TCP port to listen on (default: {})\n\
             -U, --udp-port=<num>      UDP port to listen on (default: {}, off)\n\
             -s, --unix-socket=<file>  UNIX socket to listen on (disables network support)\n\
             -a, --unix-mask=<mask>    access mask for UNIX socket, in octal (default: {:o})\n\
             -A, --enable-shutdown     enable ascii \"shutdown\" command\n\
             -l, --listen=<addr>       interface to listen on (default: INADDR_ANY)\n\
             -d, --daemon              run as a daemon\n\
             -r, --enable-coredumps    maximize core file limit\n\
             -u, --user=<user>         assume identity of <username> (only when run as root)\n\
             -m, --memory-limit=<num>  item memory in megabytes (default: {})\n\
             -M, --disable-evictions   return error on memory exhausted instead of evicting\n\
             -c, --conn-limit=<num>    max simultaneous connections (default: {})\n\
             -k, --lock-memory         lock down all paged memory\n\
             -v, --verbose             verbose (print errors/warnings while in event loop)\n\
             -vv                       very verbose (also print client commands/responses)\n\
             -vvv                      extremely verbose (internal state transitions)\n\
             -h, --help                print this help and exit\n\
             -i, --license             print memcached and libevent license\n\
             -V, --version             print version and exit\n\
             -P, --pidfile=<file>      save PID in <file>, only used with -d option\n\
             -f, --slab-growth-factor=<num> chunk size growth factor (default: {:>2})\n\
             -n, --slab-min-size=<bytes> min space used for key+value+flags (default: {})\n",
            n.port,
            n.udp_port,
            n.access as u32,
            s.max_bytes / (1 << 20),
            n.max_conns,
            c_fixed(s.factor, 2),
            n.chunk_size,
        );
    }

    fn usage_tuning(&self, out: &mut Vec<u8>) {
        let (s, n) = (&self.s, &self.n);
        out.extend_from_slice(
            b"-L, --enable-largepages  try to use large memory pages (if available)\n\
              -D <char>     Use <char> as the delimiter between key prefixes and IDs.\n\
              \x20             This is used for per-prefix stats reporting. The default is\n\
              \x20             \"",
        );
        out.push(s.prefix_delimiter);
        let _ = write!(
            out,
            "\" (colon). If this option is specified, stats collection\n              \
             is turned on automatically; if not, then it may be turned on\n              \
             by sending the \"stats detail on\" command to the server.\n\
             -t, --threads=<num>       number of threads to use (default: {})\n\
             -R, --max-reqs-per-event  maximum number of requests per event, limits the\n                          \
             requests processed per connection to prevent \n                          \
             starvation (default: {})\n\
             -C, --disable-cas         disable use of CAS\n\
             -b, --listen-backlog=<num> set the backlog queue limit (default: {})\n\
             -B, --protocol=<name>     protocol - one of ascii, binary, or auto (default: {})\n\
             -I, --max-item-size=<num> adjusts max item size\n                          \
             (default: {}m, min: {}k, max: {}m)\n\
             -S, --enable-sasl         turn on Sasl authentication\n\
             -F, --disable-flush-all   disable flush_all command\n\
             -X, --disable-dumping     disable stats cachedump and lru_crawler metadump\n\
             -W  --disable-watch       disable watch commands (live logging)\n\
             -Y, --auth-file=<file>    (EXPERIMENTAL) enable ASCII protocol authentication. format:\n                          \
             user:pass\\nuser2:pass2\\n\n\
             -e, --memory-file=<file>  (EXPERIMENTAL) mmap a file for item memory.\n                          \
             use only in ram disks or persistent memory mounts!\n                          \
             enables restartable cache (stop with SIGUSR1)\n",
            n.num_threads,
            n.reqs_per_event,
            s.backlog,
            s.protocol.name(),
            n.item_size_max / (1 << 20),
            ITEM_SIZE_MAX_LOWER_LIMIT / (1 << 10),
            ITEM_SIZE_MAX_UPPER_LIMIT / (1 << 20),
        );
    }

    fn usage_extended(&self, out: &mut Vec<u8>) {
        let (s, n) = (&self.s, &self.n);
        let _ = write!(
            out,
            "-o, --extended            comma separated list of extended options\n                          \
             most options have a 'no_' prefix to disable\n   \
             - maxconns_fast:       immediately close new connections after limit (default: {})\n   \
             - hashpower:           an integer multiplier for how large the hash\n                          \
             table should be. normally grows at runtime. (default starts at: {})\n                          \
             set based on \"STAT hash_power_level\"\n   \
             - tail_repair_time:    time in seconds for how long to wait before\n                          \
             forcefully killing LRU tail item.\n                          \
             disabled by default; very dangerous option.\n   \
             - hash_algorithm:      the hash table algorithm\n                          \
             default is murmur3 hash. options: jenkins, murmur3, xxh3\n   \
             - no_lru_crawler:      disable LRU Crawler background thread.\n   \
             - lru_crawler_sleep:   microseconds to sleep between items\n                          \
             default is {}.\n   \
             - lru_crawler_tocrawl: max items to crawl per slab per run\n                          \
             default is {} (unlimited)\n   \
             - read_buf_mem_limit:  limit in megabytes for connection read/response buffers.\n                          \
             do not adjust unless you have high (20k+) conn. limits.\n                          \
             0 means unlimited (default: {})\n",
            if s.maxconns_fast {
                "enabled"
            } else {
                "disabled"
            },
            n.hashpower,
            n.lru_crawler_sleep,
            n.lru_crawler_tocrawl,
            n.read_buf_mem_limit,
        );
    }

    fn usage_lru(&self, out: &mut Vec<u8>) {
        let (n, x) = (&self.n, &self.x);
        let _ = write!(
            out,
            "   - no_lru_maintainer:   disable new LRU system + background thread.\n   \
             - hot_lru_pct:         pct of slab memory to reserve for hot lru.\n                          \
             (requires lru_maintainer, default pct: {})\n   \
             - warm_lru_pct:        pct of slab memory to reserve for warm lru.\n                          \
             (requires lru_maintainer, default pct: {})\n   \
             - hot_max_factor:      items idle > cold lru age * drop from hot lru. (default: {})\n   \
             - warm_max_factor:     items idle > cold lru age * this drop from warm. (default: {})\n   \
             - temporary_ttl:       TTL's below get separate LRU, can't be evicted.\n                          \
             (requires lru_maintainer, default: {})\n   \
             - idle_timeout:        timeout for idle connections. (default: {}, no timeout)\n   \
             - slab_chunk_max:      (EXPERIMENTAL) maximum slab size in kilobytes. use extreme care. (default: {})\n   \
             - watcher_logbuf_size: size in kilobytes of per-watcher write buffer. (default: {})\n   \
             - worker_logbuf_size:  size in kilobytes of per-worker-thread buffer\n                          \
             read by background thread, then written to watchers. (default: {})\n   \
             - track_sizes:         enable dynamic reports for 'stats sizes' command.\n   \
             - no_hashexpand:       disables hash table expansion (dangerous)\n   \
             - modern:              enables options which will be default in future.\n                          \
             currently: nothing\n   \
             - no_modern:           uses defaults of previous major version (1.4.x)\n",
            x.hot_lru_pct,
            x.warm_lru_pct,
            c_fixed(x.hot_max_factor, 2),
            c_fixed(x.warm_max_factor, 2),
            x.temporary_ttl,
            n.idle_timeout,
            n.slab_chunk_max / (1 << 10),
            x.watcher_logbuf_size / (1 << 10),
            x.worker_logbuf_size / (1 << 10),
        );
    }
}

impl Parser {
    /// Our replication options (not memcached's), after all of its text so
    /// that everything before them stays memcached's byte for byte.
    fn usage_replication(&self, out: &mut Vec<u8>) {
        let _ = write!(
            out,
            "Replication (not in memcached):\n\
             -x, --repl-peer=<host[:port]> replicate with the peer node (repcached's -x);\n                          \
             <port> defaults to the replication port\n    \
             --repl-port=<num>     replication port to listen on (default: {})\n   \
             - repl_peer:           the same as -x\n   \
             - repl_port:           the same as --repl-port\n",
            self.s.repl.port,
        );
    }

    /// This server's additions, after memcached's own text.
    fn usage_aof(&self, out: &mut Vec<u8>) {
        let a = AofSettings::default();
        let _ = write!(
            out,
            "Persistence (not in memcached):\n\
             --aof-file=<file>         append every change to <file>; replay it at start\n   \
             - aof:                 the same as --aof-file\n   \
             - aof_sync:            always, everysec or no (default: {})\n   \
             - aof_rewrite_pct:     rewrite the file when it grew this many percent\n                          \
             since the last rewrite; 0 never (default: {})\n   \
             - aof_rewrite_min:     ... and is at least this big (default: {}m)\n   \
             - aof_fix:             cut a corrupt file at its last good record\n",
            a.sync.name(),
            a.rewrite_pct,
            a.rewrite_min >> 20,
        );
    }
}

fn verify_default(param: &'static str, holds: bool) -> Result<(), &'static str> {
    if holds { Ok(()) } else { Err(param) }
}

/// `-i`: our own notice (memcached's prints its BSD license and
/// libevent's, neither of which this program contains).
fn license() -> Vec<u8> {
    format!(
        "memcached {VERSION}\n\n\
         This program is an independent reimplementation of the memcached server\n\
         in Rust. It reproduces the command line, protocols and messages of\n\
         memcached {VERSION} so that it can stand in for it, but it contains no code\n\
         from memcached or from libevent: it is a single-threaded epoll server\n\
         written from scratch. It is provided as is, without warranty of any kind.\n"
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Parsed, Exit> {
        let mut argv = vec!["memcached"];
        argv.extend_from_slice(args);
        parse_args(&argv)
    }

    fn ok(args: &[&str]) -> Parsed {
        match parse(args) {
            Ok(parsed) => parsed,
            Err(exit) => panic!(
                "{args:?} failed ({}): {}",
                exit.code,
                String::from_utf8_lossy(&exit.stderr)
            ),
        }
    }

    fn settings(args: &[&str]) -> Settings {
        ok(args).settings
    }

    /// The exit code and stderr of a command line that must not start.
    fn err(args: &[&str]) -> (i32, String) {
        match parse(args) {
            Ok(_) => panic!("{args:?} was accepted"),
            Err(exit) => (
                exit.code,
                String::from_utf8_lossy(&exit.stderr).into_owned(),
            ),
        }
    }

    fn stdout(args: &[&str]) -> (i32, String) {
        match parse(args) {
            Ok(_) => panic!("{args:?} was accepted"),
            Err(exit) => (
                exit.code,
                String::from_utf8_lossy(&exit.stdout).into_owned(),
            ),
        }
    }

    #[test]
    fn no_options_gives_the_defaults() {
        let parsed = ok(&[]);
        let (s, d) = (&parsed.settings, Settings::default());
        assert_eq!(s.port, d.port);
        assert_eq!(s.max_bytes, d.max_bytes);
        assert_eq!(s.item_size_max, d.item_size_max);
        assert_eq!(s.slab_chunk_size_max, d.slab_chunk_size_max);
        assert_eq!(s.protocol, Protocol::Negotiating);
        assert!(s.listen.is_empty());
        assert_eq!(parsed.extra, Extra::default());
        assert!(parsed.warnings.is_empty());
    }

    #[test]
    fn verbose_counts_every_v() {
        assert_eq!(settings(&["-v"]).verbose, 1);
        assert_eq!(settings(&["-vv"]).verbose, 2);
        assert_eq!(settings(&["-vvv"]).verbose, 3);
        assert_eq!(
            settings(&["-v", "-v", "--verbose", "--verbose=x"]).verbose,
            4
        );
        assert_eq!(settings(&["-vvd"]).verbose, 2);
    }

    #[test]
    fn short_options_take_attached_or_next_values() {
        assert_eq!(settings(&["-p1234"]).port, 1234);
        assert_eq!(settings(&["-p", "1234"]).port, 1234);
        assert_eq!(settings(&["-vp", "99"]).port, 99);
        assert_eq!(settings(&["-c", "10", "-m", "128"]).max_conns, 10);
        // A value is taken even when it looks like an option.
        assert_eq!(settings(&["-u", "-p"]).user.as_deref(), Some("-p"));
    }

    #[test]
    fn long_options_and_abbreviations() {
        assert_eq!(settings(&["--port=1234"]).port, 1234);
        assert_eq!(settings(&["--port", "1234"]).port, 1234);
        assert_eq!(settings(&["--po=77"]).port, 77);
        assert_eq!(settings(&["--memory-limit=128"]).max_bytes, 128 << 20);
        assert!(!settings(&["--disable-cas"]).use_cas);
        assert_eq!(settings(&["--napi-ids=2"]).port, 11211);
    }

    #[test]
    fn non_options_are_skipped_and_double_dash_ends_options() {
        assert_eq!(settings(&["foo", "-p", "5", "-"]).port, 5);
        assert_eq!(settings(&["--", "-f", "0.5"]).factor, 1.25);
    }

    #[test]
    fn numbers_parse_like_atoi() {
        assert_eq!(settings(&["-p", "abc"]).port, 0);
        assert_eq!(settings(&["-p", " 12x"]).port, 12);
        assert_eq!(settings(&["-p", "+7"]).port, 7);
        assert_eq!(settings(&["-m", "1g", "-I", "512k"]).max_bytes, 1 << 20);
        assert_eq!(settings(&["-b", "-1"]).backlog, -1);
        assert_eq!(settings(&["-a", "644"]).access_mask, 0o644);
        assert_eq!(settings(&["-a", "9"]).access_mask, 0);
        // A UDP port wraps to 16 bits, as memcached's bind does.
        assert_eq!(settings(&["-p", "0", "-U", "70000"]).udp_port, 4464);
    }

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
    fn listen_accumulates_and_splits() {
        let s = settings(&["-l", "127.0.0.1", "-l", "10.0.0.1:1,10.0.0.2;[::1]:3"]);
        assert_eq!(s.listen, ["127.0.0.1", "10.0.0.1:1", "10.0.0.2", "[::1]:3"]);
        // memcached drops a value that is a substring of earlier ones.
        let s = settings(&["-l", "10.0.0.10", "-l", "10.0.0.1", "-l", "10.0.0.10"]);
        assert_eq!(s.listen, ["10.0.0.10"]);
    }

    #[test]
    fn item_size_suffixes_and_chunk_rules() {
        let s = settings(&["-I", "512k"]);
        assert_eq!(
            (s.item_size_max, s.slab_chunk_size_max),
            (512 << 10, 512 << 10)
        );
        let s = settings(&["-I", "2m"]);
        assert_eq!(
            (s.item_size_max, s.slab_chunk_size_max),
            (2 << 20, 512 << 10)
        );
        let s = settings(&["-I", "3M", "-m", "64"]);
        assert_eq!(s.item_size_max, 3 << 20);
        let s = settings(&["-I", "1048576"]);
        assert_eq!(s.item_size_max, 1 << 20);
        // An explicit slab_chunk_max survives -I above 1m.
        let s = settings(&["-I", "2m", "-o", "slab_chunk_max=1048576"]);
        assert_eq!(s.slab_chunk_size_max, 1 << 20);
        assert_eq!(
            settings(&["-o", "no_chunked_items"]).slab_chunk_size_max,
            1 << 20
        );
        assert_eq!(
            settings(&["-o", "no_chunked_items", "-I", "2m"]).slab_chunk_size_max,
            512 << 10
        );
        assert_eq!(
            settings(&["-o", "slab_chunk_max=16384"]).slab_chunk_size_max,
            16384
        );
    }

    #[test]
    fn item_size_errors() {
        let usage = |m: &str| (EX_USAGE, format!("{m}\n"));
        assert_eq!(
            err(&["-I", "2k"]),
            usage("slab_chunk_max (bytes: 524288) cannot be larger than -I (item_size_max 2048)")
        );
        assert_eq!(
            err(&["-I", "1000"]),
            usage("Item max size cannot be less than 1024 bytes.")
        );
        assert_eq!(
            err(&["-I", "2048m"]),
            usage("Item max size cannot be less than 1024 bytes.")
        );
        assert_eq!(
            err(&["-I", ""]),
            usage("Item max size cannot be less than 1024 bytes.")
        );
        assert_eq!(
            err(&["-I", "40m"]),
            usage("Cannot set item size limit higher than 1/2 of memory max.")
        );
        assert_eq!(
            err(&["-I", "1025m", "-m", "4096"]),
            usage("Cannot set item size limit higher than a gigabyte.")
        );
        assert_eq!(
            err(&["-I", "600k"]),
            usage(
                "-I (item_size_max: 614400) must be evenly divisible by slab_chunk_max (bytes: 524288)"
            )
        );
        assert_eq!(
            err(&["-I", "4m", "-o", "slab_chunk_max=2097152"]),
            usage(
                "slab_chunk_max (bytes: 2097152) must divide evenly into 1048576 (slab_page_size)"
            )
        );
        assert_eq!(err(&["-o", "slab_chunk_max=-2"]).0, EX_USAGE);
        assert_eq!(err(&["-o", "slab_chunk_max=0"]).0, EX_USAGE);
    }

    #[test]
    fn option_value_errors() {
        assert_eq!(
            err(&["-f", "0.5"]),
            (1, "Factor must be greater than 1\n".into())
        );
        assert_eq!(
            err(&["-f", "abc"]),
            (1, "Factor must be greater than 1\n".into())
        );
        assert!(settings(&["-f", "nan"]).factor.is_nan());
        assert_eq!(
            err(&["-c", "0"]),
            (1, "Maximum connections must be greater than 0\n".into())
        );
        assert_eq!(
            err(&["-t", "0"]),
            (1, "Number of threads must be greater than 0\n".into())
        );
        assert_eq!(
            err(&["-n", "0"]),
            (1, "Chunk size must be greater than 0\n".into())
        );
        assert_eq!(
            err(&["-R", "0"]).1,
            "Number of requests per event must be greater than 0\n"
        );
        assert_eq!(err(&["-D", ""]), (1, "No delimiter specified\n".into()));
        assert_eq!(
            err(&["-B", "foo"]),
            (
                EX_USAGE,
                "Invalid value for binding protocol: foo\n -- should be one of auto, binary, or ascii\n"
                    .into()
            )
        );
        assert_eq!(
            err(&["-p", "70000"]),
            (EX_USAGE, "ERROR: Invalid port number 70000.\n".into())
        );
        assert_eq!(
            err(&["-U", "70000"]).1,
            "ERROR: Invalid port number 70000.\n"
        );
        assert_eq!(
            err(&["-N", "8"]).1,
            "Number of napi_ids(8) cannot be greater than number of threads(4)\n"
        );
        assert_eq!(
            err(&["-Z"]),
            (
                EX_USAGE,
                "This server is not built with TLS support.\n".into()
            )
        );
    }

    #[test]
    fn first_error_wins_and_warnings_come_first() {
        assert_eq!(
            err(&["-f", "0.5", "-q"]).1,
            "Factor must be greater than 1\n"
        );
        assert_eq!(
            err(&["-q", "-f", "0.5"]).1,
            "memcached: invalid option -- 'q'\nIllegal argument \"?\"\n"
        );
        let (code, text) = err(&["-t", "100", "-n", "0"]);
        assert_eq!(code, 1);
        assert_eq!(
            text,
            "WARNING: Setting a high number of workerthreads is not recommended.\n \
             Set this value to the number of cores in your machine or less.\n\
             Chunk size must be greater than 0\n"
        );
        assert!(!ok(&["-t", "100"]).warnings.is_empty());
    }

    #[test]
    fn getopt_errors() {
        let bad = |args: &[&str], first: &str| {
            assert_eq!(
                err(args),
                (1, format!("memcached: {first}\nIllegal argument \"?\"\n"))
            );
        };
        bad(&["-q"], "invalid option -- 'q'");
        bad(&["-p"], "option requires an argument -- 'p'");
        bad(&["--bogus=5"], "unrecognized option '--bogus=5'");
        bad(&["--help=3"], "option '--help' doesn't allow an argument");
        bad(&["--port"], "option '--port' requires an argument");
        bad(
            &["--ver"],
            "option '--ver' is ambiguous; possibilities: '--version' '--verbose'",
        );
        bad(
            &["--list=x"],
            "option '--list=x' is ambiguous; possibilities: '--listen' '--listen-backlog'",
        );
    }

    #[test]
    fn extended_options_fill_settings() {
        let parsed = ok(&[
            "-o",
            "no_maxconns_fast,hashpower=20,no_hashexpand,idle_timeout=30,read_buf_mem_limit=2",
            "-o",
            "no_lru_crawler,lru_crawler_sleep=50,lru_crawler_tocrawl=9,track_sizes",
            "--extended=no_slab_reassign,slab_automove=2,tail_repair_time=60,hash_algorithm=xxh3",
        ]);
        let s = &parsed.settings;
        assert!(!s.maxconns_fast && !s.hash_expand && !s.lru_crawler && !s.slab_reassign);
        assert!(s.track_sizes);
        assert_eq!(s.hashpower_init, 20);
        assert_eq!(s.idle_timeout, 30);
        assert_eq!(s.read_buf_mem_limit, 2 << 20);
        assert_eq!((s.lru_crawler_sleep, s.lru_crawler_tocrawl), (50, 9));
        assert_eq!((s.slab_automove, s.tail_repair_time), (2, 60));
        assert_eq!(parsed.extra.hash_algorithm, HashAlgorithm::Xxh3);
        assert_eq!(settings(&["-o", "slab_automove"]).slab_automove, 1);
        // Order matters: the last word wins.
        assert!(settings(&["-o", "no_lru_crawler,lru_crawler"]).lru_crawler);
        assert!(ok(&["-o", ""]).warnings.is_empty());
    }

    #[test]
    fn no_modern_restores_old_defaults() {
        let parsed = ok(&["-o", "no_modern"]);
        let s = &parsed.settings;
        assert_eq!(s.slab_chunk_size_max, s.slab_page_size);
        assert!(!s.slab_reassign && !s.maxconns_fast && !s.lru_crawler);
        assert_eq!(s.slab_automove, 0);
        assert_eq!(parsed.extra.hash_algorithm, HashAlgorithm::Jenkins);
    }

    #[test]
    fn extended_option_errors() {
        let e = |o: &str| err(&["-o", o]);
        assert_eq!(e("bogus"), (1, "Illegal suboption \"bogus\"\n".into()));
        assert_eq!(
            e("maxconns_fast,bogus=5").1,
            "Illegal suboption \"bogus=5\"\n"
        );
        assert_eq!(e(",").1, "Illegal suboption \"\"\n");
        assert_eq!(e("hashpower").1, "Missing numeric argument for hashpower\n");
        assert_eq!(
            e("hashpower=abc").1,
            "Initial hashtable multiplier of 0 is too low\n"
        );
        assert!(
            e("hashpower=33")
                .1
                .starts_with("Initial hashtable multiplier of 33 is too high\n")
        );
        assert_eq!(
            e("slab_automove=3").1,
            "slab_automove must be between 0 and 2\n"
        );
        assert_eq!(
            e("tail_repair_time=5").1,
            "Cannot set tail_repair_time to less than 10 seconds\n"
        );
        assert_eq!(
            e("hash_algorithm=md5").1,
            "Unknown hash_algorithm option (jenkins, murmur3, xxh3)\n"
        );
        assert_eq!(
            e("lru_crawler_tocrawl=-1").1,
            "lru_crawler_tocrawl takes a numeric 32bit value\n"
        );
        assert_eq!(e("hot_lru_pct=80").1, "hot_lru_pct must be > 1 and < 80\n");
        assert_eq!(
            e("hot_lru_pct=50,warm_lru_pct=40"),
            (
                EX_USAGE,
                "hot_lru_pct + warm_lru_pct cannot be more than 80% combined\n".into()
            )
        );
        assert_eq!(
            e("temporary_ttl=5,no_lru_maintainer").1,
            "temporary_ttl requires lru_maintainer to be enabled\n"
        );
        assert_eq!(
            e("read_buf_mem_limit=x").1,
            "could not parse argument to read_buf_mem_limit\n"
        );
        assert_eq!(
            e("slab_chunk_max=abc").1,
            "could not parse argument to slab_chunk_max\n"
        );
        assert_eq!(
            e("slab_sizes=100-104").1,
            "slab size 104 must be at least 8 bytes larger than previous class\n"
        );
        assert_eq!(
            e("worker_logbuf_size=10").1,
            "slab size 10 is out of valid range\n"
        );
        assert_eq!(e("ext_path=/tmp/x:1G").0, EX_USAGE);
        assert_eq!(e("ssl_key=x").0, EX_USAGE);
        assert_eq!(
            e("proxy_config=x").1,
            "Illegal suboption \"proxy_config=x\"\n"
        );
    }

    #[test]
    fn slab_sizes_are_parsed() {
        let parsed = ok(&["-o", "slab_sizes=100-200--400"]);
        assert_eq!(parsed.extra.slab_sizes, Some(vec![100, 200, 400]));
        let (code, text) = err(&["-n", "-5", "-o", "slab_sizes=100"]);
        assert_eq!(
            (code, text.as_str()),
            (EX_USAGE, "slab size 100 is out of valid range\n")
        );
    }

    #[test]
    fn deprecated_option_warns_and_goes_on() {
        let parsed = ok(&["-o", "resp_obj_mem_limit"]);
        assert_eq!(
            parsed.warnings,
            b"DEPRECATED: resp_obj_mem_limit no longer used. See read_buf_mem_limit,\n"
        );
    }

    #[test]
    fn sasl_and_auth_file_choose_the_protocol() {
        assert_eq!(settings(&["-S"]).protocol, Protocol::Binary);
        assert_eq!(settings(&["-Y", "f"]).protocol, Protocol::Ascii);
        assert_eq!(settings(&["-S", "-Y", "f"]).protocol, Protocol::Ascii);
        assert_eq!(
            err(&["-S", "-B", "ascii"]).1,
            "ERROR: You cannot allow the ASCII protocol while using SASL.\n"
        );
        assert_eq!(
            err(&["-S", "-U", "5"]).1,
            "ERROR: Cannot enable UDP while using binary SASL authentication.\n"
        );
    }

    #[test]
    fn udp_port_alone_moves_the_tcp_port() {
        let s = settings(&["-U", "5000"]);
        assert_eq!((s.port, s.udp_port), (5000, 5000));
        let s = settings(&["-U", "5000", "-p", "6000"]);
        assert_eq!((s.port, s.udp_port), (6000, 5000));
    }

    #[test]
    fn simple_flags_and_strings() {
        let s = settings(&[
            "-A", "-d", "-r", "-M", "-k", "-C", "-F", "-X", "-S", "-u", "nobody", "-P", "/tmp/p",
            "-s", "/tmp/s", "-e", "/tmp/e", "-D", "#x", "-t", "8", "-R", "5",
        ]);
        assert!(s.shutdown_command && s.daemonize && s.max_core && s.lock_memory && s.sasl);
        assert!(!s.evict_to_free && !s.use_cas && !s.flush_enabled && !s.dump_enabled);
        assert_eq!(s.user.as_deref(), Some("nobody"));
        assert_eq!(s.pid_file.as_deref(), Some("/tmp/p"));
        assert_eq!(s.socket_path.as_deref(), Some("/tmp/s"));
        assert_eq!(s.memory_file.as_deref(), Some("/tmp/e"));
        assert_eq!((s.prefix_delimiter, s.detail_enabled), (b'#', true));
        assert_eq!((s.num_threads, s.reqs_per_event), (8, 5));
        assert!(!ok(&["-W"]).extra.watch_enabled);
    }

    #[test]
    fn replication_options() {
        assert!(!settings(&[]).repl.enabled());
        assert_eq!(settings(&[]).repl.port, 11212);
        let s = settings(&["-x", "10.0.0.2:7000", "--repl-port", "7001"]);
        assert_eq!(
            (s.repl.peer.as_deref(), s.repl.port),
            (Some("10.0.0.2:7000"), 7001)
        );
        let s = settings(&["-o", "repl_peer=[::1]:9,repl_port=10", "-X"]);
        assert_eq!((s.repl.peer.as_deref(), s.repl.port), (Some("[::1]:9"), 10));
        // -X is still memcached's.
        assert!(!s.dump_enabled);
        assert_eq!(
            settings(&["--repl-peer=peer"]).repl.peer.as_deref(),
            Some("peer")
        );
        for bad in [
            &["-x", "h:0"][..],
            &["-x", ":1"],
            &["-x", "h:x"],
            &["--repl-port", "0"],
            &["--repl-port", "65536"],
            &["-o", "repl_port"],
            // Ours are never abbreviated.
            &["--repl-p=5"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn help_version_and_license() {
        let (code, text) = stdout(&["-h"]);
        assert_eq!(code, 0);
        assert!(text.starts_with(&format!("memcached {VERSION}\n-p, --port=<num>")));
        assert!(!text.contains("TLS") && !text.contains("ext_") && !text.contains("napi"));
        // memcached's text ends there; blocks of our own options follow.
        let theirs_end = text.find("ip filtering/firewalls \n").unwrap() + 24;
        let next_line = text[theirs_end..].lines().next().unwrap();
        assert!(next_line.ends_with(" (not in memcached):"), "{next_line}");
        assert!(text.contains("Replication (not in memcached):\n-x, --repl-peer="));
        assert!(text.ends_with("- repl_port:           the same as --repl-port\n"));
        assert!(text.contains("ip filtering/firewalls \nPersistence (not in memcached):\n"));
        // The current values are shown, as memcached does.
        assert!(
            stdout(&["-c", "7", "-h"])
                .1
                .contains("connections (default: 7)\n")
        );
        let (code, text) = stdout(&["-U", "5", "-h"]);
        assert_eq!(code, 1);
        assert!(text.ends_with(
            "Default value of [udp-port] has changed. Modify the help text and default value check.\n"
        ));
        assert_eq!(stdout(&["-V"]), (0, format!("memcached {VERSION}\n")));
        let (code, text) = stdout(&["--license"]);
        assert_eq!(code, 0);
        assert!(text.contains("Rust"));
        // -h acts when reached: an earlier error wins.
        assert_eq!(err(&["-f", "0", "-h"]).1, "Factor must be greater than 1\n");
    }
}
