//! Differential tests for the binary protocol: every opcode memcached
//! 1.6.18 serves, quiet batching, every error status, CAS, expiry, incr
//! with an initial value, large values, stats, and SASL's refusals, compared
//! byte for byte with the real memcached (the oracle). Each script ends with
//! a binary no-op sentinel (see `BINARY_SENTINEL` in `tests/common`).
//!
//! Run: `cargo test --test diff_binary`.

mod common;

use common::*;

mod op {
    pub const GET: u8 = 0x00;
    pub const SET: u8 = 0x01;
    pub const ADD: u8 = 0x02;
    pub const REPLACE: u8 = 0x03;
    pub const DELETE: u8 = 0x04;
    pub const INCR: u8 = 0x05;
    pub const DECR: u8 = 0x06;
    pub const QUIT: u8 = 0x07;
    pub const FLUSH: u8 = 0x08;
    pub const GETQ: u8 = 0x09;
    pub const NOOP: u8 = 0x0a;
    pub const VERSION: u8 = 0x0b;
    pub const GETK: u8 = 0x0c;
    pub const GETKQ: u8 = 0x0d;
    pub const APPEND: u8 = 0x0e;
    pub const PREPEND: u8 = 0x0f;
    pub const STAT: u8 = 0x10;
    pub const SETQ: u8 = 0x11;
    pub const ADDQ: u8 = 0x12;
    pub const REPLACEQ: u8 = 0x13;
    pub const DELETEQ: u8 = 0x14;
    pub const INCRQ: u8 = 0x15;
    pub const DECRQ: u8 = 0x16;
    pub const QUITQ: u8 = 0x17;
    pub const FLUSHQ: u8 = 0x18;
    pub const APPENDQ: u8 = 0x19;
    pub const PREPENDQ: u8 = 0x1a;
    pub const VERBOSITY: u8 = 0x1b;
    pub const TOUCH: u8 = 0x1c;
    pub const GAT: u8 = 0x1d;
    pub const GATQ: u8 = 0x1e;
    pub const SASL_LIST: u8 = 0x20;
    pub const SASL_AUTH: u8 = 0x21;
    pub const SASL_STEP: u8 = 0x22;
    pub const GATK: u8 = 0x23;
    pub const GATKQ: u8 = 0x24;
}

/// A request with every field given; `bodylen` None means the true length.
struct Req<'a> {
    op: u8,
    key: &'a [u8],
    ext: &'a [u8],
    val: &'a [u8],
    cas: u64,
    opaque: u32,
    bodylen: Option<u32>,
    magic: u8,
}

impl Req<'_> {
    fn bytes(&self) -> Vec<u8> {
        let body = self.key.len() + self.ext.len() + self.val.len();
        let mut b = vec![self.magic, self.op];
        b.extend_from_slice(&(self.key.len() as u16).to_be_bytes());
        b.push(self.ext.len() as u8);
        b.extend_from_slice(&[0, 0, 0]);
        b.extend_from_slice(&self.bodylen.unwrap_or(body as u32).to_be_bytes());
        b.extend_from_slice(&self.opaque.to_be_bytes());
        b.extend_from_slice(&self.cas.to_be_bytes());
        b.extend_from_slice(self.ext);
        b.extend_from_slice(self.key);
        b.extend_from_slice(self.val);
        b
    }
}

fn base(op: u8) -> Req<'static> {
    Req {
        op,
        key: b"",
        ext: b"",
        val: b"",
        cas: 0,
        opaque: 0x1000 + op as u32,
        bodylen: None,
        magic: 0x80,
    }
}

fn simple(op: u8) -> Vec<u8> {
    base(op).bytes()
}

fn keyed(op: u8, key: &str) -> Vec<u8> {
    Req {
        key: key.as_bytes(),
        ..base(op)
    }
    .bytes()
}

fn store_ext(flags: u32, exptime: u32) -> Vec<u8> {
    let mut e = flags.to_be_bytes().to_vec();
    e.extend_from_slice(&exptime.to_be_bytes());
    e
}

