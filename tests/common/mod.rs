//! Differential-test harness: runs the same byte script against the real
//! memcached (the oracle) and against our `memcached` binary, and compares
//! the replies byte for byte.
//!
//! Environment:
//! - `MEMCACHED_ORACLE`: path of the real memcached (default `/usr/bin/memcached`).
//! - `MEMCACHED_BIN`: run this instead of our binary (`make valgrind` points
//!   it at tools/valgrind-memcached).
//! - `DIFF_SELF=1`: "ours" is the oracle too (proves the harness and the
//!   cases are deterministic).
//! - `DIFF_SKIP_ORACLE=1`: if the oracle binary is missing, skip instead of
//!   failing.
//!
//! Completion of a reply is detected without sleeping: after the script a
//! meta no-op `mn\r\n` is sent and the reply is read until it ends with
//! `MN\r\n` (then stripped), or until the server closes the connection.
//! Consequently a script must not send `mn` itself, nor end its replies with
//! a value whose data is `MN`; and a script must leave the sentinel readable
//! as a command (not swallowed as data).

#![allow(dead_code)]

use std::fmt::Write as _;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// How long one script may take before the case fails.
pub const SCRIPT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a server may take to accept connections.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(5);
/// The sentinel request and its reply.
pub const SENTINEL: &[u8] = b"mn\r\n";
pub const SENTINEL_REPLY: &[u8] = b"MN\r\n";
/// The binary protocol's sentinel: a no-op with a recognisable opaque, and
/// its reply.
pub const BINARY_SENTINEL: &[u8] = &[
    0x80, 0x0a, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x5e, 0x47, 0x1e, 0x11, 0, 0, 0, 0, 0, 0, 0, 0,
];
pub const BINARY_SENTINEL_REPLY: &[u8] = &[
    0x81, 0x0a, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x5e, 0x47, 0x1e, 0x11, 0, 0, 0, 0, 0, 0, 0, 0,
];

// ---------------------------------------------------------------------------
// Servers
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Oracle,
    Ours,
}

impl Kind {
    pub fn label(self) -> &'static str {
        match self {
            Kind::Oracle => "oracle",
            Kind::Ours => "ours",
        }
    }
}

fn env_flag(name: &str) -> bool {
    matches!(
        std::env::var(name).as_deref(),
        Ok("1") | Ok("true") | Ok("yes")
    )
}

pub fn oracle_path() -> PathBuf {
    std::env::var_os("MEMCACHED_ORACLE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/memcached"))
}

/// True when "ours" is the oracle too (`DIFF_SELF=1`).
pub fn self_mode() -> bool {
    env_flag("DIFF_SELF")
}

pub fn binary(kind: Kind) -> PathBuf {
    match kind {
        Kind::Oracle => oracle_path(),
        Kind::Ours if self_mode() => oracle_path(),
        // `make valgrind` runs the server through tools/valgrind-memcached.
        Kind::Ours => std::env::var_os("MEMCACHED_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_memcached"))),
    }
}

/// Checks that the oracle exists. Returns false (the caller should skip the
/// test) only when it is missing and `DIFF_SKIP_ORACLE=1`; panics otherwise.
pub fn oracle_available() -> bool {
    let path = oracle_path();
    if path.is_file() {
        return true;
    }
    if env_flag("DIFF_SKIP_ORACLE") {
        eprintln!(
            "SKIPPED: oracle {} not found and DIFF_SKIP_ORACLE=1",
            path.display()
        );
        return false;
    }
    panic!(
        "the oracle memcached binary {} does not exist: install Debian's memcached \
         (apt-get install memcached), point MEMCACHED_ORACLE at it, or set \
         DIFF_SKIP_ORACLE=1 to skip the differential tests",
        path.display()
    );
}

static SERVER_SEQ: AtomicUsize = AtomicUsize::new(0);

/// A running server process, killed (by PID) on drop.
pub struct Server {
    child: Child,
    pub kind: Kind,
    pub port: u16,
    pub args: Vec<String>,
    stderr_path: PathBuf,
}

