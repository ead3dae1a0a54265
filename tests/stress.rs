//! Model-based stress test: many concurrent clients send random mixes of
//! every classic command to our server, and every reply is checked against
//! an in-memory model of the cache.
//!
//! Each client owns a key range, so its model stays exact however the
//! clients interleave: values, flags, counters (with memcached's in-place
//! space padding when a number shrinks), and CAS values (a `gets` must
//! repeat the CAS last seen unless the item changed since, and a changed
//! item's CAS must be newer than every CAS seen before the change). A
//! range shared by all clients is checked with weaker rules: a value read
//! there must be one some client wrote (values carry their own checksum in
//! the flags), and every reply must be one of the legal ones.
//!
//! Three phases:
//! - memory to spare: every reply must match the model exactly, and at the
//!   end every key holds what the model says, and `curr_items` agrees;
//! - memory pressure (evictions): an item may vanish, never change: each
//!   reply must match the model with the item present or with it gone;
//! - memory pressure with `-M`: nothing vanishes; a write may fail with
//!   `SERVER_ERROR out of memory`, and a failed `set` removes the old value.
//!
//! `STRESS_OPS` (default 4000) is the number of operations per client and
//! phase; `STRESS_SEED` fixes the random seed (printed on failure).

mod common;

use common::{Kind, Server};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

const CLIENTS: usize = 8;
const SHARED_KEYS: u64 = 16;