/// set/add/replace (or their quiet forms) with flags and expiry.
fn store_full(op: u8, key: &str, val: &[u8], flags: u32, exptime: u32, cas: u64) -> Vec<u8> {
    let ext = store_ext(flags, exptime);
    Req {
        key: key.as_bytes(),
        ext: &ext,
        val,
        cas,
        ..base(op)
    }
    .bytes()
}

fn store(op: u8, key: &str, val: &str) -> Vec<u8> {
    store_full(op, key, val.as_bytes(), 0, 0, 0)
}

fn set(key: &str, val: &str) -> Vec<u8> {
    store(op::SET, key, val)
}

fn concat(op: u8, key: &str, val: &str, cas: u64) -> Vec<u8> {
    Req {
        key: key.as_bytes(),
        val: val.as_bytes(),
        cas,
        ..base(op)
    }
    .bytes()
}

fn delta_ext(delta: u64, initial: u64, exptime: u32) -> Vec<u8> {
    let mut e = delta.to_be_bytes().to_vec();
    e.extend_from_slice(&initial.to_be_bytes());
    e.extend_from_slice(&exptime.to_be_bytes());
    e
}

fn arith(op: u8, key: &str, delta: u64, initial: u64, exptime: u32) -> Vec<u8> {
    let ext = delta_ext(delta, initial, exptime);
    Req {
        key: key.as_bytes(),
        ext: &ext,
        ..base(op)
    }
    .bytes()
}

fn touch(op: u8, key: &str, exptime: u32) -> Vec<u8> {
    let ext = exptime.to_be_bytes();
    Req {
        key: key.as_bytes(),
        ext: &ext,
        ..base(op)
    }
    .bytes()
}

fn script(parts: &[Vec<u8>]) -> Script {
    Script::binary().send(parts.concat())
}

const DEFAULT: &[&str] = &[];
const NO_MISSES: u32 = 0xffff_ffff;

#[test]
fn retrieval_and_storage() {
    let Some(mut g) = Group::start("binary_storage", DEFAULT) else {
        return;
    };
    g.case("get miss", script(&[keyed(op::GET, "nope")]));
    g.case(
        "getk miss echoes the key",
        script(&[keyed(op::GETK, "nope")]),
    );
    g.case(
        "set then get/getk",
        script(&[set("a", "hello"), keyed(op::GET, "a"), keyed(op::GETK, "a")]),
    );
    g.case(
        "flags survive",
        script(&[
            store_full(op::SET, "fl", b"v", 0xdeadbeef, 0, 0),
            keyed(op::GET, "fl"),
        ]),
    );
    g.case(
        "add existing / add new",
        script(&[
            store(op::ADD, "ad", "1"),
            store(op::ADD, "ad", "2"),
            keyed(op::GET, "ad"),
        ]),
    );
    g.case(
        "replace missing / existing",
        script(&[
            store(op::REPLACE, "rp", "1"),
            set("rp", "old"),
            store(op::REPLACE, "rp", "new"),
            keyed(op::GET, "rp"),
        ]),
    );
    g.case(
        "append/prepend missing",
        script(&[
            concat(op::APPEND, "apm", "x", 0),
            concat(op::PREPEND, "apm", "x", 0),
        ]),
    );
    g.case(
        "append/prepend existing",
        script(&[
            store_full(op::SET, "ap", b"mid", 7, 0, 0),
            concat(op::APPEND, "ap", "_end", 0),
            concat(op::PREPEND, "ap", "start_", 0),
            keyed(op::GETK, "ap"),
        ]),
    );
    g.case(
        "empty value",
        script(&[set("empty", ""), keyed(op::GET, "empty")]),
    );
    g.case(
        "binary value bytes",
        script(&[
            store_full(
                op::SET,
                "bin",
                &[0, 1, 2, 0x80, 0xff, b'\r', b'\n'],
                0,
                0,
                0,
            ),
            keyed(op::GET, "bin"),
        ]),
    );
    g.case(
        "delete hit / miss",
        script(&[
            set("d", "x"),
            keyed(op::DELETE, "d"),
            keyed(op::DELETE, "d"),
            keyed(op::GET, "d"),
        ]),
    );
    g.case(
        "keys with spaces, control bytes and NUL",
        script(&[
            set("a b", "1"),
            set("c\r\nd", "2"),
            set("e\0f", "3"),
            keyed(op::GETK, "a b"),
            keyed(op::GETK, "c\r\nd"),
            keyed(op::GETK, "e\0f"),
            keyed(op::GET, "e"),
        ]),
    );
    g.case(
        "binary stores are ascii items",
        script(&[store_full(op::SET, "shared", b"from binary", 42, 0, 0)]),
    );
    g.case(
        "ascii reads them",
        "gets shared\r\nset fromtext 3 0 4\r\ntext\r\n",
    );
    g.case(
        "binary reads ascii stores",
        script(&[keyed(op::GETK, "fromtext")]),
    );
    g.case("version", script(&[simple(op::VERSION)]));
    g.case("noop", script(&[simple(op::NOOP)]));
    g.case(
        "opaque echoed",
        script(&[Req {
            opaque: 0xfeedf00d,
            key: b"op",
            ..base(op::GET)
        }
        .bytes()]),
    );
    g.case(
        "split into single bytes",
        Script::binary().split([set("sp", "split"), keyed(op::GETK, "sp")].concat(), 1),
    );
    g.case(
        "split header and value",
        Script::binary().split(
            [set("sp2", &"v".repeat(100)), keyed(op::GET, "sp2")].concat(),
            7,
        ),
    );
    g.finish();
}