/// A port nothing listens on, never the same twice in this process: the
/// kernel can hand the same free port to two tests running in parallel,
/// and the second server then fails to bind while its readiness check
/// connects to the first one.
fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = l.local_addr().expect("local_addr").port();
        let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

impl Server {
    /// Starts a server with `-u root -l 127.0.0.1 -U 0 -p <free port>` plus
    /// `args`, and waits until it accepts connections.
    pub fn start(kind: Kind, args: &[&str]) -> Server {
        Server::start_env(kind, args, &[])
    }

    /// `start` with extra environment variables for the server.
    pub fn start_env(kind: Kind, args: &[&str], env: &[(&str, &str)]) -> Server {
        let bin = binary(kind);
        let mut last_err = String::new();
        for _attempt in 0..8 {
            let port = free_port();
            let seq = SERVER_SEQ.fetch_add(1, Ordering::Relaxed);
            let stderr_path = std::env::temp_dir().join(format!(
                "diff-{}-{}-{}-{}.stderr",
                kind.label(),
                std::process::id(),
                seq,
                port
            ));
            let stderr_file = std::fs::File::create(&stderr_path).expect("create stderr file");
            let mut full: Vec<String> = vec![
                "-u".into(),
                "root".into(),
                "-l".into(),
                "127.0.0.1".into(),
                "-U".into(),
                "0".into(),
                "-p".into(),
                port.to_string(),
            ];
            full.extend(args.iter().map(|s| s.to_string()));
            let child = Command::new(&bin)
                .args(&full)
                .envs(env.iter().copied())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::from(stderr_file))
                .spawn()
                .unwrap_or_else(|e| {
                    panic!("cannot spawn {} ({}): {e}", bin.display(), kind.label())
                });
            let mut server = Server {
                child,
                kind,
                port,
                args: full,
                stderr_path,
            };
            match server.wait_ready() {
                Ok(()) => return server,
                Err(e) => {
                    last_err = format!(
                        "{} ({}) with args {:?}: {e}\nstderr:\n{}",
                        kind.label(),
                        bin.display(),
                        server.args,
                        server.stderr()
                    );
                    // Port taken between our probe and the server's bind:
                    // retry with another port. Anything else is fatal, but a
                    // retry is cheap and gives the same error again.
                    drop(server);
                }
            }
        }
        panic!("server did not start: {last_err}");
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        let addr = self.addr();
        loop {
            if let Some(status) = self.child.try_wait().map_err(|e| e.to_string())? {
                return Err(format!("exited before accepting connections: {status}"));
            }
            // A connect to a port in the ephemeral range that nothing listens
            // on yet can connect the socket to itself (TCP simultaneous
            // open); that proves nothing, and while it lasts the server's
            // bind fails (seen once in CI: the oracle gone, "connection
            // refused" at the first request). Only a real peer counts.
            if let Ok(s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200))
                && s.local_addr().ok() != s.peer_addr().ok()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err("not accepting connections after 5 s".into());
            }
            // Poll loop (not synchronisation by sleep): back off briefly.
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn stderr(&self) -> String {
        std::fs::read(&self.stderr_path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Is the process still running?
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn run(&self, script: &Script) -> Outcome {
        run_script(self.addr(), script)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.stderr_path);
    }
}

// ---------------------------------------------------------------------------
// Scripts
// ---------------------------------------------------------------------------

#[derive(Clone, Debug)]
pub enum Step {
    /// Bytes written with as few `write` calls as possible.
    Send(Vec<u8>),
    /// Bytes written `chunk` bytes per `write` call (TCP_NODELAY is on).
    Split(Vec<u8>, usize),
    /// Send `mn\r\n` and wait for its `MN\r\n` before going on: every reply
    /// to what was sent before has then been written by the server. The
    /// `MN\r\n` stays in the transcript.
    Sync,
}

#[derive(Clone, Debug, Default)]
pub struct Script {
    pub steps: Vec<Step>,
    /// Speaks the binary protocol: syncs use a binary no-op.
    pub binary: bool,
}