fn ops_per_client() -> u64 {
    std::env::var("STRESS_OPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4000)
}

fn base_seed() -> u64 {
    std::env::var("STRESS_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        })
}

/// xorshift64*: small, seedable, good enough to pick operations.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Memory {
    /// Plenty: the model is exact.
    Spare,
    /// Too little, evictions on: items may vanish.
    Evicting,
    /// Too little, `-M`: writes may fail, nothing vanishes.
    NoEvict,
}

#[derive(Clone, Debug)]
struct Item {
    flags: u32,
    value: Vec<u8>,
    /// The CAS last seen for this item, if it has not changed since.
    cas: Option<u64>,
    /// A CAS the item's must be above (the newest seen before a change).
    cas_floor: u64,
}

/// One `VALUE` block of a retrieval: key, flags, data, CAS (for gets).
type Hit = (Vec<u8>, u32, Vec<u8>, Option<u64>);

/// One connection, request/reply.
struct Conn {
    out: TcpStream,
    inp: BufReader<TcpStream>,
}

impl Conn {
    fn open(server: &Server) -> Conn {
        let s = TcpStream::connect(server.addr()).expect("connect");
        s.set_nodelay(true).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        Conn {
            out: s.try_clone().unwrap(),
            inp: BufReader::new(s),
        }
    }
    fn send(&mut self, bytes: &[u8]) {
        self.out.write_all(bytes).expect("send");
    }
    fn line(&mut self) -> Vec<u8> {
        let mut l = Vec::new();
        self.inp.read_until(b'\n', &mut l).expect("read reply");
        assert!(l.ends_with(b"\r\n"), "truncated reply line {:?}", show(&l));
        l
    }
    /// The `VALUE` blocks of a retrieval reply, up to its `END`.
    fn values(&mut self) -> Result<Vec<Hit>, String> {
        let mut found = Vec::new();
        loop {
            let l = self.line();
            if l == b"END\r\n" {
                return Ok(found);
            }
            let text = String::from_utf8_lossy(&l[..l.len() - 2]).into_owned();
            let words: Vec<&str> = text.split(' ').collect();
            if words.len() < 4 || words[0] != "VALUE" {
                return Err(format!("unexpected retrieval line {text:?}"));
            }
            let flags: u32 = words[2].parse().map_err(|_| text.clone())?;
            let len: usize = words[3].parse().map_err(|_| text.clone())?;
            let cas = words.get(4).map(|c| c.parse().unwrap_or(0));
            let mut data = vec![0; len + 2];
            std::io::Read::read_exact(&mut self.inp, &mut data).expect("read value");
            if &data[len..] != b"\r\n" {
                return Err(format!("value of {} not followed by CRLF", words[1]));
            }
            data.truncate(len);
            found.push((words[1].as_bytes().to_vec(), flags, data, cas));
        }
    }
}

fn show(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(&b[..b.len().min(120)]).into_owned();
    format!("{s:?}")
}

/// Shared-range values carry their checksum in the flags.
fn checksum(v: &[u8]) -> u32 {
    v.iter()
        .fold(7u32, |h, &b| h.wrapping_mul(31).wrapping_add(u32::from(b)))
        & 0xffff
}

/// memcached's `safe_strtoull` on a stored value (which ends in CRLF).
fn numeric(v: &[u8]) -> Option<u64> {
    let digits = v.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || digits > 20 || (digits < v.len() && v[digits] != b' ') {
        return None;
    }
    std::str::from_utf8(&v[..digits]).ok()?.parse().ok()
}

/// Tallies shared by every client of a phase.
#[derive(Default)]
struct Tally {
    ops: AtomicU64,
    vanished: AtomicU64,
    out_of_memory: AtomicU64,
    max_cas: AtomicU64,
}

struct Client {
    id: usize,
    conn: Conn,
    rng: Rng,
    model: HashMap<Vec<u8>, Option<Item>>,
    memory: Memory,
    tally: Arc<Tally>,
    /// The newest CAS this client has seen.
    seen_cas: u64,
    keys: u64,
    value_max: u64,
}

/// What a reply may be, given the item present or absent.
struct Outcome {
    reply: Vec<u8>,
    after: Option<Item>,
}

impl Client {
    fn key(&self, i: u64) -> Vec<u8> {
        format!("c{}:k{}", self.id, i).into_bytes()
    }

    fn random_value(&mut self) -> Vec<u8> {
        if self.rng.chance(25) {
            // A number, sometimes near the top of u64 (incr wraps there).
            // Not against memcached itself (DIFF_SELF=1): for a value of
            // 2^63 or more its number parser looks for a minus sign past
            // the value's end, into whatever the chunk held before, and
            // randomly calls the value non-numeric.
            let n = if self.rng.chance(20) && !common::self_mode() {
                u64::MAX - self.rng.below(1000)
            } else {
                self.rng.below(100_000)
            };
            return n.to_string().into_bytes();
        }
        let len = match self.rng.below(10) {
            0 => 0,
            1..=6 => self.rng.below(100),
            _ => self.rng.below(self.value_max),
        } as usize;
        let c = b'a' + self.rng.below(26) as u8;
        (0..len).map(|i| c + (i % 7) as u8).collect()
    }

    fn changed(&self, flags: u32, value: Vec<u8>) -> Item {
        Item {
            flags,
            value,
            cas: None,
            cas_floor: self.seen_cas,
        }
    }

    fn run(mut self, ops: u64) -> Result<HashMap<Vec<u8>, Option<Item>>, String> {
        // Under pressure, first store every key once (checked like any
        // `set`): memory runs out however few random operations follow.
        if self.memory != Memory::Spare {
            for i in 0..self.keys {
                let key = self.key(i);
                self.store(&key, "set")
                    .map_err(|e| format!("client {} filling: {e}", self.id))?;
                self.tally.ops.fetch_add(1, Ordering::Relaxed);
            }
        }
        for n in 0..ops {
            let result = if self.rng.chance(10) {
                self.shared_op()
            } else {
                self.own_op()
            };
            result.map_err(|e| format!("client {} op {n}: {e}", self.id))?;
            self.tally.ops.fetch_add(1, Ordering::Relaxed);
        }
        self.tally
            .max_cas
            .fetch_max(self.seen_cas, Ordering::Relaxed);
        Ok(self.model)
    }

    fn own_op(&mut self) -> Result<(), String> {
        let i = self.rng.below(self.keys);
        let key = self.key(i);
        match self.rng.below(20) {
            0..=3 => self.store(&key, "set"),
            4 => self.store(&key, "add"),
            5 => self.store(&key, "replace"),
            6 => self.store(&key, "append"),
            7 => self.store(&key, "prepend"),
            8 => self.cas(&key),
            9..=11 => self.retrieve(),
            12 => self.delete(&key),
            13 | 14 => self.delta(&key),
            15 => self.touch(&key),
            16 => self.expire_now(&key),
            17 => self.misc(),
            _ => self.gets(&key).map(|_| ()),
        }
    }

    /// Sends `request`, reads one line, and checks it against what the
    /// model allows with the item as it is (and, under eviction, with it
    /// gone); updates the model from whichever matched.
    fn check_line(
        &mut self,
        key: &[u8],
        request: &[u8],
        expect: impl Fn(&Client, Option<&Item>) -> Outcome,
        may_run_out: bool,
    ) -> Result<(), String> {
        self.conn.send(request);
        let got = self.conn.line();
        if std::env::var("STRESS_TRACE").is_ok_and(|k| k.as_bytes() == key) {
            eprintln!("{} -> {}", show(request), show(&got));
        }
        let state = self.model.get(key).cloned().flatten();
        let present = expect(self, state.as_ref());
        if got == present.reply {
            self.model.insert(key.to_vec(), present.after);
            return Ok(());
        }
        // memcached answers NOT_STORED when the combined value of an
        // append or prepend cannot be allocated; the old value stays (under
        // eviction it may also be gone, which the model allows anyway).
        let combining = request.starts_with(b"append ") || request.starts_with(b"prepend ");
        if combining && self.memory != Memory::Spare && got == b"NOT_STORED\r\n" {
            self.tally.out_of_memory.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        if self.memory == Memory::Evicting && state.is_some() {
            let gone = expect(self, None);
            if got == gone.reply {
                self.tally.vanished.fetch_add(1, Ordering::Relaxed);
                self.model.insert(key.to_vec(), gone.after);
                return Ok(());
            }
        }
        if may_run_out
            && self.memory != Memory::Spare
            && got.starts_with(b"SERVER_ERROR out of memory")
        {
            self.tally.out_of_memory.fetch_add(1, Ordering::Relaxed);
            // memcached drops the old value when a `set` cannot be stored.
            if request.starts_with(b"set ") {
                self.model.insert(key.to_vec(), None);
            }
            return Ok(());
        }
        Err(format!(
            "{} -> {} but the model expects {} (item {:?})",
            show(request),
            show(&got),
            show(&present.reply),
            state.map(|s| (s.flags, show(&s.value)))
        ))
    }

    fn store(&mut self, key: &[u8], mode: &'static str) -> Result<(), String> {
        let value = self.random_value();
        let flags = self.rng.below(1 << 16) as u32;
        let mut req =
            format!("{mode} {} {flags} 0 {}\r\n", show_key(key), value.len()).into_bytes();
        req.extend_from_slice(&value);
        req.extend_from_slice(b"\r\n");
        self.check_line(
            key,
            &req,
            |c, it| {
                let stored = |item: Item| Outcome {
                    reply: b"STORED\r\n".to_vec(),
                    after: Some(item),
                };
                let not_stored = Outcome {
                    reply: b"NOT_STORED\r\n".to_vec(),
                    after: it.cloned(),
                };
                match (mode, it) {
                    ("set", _) | ("add", None) => stored(c.changed(flags, value.clone())),
                    ("replace", Some(_)) => stored(c.changed(flags, value.clone())),
                    ("append", Some(old)) => {
                        let v = [old.value.as_slice(), &value].concat();
                        stored(c.changed(old.flags, v))
                    }
                    ("prepend", Some(old)) => {
                        let v = [value.as_slice(), &old.value].concat();
                        stored(c.changed(old.flags, v))
                    }
                    _ => not_stored,
                }
            },
            true,
        )
    }

    fn cas(&mut self, key: &[u8]) -> Result<(), String> {
        let state = self.model.get(key).cloned().flatten();
        let known = match state {
            Some(it) if it.cas.is_some() => it.cas,
            Some(_) => self.gets(key)?,
            None => None,
        };
        let stale = self.rng.chance(30);
        let unique = match known {
            Some(c) if stale => c + 1_000_000_007,
            Some(c) => c,
            None => 1 + self.rng.below(1_000_000),
        };
        let value = self.random_value();
        let flags = self.rng.below(1000) as u32;
        let mut req = format!(
            "cas {} {flags} 0 {} {unique}\r\n",
            show_key(key),
            value.len()
        )
        .into_bytes();
        req.extend_from_slice(&value);
        req.extend_from_slice(b"\r\n");
        self.check_line(
            key,
            &req,
            |c, it| match it {
                None => Outcome {
                    reply: b"NOT_FOUND\r\n".to_vec(),
                    after: None,
                },
                Some(old) if old.cas == Some(unique) => Outcome {
                    reply: b"STORED\r\n".to_vec(),
                    after: Some(c.changed(flags, value.clone())),
                },
                Some(old) => Outcome {
                    reply: b"EXISTS\r\n".to_vec(),
                    after: Some(old.clone()),
                },
            },
            true,
        )
    }

    fn delete(&mut self, key: &[u8]) -> Result<(), String> {
        let req = format!("delete {}\r\n", show_key(key)).into_bytes();
        self.check_line(
            key,
            &req,
            |_, it| Outcome {
                reply: if it.is_some() {
                    b"DELETED\r\n".to_vec()
                } else {
                    b"NOT_FOUND\r\n".to_vec()
                },
                after: None,
            },
            false,
        )
    }

    fn delta(&mut self, key: &[u8]) -> Result<(), String> {
        let incr = self.rng.chance(50);
        let by = if self.rng.chance(10) {
            u64::MAX - self.rng.below(10)
        } else {
            self.rng.below(1000)
        };
        let verb = if incr { "incr" } else { "decr" };
        let req = format!("{verb} {} {by}\r\n", show_key(key)).into_bytes();
        self.check_line(
            key,
            &req,
            |c, it| {
                let Some(old) = it else {
                    return Outcome {
                        reply: b"NOT_FOUND\r\n".to_vec(),
                        after: None,
                    };
                };
                let Some(n) = numeric(&old.value) else {
                    return Outcome {
                        reply: b"CLIENT_ERROR cannot increment or decrement non-numeric value\r\n"
                            .to_vec(),
                        after: Some(old.clone()),
                    };
                };
                let new = if incr {
                    n.wrapping_add(by)
                } else {
                    n.saturating_sub(by)
                };
                let mut digits = new.to_string().into_bytes();
                let reply = [digits.as_slice(), b"\r\n"].concat();
                // A shorter number is written in place, padded with spaces.
                if digits.len() < old.value.len() {
                    digits.resize(old.value.len(), b' ');
                }
                Outcome {
                    reply,
                    after: Some(c.changed(old.flags, digits)),
                }
            },
            true,
        )
    }

    fn touch(&mut self, key: &[u8]) -> Result<(), String> {
        let req = format!("touch {} 3600\r\n", show_key(key)).into_bytes();
        self.check_line(
            key,
            &req,
            |_, it| Outcome {
                reply: if it.is_some() {
                    b"TOUCHED\r\n".to_vec()
                } else {
                    b"NOT_FOUND\r\n".to_vec()
                },
                after: it.cloned(),
            },
            false,
        )
    }

    /// A negative TTL stores an item that is already expired.
    fn expire_now(&mut self, key: &[u8]) -> Result<(), String> {
        let req = format!("set {} 5 -1 3\r\nold\r\n", show_key(key)).into_bytes();
        self.check_line(
            key,
            &req,
            |_, _| Outcome {
                reply: b"STORED\r\n".to_vec(),
                after: None,
            },
            true,
        )
    }

    fn misc(&mut self) -> Result<(), String> {
        let (req, want): (&[u8], &[u8]) = match self.rng.below(3) {
            0 => (b"version\r\n", b"VERSION 1.6.18\r\n"),
            1 => (b"verbosity 0\r\n", b"OK\r\n"),
            _ => (b"bogus_command\r\n", b"ERROR\r\n"),
        };
        self.conn.send(req);
        let got = self.conn.line();
        if got != want {
            return Err(format!("{} -> {}", show(req), show(&got)));
        }
        Ok(())
    }

    /// `gets` of one key: checks the value and the CAS rules; returns the CAS.
    fn gets(&mut self, key: &[u8]) -> Result<Option<u64>, String> {
        self.conn
            .send(format!("gets {}\r\n", show_key(key)).as_bytes());
        let found = self.conn.values()?;
        self.judge_retrieval(&[key.to_vec()], found, true)?;
        Ok(self.model.get(key).cloned().flatten().and_then(|i| i.cas))
    }

    /// `get`, `gets`, `gat` or `gats` of several own keys at once.
    fn retrieve(&mut self) -> Result<(), String> {
        let n = 1 + self.rng.below(8);
        let keys: Vec<Vec<u8>> = (0..n)
            .map(|_| {
                let i = self.rng.below(self.keys);
                self.key(i)
            })
            .collect();
        let names: Vec<String> = keys.iter().map(|k| show_key(k)).collect();
        let (verb, with_cas) = match self.rng.below(4) {
            0 => ("get", false),
            1 => ("gets", true),
            2 => ("gat 3600", false),
            _ => ("gats 0", true),
        };
        self.conn
            .send(format!("{verb} {}\r\n", names.join(" ")).as_bytes());
        let found = self.conn.values()?;
        self.judge_retrieval(&keys, found, with_cas)
    }

    fn judge_retrieval(
        &mut self,
        asked: &[Vec<u8>],
        found: Vec<Hit>,
        with_cas: bool,
    ) -> Result<(), String> {
        let mut found = found.into_iter().peekable();
        for key in asked {
            let expected = self.model.get(key).cloned().flatten();
            let hit = found.next_if(|(k, ..)| k == key);
            match (expected, hit) {
                (None, None) => {}
                (None, Some(_)) => {
                    return Err(format!(
                        "{} returned, but it was never stored or is gone",
                        show(key)
                    ));
                }
                (Some(_), None) if self.memory == Memory::Evicting => {
                    self.tally.vanished.fetch_add(1, Ordering::Relaxed);
                    self.model.insert(key.clone(), None);
                }
                (Some(_), None) => return Err(format!("{} lost", show(key))),
                (Some(mut it), Some((_, flags, value, cas))) => {
                    if flags != it.flags || value != it.value {
                        return Err(format!(
                            "{}: got flags {flags} value {}, model has {} {}",
                            show(key),
                            show(&value),
                            it.flags,
                            show(&it.value)
                        ));
                    }
                    if with_cas {
                        let cas = cas.ok_or("gets without a CAS")?;
                        match it.cas {
                            Some(known) if known != cas => {
                                return Err(format!(
                                    "{}: CAS {cas}, last seen {known}, no change since",
                                    show(key)
                                ));
                            }
                            None if cas <= it.cas_floor => {
                                return Err(format!(
                                    "{}: changed, but its CAS {cas} is not newer than {}",
                                    show(key),
                                    it.cas_floor
                                ));
                            }
                            _ => {}
                        }
                        it.cas = Some(cas);
                        self.seen_cas = self.seen_cas.max(cas);
                        self.model.insert(key.clone(), Some(it));
                    }
                }
            }
        }
        match found.next() {
            Some((k, ..)) => Err(format!("unexpected or out-of-order key {}", show(&k))),
            None => Ok(()),
        }
    }

    /// An operation on the shared range: only legal replies and values
    /// someone wrote.
    fn shared_op(&mut self) -> Result<(), String> {
        let key = format!("shared:{}", self.rng.below(SHARED_KEYS));
        let (req, legal): (Vec<u8>, &[&[u8]]) = match self.rng.below(6) {
            0 | 1 => {
                let mode = ["set", "add", "replace"][self.rng.below(3) as usize];
                let value = format!(
                    "w{}-{}-{}",
                    self.id,
                    self.rng.next(),
                    "x".repeat(self.rng.below(50) as usize)
                );
                let mut req = format!(
                    "{mode} {key} {} 0 {}\r\n",
                    checksum(value.as_bytes()),
                    value.len()
                )
                .into_bytes();
                req.extend_from_slice(value.as_bytes());
                req.extend_from_slice(b"\r\n");
                (req, &[b"STORED\r\n", b"NOT_STORED\r\n"])
            }
            2 => (
                format!("delete {key}\r\n").into_bytes(),
                &[b"DELETED\r\n", b"NOT_FOUND\r\n"],
            ),
            3 => (
                format!("touch {key} 0\r\n").into_bytes(),
                &[b"TOUCHED\r\n", b"NOT_FOUND\r\n"],
            ),
            _ => {
                self.conn.send(format!("gets {key}\r\n").as_bytes());
                for (_, flags, value, cas) in self.conn.values()? {
                    if flags != checksum(&value) || !value.starts_with(b"w") {
                        return Err(format!(
                            "shared {key}: value {} flags {flags} nobody wrote",
                            show(&value)
                        ));
                    }
                    self.seen_cas = self.seen_cas.max(cas.unwrap_or(0));
                }
                return Ok(());
            }
        };
        self.conn.send(&req);
        let got = self.conn.line();
        let oom = self.memory != Memory::Spare && got.starts_with(b"SERVER_ERROR out of memory");
        if !legal.contains(&got.as_slice()) && !oom {
            return Err(format!("shared {} -> {}", show(&req), show(&got)));
        }
        Ok(())
    }
}

fn show_key(k: &[u8]) -> String {
    String::from_utf8_lossy(k).into_owned()
}

struct PhaseReport {
    ops: u64,
    vanished: u64,
    out_of_memory: u64,
    evictions: u64,
}

fn stats(conn: &mut Conn) -> HashMap<String, String> {
    conn.send(b"stats\r\n");
    let mut m = HashMap::new();
    loop {
        let l = conn.line();
        if l == b"END\r\n" {
            return m;
        }
        let text = String::from_utf8_lossy(&l[..l.len() - 2]).into_owned();
        let mut w = text.splitn(3, ' ');
        if let (Some("STAT"), Some(k), Some(v)) = (w.next(), w.next(), w.next()) {
            m.insert(k.to_string(), v.to_string());
        }
    }
}

fn run_phase(memory: Memory, args: &[&str], keys: u64, value_max: u64) -> PhaseReport {
    let server = Server::start(Kind::Ours, args);
    let seed = base_seed();
    let tally = Arc::new(Tally::default());
    let ops = ops_per_client();
    let handles: Vec<_> = (0..CLIENTS)
        .map(|id| {
            let client = Client {
                id,
                conn: Conn::open(&server),
                rng: Rng::new(seed ^ (id as u64) << 32),
                model: HashMap::new(),
                memory,
                tally: tally.clone(),
                seen_cas: 0,
                keys,
                value_max,
            };
            std::thread::spawn(move || client.run(ops))
        })
        .collect();
    let mut models = Vec::new();
    for h in handles {
        match h.join().expect("client thread panicked") {
            Ok(model) => models.push(model),
            Err(e) => panic!("{memory:?} phase (STRESS_SEED={seed}): {e}"),
        }
    }
    let mut check = Conn::open(&server);
    if memory != Memory::Evicting {
        verify_final(&mut check, &models, memory);
    }
    let st = stats(&mut check);
    let report = PhaseReport {
        ops: tally.ops.load(Ordering::Relaxed),
        vanished: tally.vanished.load(Ordering::Relaxed),
        out_of_memory: tally.out_of_memory.load(Ordering::Relaxed),
        evictions: st["evictions"].parse().unwrap(),
    };
    eprintln!(
        "stress {memory:?}: {} operations checked, {} items seen evicted, {} out-of-memory \
         replies, stats evictions {}",
        report.ops, report.vanished, report.out_of_memory, report.evictions
    );
    report
}

/// After the clients are done: every own key holds what its model says,
/// and the item count agrees (nothing lost, nothing extra).
fn verify_final(conn: &mut Conn, models: &[HashMap<Vec<u8>, Option<Item>>], memory: Memory) {
    let mut present = 0;
    for model in models {
        for (key, item) in model {
            conn.send(format!("get {}\r\n", show_key(key)).as_bytes());
            let found = conn.values().unwrap();
            match (item, found.first()) {
                (None, None) => {}
                (Some(it), Some((_, flags, value, _))) => {
                    assert_eq!((*flags, value), (it.flags, &it.value), "{}", show(key));
                    present += 1;
                }
                (want, got) => panic!(
                    "{memory:?}: final {} expected {:?}, got {:?}",
                    show(key),
                    want.as_ref().map(|i| show(&i.value)),
                    got.map(|g| show(&g.2))
                ),
            }
        }
    }
    conn.send(b"get");
    for i in 0..SHARED_KEYS {
        conn.send(format!(" shared:{i}").as_bytes());
    }
    conn.send(b"\r\n");
    let shared = conn.values().unwrap().len();
    // Counted after every key was read: items stored already expired are
    // counted until a read finds them (as in memcached).
    let st = stats(conn);
    let items: usize = st["curr_items"].parse().unwrap();
    assert_eq!(
        items,
        present + shared,
        "{memory:?}: curr_items disagrees with the model"
    );
}

#[test]
fn stress_with_memory_to_spare_matches_model_exactly() {
    let r = run_phase(Memory::Spare, &["-m", "64"], 64, 3000);
    assert_eq!(r.ops, ops_per_client() * CLIENTS as u64);
    assert_eq!(r.evictions, 0);
    assert_eq!(r.vanished, 0);
}

#[test]
fn stress_under_eviction_loses_items_but_never_corrupts() {
    let r = run_phase(Memory::Evicting, &["-m", "2"], 1000, 20000);
    assert_eq!(r.ops, (ops_per_client() + 1000) * CLIENTS as u64);
    assert!(r.evictions > 0, "the phase never ran out of memory");
}

#[test]
fn stress_with_no_eviction_fails_writes_but_loses_nothing() {
    let r = run_phase(Memory::NoEvict, &["-m", "2", "-M"], 1000, 20000);
    assert_eq!(r.ops, (ops_per_client() + 1000) * CLIENTS as u64);
    assert_eq!(r.evictions, 0);
    assert!(r.out_of_memory > 0, "the phase never ran out of memory");
}