#[test]
fn cas_values() {
    let Some(mut g) = Group::start("binary_cas", DEFAULT) else {
        return;
    };
    // Fresh servers so CAS counters agree.
    g.fresh(
        "cas on set/replace",
        DEFAULT,
        script(&[
            set("c", "1"),
            keyed(op::GET, "c"),
            store_full(op::SET, "c", b"2", 0, 0, 1),
            store_full(op::SET, "c", b"3", 0, 0, 99),
            store_full(op::REPLACE, "c", b"4", 0, 0, 3),
            store_full(op::ADD, "c", b"5", 0, 0, 4),
            store_full(op::SET, "nocas", b"5", 0, 0, 4),
            keyed(op::GETK, "c"),
        ]),
    );
    g.fresh(
        "cas on append and delete",
        DEFAULT,
        script(&[
            set("c", "1"),
            concat(op::APPEND, "c", "2", 5),
            concat(op::APPEND, "c", "2", 1),
            concat(op::PREPEND, "c", "0", 2),
            Req {
                key: b"c",
                cas: 1,
                ..base(op::DELETE)
            }
            .bytes(),
            Req {
                key: b"c",
                cas: 3,
                ..base(op::DELETE)
            }
            .bytes(),
            keyed(op::GET, "c"),
        ]),
    );
    g.fresh(
        "cas on incr",
        DEFAULT,
        script(&[
            set("n", "10"),
            Req {
                key: b"n",
                ext: &delta_ext(1, 0, 0),
                cas: 7,
                ..base(op::INCR)
            }
            .bytes(),
            Req {
                key: b"n",
                ext: &delta_ext(1, 0, 0),
                cas: 1,
                ..base(op::INCR)
            }
            .bytes(),
            keyed(op::GET, "n"),
        ]),
    );
    g.fresh(
        "-C: no cas",
        &["-C"],
        script(&[
            set("c", "1"),
            keyed(op::GET, "c"),
            arith(op::INCR, "c", 1, 0, 0),
        ]),
    );
    g.finish();
}