impl Script {
    pub fn new() -> Script {
        Script::default()
    }
    /// A script for the binary protocol (see `BINARY_SENTINEL`).
    pub fn binary() -> Script {
        Script {
            steps: Vec::new(),
            binary: true,
        }
    }
    pub fn sentinel(&self) -> &'static [u8] {
        if self.binary {
            BINARY_SENTINEL
        } else {
            SENTINEL
        }
    }
    pub fn sentinel_reply(&self) -> &'static [u8] {
        if self.binary {
            BINARY_SENTINEL_REPLY
        } else {
            SENTINEL_REPLY
        }
    }
    pub fn send(mut self, data: impl AsRef<[u8]>) -> Script {
        self.steps.push(Step::Send(data.as_ref().to_vec()));
        self
    }
    /// Writes `data` in pieces of `chunk` bytes (1 = one byte per write).
    pub fn split(mut self, data: impl AsRef<[u8]>, chunk: usize) -> Script {
        assert!(chunk > 0);
        self.steps.push(Step::Split(data.as_ref().to_vec(), chunk));
        self
    }
    pub fn sync(mut self) -> Script {
        self.steps.push(Step::Sync);
        self
    }
    pub fn total_len(&self) -> usize {
        self.steps
            .iter()
            .map(|s| match s {
                Step::Send(d) | Step::Split(d, _) => d.len(),
                Step::Sync => self.sentinel().len(),
            })
            .sum()
    }
}

impl From<&str> for Script {
    fn from(s: &str) -> Script {
        Script::new().send(s)
    }
}
impl From<String> for Script {
    fn from(s: String) -> Script {
        Script::new().send(s)
    }
}
impl From<&[u8]> for Script {
    fn from(s: &[u8]) -> Script {
        Script::new().send(s)
    }
}
impl<const N: usize> From<&[u8; N]> for Script {
    fn from(s: &[u8; N]) -> Script {
        Script::new().send(s)
    }
}
impl From<Vec<u8>> for Script {
    fn from(s: Vec<u8>) -> Script {
        Script::new().send(s)
    }
}

/// What a server answered to a script.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// Everything received, minus the final `MN\r\n`.
    pub reply: Vec<u8>,
    /// The server closed the connection (EOF or reset) before answering the
    /// final sentinel.
    pub closed: bool,
    /// Harness-level failure (connect error, timeout): never "equal".
    pub error: Option<String>,
}

impl Outcome {
    pub fn render(&self) -> String {
        let mut s = escape(&self.reply);
        if self.closed {
            s.push_str("<connection closed by server>\n");
        }
        if let Some(e) = &self.error {
            let _ = writeln!(s, "<HARNESS ERROR: {e}>");
        }
        s
    }
}

enum Action {
    Write { data: Vec<u8>, chunk: usize },
    Sync,
}

