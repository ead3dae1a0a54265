//! The load generator: many non-blocking connections in one epoll loop.
//!
//! Every connection is closed-loop: it sends a batch of `pipeline`
//! requests in one write, parses the replies as they arrive, and sends the
//! next batch only when every reply of the last one is in. Latency is taken
//! per batch, from just before the batch is written to the moment its last
//! reply is fully parsed; with `pipeline` 1 that is per request.
//!
//! Phases: connect, preload (every key set once, not measured), warm-up
//! (the workload runs, nothing recorded), measure (recorded), drain (no new
//! batches; outstanding replies are awaited, at most 2 s).

use crate::sys::{self, Epoll};
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

pub struct Config {
    pub server: String,
    pub conns: usize,
    pub duration: f64,
    pub warmup: f64,
    pub keys: u64,
    pub key_size: usize,
    pub value_size: usize,
    pub get_ratio: f64,
    pub multiget: usize,
    pub pipeline: usize,
    pub preload: bool,
    pub preload_depth: usize,
    pub server_pid: Option<i32>,
    /// CPUs whose busy and steal fractions are reported over the measured
    /// interval (to spot other load on a shared machine).
    pub watch_cpus: Vec<usize>,
    pub seed: u64,
    /// Batches per second over all connections once warming up starts;
    /// 0: closed loop, each connection's next batch as soon as its last is
    /// answered.
    pub rate: f64,
}

/// Keys are `key:` followed by the zero-padded index, `key_size` bytes in
/// all: with 11 bytes, `key:0000001`.
pub struct KeyFmt {
    width: usize,
}

const KEY_PREFIX: &[u8] = b"key:";

impl KeyFmt {
    pub fn new(key_size: usize, keys: u64) -> Result<KeyFmt, String> {
        let digits = keys.saturating_sub(1).max(1).to_string().len();
        if key_size < KEY_PREFIX.len() + digits || key_size > 250 {
            return Err(format!(
                "--key-size {key_size} cannot hold {keys} keys (need {}..=250)",
                KEY_PREFIX.len() + digits
            ));
        }
        Ok(KeyFmt {
            width: key_size - KEY_PREFIX.len(),
        })
    }

    pub fn write(&self, out: &mut Vec<u8>, i: u64) {
        out.extend_from_slice(KEY_PREFIX);
        let mut digits = [b'0'; 256];
        let mut n = i;
        let mut p = self.width;
        while p > 0 {
            p -= 1;
            digits[p] = b'0' + (n % 10) as u8;
            n /= 10;
        }
        out.extend_from_slice(&digits[..self.width]);
    }

    /// Whether `key` is the key of index `i`.
    fn matches(&self, key: &[u8], i: u64) -> bool {
        if key.len() != KEY_PREFIX.len() + self.width || !key.starts_with(KEY_PREFIX) {
            return false;
        }
        let mut n = i;
        for &b in key[KEY_PREFIX.len()..].iter().rev() {
            if b != b'0' + (n % 10) as u8 {
                return false;
            }
            n /= 10;
        }
        true
    }
}

/// xorshift64*: fast, good enough to pick keys and commands.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        ((self.next() >> 32) * n) >> 32
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[derive(Debug)]
enum Req {
    /// A get of this many keys; they sit in order in the connection's
    /// `keys` queue.
    Get {
        left: usize,
    },
    Set,
}

#[derive(Default, Clone, Copy)]
pub struct Counts {
    pub requests: u64,
    pub gets: u64,
    pub sets: u64,
    pub keys: u64,
    pub hits: u64,
    pub misses: u64,
    pub stored: u64,
    pub not_stored: u64,
    pub errors: u64,
    pub batches: u64,
}

struct Conn {
    stream: TcpStream,
    out: Vec<u8>,
    out_pos: usize,
    inb: Vec<u8>,
    in_pos: usize,
    pending: VecDeque<Req>,
    keys: VecDeque<u64>,
    batch_start: Instant,
    writable: bool,
    dead: bool,
    preload_next: u64,
    preload_end: u64,
    /// With `--rate`: when this connection's last batch was due, and the
    /// time its next one is held until (none held: `None`).
    sched: Instant,
    held: Option<Instant>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Phase {
    Preload,
    Warmup,
    Measure,
    Drain,
}

pub struct Report {
    pub cfg_line: String,
    pub counts: Counts,
    pub elapsed: f64,
    pub lat_ns: Vec<u64>,
    pub preload_secs: f64,
    pub preload_errors: u64,
    pub server_cpu_ticks: Option<u64>,
    pub client_cpu_secs: f64,
    /// Per watched CPU: (cpu, busy fraction, steal fraction).
    pub cpus: Vec<(usize, f64, f64)>,
    pub dead_conns: usize,
}

struct Gen<'a> {
    cfg: &'a Config,
    kf: KeyFmt,
    value: Vec<u8>,
    rng: Rng,
}