#[test]
fn arithmetic() {
    let Some(mut g) = Group::start("binary_arith", DEFAULT) else {
        return;
    };
    g.case(
        "incr/decr hit",
        script(&[
            set("n", "10"),
            arith(op::INCR, "n", 5, 0, 0),
            arith(op::DECR, "n", 3, 0, 0),
            arith(op::DECR, "n", 100, 0, 0),
            keyed(op::GET, "n"),
        ]),
    );
    g.case(
        "decr pads in place",
        script(&[
            set("p", "100"),
            arith(op::DECR, "p", 1, 0, 0),
            arith(op::DECR, "p", 95, 0, 0),
            keyed(op::GET, "p"),
        ]),
    );
    g.case(
        "incr wraps",
        script(&[
            set("w", "18446744073709551615"),
            arith(op::INCR, "w", 2, 0, 0),
            keyed(op::GET, "w"),
        ]),
    );
    g.case(
        "miss without initial",
        script(&[
            arith(op::INCR, "m1", 1, 0, NO_MISSES),
            arith(op::DECR, "m1", 1, 0, NO_MISSES),
        ]),
    );
    g.case(
        "miss creates the initial value",
        script(&[
            arith(op::INCR, "init", 1, 42, 0),
            arith(op::INCR, "init", 1, 42, 0),
            keyed(op::GETK, "init"),
            arith(op::DECR, "init2", 1, 0, 100),
            keyed(op::GET, "init2"),
        ]),
    );
    g.case(
        "non-numeric value",
        script(&[set("nn", "abc"), arith(op::INCR, "nn", 1, 0, 0)]),
    );
    g.case(
        "long number and empty value",
        script(&[
            set("ln", "123456789012345678901"),
            arith(op::INCR, "ln", 1, 0, 0),
            set("ev", ""),
            arith(op::INCR, "ev", 1, 0, 0),
        ]),
    );
    g.finish();
}

#[test]
fn quiet_commands() {
    let Some(mut g) = Group::start("binary_quiet", DEFAULT) else {
        return;
    };
    g.case(
        "quiet stores then getq/getkq hits and misses",
        script(&[
            store(op::SETQ, "q1", "one"),
            store(op::ADDQ, "q2", "two"),
            store(op::ADDQ, "q2", "again"),
            store(op::REPLACEQ, "q3", "x"),
            keyed(op::GETQ, "q1"),
            keyed(op::GETQ, "missing"),
            keyed(op::GETKQ, "q2"),
            keyed(op::GETKQ, "missing"),
            simple(op::NOOP),
        ]),
    );
    g.case(
        "quiet append/prepend/delete/incr",
        script(&[
            set("qa", "1"),
            concat(op::APPENDQ, "qa", "2", 0),
            concat(op::PREPENDQ, "qa", "0", 0),
            concat(op::APPENDQ, "qmiss", "2", 0),
            arith(op::INCRQ, "qn", 1, 5, 0),
            arith(op::INCRQ, "qn", 1, 5, 0),
            arith(op::DECRQ, "qn", 1, 5, 0),
            arith(op::DECRQ, "qmiss2", 1, 5, NO_MISSES),
            keyed(op::DELETEQ, "qa"),
            keyed(op::DELETEQ, "qa"),
            keyed(op::GET, "qn"),
        ]),
    );
    g.case(
        "quiet gat",
        script(&[
            set("qg", "v"),
            touch(op::GATQ, "qg", 100),
            touch(op::GATQ, "missing", 100),
            touch(op::GATKQ, "qg", 100),
            touch(op::GATKQ, "missing", 100),
            simple(op::NOOP),
        ]),
    );
    g.case(
        "a non-quiet command after quiet ones",
        script(&[
            store(op::SETQ, "qx", "1"),
            keyed(op::GETQ, "nope"),
            simple(op::VERSION),
        ]),
    );
    g.case(
        "flushq",
        script(&[set("f", "1"), simple(op::FLUSHQ), keyed(op::GET, "f")]),
    );
    g.case("quitq", script(&[set("f", "1"), simple(op::QUITQ)]));
    g.case("quit", script(&[simple(op::QUIT), simple(op::NOOP)]));
    g.finish();
}