/// Runs `script` on a fresh connection: sends every step (honouring splits and
/// syncs), then the sentinel, and collects the reply until the sentinel's
/// answer or EOF, within `SCRIPT_TIMEOUT`.
pub fn run_script(addr: SocketAddr, script: &Script) -> Outcome {
    let deadline = Instant::now() + SCRIPT_TIMEOUT;
    let mut stream = match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
        Ok(s) => s,
        Err(e) => {
            return Outcome {
                reply: Vec::new(),
                closed: false,
                error: Some(format!("connect to {addr} failed: {e}")),
            };
        }
    };
    let _ = stream.set_nodelay(true);
    stream.set_nonblocking(true).expect("set_nonblocking");

    let mut actions: std::collections::VecDeque<Action> = script
        .steps
        .iter()
        .map(|s| match s {
            Step::Send(d) => Action::Write {
                data: d.clone(),
                chunk: usize::MAX,
            },
            Step::Split(d, c) => Action::Write {
                data: d.clone(),
                chunk: *c,
            },
            Step::Sync => Action::Sync,
        })
        .collect();
    actions.push_back(Action::Sync); // the final sentinel

    let mut reply: Vec<u8> = Vec::new();
    let mut closed = false;
    let mut write_dead = false;
    // Current write in progress: (data, offset, chunk).
    let mut current: Option<(Vec<u8>, usize, usize)> = None;
    // Waiting for the MN of a sync: the reply length when it was sent.
    let mut waiting_sync: Option<usize> = None;
    // A sync whose `mn` must be marked once fully written.
    let mut sync_pending_mark = false;
    let mut finished = false;
    let mut buf = vec![0u8; 64 * 1024];
    let fd = stream.as_raw_fd();

    loop {
        // Advance the action queue when idle.
        while !write_dead && current.is_none() && waiting_sync.is_none() {
            match actions.pop_front() {
                None => break,
                Some(Action::Write { data, chunk }) => {
                    if !data.is_empty() {
                        current = Some((data, 0, chunk));
                    }
                }
                Some(Action::Sync) => {
                    current = Some((script.sentinel().to_vec(), 0, usize::MAX));
                    sync_pending_mark = true;
                }
            }
        }
        if waiting_sync.is_none() && current.is_none() && actions.is_empty() && !sync_pending_mark {
            // Everything sent and the final sentinel answered.
            finished = true;
            break;
        }
        if closed {
            break;
        }
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        let remaining = (deadline - now).as_millis().min(i32::MAX as u128) as i32;
        let mut events = libc::POLLIN;
        if current.is_some() && !write_dead {
            events |= libc::POLLOUT;
        }
        let mut pfd = libc::pollfd {
            fd,
            events,
            revents: 0,
        };
        // SAFETY: one valid pollfd for a socket we own, for the call's duration.
        let n = unsafe { libc::poll(&mut pfd, 1, remaining.max(1)) };
        if n < 0 {
            let err = std::io::Error::last_os_error();
            if err.kind() == ErrorKind::Interrupted {
                continue;
            }
            panic!("poll failed: {err}");
        }
        if n == 0 {
            continue; // deadline check at the top
        }
        // Read whatever is there.
        if pfd.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 {
            loop {
                match stream.read(&mut buf) {
                    Ok(0) => {
                        closed = true;
                        break;
                    }
                    Ok(k) => reply.extend_from_slice(&buf[..k]),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(_) => {
                        // ECONNRESET and friends: the server closed on us.
                        closed = true;
                        break;
                    }
                }
            }
            if let Some(mark) = waiting_sync
                && reply.len() > mark
                && reply.ends_with(script.sentinel_reply())
            {
                waiting_sync = None;
            }
        }
        if pfd.revents & libc::POLLOUT != 0
            && !write_dead
            && let Some((data, off, chunk)) = current.as_mut()
        {
            {
                let end = (*off).saturating_add(*chunk).min(data.len());
                match stream.write(&data[*off..end]) {
                    Ok(k) => *off += k,
                    Err(e)
                        if e.kind() == ErrorKind::WouldBlock
                            || e.kind() == ErrorKind::Interrupted => {}
                    Err(_) => {
                        // EPIPE / ECONNRESET: the server is gone; keep
                        // reading until EOF.
                        write_dead = true;
                    }
                }
                if *off >= data.len() {
                    current = None;
                    if sync_pending_mark {
                        // The sync's MN can only arrive after this point.
                        sync_pending_mark = false;
                        waiting_sync = Some(reply.len());
                    }
                }
            }
        }
        if write_dead && !closed {
            // Nothing more can be sent; keep reading until EOF or deadline.
            loop {
                let now = Instant::now();
                if now >= deadline {
                    break;
                }
                let remaining = (deadline - now).as_millis().min(i32::MAX as u128) as i32;
                let mut pfd = libc::pollfd {
                    fd,
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: as above.
                let n = unsafe { libc::poll(&mut pfd, 1, remaining.max(1)) };
                if n <= 0 {
                    continue;
                }
                match stream.read(&mut buf) {
                    Ok(0) => {
                        closed = true;
                        break;
                    }
                    Ok(k) => reply.extend_from_slice(&buf[..k]),
                    Err(e)
                        if e.kind() == ErrorKind::WouldBlock
                            || e.kind() == ErrorKind::Interrupted => {}
                    Err(_) => {
                        closed = true;
                        break;
                    }
                }
            }
            break;
        }
    }
    let _ = stream.shutdown(Shutdown::Both);

    let mut error = None;
    if finished {
        // Strip the final sentinel answer.
        let n = reply.len() - script.sentinel_reply().len();
        reply.truncate(n);
    } else if !closed {
        error = Some(format!(
            "timeout after {:?}: no final MN\\r\\n and no close (swallowed sentinel? \
             server hung?)",
            SCRIPT_TIMEOUT
        ));
    }
    Outcome {
        reply,
        closed,
        error,
    }
}