impl Gen<'_> {
    fn push_set(&self, c: &mut Conn, key: u64) {
        c.out.extend_from_slice(b"set ");
        self.kf.write(&mut c.out, key);
        c.out.extend_from_slice(b" 0 0 ");
        c.out
            .extend_from_slice(self.value.len().to_string().as_bytes());
        c.out.extend_from_slice(b"\r\n");
        c.out.extend_from_slice(&self.value);
        c.out.extend_from_slice(b"\r\n");
        c.pending.push_back(Req::Set);
    }

    fn batch(&mut self, c: &mut Conn) {
        for _ in 0..self.cfg.pipeline {
            if self.cfg.get_ratio >= 1.0 || self.rng.unit() < self.cfg.get_ratio {
                c.out.extend_from_slice(b"get");
                for _ in 0..self.cfg.multiget {
                    let k = self.rng.below(self.cfg.keys);
                    c.out.push(b' ');
                    self.kf.write(&mut c.out, k);
                    c.keys.push_back(k);
                }
                c.out.extend_from_slice(b"\r\n");
                c.pending.push_back(Req::Get {
                    left: self.cfg.multiget,
                });
            } else {
                let k = self.rng.below(self.cfg.keys);
                self.push_set(c, k);
            }
        }
    }

    fn preload_batch(&self, c: &mut Conn) {
        let end = (c.preload_next + self.cfg.preload_depth as u64).min(c.preload_end);
        for k in c.preload_next..end {
            self.push_set(c, k);
        }
        c.preload_next = end;
    }
}

fn find_crlf(b: &[u8]) -> Option<usize> {
    b.windows(2).position(|w| w == b"\r\n")
}

fn parse_usize(b: &[u8]) -> Option<usize> {
    if b.is_empty() || b.len() > 18 {
        return None;
    }
    let mut n = 0usize;
    for &d in b {
        if !d.is_ascii_digit() {
            return None;
        }
        n = n * 10 + (d - b'0') as usize;
    }
    Some(n)
}