#[test]
fn touch_and_gat() {
    let Some(mut g) = Group::start("binary_touch", DEFAULT) else {
        return;
    };
    g.case(
        "touch hit returns flags only",
        script(&[
            store_full(op::SET, "t", b"val", 5, 0, 0),
            touch(op::TOUCH, "t", 100),
            touch(op::TOUCH, "missing", 100),
        ]),
    );
    g.case(
        "gat / gatk hit and miss",
        script(&[
            store_full(op::SET, "g", b"val", 9, 0, 0),
            touch(op::GAT, "g", 100),
            touch(op::GATK, "g", 100),
            touch(op::GAT, "missing", 1),
            touch(op::GATK, "missing", 1),
        ]),
    );
    g.case(
        "expiry in the past",
        script(&[
            store_full(op::SET, "past", b"v", 0, 1, 0),
            keyed(op::GET, "past"),
            set("tp", "v"),
            touch(op::GAT, "tp", 1),
            keyed(op::GET, "tp"),
        ]),
    );
    g.finish();
}

#[test]
fn errors() {
    let Some(mut g) = Group::start("binary_errors", &["-I", "1k", "-o", "slab_chunk_max=512"])
    else {
        return;
    };
    g.case("unknown opcode", script(&[simple(0x50), simple(op::NOOP)]));
    // memcached discards `bodylen` bytes after the key and extras it has
    // already consumed: two more bytes than the body.
    g.case(
        "unknown opcode swallows its body (and as much again as its key)",
        script(&[
            Req {
                key: b"kk",
                val: b"0123456789",
                ..base(0x60)
            }
            .bytes(),
            b"zz".to_vec(),
            simple(op::NOOP),
        ]),
    );
    g.case(
        "verbosity is unknown",
        script(&[
            Req {
                ext: &[0, 0, 0, 1],
                ..base(op::VERBOSITY)
            }
            .bytes(),
            b"xxxx".to_vec(),
        ]),
    );
    g.case(
        "too large",
        script(&[set("big", &"x".repeat(2000)), keyed(op::GET, "big")]),
    );
    // memcached holds the value length in an int: from 2 GiB on it is
    // negative and nothing is discarded, so the next header is read.
    g.case(
        "value length of 2 GiB or more discards nothing",
        script(&[
            Req {
                key: b"huge",
                ext: &store_ext(0, 0),
                bodylen: Some(0x8000_0010),
                ..base(op::SET)
            }
            .bytes(),
            Req {
                key: b"huge",
                bodylen: Some(0xffff_fff0),
                ..base(0x60)
            }
            .bytes(),
            simple(op::VERSION),
        ]),
    );
    g.case(
        "too large set removes the old value",
        script(&[
            set("big2", "small"),
            set("big2", &"x".repeat(2000)),
            keyed(op::GET, "big2"),
        ]),
    );
    g.case(
        "too large append",
        script(&[
            set("ta", "s"),
            concat(op::APPEND, "ta", &"x".repeat(2000), 0),
            keyed(op::GET, "ta"),
        ]),
    );
    g.case(
        "key too long closes",
        script(&[keyed(op::GET, &"k".repeat(251)), simple(op::NOOP)]),
    );
    g.case(
        "key of 250 is fine",
        script(&[keyed(op::GET, &"k".repeat(250))]),
    );
    g.case(
        "keylen beyond body closes",
        script(&[Req {
            key: b"abc",
            bodylen: Some(2),
            ..base(op::GET)
        }
        .bytes()]),
    );
    g.case(
        "get with extras is a protocol error",
        script(&[Req {
            key: b"abc",
            ext: &[0, 0, 0, 0],
            ..base(op::GET)
        }
        .bytes()]),
    );
    g.case("get without key", script(&[simple(op::GET)]));
    g.case(
        "set without extras",
        script(&[Req {
            key: b"abc",
            val: b"v",
            ..base(op::SET)
        }
        .bytes()]),
    );
    g.case(
        "noop with a body",
        script(&[Req {
            key: b"abc",
            ..base(op::NOOP)
        }
        .bytes()]),
    );
    g.case(
        "version with extras",
        script(&[Req {
            ext: &[1],
            ..base(op::VERSION)
        }
        .bytes()]),
    );
    g.case(
        "incr with short extras",
        script(&[Req {
            key: b"n",
            ext: &[0; 8],
            ..base(op::INCR)
        }
        .bytes()]),
    );
    g.case("touch without extras", script(&[keyed(op::TOUCH, "t")]));
    g.case(
        "flush with bad extras",
        script(&[Req {
            ext: &[0, 0],
            ..base(op::FLUSH)
        }
        .bytes()]),
    );
    g.case(
        "delete with a value",
        script(&[Req {
            key: b"d",
            val: b"x",
            ..base(op::DELETE)
        }
        .bytes()]),
    );
    g.case(
        "append with extras",
        script(&[Req {
            key: b"d",
            ext: &[0; 8],
            ..base(op::APPEND)
        }
        .bytes()]),
    );
    g.case(
        "bad magic closes; earlier replies still unsent are lost",
        script(&[
            set("bm", "1"),
            keyed(op::GET, "bm"),
            Req {
                magic: 0x81,
                ..base(op::NOOP)
            }
            .bytes(),
        ]),
    );
    g.case(
        "bad magic after an error reply",
        script(&[
            keyed(op::GET, "missing"),
            Req {
                magic: 0x00,
                ..base(op::NOOP)
            }
            .bytes(),
        ]),
    );
    g.case(
        "sasl commands without -S",
        script(&[
            simple(op::SASL_LIST),
            Req {
                key: b"PLAIN",
                val: b"\0a\0b",
                ..base(op::SASL_AUTH)
            }
            .bytes(),
            Req {
                key: b"PLAIN",
                val: b"xx",
                ..base(op::SASL_STEP)
            }
            .bytes(),
        ]),
    );
    g.case(
        "pipelined errors and successes",
        script(&[
            keyed(op::GET, "x1"),
            set("x1", "v"),
            keyed(op::GETK, "x1"),
            store(op::ADD, "x1", "w"),
            keyed(op::GETQ, "x2"),
            simple(0x44),
            simple(op::VERSION),
        ]),
    );
    g.finish();
}