// ---------------------------------------------------------------------------
// Rendering
// ---------------------------------------------------------------------------

/// Escapes bytes so that `\r` and `\n` are visible; a real line break follows
/// each `\n`.
pub fn escape(bytes: &[u8]) -> String {
    let mut s = String::new();
    for &b in bytes {
        match b {
            b'\r' => s.push_str("\\r"),
            b'\n' => s.push_str("\\n\n"),
            b'\t' => s.push_str("\\t"),
            b'\\' => s.push_str("\\\\"),
            0x20..=0x7e => s.push(b as char),
            _ => {
                let _ = write!(s, "\\x{b:02x}");
            }
        }
    }
    if !s.is_empty() && !s.ends_with('\n') {
        s.push('\n');
    }
    s
}

/// Escaped, with long runs elided so that reports stay readable.
pub fn escape_short(bytes: &[u8], limit: usize) -> String {
    if bytes.len() <= limit {
        return escape(bytes);
    }
    let head = &bytes[..limit / 2];
    let tail = &bytes[bytes.len() - limit / 2..];
    let mut s = escape(head);
    let _ = writeln!(
        s,
        "... <{} bytes elided> ...",
        bytes.len() - head.len() - tail.len()
    );
    s.push_str(&escape(tail));
    s
}

pub fn render_script(script: &Script) -> String {
    let mut s = String::new();
    for (i, step) in script.steps.iter().enumerate() {
        match step {
            Step::Send(d) => {
                let _ = writeln!(s, "  [{i}] send {} bytes:", d.len());
                s.push_str(&indent(&escape_short(d, 800)));
            }
            Step::Split(d, c) => {
                let _ = writeln!(s, "  [{i}] send {} bytes, {c} byte(s) per write:", d.len());
                s.push_str(&indent(&escape_short(d, 800)));
            }
            Step::Sync => {
                let _ = writeln!(s, "  [{i}] sync (mn\\r\\n, wait for MN\\r\\n)");
            }
        }
    }
    s
}

fn indent(s: &str) -> String {
    s.lines().map(|l| format!("      {l}\n")).collect()
}

fn first_difference(a: &[u8], b: &[u8]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

pub fn mismatch_report(
    name: &str,
    args: &[&str],
    script: &Script,
    oracle: &Outcome,
    ours: &Outcome,
) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "=== MISMATCH in case `{name}` (server args {args:?})");
    let _ = writeln!(s, "script:");
    s.push_str(&render_script(script));
    let at = first_difference(&oracle.reply, &ours.reply);
    let _ = writeln!(s, "first differing reply byte: {at}");
    if oracle.reply.len() > 2000 || ours.reply.len() > 2000 {
        let from = at.saturating_sub(200);
        let cut = |r: &[u8]| r[from.min(r.len())..(at + 200).min(r.len())].to_vec();
        let _ = writeln!(s, "--- oracle around byte {at} (from byte {from}):");
        s.push_str(&indent(&escape(&cut(&oracle.reply))));
        let _ = writeln!(s, "--- ours around byte {at} (from byte {from}):");
        s.push_str(&indent(&escape(&cut(&ours.reply))));
    }
    let _ = writeln!(s, "--- oracle (real memcached) replied:");
    s.push_str(&indent(&escape_short(&oracle.reply, 2000)));
    if oracle.closed {
        s.push_str("      <connection closed by server>\n");
    }
    if let Some(e) = &oracle.error {
        let _ = writeln!(s, "      <HARNESS ERROR: {e}>");
    }
    let _ = writeln!(s, "--- ours replied:");
    s.push_str(&indent(&escape_short(&ours.reply, 2000)));
    if ours.closed {
        s.push_str("      <connection closed by server>\n");
    }
    if let Some(e) = &ours.error {
        let _ = writeln!(s, "      <HARNESS ERROR: {e}>");
    }
    s
}