impl Conn {
    /// Writes what is queued; false if the connection failed.
    fn flush(&mut self) -> bool {
        while self.out_pos < self.out.len() && self.writable {
            match self.stream.write(&self.out[self.out_pos..]) {
                Ok(0) => return false,
                Ok(n) => self.out_pos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.writable = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        if self.out_pos == self.out.len() {
            self.out.clear();
            self.out_pos = 0;
        }
        true
    }

    /// Reads what the socket holds; false on end of file or error.
    fn fill(&mut self) -> bool {
        loop {
            if self.in_pos == self.inb.len() {
                self.inb.clear();
                self.in_pos = 0;
            } else if self.in_pos > 0 && self.inb.capacity() - self.inb.len() < 16 * 1024 {
                self.inb.drain(..self.in_pos);
                self.in_pos = 0;
            }
            let len = self.inb.len();
            let room = (self.inb.capacity() - len).max(16 * 1024);
            self.inb.resize(len + room, 0);
            match self.stream.read(&mut self.inb[len..]) {
                Ok(0) => {
                    self.inb.truncate(len);
                    return false;
                }
                Ok(n) => {
                    self.inb.truncate(len + n);
                    // A short read emptied the socket; edge-triggered
                    // epoll reports the next arrival.
                    if n < room {
                        return true;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.inb.truncate(len);
                    return true;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => self.inb.truncate(len),
                Err(_) => {
                    self.inb.truncate(len);
                    return false;
                }
            }
        }
    }

    /// Parses complete replies; returns how many requests completed.
    fn parse(&mut self, kf: &KeyFmt, value_size: usize, n: &mut Counts) -> usize {
        let mut done = 0;
        loop {
            let Some(req) = self.pending.front_mut() else {
                if self.in_pos < self.inb.len() {
                    // Bytes nobody asked for.
                    n.errors += 1;
                    self.in_pos = self.inb.len();
                }
                return done;
            };
            let buf = &self.inb[self.in_pos..];
            let Some(eol) = find_crlf(buf) else {
                return done;
            };
            let line = &buf[..eol];
            match req {
                Req::Set => {
                    match line {
                        b"STORED" => n.stored += 1,
                        b"NOT_STORED" | b"EXISTS" | b"NOT_FOUND" => n.not_stored += 1,
                        _ => n.errors += 1,
                    }
                    n.sets += 1;
                    self.in_pos += eol + 2;
                }
                Req::Get { left } => {
                    if let Some(rest) = line.strip_prefix(b"VALUE ") {
                        // VALUE <key> <flags> <bytes> [<cas>]
                        let mut f = rest.split(|&b| b == b' ');
                        let key = f.next().unwrap_or(b"");
                        let _flags = f.next();
                        let Some(len) = f.next().and_then(parse_usize) else {
                            n.errors += 1;
                            self.in_pos += eol + 2;
                            continue;
                        };
                        let whole = eol + 2 + len + 2;
                        if buf.len() < whole {
                            return done;
                        }
                        if &buf[eol + 2 + len..whole] != b"\r\n" || len != value_size {
                            n.errors += 1;
                        }
                        // Keys answer in request order; the ones skipped
                        // were misses.
                        let mut found = false;
                        while *left > 0 {
                            let k = self.keys.pop_front().unwrap_or(u64::MAX);
                            *left -= 1;
                            if kf.matches(key, k) {
                                found = true;
                                break;
                            }
                            n.misses += 1;
                        }
                        if found {
                            n.hits += 1;
                        } else {
                            n.errors += 1;
                        }
                        self.in_pos += whole;
                        continue;
                    }
                    if line != b"END" {
                        n.errors += 1;
                    }
                    n.misses += *left as u64;
                    for _ in 0..*left {
                        self.keys.pop_front();
                    }
                    n.gets += 1;
                    self.in_pos += eol + 2;
                }
            }
            self.pending.pop_front();
            n.requests += 1;
            done += 1;
        }
    }
}

pub fn run(cfg: &Config) -> Result<Report, String> {
    let kf = KeyFmt::new(cfg.key_size, cfg.keys)?;
    let mut generator = Gen {
        cfg,
        kf: KeyFmt::new(cfg.key_size, cfg.keys)?,
        value: (0..cfg.value_size).map(|i| b'a' + (i % 26) as u8).collect(),
        rng: Rng(cfg.seed | 1),
    };
    sys::raise_nofile();
    let epoll = Epoll::new().map_err(|e| e.to_string())?;
    let mut conns = Vec::with_capacity(cfg.conns);
    let per = cfg.keys.div_ceil(cfg.conns as u64);
    for i in 0..cfg.conns {
        let stream =
            TcpStream::connect(&cfg.server).map_err(|e| format!("connect {}: {e}", cfg.server))?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        stream.set_nonblocking(true).map_err(|e| e.to_string())?;
        epoll
            .add(stream.as_raw_fd(), sys::IN | sys::OUT | sys::ET, i as u64)
            .map_err(|e| e.to_string())?;
        let lo = (i as u64 * per).min(cfg.keys);
        let hi = ((i as u64 + 1) * per).min(cfg.keys);
        conns.push(Conn {
            stream,
            out: Vec::with_capacity(64 * 1024),
            out_pos: 0,
            inb: Vec::with_capacity(64 * 1024),
            in_pos: 0,
            pending: VecDeque::new(),
            keys: VecDeque::new(),
            batch_start: Instant::now(),
            writable: true,
            dead: false,
            preload_next: if cfg.preload { lo } else { 0 },
            preload_end: if cfg.preload { hi } else { 0 },
            sched: Instant::now(),
            held: None,
        });
    }

    let t0 = Instant::now();
    let mut phase = Phase::Preload;
    let mut preload_secs = 0.0;
    let mut preload_counts = Counts::default();
    let mut counts = Counts::default();
    let mut lat: Vec<u64> = Vec::with_capacity(1 << 20);
    let mut warm_end = t0;
    let mut measure_start = t0;
    let mut measure_end = t0;
    let mut elapsed = 0.0;
    let mut drain_deadline = t0;
    let (mut cpu0, mut cpu1) = (None, None);
    let (mut self0, mut self1) = (0.0, 0.0);
    let mut stat0 = Vec::new();
    let mut stat1 = Vec::new();
    let watch = |v: &mut Vec<Option<(u64, u64, u64)>>| {
        *v = cfg.watch_cpus.iter().map(|&c| sys::cpu_stat(c)).collect();
    };

    for c in conns.iter_mut() {
        if c.preload_next < c.preload_end {
            generator.preload_batch(c);
            c.flush();
        }
    }
    // With --rate, each connection's batches are this far apart.
    let pace = (cfg.rate > 0.0).then(|| Duration::from_secs_f64(cfg.conns as f64 / cfg.rate));
    let mut unrecorded = Counts::default();
    let mut events = sys::empty_events(1024);
    loop {
        let now = Instant::now();
        match phase {
            Phase::Preload => {
                let busy = conns
                    .iter()
                    .any(|c| !c.dead && (!c.pending.is_empty() || c.preload_next < c.preload_end));
                if !busy {
                    preload_secs = now.duration_since(t0).as_secs_f64();
                    phase = Phase::Warmup;
                    warm_end = now + Duration::from_secs_f64(cfg.warmup);
                    if cfg.duration <= 0.0 {
                        break;
                    }
                    for c in conns.iter_mut().filter(|c| !c.dead) {
                        c.batch_start = Instant::now();
                        generator.batch(c);
                        if !c.flush() {
                            c.dead = true;
                        }
                    }
                    continue;
                }
            }
            Phase::Warmup if now >= warm_end => {
                phase = Phase::Measure;
                counts = Counts::default();
                lat.clear();
                cpu0 = cfg.server_pid.and_then(sys::cpu_ticks);
                self0 = sys::self_cpu_secs();
                watch(&mut stat0);
                measure_start = Instant::now();
                measure_end = measure_start + Duration::from_secs_f64(cfg.duration);
            }
            Phase::Measure if now >= measure_end => {
                cpu1 = cfg.server_pid.and_then(sys::cpu_ticks);
                self1 = sys::self_cpu_secs();
                watch(&mut stat1);
                elapsed = now.duration_since(measure_start).as_secs_f64();
                phase = Phase::Drain;
                drain_deadline = now + Duration::from_secs(2);
            }
            Phase::Drain
                if now >= drain_deadline
                    || conns.iter().all(|c| c.dead || c.pending.is_empty()) =>
            {
                break;
            }
            _ => {}
        }
        if conns.iter().all(|c| c.dead) {
            return Err("every connection failed".into());
        }
        let mut timeout = 5;
        if pace.is_some() {
            for c in conns.iter_mut().filter(|c| !c.dead) {
                let Some(due) = c.held else { continue };
                if due <= now && phase != Phase::Drain {
                    c.held = None;
                    c.batch_start = now;
                    generator.batch(c);
                    if !c.flush() {
                        c.dead = true;
                    }
                } else {
                    let ms = due.saturating_duration_since(now).as_millis() as i32;
                    timeout = timeout.min(ms + 1);
                }
            }
        }
        let nev = epoll.wait(&mut events, timeout).map_err(|e| e.to_string())?;
        for ev in &events[..nev] {
            let c = &mut conns[ev.u64 as usize];
            if c.dead {
                continue;
            }
            if ev.events & sys::OUT != 0 {
                c.writable = true;
            }
            let mut ok = c.flush();
            if ev.events & (sys::IN | sys::ERR) != 0 {
                ok &= c.fill();
            }
            let n = match phase {
                Phase::Preload => &mut preload_counts,
                Phase::Measure => &mut counts,
                _ => &mut unrecorded,
            };
            c.parse(&kf, cfg.value_size, n);
            if !ok {
                c.dead = true;
                continue;
            }
            if !c.pending.is_empty() {
                continue;
            }
            // The batch is complete.
            match phase {
                Phase::Preload => {
                    if c.preload_next < c.preload_end {
                        generator.preload_batch(c);
                    }
                }
                Phase::Warmup | Phase::Measure => {
                    let t = Instant::now();
                    if phase == Phase::Measure {
                        lat.push(t.duration_since(c.batch_start).as_nanos() as u64);
                        counts.batches += 1;
                    }
                    c.batch_start = t;
                    if let Some(interval) = pace {
                        // Due one interval after the last was: a batch
                        // answered late goes at once, but the schedule
                        // never runs more than one interval behind.
                        let due = (c.sched + interval).max(t.checked_sub(interval).unwrap_or(t));
                        c.sched = due;
                        if due > t {
                            c.held = Some(due);
                            continue;
                        }
                    }
                    generator.batch(c);
                }
                Phase::Drain => {}
            }
            if !c.flush() {
                c.dead = true;
            }
        }
    }
    counts.keys = counts.hits + counts.misses;
    let server_cpu_ticks = match (cpu0, cpu1) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a)),
        _ => None,
    };
    Ok(Report {
        cfg_line: format!(
            "server={} conns={} duration={}s warmup={}s keys={} key_size={} value_size={} get_ratio={} multiget={} pipeline={} preload={}",
            cfg.server,
            cfg.conns,
            cfg.duration,
            cfg.warmup,
            cfg.keys,
            cfg.key_size,
            cfg.value_size,
            cfg.get_ratio,
            cfg.multiget,
            cfg.pipeline,
            cfg.preload
        ),
        counts,
        elapsed,
        lat_ns: lat,
        preload_secs,
        preload_errors: preload_counts.errors + preload_counts.not_stored,
        server_cpu_ticks,
        client_cpu_secs: self1 - self0,
        cpus: cfg
            .watch_cpus
            .iter()
            .zip(stat0.iter().zip(stat1.iter()))
            .filter_map(|(&c, (a, b))| {
                let ((b0, s0, t0), (b1, s1, t1)) = ((*a)?, (*b)?);
                let t = (t1 - t0).max(1) as f64;
                Some((c, (b1 - b0) as f64 / t, (s1 - s0) as f64 / t))
            })
            .collect(),
        dead_conns: conns.iter().filter(|c| c.dead).count(),
    })
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[i.clamp(1, sorted.len()) - 1] as f64
}

impl Report {
    /// Prints a human summary, then one `RESULT {json}` line.
    pub fn print(mut self, pipeline: usize) {
        self.lat_ns.sort_unstable();
        let c = &self.counts;
        let secs = self.elapsed.max(1e-9);
        let ops = c.requests as f64 / secs;
        let keys = c.keys as f64 / secs;
        let us = |p: f64| percentile(&self.lat_ns, p) / 1000.0;
        let mean = if self.lat_ns.is_empty() {
            0.0
        } else {
            self.lat_ns.iter().sum::<u64>() as f64 / self.lat_ns.len() as f64 / 1000.0
        };
        let unit = if pipeline > 1 { "batch" } else { "request" };
        let cpu_us = self.server_cpu_ticks.map(|t| {
            let s = t as f64 / sys::clock_ticks_per_sec() as f64;
            (s * 1e6 / c.requests.max(1) as f64, s / secs)
        });
        println!("{}", self.cfg_line);
        if self.preload_secs > 0.0 {
            println!(
                "preload: {:.2}s, {} errors",
                self.preload_secs, self.preload_errors
            );
        }
        println!(
            "{:.0} ops/s ({:.0} keys/s) over {:.2}s: {} gets, {} sets, {} hits, {} misses, {} not stored, {} errors, {} dead connections",
            ops,
            keys,
            secs,
            c.gets,
            c.sets,
            c.hits,
            c.misses,
            c.not_stored,
            c.errors,
            self.dead_conns
        );
        println!(
            "latency per {unit} (us): p50 {:.1}  p99 {:.1}  p99.9 {:.1}  mean {:.1}  max {:.1}",
            us(50.0),
            us(99.0),
            us(99.9),
            mean,
            us(100.0)
        );
        if let Some((per, util)) = cpu_us {
            println!(
                "server cpu: {per:.2} us/request ({:.0}% of one core)",
                util * 100.0
            );
        }
        let client_util = self.client_cpu_secs / secs;
        println!(
            "load generator cpu: {:.0}% of one core",
            client_util * 100.0
        );
        for (cpu, busy, steal) in &self.cpus {
            println!(
                "cpu{cpu}: {:.0}% busy, {:.0}% steal",
                busy * 100.0,
                steal * 100.0
            );
        }
        let cpus_json: Vec<String> = self
            .cpus
            .iter()
            .map(|(c, b, s)| format!("\"{c}\":{{\"busy\":{b:.4},\"steal\":{s:.4}}}"))
            .collect();
        let cpus_json = cpus_json.join(",");
        let (cpu_per, cpu_util) = match cpu_us {
            Some((a, b)) => (format!("{a:.4}"), format!("{b:.4}")),
            None => ("null".into(), "null".into()),
        };
        println!(
            "RESULT {{\"ops_per_sec\":{ops:.1},\"keys_per_sec\":{keys:.1},\"elapsed\":{secs:.4},\"requests\":{},\"gets\":{},\"sets\":{},\"hits\":{},\"misses\":{},\"stored\":{},\"not_stored\":{},\"errors\":{},\"dead_conns\":{},\"batches\":{},\"lat_unit\":\"{unit}\",\"p50_us\":{:.2},\"p99_us\":{:.2},\"p999_us\":{:.2},\"mean_us\":{mean:.2},\"preload_secs\":{:.3},\"preload_errors\":{},\"server_cpu_us_per_req\":{cpu_per},\"server_cpu_util\":{cpu_util},\"client_cpu_util\":{client_util:.4},\"cpus\":{{{cpus_json}}}}}",
            c.requests,
            c.gets,
            c.sets,
            c.hits,
            c.misses,
            c.stored,
            c.not_stored,
            c.errors,
            self.dead_conns,
            c.batches,
            us(50.0),
            us(99.0),
            us(99.9),
            self.preload_secs,
            self.preload_errors,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_zero_padded() {
        let kf = KeyFmt::new(11, 1_000_000).unwrap();
        let mut v = Vec::new();
        kf.write(&mut v, 1);
        assert_eq!(v, b"key:0000001");
        assert!(kf.matches(b"key:0000001", 1));
        assert!(!kf.matches(b"key:0000002", 1));
        assert!(KeyFmt::new(8, 1_000_000).is_err());
    }

    fn conn_with(reply: &[u8], reqs: Vec<Req>, keys: Vec<u64>) -> Conn {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let stream = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        Conn {
            stream,
            out: Vec::new(),
            out_pos: 0,
            inb: reply.to_vec(),
            in_pos: 0,
            pending: reqs.into(),
            keys: keys.into(),
            batch_start: Instant::now(),
            writable: true,
            dead: false,
            preload_next: 0,
            preload_end: 0,
        }
    }

    #[test]
    fn parses_multiget_hits_and_misses() {
        let kf = KeyFmt::new(11, 100).unwrap();
        let reply = b"VALUE key:0000002 0 3\r\nabc\r\nEND\r\nSTORED\r\n";
        let mut c = conn_with(reply, vec![Req::Get { left: 3 }, Req::Set], vec![1, 2, 3]);
        let mut n = Counts::default();
        assert_eq!(c.parse(&kf, 3, &mut n), 2);
        assert_eq!((n.hits, n.misses, n.stored, n.errors), (1, 2, 1, 0));
        assert!(c.keys.is_empty());
    }

    #[test]
    fn waits_for_a_whole_value() {
        let kf = KeyFmt::new(11, 100).unwrap();
        let mut c = conn_with(
            b"VALUE key:0000001 0 3\r\nab",
            vec![Req::Get { left: 1 }],
            vec![1],
        );
        let mut n = Counts::default();
        assert_eq!(c.parse(&kf, 3, &mut n), 0);
        c.inb.extend_from_slice(b"c\r\nEND\r\n");
        assert_eq!(c.parse(&kf, 3, &mut n), 1);
        assert_eq!((n.hits, n.errors), (1, 0));
    }

    #[test]
    fn counts_errors() {
        let kf = KeyFmt::new(11, 100).unwrap();
        let mut c = conn_with(
            b"SERVER_ERROR out of memory\r\nVALUE key:0000009 0 2\r\nab\r\nEND\r\n",
            vec![Req::Set, Req::Get { left: 1 }],
            vec![1],
        );
        let mut n = Counts::default();
        assert_eq!(c.parse(&kf, 3, &mut n), 2);
        // the error line, the wrong length, the unexpected key
        assert_eq!(n.errors, 3);
    }
}