#[test]
fn out_of_memory() {
    let Some(mut g) = Group::start("binary_oom", &["-M", "-m", "2"]) else {
        return;
    };
    // The same fill as the ascii suite's: 1000-byte values in 2 MiB.
    let value = "x".repeat(1000);
    let fill: Vec<Vec<u8>> = (0..2500)
        .map(|i| store(op::SETQ, &format!("k{i}"), &value))
        .collect();
    g.case("fill 2 MiB with 1000-byte values (quiet)", script(&fill));
    g.case(
        "full: set over an existing key fails and unlinks it",
        script(&[
            set("k0", &value),
            keyed(op::GET, "k0"),
            keyed(op::GETK, "k1"),
        ]),
    );
    g.case(
        "full: other sizes, append, incr with initial",
        script(&[
            set("small", "a"),
            concat(op::APPEND, "k1", "z", 0),
            set("n", "10"),
            arith(op::INCR, "n", 1, 0, 0),
            arith(op::INCR, "n", 100, 0, 0),
            arith(op::INCR, "fresh", 1, 7, 0),
            store(op::ADDQ, "mid", &"m".repeat(500)),
            simple(op::NOOP),
        ]),
    );
    g.finish();
}

#[test]
fn flush_and_expiry() {
    let Some(mut g) = Group::start("binary_flush", DEFAULT) else {
        return;
    };
    g.case(
        "flush now",
        script(&[set("f", "1"), simple(op::FLUSH), keyed(op::GET, "f")]),
    );
    g.case(
        "flush with a delay",
        script(&[
            set("fd", "1"),
            Req {
                ext: &100u32.to_be_bytes(),
                ..base(op::FLUSH)
            }
            .bytes(),
            keyed(op::GET, "fd"),
        ]),
    );
    g.case(
        "negative-looking expiry is far future",
        script(&[
            store_full(op::SET, "neg", b"v", 0, 0xffff_fff0, 0),
            keyed(op::GET, "neg"),
        ]),
    );
    g.finish();
    let Some(mut g) = Group::start("binary_flush_disabled", &["-F"]) else {
        return;
    };
    g.case(
        "-F: flush refused with auth error",
        script(&[
            set("f", "1"),
            simple(op::FLUSH),
            simple(op::FLUSHQ),
            keyed(op::GET, "f"),
        ]),
    );
    g.finish();
}