// ---------------------------------------------------------------------------
// Pairs and comparisons
// ---------------------------------------------------------------------------

/// The oracle and ours, started with the same arguments.
pub struct Pair {
    pub oracle: Server,
    pub ours: Server,
    pub args: Vec<&'static str>,
}

impl Pair {
    pub fn start(args: &[&'static str]) -> Pair {
        Pair::start_env(args, &[])
    }

    pub fn start_env(args: &[&'static str], env: &[(&str, &str)]) -> Pair {
        let oracle = Server::start_env(Kind::Oracle, args, env);
        let ours = Server::start_env(Kind::Ours, args, env);
        Pair {
            oracle,
            ours,
            args: args.to_vec(),
        }
    }

    /// Runs the script on both (oracle first) and returns a report on
    /// mismatch or harness error.
    pub fn check(&mut self, name: &str, script: &Script) -> Result<(Outcome, Outcome), String> {
        let o = self.oracle.run(script);
        let u = self.ours.run(script);
        let mut report = None;
        if o.error.is_some() || u.error.is_some() || o != u {
            let mut r = mismatch_report(name, &self.args, script, &o, &u);
            if o.error.is_some() {
                r.push_str("NOTE: the ORACLE itself failed this script: the case is broken.\n");
            }
            if !self.ours.alive() {
                let _ = writeln!(
                    r,
                    "NOTE: our server process has exited. stderr:\n{}",
                    indent(&self.ours.stderr())
                );
            }
            report = Some(r);
        }
        match report {
            None => Ok((o, u)),
            Some(r) => Err(r),
        }
    }

    /// If our server died, restart both so that later cases in a group still
    /// say something (history is lost, so the group's later results are
    /// approximate). Returns true if a restart happened.
    pub fn revive(&mut self) -> bool {
        if self.ours.alive() {
            return false;
        }
        let args = self.args.clone();
        *self = Pair::start(&args);
        true
    }
}

/// Asserts that the oracle and ours answer `script` identically, on a fresh
/// server pair started with `args`.
pub fn assert_same(script: impl Into<Script>, args: &[&'static str]) {
    if !oracle_available() {
        return;
    }
    let script = script.into();
    let mut pair = Pair::start(args);
    if let Err(r) = pair.check("assert_same", &script) {
        panic!("{r}");
    }
}

/// A group of cases run in order against one server pair, each on a fresh
/// connection. All mismatches are collected and reported together.
pub struct Group {
    pub name: &'static str,
    pub pair: Option<Pair>,
    failures: Vec<String>,
    passed: usize,
}

impl Group {
    /// Returns None when the oracle is missing and skipping is allowed.
    pub fn start(name: &'static str, args: &[&'static str]) -> Option<Group> {
        Group::start_env(name, args, &[])
    }

    pub fn start_env(
        name: &'static str,
        args: &[&'static str],
        env: &[(&str, &str)],
    ) -> Option<Group> {
        if !oracle_available() {
            return None;
        }
        Some(Group {
            name,
            pair: Some(Pair::start_env(args, env)),
            failures: Vec::new(),
            passed: 0,
        })
    }

    pub fn pair(&mut self) -> &mut Pair {
        self.pair.as_mut().expect("pair")
    }

    /// One case on the group's shared server pair.
    pub fn case(&mut self, name: &str, script: impl Into<Script>) -> Option<(Outcome, Outcome)> {
        let script = script.into();
        let pair = self.pair.as_mut().expect("pair");
        let r = pair.check(name, &script);
        let args = pair.args.clone();
        self.dump(name, &args, &script, &r);
        let pair = self.pair.as_mut().expect("pair");
        let out = match r {
            Ok(x) => {
                self.passed += 1;
                Some(x)
            }
            Err(report) => {
                self.failures.push(report);
                None
            }
        };
        if pair.revive() {
            self.failures.push(format!(
                "(our server died during `{name}`; restarted both servers)\n"
            ));
        }
        out
    }

    /// One case on a fresh server pair (for cas values, stats, global state).
    pub fn fresh(&mut self, name: &str, args: &[&'static str], script: impl Into<Script>) {
        let script = script.into();
        let mut pair = Pair::start(args);
        let r = pair.check(name, &script);
        self.dump(name, args, &script, &r);
        match r {
            Ok(_) => self.passed += 1,
            Err(report) => self.failures.push(report),
        }
    }

    /// With `DIFF_DUMP_DIR` set, appends the case and the oracle's reply to
    /// `<dir>/<group>.txt` (a readable reference of the oracle's behaviour).
    fn dump(
        &self,
        name: &str,
        args: &[&str],
        script: &Script,
        r: &Result<(Outcome, Outcome), String>,
    ) {
        let Some(dir) = std::env::var_os("DIFF_DUMP_DIR") else {
            return;
        };
        let mut s = String::new();
        let _ = writeln!(s, "### {name}    (args {args:?})");
        s.push_str(&render_script(script));
        match r {
            Ok((o, _)) => {
                s.push_str("  oracle:\n");
                s.push_str(&indent(&escape_short(&o.reply, 1600)));
                if o.closed {
                    s.push_str("      <connection closed by server>\n");
                }
            }
            Err(report) => {
                s.push_str(&indent(report));
            }
        }
        s.push('\n');
        let _ = std::fs::create_dir_all(&dir);
        let path = std::path::Path::new(&dir).join(format!("{}.txt", self.name));
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .expect("open dump file");
        let _ = f.write_all(s.as_bytes());
    }

    /// Records an externally computed failure.
    pub fn fail(&mut self, report: String) {
        self.failures.push(report);
    }

    pub fn pass(&mut self) {
        self.passed += 1;
    }

    /// Panics with every mismatch if any case failed.
    pub fn finish(self) {
        let failed = self.failures.len();
        if failed == 0 {
            eprintln!("group {}: {} cases passed", self.name, self.passed);
            return;
        }
        let mut msg = String::new();
        for f in &self.failures {
            msg.push_str(f);
            msg.push('\n');
        }
        let names: Vec<&str> = self
            .failures
            .iter()
            .filter_map(|f| {
                f.strip_prefix("=== MISMATCH in case `")
                    .and_then(|r| r.split('`').next())
            })
            .collect();
        let _ = writeln!(
            msg,
            "group {}: {} passed, {} failed: {:?}",
            self.name, self.passed, failed, names
        );
        panic!("{msg}");
    }
}

/// Extracts `STAT <name> <value>` lines whose name is in `names`, in the
/// server's order.
pub fn filter_stats(reply: &[u8], names: &[&str]) -> String {
    let text = String::from_utf8_lossy(reply);
    let mut out = String::new();
    for line in text.split("\r\n") {
        let mut it = line.split(' ');
        if it.next() != Some("STAT") {
            continue;
        }
        if let Some(n) = it.next()
            && names.contains(&n)
        {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// Poll helper: runs `script` on `server` until `done(reply)` or `timeout`.
/// Returns the last outcome and whether `done` became true.
pub fn poll_until(
    server: &Server,
    script: &Script,
    timeout: Duration,
    done: impl Fn(&Outcome) -> bool,
) -> (Outcome, bool) {
    let deadline = Instant::now() + timeout;
    loop {
        let o = server.run(script);
        if done(&o) {
            return (o, true);
        }
        if Instant::now() >= deadline {
            return (o, false);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