#[test]
fn large_values() {
    let Some(mut g) = Group::start("binary_large", DEFAULT) else {
        return;
    };
    let big: String = (0..700_000)
        .map(|i| (b'a' + (i % 26) as u8) as char)
        .collect();
    g.case(
        "700 KB value round trip",
        script(&[
            set("big", &big),
            keyed(op::GETK, "big"),
            concat(op::APPEND, "big", "tail", 0),
        ]),
    );
    g.case(
        "over 1 MB refused and swallowed",
        script(&[set("huge", &"x".repeat(1_100_000)), keyed(op::GET, "huge")]),
    );
    g.finish();
}

/// The packets of a binary reply: (opcode, status, key, value) per packet.
fn packets(reply: &[u8]) -> Vec<(u8, u16, Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    let mut b = reply;
    while b.len() >= 24 {
        let keylen = u16::from_be_bytes([b[2], b[3]]) as usize;
        let extlen = b[4] as usize;
        let status = u16::from_be_bytes([b[6], b[7]]);
        let bodylen = u32::from_be_bytes([b[8], b[9], b[10], b[11]]) as usize;
        let body = &b[24..24 + bodylen];
        out.push((
            b[1],
            status,
            body[extlen..extlen + keylen].to_vec(),
            body[extlen + keylen..].to_vec(),
        ));
        b = &b[24 + bodylen..];
    }
    out
}

fn stat_names(reply: &[u8]) -> Vec<String> {
    packets(reply)
        .into_iter()
        .map(|(_, _, k, _)| String::from_utf8_lossy(&k).into_owned())
        .filter(|n| cfg!(feature = "tls") || !n.starts_with("ssl_"))
        .collect()
}

fn stat(group: &str) -> Script {
    script(&[Req {
        key: group.as_bytes(),
        ..base(op::STAT)
    }
    .bytes()])
}

#[test]
fn stats_groups() {
    if !oracle_available() {
        return;
    }
    let pair = Pair::start(&[]);
    let setup = script(&[
        set("a", "1"),
        store_full(op::SET, "b:x", b"abc", 5, 100, 0),
        keyed(op::GET, "a"),
        keyed(op::GET, "nope"),
        arith(op::INCR, "a", 2, 0, 0),
        keyed(op::DELETE, "b:x"),
        touch(op::TOUCH, "a", 100),
    ]);
    assert_eq!(pair.oracle.run(&setup), pair.ours.run(&setup));
    for group in ["", "settings", "items", "slabs", "sizes"] {
        let (o, u) = (pair.oracle.run(&stat(group)), pair.ours.run(&stat(group)));
        assert!(
            !o.reply.is_empty(),
            "oracle answered nothing to stats {group:?}"
        );
        assert_eq!(
            stat_names(&u.reply),
            stat_names(&o.reply),
            "stats {group:?} names"
        );
        let last = packets(&u.reply).pop().expect("a terminator");
        assert_eq!(
            last,
            (op::STAT, 0, vec![], vec![]),
            "stats {group:?} terminator"
        );
    }
    let deterministic = [
        "cmd_get",
        "get_hits",
        "get_misses",
        "cmd_touch",
        "touch_hits",
        "delete_hits",
        "incr_hits",
        "curr_items",
        "total_items",
    ];
    let values = |r: &[u8]| -> Vec<(Vec<u8>, Vec<u8>)> {
        packets(r)
            .into_iter()
            .filter(|(_, _, k, _)| deterministic.iter().any(|d| d.as_bytes() == k.as_slice()))
            .map(|(_, _, k, v)| (k, v))
            .collect()
    };
    let (o, u) = (pair.oracle.run(&stat("")), pair.ours.run(&stat("")));
    assert_eq!(values(&u.reply), values(&o.reply));
    assert_eq!(values(&o.reply).len(), deterministic.len());
    // Whole replies that are deterministic.
    for group in [
        "sizes",
        "conns",
        "cachedump",
        "nosuch",
        "detail",
        "detail on",
        "detail dump",
        "detail off",
        "detail bogus",
        "sizes_disable",
        "sizes_enable",
        "reset",
    ] {
        let (o, u) = (pair.oracle.run(&stat(group)), pair.ours.run(&stat(group)));
        assert_eq!(
            u,
            o,
            "stats {group:?}:\noracle {}\nours   {}",
            o.render(),
            u.render()
        );
    }
}

#[test]
fn sasl_refusals() {
    let conf = sasl_conf_dir();
    let Some(mut g) = Group::start_env("binary_sasl", &["-S"], &[("SASL_CONF_PATH", &conf)]) else {
        return;
    };
    g.case("list mechanisms", script(&[simple(op::SASL_LIST)]));
    g.case(
        "version allowed before auth",
        script(&[simple(op::VERSION)]),
    );
    g.case("get before auth closes", script(&[keyed(op::GET, "a")]));
    g.case("noop before auth closes", script(&[simple(op::NOOP)]));
    g.case(
        "unknown user",
        script(&[Req {
            key: b"PLAIN",
            val: b"\0nobody\0pw",
            ..base(op::SASL_AUTH)
        }
        .bytes()]),
    );
    g.case(
        "step before auth",
        script(&[Req {
            key: b"PLAIN",
            val: b"\0nobody\0pw",
            ..base(op::SASL_STEP)
        }
        .bytes()]),
    );
    g.case(
        "PLAIN without a message continues; the step carries it",
        script(&[
            Req {
                key: b"PLAIN",
                ..base(op::SASL_AUTH)
            }
            .bytes(),
            Req {
                key: b"PLAIN",
                val: b"\0nobody\0pw",
                ..base(op::SASL_STEP)
            }
            .bytes(),
        ]),
    );
    g.case(
        "other mechanisms and malformed PLAIN",
        script(&[
            Req {
                key: b"CRAM-MD5",
                val: b"x",
                ..base(op::SASL_AUTH)
            }
            .bytes(),
            Req {
                key: b"PLAIN",
                val: b"garbage",
                ..base(op::SASL_AUTH)
            }
            .bytes(),
            Req {
                key: b"PLAIN",
                val: b"\0\0pw",
                ..base(op::SASL_AUTH)
            }
            .bytes(),
        ]),
    );
    g.case(
        "mechanism name too long",
        script(&[Req {
            key: &[b'M'; 40],
            val: b"data",
            ..base(op::SASL_AUTH)
        }
        .bytes()]),
    );
    g.case(
        "ascii is not spoken: a short line waits, 24 bytes close",
        Script::binary().send(b"get a\r\nget b\r\nget c\r\nget d\r\n"),
    );
    g.finish();
}

/// The oracle (Debian's memcached, Cyrus SASL) refuses `-S` without a SASL
/// configuration: a directory for `SASL_CONF_PATH` offering PLAIN only.
fn sasl_conf_dir() -> String {
    let dir = std::env::temp_dir().join(format!("diff-binary-sasl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("sasl conf dir");
    std::fs::write(dir.join("memcached.conf"), "mech_list: plain\n").expect("sasl conf");
    dir.to_string_lossy().into_owned()
}

#[test]
fn fixed_binary_protocol() {
    let Some(mut g) = Group::start("binary_fixed", &["-B", "binary"]) else {
        return;
    };
    g.case(
        "-B binary serves binary requests",
        script(&[set("fb", "v"), keyed(op::GETK, "fb"), simple(op::VERSION)]),
    );
    g.case(
        "-B binary: a text request is a bad header",
        Script::binary().send(b"get fb\r\nget fb\r\nget fb\r\nget fb\r\n"),
    );
    g.finish();
    let Some(mut g) = Group::start("ascii_fixed", &["-B", "ascii"]) else {
        return;
    };
    g.case(
        "-B ascii: a binary header is a text line",
        [simple(op::VERSION), b"\r\nversion\r\n".to_vec()].concat(),
    );
    g.finish();
}
