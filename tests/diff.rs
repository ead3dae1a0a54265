//! Differential tests: the classic text protocol of memcached 1.6.18, every
//! reply and error path, compared byte for byte between the real memcached
//! (the oracle) and ours. See `tests/common/mod.rs` for the harness and its
//! environment switches, and `tests/diff_cases/NOTES.md` for the surprising
//! oracle behaviours these cases pin down.
//!
//! Run: `cargo test --test diff` (add `-- --nocapture` to see group summaries).
//! Harness self-check: `DIFF_SELF=1 cargo test --test diff` (oracle vs oracle).

mod common;

use common::*;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A storage command with its data block.
fn store(cmd: &str, key: &str, flags: &str, exp: &str, data: &str) -> String {
    format!("{cmd} {key} {flags} {exp} {}\r\n{data}\r\n", data.len())
}

fn set(key: &str, data: &str) -> String {
    store("set", key, "0", "0", data)
}

fn repeat(s: &str, n: usize) -> String {
    s.repeat(n)
}

const DEFAULT: &[&str] = &[];
/// Smallest legal item size; in 1.6.18 `-o slab_chunk_max` is in BYTES (the
/// help text says kilobytes) and must not exceed -I.
const SMALL_ITEMS: &[&str] = &["-I", "1k", "-o", "slab_chunk_max=512"];

// ---------------------------------------------------------------------------
// Storage commands
// ---------------------------------------------------------------------------

#[test]
fn storage_replies() {
    let Some(mut g) = Group::start("storage_replies", DEFAULT) else {
        return;
    };
    g.case("set stored", format!("{}get st1\r\n", set("st1", "hello")));
    g.case(
        "set overwrite",
        format!("{}{}get st1\r\n", set("st1", "one"), set("st1", "two")),
    );
    g.case(
        "add new / add existing",
        format!(
            "{}{}get ad1\r\n",
            store("add", "ad1", "3", "0", "first"),
            store("add", "ad1", "4", "0", "second")
        ),
    );
    g.case(
        "replace missing / replace existing",
        format!(
            "{}get rp1\r\n{}{}get rp1\r\n",
            store("replace", "rp1", "0", "0", "x"),
            set("rp1", "old"),
            store("replace", "rp1", "9", "0", "new")
        ),
    );
    g.case(
        "append/prepend missing",
        format!(
            "{}{}get ap0\r\n",
            store("append", "ap0", "0", "0", "x"),
            store("prepend", "ap0", "0", "0", "x")
        ),
    );
    g.case(
        "append/prepend existing ignore flags and exptime",
        format!(
            "{}{}{}get ap1\r\n",
            store("set", "ap1", "7", "0", "mid"),
            store("append", "ap1", "5", "-1", "_end"),
            store("prepend", "ap1", "6", "-1", "start_")
        ),
    );
    g.case(
        "append empty data",
        format!(
            "{}{}get ap2\r\n",
            set("ap2", "v"),
            store("append", "ap2", "0", "0", "")
        ),
    );
    g.case(
        "noreply on every storage command",
        "set nr1 0 0 1 noreply\r\na\r\n\
             add nr1 0 0 1 noreply\r\nb\r\n\
             add nr2 0 0 1 noreply\r\nc\r\n\
             replace nr3 0 0 1 noreply\r\nd\r\n\
             replace nr2 0 0 1 noreply\r\ne\r\n\
             append nr1 0 0 1 noreply\r\nf\r\n\
             prepend nr1 0 0 1 noreply\r\ng\r\n\
             append nr9 0 0 1 noreply\r\nh\r\n\
             prepend nr9 0 0 1 noreply\r\ni\r\n\
             get nr1 nr2 nr3 nr9\r\n",
    );
    g.case(
        "noreply is case sensitive (NOREPLY is ignored, reply sent)",
        "set nr4 0 0 1 NOREPLY\r\na\r\nget nr4\r\n",
    );
    g.case(
        "6th token that is not noreply is ignored",
        "set nr5 0 0 1 whatever\r\na\r\nget nr5\r\n",
    );
    g.case("empty value", "set ev 0 0 0\r\n\r\nget ev\r\n");
    g.case(
        "value with binary bytes and CRLF inside",
        b"set bin 0 0 8\r\n\x00\r\n\xff\x01\r\n\x80\r\nget bin\r\n".to_vec(),
    );
    g.case(
        "multiple values pipelined",
        format!(
            "{}{}{}get pa pb pc\r\n",
            set("pa", "1"),
            set("pb", "22"),
            set("pc", "333")
        ),
    );
    g.finish();
}

#[test]
fn storage_flags() {
    let Some(mut g) = Group::start("storage_flags", DEFAULT) else {
        return;
    };
    for (i, flags) in [
        "0",
        "1",
        "4294967295",
        "4294967296",
        "4294967297",
        "18446744073709551615",
        "18446744073709551616",
        "99999999999999999999999",
        "-1",
        "-0",
        "+5",
        "-18446744073709551615",
        "abc",
        "1x",
        "0x10",
        "00012",
        "1.5",
    ]
    .iter()
    .enumerate()
    {
        let key = format!("fl{i}");
        g.case(
            &format!("flags {flags}"),
            format!("{}get {key}\r\n", store("set", &key, flags, "0", "v")),
        );
    }
    g.case(
        "bad flags with noreply suppress the error; data line becomes a command",
        "set flx -1 0 1 noreply\r\na\r\nget flx\r\n",
    );
    g.finish();
}

#[test]
fn storage_exptime() {
    let Some(mut g) = Group::start("storage_exptime", DEFAULT) else {
        return;
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let abs_future = (now + 3600).to_string();
    let abs_past = (now - 3600).to_string();
    for (i, exp) in [
        "0",
        "100",
        "-1",
        "-100",
        "2592000",
        "2592001",
        abs_future.as_str(),
        abs_past.as_str(),
        "2000000000",
        "2147483647",
        "2147483648",
        "4102444800",
        "9999999999",
        "-2147483648",
        "-2147483649",
        "+0",
        "+100",
        "abc",
        "1.5",
        "10x",
    ]
    .iter()
    .enumerate()
    {
        let key = format!("ex{i}");
        g.case(
            &format!("exptime {exp}"),
            format!("{}get {key}\r\n", store("set", &key, "0", exp, "v")),
        );
    }
    g.case(
        "add over an already-expired item succeeds",
        "set exa 0 -1 1\r\na\r\nadd exa 0 0 1\r\nb\r\nget exa\r\n",
    );
    g.case(
        "replace/append on an expired item fail",
        "set exr 0 -1 1\r\na\r\nreplace exr 0 0 1\r\nb\r\nappend exr 0 0 1\r\nc\r\nget exr\r\n",
    );
    g.finish();
}

#[test]
fn storage_lengths_and_arguments() {
    let Some(mut g) = Group::start("storage_lengths_and_arguments", DEFAULT) else {
        return;
    };
    for (i, bytes) in [
        "0",
        "1",
        "01",
        "+1",
        "-1",
        "-0",
        "abc",
        "1x",
        "1.0",
        "4294967297",
        "2147483645x",
        "2147483646",
        "2147483647",
        "2147483648",
        "-2147483648",
        "99999999999999999999",
    ]
    .iter()
    .enumerate()
    {
        g.case(
            &format!("bytes {bytes}"),
            format!("set by{i} 0 0 {bytes}\r\na\r\nget by{i}\r\n"),
        );
    }
    g.case("set missing bytes", "set ma 0 0\r\na\r\n");
    g.case("set missing exptime", "set ma 0\r\n");
    g.case("set missing flags", "set ma\r\n");
    g.case("set alone", "set\r\n");
    g.case(
        "add/replace/append/prepend missing args",
        "add a 0 0\r\nreplace a\r\nappend\r\nprepend a 0\r\n",
    );
    g.case(
        "set too many args",
        "set ta 0 0 1 noreply extra\r\na\r\nget ta\r\n",
    );
    g.case(
        "set with 30 tokens",
        format!("set tb 0 0 1 {}\r\na\r\nget tb\r\n", repeat("x ", 25)),
    );
    g.case("cas missing unique", "cas ca 0 0 1\r\na\r\n");
    g.case(
        "cas noreply in the unique position",
        "cas ca 0 0 1 noreply\r\na\r\n",
    );
    g.case("cas too many args", "cas ca 0 0 1 1 noreply x\r\na\r\n");
    g.case(
        "double spaces between tokens",
        "set  ds  0  0  1\r\na\r\nget ds\r\n",
    );
    g.case(
        "leading and trailing spaces",
        "   set   lt   0 0 1   \r\na\r\nget lt\r\n",
    );
    g.case(
        "bad numbers with noreply: error suppressed",
        "set bn 0 0 -1 noreply\r\na\r\nset bn abc 0 1 noreply\r\nb\r\nset bn 0 abc 1 noreply\r\nc\r\n",
    );
    let k250 = "k".repeat(250);
    let k251 = "k".repeat(251);
    g.case(
        "key of 250 bytes",
        format!("{}get {k250}\r\n", set(&k250, "v")),
    );
    g.case(
        "key of 251 bytes",
        format!("{}get {k251}\r\n", set(&k251, "v")),
    );
    g.case(
        "key of 251 bytes noreply",
        format!("set {k251} 0 0 1 noreply\r\na\r\n"),
    );
    g.case(
        "add/replace/append/prepend/cas with 251-byte key",
        format!(
            "add {k251} 0 0 1\r\na\r\nreplace {k251} 0 0 1\r\na\r\nappend {k251} 0 0 1\r\na\r\n\
             prepend {k251} 0 0 1\r\na\r\ncas {k251} 0 0 1 1\r\na\r\n"
        ),
    );
    g.case(
        "keys with control characters",
        b"set a\x01b 0 0 1\r\n1\r\nset c\x7fd 0 0 1\r\n2\r\nset e\xfff 0 0 1\r\n3\r\n\
          set g\rh 0 0 1\r\n4\r\nset i\tj 0 0 1\r\n5\r\nset \x00k 0 0 1\r\n6\r\n\
          get a\x01b c\x7fd e\xfff g\rh i\tj \x00k\r\n"
            .to_vec(),
    );
    g.finish();
}

#[test]
fn storage_bad_data_chunk() {
    let Some(mut g) = Group::start("storage_bad_data_chunk", DEFAULT) else {
        return;
    };
    g.case(
        "data longer than announced",
        "set dc1 0 0 1\r\nabc\r\nget dc1\r\n",
    );
    g.case(
        "data longer than announced keeps the old value",
        "set dc2 0 0 3\r\nold\r\nset dc2 0 0 1\r\nnew!\r\nget dc2\r\n",
    );
    g.case(
        "data shorter than announced eats the next command",
        "set dc3 0 0 3\r\na\r\nget dc3\r\nget dc3\r\n",
    );
    g.case(
        "data terminated by LF only",
        "set dc4 0 0 1\r\na\nget dc4\r\n",
    );
    g.case(
        "data terminated by CR only",
        "set dc5 0 0 1\r\na\rget dc5\r\n",
    );
    g.case(
        "data with LF at the CR position",
        "set dc6 0 0 1\r\nab\nget dc6\r\n",
    );
    g.case(
        "bad data chunk with noreply is silent",
        "set dc7 0 0 1 noreply\r\nabc\r\nget dc7\r\n",
    );
    g.case(
        "bad data chunk on every storage command",
        "add dc8 0 0 1\r\nxyz\r\nreplace dc8 0 0 1\r\nxyz\r\nappend dc8 0 0 1\r\nxyz\r\n\
         prepend dc8 0 0 1\r\nxyz\r\ncas dc8 0 0 1 1\r\nxyz\r\nget dc8\r\n",
    );
    g.case(
        "command line terminated by LF only",
        "set dc9 0 0 1\na\r\nget dc9\n",
    );
    g.case(
        "empty value followed by garbage",
        "set dc10 0 0 0\r\nx\r\nget dc10\r\n",
    );
    g.finish();
}

// ---------------------------------------------------------------------------
// CAS: every case on a fresh server pair, so the unique counters agree.
// ---------------------------------------------------------------------------

#[test]
fn cas_and_gets() {
    let Some(mut g) = Group::start("cas_and_gets", DEFAULT) else {
        return;
    };
    g.fresh(
        "gets returns cas; cas hit, then stale cas",
        DEFAULT,
        "set k 0 0 1\r\na\r\ngets k\r\ncas k 0 0 1 1\r\nb\r\ngets k\r\ncas k 0 0 1 1\r\nc\r\ngets k\r\n",
    );
    g.fresh(
        "cas on missing key",
        DEFAULT,
        "cas nx 0 0 1 1\r\na\r\ngets nx\r\n",
    );
    g.fresh(
        "cas noreply: hit, exists, not found",
        DEFAULT,
        "set k 0 0 1\r\na\r\ncas k 0 0 1 1 noreply\r\nb\r\ncas k 0 0 1 1 noreply\r\nc\r\n\
         cas nx 0 0 1 1 noreply\r\nd\r\ngets k nx\r\n",
    );
    g.fresh(
        "cas bad uniques",
        DEFAULT,
        "set k 0 0 1\r\na\r\ncas k 0 0 1 abc\r\nb\r\ncas k 0 0 1 -1\r\nb\r\n\
         cas k 0 0 1 18446744073709551616\r\nb\r\ncas k 0 0 1 18446744073709551615\r\nb\r\n\
         cas k 0 0 1 0\r\nb\r\ncas k 0 0 1 +1\r\nb\r\ngets k\r\n",
    );
    g.fresh(
        "cas changes flags and value",
        DEFAULT,
        "set k 5 0 1\r\na\r\ncas k 42 0 3 1\r\nxyz\r\ngets k\r\n",
    );
    g.fresh(
        "cas after delete and after expiry",
        DEFAULT,
        "set k 0 0 1\r\na\r\ndelete k\r\ncas k 0 0 1 1\r\nb\r\nset e 0 -1 1\r\na\r\n\
         cas e 0 0 1 3\r\nb\r\ngets k e\r\n",
    );
    g.fresh(
        "which commands consume cas ids",
        DEFAULT,
        "set a 0 0 1\r\n1\r\ngets a\r\n\
         add a 0 0 1\r\n2\r\ngets a\r\n\
         add b 0 0 1\r\n2\r\ngets b\r\n\
         replace a 0 0 1\r\n3\r\ngets a\r\n\
         replace nx 0 0 1\r\n3\r\ngets a\r\n\
         append a 0 0 1\r\n4\r\ngets a\r\n\
         prepend a 0 0 1\r\n5\r\ngets a\r\n\
         append nx 0 0 1\r\n4\r\ngets a\r\n\
         touch a 100\r\ngets a\r\n\
         gat 100 a\r\ngets a\r\n\
         gats 100 a\r\n\
         incr a 1\r\ngets a\r\n\
         incr a 1000\r\ngets a\r\n\
         decr a 1\r\ngets a\r\n\
         incr nx 1\r\ngets a\r\n\
         delete b\r\ngets a\r\n\
         set c 0 0 1\r\nxyz\r\ngets a\r\n\
         cas a 0 0 1 1\r\nx\r\ngets a\r\n\
         flush_all\r\nset a 0 0 1\r\n1\r\ngets a\r\n\
         flush_all noreply\r\nset a 0 0 1\r\n1\r\ngets a\r\n\
         flush_all abc\r\nset a 0 0 1\r\n1\r\ngets a\r\n\
         flush_all 0\r\nset a 0 0 1\r\n1\r\ngets a\r\n\
         flush_all 100\r\nset a 0 0 1\r\n1\r\ngets a\r\n\
         verbosity 0\r\nversion\r\nset a 0 0 1\r\n1\r\ngets a\r\n",
    );
    g.fresh(
        "gets with many keys, missing and duplicates",
        DEFAULT,
        "set a 1 0 1\r\na\r\nset b 2 0 2\r\nbb\r\nset c 3 0 3\r\nccc\r\n\
         gets a nx b a c nx2 c\r\n",
    );
    g.fresh(
        "cas on a value that was incremented in place",
        DEFAULT,
        "set n 0 0 2\r\n10\r\ngets n\r\ndecr n 1\r\ncas n 0 0 1 1\r\nx\r\ncas n 0 0 1 2\r\ny\r\ngets n\r\n",
    );
    g.fresh(
        "gats returns cas and touches",
        DEFAULT,
        "set a 0 0 1\r\na\r\ngats 100 a nx a\r\ngats abc a\r\ngats\r\ngats 5\r\n",
    );
    g.fresh(
        "-C: cas disabled, gets reports 0",
        &["-C"],
        "set a 0 0 1\r\na\r\ngets a\r\ncas a 0 0 1 0\r\nb\r\ncas a 0 0 1 1\r\nb\r\ngets a\r\n\
         set n 0 0 1\r\n1\r\nincr n 1\r\ngets n\r\n",
    );
    g.finish();
}

// ---------------------------------------------------------------------------
// Retrieval, touch
// ---------------------------------------------------------------------------

#[test]
fn retrieval() {
    let Some(mut g) = Group::start("retrieval", DEFAULT) else {
        return;
    };
    g.case("get alone", "get\r\n");
    g.case("get with trailing space", "get \r\n");
    g.case("gets alone", "gets\r\n");
    g.case("get missing", "get nx\r\n");
    g.case(
        "get hit",
        format!("{}get r1\r\n", store("set", "r1", "123", "0", "value")),
    );
    g.case(
        "get duplicates and missing",
        format!("{}get r2 r2 nx r2 nx2 r2\r\n", set("r2", "v")),
    );
    let mut setup = String::new();
    for i in 0..100 {
        setup.push_str(&format!(
            "set many{i} {i} 0 {} noreply\r\nv{i}\r\n",
            format!("v{i}").len()
        ));
    }
    let keys: Vec<String> = (0..100).map(|i| format!("many{i}")).collect();
    g.case("get 100 keys", format!("{setup}get {}\r\n", keys.join(" ")));
    let mixed: Vec<String> = (0..150)
        .map(|i| {
            if i % 3 == 0 {
                format!("absent{i}")
            } else {
                format!("many{}", i % 100)
            }
        })
        .collect();
    g.case(
        "get 150 keys mixed hits and misses",
        format!("get {}\r\n", mixed.join(" ")),
    );
    let k250 = "g".repeat(250);
    let k251 = "g".repeat(251);
    g.case(
        "get 250-byte key",
        format!("{}get {k250}\r\n", set(&k250, "v")),
    );
    g.case("get 251-byte key", format!("get {k251}\r\n"));
    g.case(
        "multiget with a too long key in the middle drops earlier hits",
        format!("{}get r3 {k251} r3\r\n", set("r3", "v")),
    );
    g.case(
        "multiget with a too long key at the end",
        format!("get r3 r3 {k251}\r\n"),
    );
    g.case(
        "multiget too long key after 30 keys (second tokenizer pass)",
        format!("get {} {k251}\r\n", repeat("r3 ", 30)),
    );
    g.case(
        "key with CR inside (only LF ends lines)",
        "get r3\r\r\nget r3\r \n",
    );
    g.case("get with tab separator", "get\tr3\r\n");
    g.case("bget (ancient alias)", "bget r3\r\n");
    g.case(
        "retrieval words amid runs of spaces",
        "   get    r3     r3   \r\ngets      \r\n  gats  \r\ngets r3\r\n",
    );
    g.case(
        "near-miss retrieval names",
        "ge r3\r\ngett r3\r\ngetsx r3\r\ng r3\r\ngetr3\r\nGET r3\r\n",
    );
    g.case("bget without keys", "bget\r\nbget   \r\nbget  r3  r3\r\n");
    g.case("mget is no command in 1.6", "mget\r\nmget r3 r3\r\n");
    g.case(
        "get line cut by a NUL, keys of 8 and more bytes",
        b"get r3\x00 r3\r\nget 12345678 1234567 123456789 r3\r\n".to_vec(),
    );
    g.finish();
}

#[test]
fn touch_and_gat() {
    let Some(mut g) = Group::start("touch_and_gat", DEFAULT) else {
        return;
    };
    g.case(
        "touch hit and miss",
        format!(
            "{}touch t1 100\r\ntouch nx 100\r\nget t1\r\n",
            set("t1", "v")
        ),
    );
    g.case(
        "touch noreply",
        "touch t1 100 noreply\r\ntouch nx 100 noreply\r\n",
    );
    g.case(
        "touch bad exptime",
        "touch t1 abc\r\ntouch t1 1.5\r\ntouch t1 -\r\ntouch t1 abc noreply\r\n",
    );
    g.case("touch missing args", "touch t1\r\ntouch\r\n");
    g.case("touch too many args", "touch t1 1 noreply x\r\n");
    g.case(
        "touch key too long",
        format!("touch {} 10\r\n", "t".repeat(251)),
    );
    g.case(
        "touch with negative exptime expires",
        format!("{}touch t2 -1\r\nget t2\r\n", set("t2", "v")),
    );
    g.case(
        "touch with 0 makes it permanent",
        format!(
            "{}touch t3 0\r\nget t3\r\n",
            store("set", "t3", "0", "100", "v")
        ),
    );
    g.case(
        "gat hit, miss, several keys",
        format!(
            "{}gat 100 t4\r\ngat 100 nx\r\ngat 100 t4 nx t4\r\n",
            set("t4", "v")
        ),
    );
    g.case("gat alone", "gat\r\n");
    g.case("gat with only exptime", "gat 10\r\n");
    g.case("gat bad exptime", "gat abc t4\r\ngat -x t4\r\n");
    g.case(
        "gat negative exptime expires",
        format!("{}gat -1 t5\r\nget t5\r\n", set("t5", "v")),
    );
    g.case(
        "gat with noreply token is just a key",
        "gat 10 t4 noreply\r\n",
    );
    g.case(
        "gat too long key",
        format!("gat 10 t4 {}\r\n", "t".repeat(251)),
    );
    g.finish();
}

// ---------------------------------------------------------------------------
// Delete
// ---------------------------------------------------------------------------

#[test]
fn delete() {
    let Some(mut g) = Group::start("delete", DEFAULT) else {
        return;
    };
    g.case(
        "delete hit then miss",
        format!("{}delete d1\r\ndelete d1\r\nget d1\r\n", set("d1", "v")),
    );
    g.case(
        "delete noreply",
        format!(
            "{}delete d2 noreply\r\ndelete d2 noreply\r\nget d2\r\n",
            set("d2", "v")
        ),
    );
    g.case(
        "delete key 0",
        format!("{}delete d3 0\r\ndelete d3 0\r\n", set("d3", "v")),
    );
    g.case(
        "delete key 5 (legacy hold time)",
        format!("{}delete d4 5\r\nget d4\r\n", set("d4", "v")),
    );
    g.case(
        "delete key 0 noreply",
        format!("{}delete d5 0 noreply\r\nget d5\r\n", set("d5", "v")),
    );
    g.case(
        "delete key 5 noreply (error suppressed)",
        format!("{}delete d6 5 noreply\r\nget d6\r\n", set("d6", "v")),
    );
    g.case("delete key 0 0", "delete d7 0 0\r\n");
    g.case("delete key x noreply", "delete d7 x noreply\r\n");
    g.case("delete key noreply 0", "delete d7 noreply 0\r\n");
    g.case("delete key 00", "delete d7 00\r\n");
    g.case("delete too many args", "delete d7 0 noreply x\r\n");
    g.case("delete alone", "delete\r\n");
    g.case(
        "delete key too long",
        format!("delete {}\r\n", "d".repeat(251)),
    );
    g.case(
        "delete key of 250",
        format!(
            "{}delete {k}\r\n",
            set(&"d".repeat(250), "v"),
            k = "d".repeat(250)
        ),
    );
    g.case("delete expired item", "set d8 0 -1 1\r\nv\r\ndelete d8\r\n");
    g.finish();
}

// ---------------------------------------------------------------------------
// incr / decr
// ---------------------------------------------------------------------------

#[test]
fn incr_decr() {
    let Some(mut g) = Group::start("incr_decr", DEFAULT) else {
        return;
    };
    g.case(
        "incr and decr hits",
        format!("{}incr n1 5\r\ndecr n1 3\r\nget n1\r\n", set("n1", "10")),
    );
    g.case(
        "decr from 10 to 9 pads with a space",
        format!("{}decr n2 1\r\nget n2\r\n", set("n2", "10")),
    );
    g.case(
        "incr growing the length makes a new item",
        format!(
            "{}incr n3 91\r\nget n3\r\nincr n3 0\r\n",
            store("set", "n3", "77", "0", "9")
        ),
    );
    g.case(
        "get then decr pipelined (in-place update still)",
        format!("{}get n4\r\ndecr n4 1\r\nget n4\r\n", set("n4", "10")),
    );
    g.case(
        "incr wraps at 2^64",
        format!(
            "{}incr n5 1\r\nget n5\r\nincr n5 18446744073709551615\r\nget n5\r\n",
            set("n5", "18446744073709551615")
        ),
    );
    g.case(
        "incr by max delta",
        format!("{}incr n6 18446744073709551615\r\n", set("n6", "0")),
    );
    g.case(
        "decr floors at 0",
        format!(
            "{}decr n7 10\r\ndecr n7 18446744073709551615\r\nget n7\r\n",
            set("n7", "5")
        ),
    );
    g.case("incr miss", "incr nx 1\r\ndecr nx 1\r\n");
    g.case(
        "incr miss noreply",
        "incr nx 1 noreply\r\ndecr nx 1 noreply\r\n",
    );
    g.case(
        "incr noreply hit",
        format!(
            "{}incr n8 1 noreply\r\ndecr n8 5 noreply\r\nget n8\r\n",
            set("n8", "3")
        ),
    );
    for (i, delta) in [
        "-1",
        "abc",
        "18446744073709551616",
        "+1",
        "1x",
        "0x1",
        "1.0",
        "-0",
        "00",
        "99999999999999999999999",
    ]
    .iter()
    .enumerate()
    {
        g.case(
            &format!("incr delta {delta}"),
            format!(
                "{}incr nd{i} {delta}\r\ndecr nd{i} {delta}\r\nget nd{i}\r\n",
                set(&format!("nd{i}"), "10")
            ),
        );
    }
    g.case("incr bad delta noreply", "incr n8 abc noreply\r\n");
    g.case("incr missing delta", "incr n8\r\ndecr n8\r\nincr\r\n");
    g.case(
        "incr too many args",
        "incr n8 1 noreply x\r\ndecr n8 1 2 3\r\n",
    );
    g.case(
        "incr key too long",
        format!("incr {} 1\r\n", "n".repeat(251)),
    );
    for (i, value) in [
        "abc",
        "",
        "  5",
        "5  ",
        " 5 ",
        "-1",
        "5a",
        "0x",
        "007",
        "000000000000000000001",
        "18446744073709551616",
        "999999999999999999999",
        "1\r\n1",
        "12345678901234567890",
    ]
    .iter()
    .enumerate()
    {
        let key = format!("nv{i}");
        g.case(
            &format!("incr on value {value:?}"),
            format!(
                "{}incr {key} 1\r\nget {key}\r\ndecr {key} 1\r\nget {key}\r\n",
                set(&key, value)
            ),
        );
    }
    g.case(
        "incr on value with NUL after digits",
        b"set nz 0 0 2\r\n1\x00\r\nincr nz 1\r\nget nz\r\n".to_vec(),
    );
    g.case(
        "incr keeps flags",
        format!(
            "{}incr nf 1\r\nget nf\r\nincr nf 100\r\nget nf\r\n",
            store("set", "nf", "99", "0", "9")
        ),
    );
    g.case(
        "incr on expired item",
        "set ne 0 -1 1\r\n1\r\nincr ne 1\r\n",
    );
    g.finish();
}

// ---------------------------------------------------------------------------
// flush_all (each case on a fresh pair: it is global)
// ---------------------------------------------------------------------------

#[test]
fn flush_all() {
    let Some(mut g) = Group::start("flush_all", DEFAULT) else {
        return;
    };
    let setup = "set a 0 0 1\r\na\r\nset b 0 0 1\r\nb\r\n";
    for (name, cmd) in [
        ("plain", "flush_all\r\n"),
        ("0", "flush_all 0\r\n"),
        ("noreply", "flush_all noreply\r\n"),
        ("0 noreply", "flush_all 0 noreply\r\n"),
        ("bad arg", "flush_all abc\r\n"),
        ("bad arg noreply", "flush_all abc noreply\r\n"),
        ("noreply then junk", "flush_all noreply x\r\n"),
        ("negative", "flush_all -1\r\n"),
        ("delayed 100", "flush_all 100\r\n"),
        ("delayed 100 noreply", "flush_all 100 noreply\r\n"),
        ("two args", "flush_all 100 2\r\n"),
        ("too many args", "flush_all 1 2 3\r\n"),
        ("float", "flush_all 1.5\r\n"),
    ] {
        g.fresh(
            &format!("flush_all {name}"),
            DEFAULT,
            format!("{setup}{cmd}get a b\r\nset c 0 0 1\r\nc\r\ngets c\r\nadd a 0 0 1\r\nA\r\ngets a b\r\n"),
        );
    }
    g.fresh(
        "-F: flush_all disabled",
        &["-F"],
        format!("{setup}flush_all\r\nflush_all noreply\r\nget a b\r\n"),
    );
    g.finish();
}

// ---------------------------------------------------------------------------
// Other commands
// ---------------------------------------------------------------------------

#[test]
fn misc_commands() {
    let Some(mut g) = Group::start("misc_commands", DEFAULT) else {
        return;
    };
    g.case("version", "version\r\n");
    g.case("version with args", "version x y\r\n");
    g.case("VERSION uppercase", "VERSION\r\n");
    g.case("verbosity alone", "verbosity\r\n");
    g.case("verbosity 1", "verbosity 1\r\n");
    g.case("verbosity 0 noreply", "verbosity 0 noreply\r\n");
    g.case("verbosity bad", "verbosity abc\r\nverbosity -1\r\n");
    g.case("verbosity bad noreply", "verbosity abc noreply\r\n");
    g.case("verbosity noreply alone", "verbosity noreply\r\n");
    g.case("verbosity two args", "verbosity 1 2\r\n");
    g.case("verbosity too many args", "verbosity 1 2 3\r\n");
    g.case("verbosity huge", "verbosity 99999\r\nverbosity 0\r\n");
    g.case("shutdown without -A", "shutdown\r\n");
    g.case("shutdown graceful without -A", "shutdown graceful\r\n");
    g.case("shutdown junk without -A", "shutdown x y\r\n");
    g.case("unknown command", "foo\r\n");
    g.case("unknown command with args", "foo bar baz\r\n");
    g.case("one-letter command", "a\r\n");
    g.case("empty line", "\r\n");
    g.case("empty line LF only", "\n");
    g.case("spaces only", "     \r\n");
    g.case("many empty lines", "\r\n\n\r\n \r\n");
    g.case("uppercase GET", "GET x\r\n");
    g.case("mixed case Get", "Get x\r\n");
    g.case(
        "uppercase SET (data line is a command too)",
        "SET x 0 0 1\r\na\r\n",
    );
    g.case(
        "command prefixes",
        "gett x\r\nsets x\r\ngetx\r\nge x\r\nde x\r\nin x 1\r\n",
    );
    g.case("tab before command", "\tget x\r\n");
    g.case(
        "LF-only line endings",
        "set lf 0 0 2\nhi\r\nget lf\nversion\n",
    );
    g.case("CR CR LF", "version\r\r\n");
    g.case(
        "junk bytes",
        b"\x00\x01\x02\r\n\xff\xfe\r\n\x7f\r\n".to_vec(),
    );
    g.case(
        "NUL inside a command",
        b"get\x00 x\r\nver\x00sion\r\n".to_vec(),
    );
    g.case(
        "0x80 not as the first byte is just junk",
        b"version\r\n\x80\x01\x00\x00\r\n".to_vec(),
    );
    g.case("unknown meta command", "mx\r\nm\r\n");
    // No case may send `mn` itself: its MN\r\n would be taken for the
    // harness's sentinel answer.
    g.case("quit", "quit\r\n");
    g.case("quit with args", "quit now please\r\n");
    g.case("quit with spaces", "   quit   \r\n");
    g.case("QUIT uppercase", "QUIT\r\n");
    g.case(
        "replies before quit are sent, later commands ignored",
        format!("{}get q1\r\nquit\r\nget q1\r\n", set("q1", "v")),
    );
    g.case(
        "HTTP request closes the connection",
        "GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    g.case("unknown command ending in HTTP/ token", "foo HTTP/1.0\r\n");
    g.case(
        "unknown command ending in HTTP/ exactly",
        "foo bar HTTP/\r\n",
    );
    g.case("get HTTP/1.1 is a normal get", "get HTTP/1.1\r\n");
    g.case("stats unknown subcommand", "stats nosuch\r\n");
    g.case("STATS uppercase", "STATS\r\n");
    g.case("stats detail usage", "stats detail\r\nstats detail x\r\n");
    g.case("stats reset", "stats reset\r\nstats reset extra\r\n");
    g.case(
        "stats cachedump errors",
        "stats cachedump\r\nstats cachedump 1\r\nstats cachedump a b\r\nstats cachedump 64 1\r\n\
         stats cachedump 200 0\r\n",
    );
    g.finish();
}

#[test]
fn stats_on_empty_server() {
    let Some(mut g) = Group::start("stats_on_empty_server", DEFAULT) else {
        return;
    };
    g.fresh("stats items on empty server", DEFAULT, "stats items\r\n");
    g.fresh("stats slabs on empty server", DEFAULT, "stats slabs\r\n");
    g.fresh("stats sizes", DEFAULT, "stats sizes\r\n");
    g.fresh("stats detail dump empty", DEFAULT, "stats detail dump\r\n");
    g.fresh(
        "stats detail on/dump/off",
        DEFAULT,
        "stats detail on\r\nset p:a 0 0 1\r\na\r\nget p:a p:b q:c\r\ndelete p:a\r\n\
         stats detail dump\r\nstats detail off\r\nstats detail dump\r\n",
    );
    g.fresh(
        "stats cachedump empty class",
        DEFAULT,
        "stats cachedump 1 0\r\nstats cachedump 63 1\r\n",
    );
    g.finish();
}

// ---------------------------------------------------------------------------
// Framing: splits, pipelining, long lines
// ---------------------------------------------------------------------------

#[test]
fn framing() {
    let Some(mut g) = Group::start("framing", DEFAULT) else {
        return;
    };
    g.case(
        "one byte per write",
        Script::new().split(
            format!(
                "{}get f1\r\ndelete f1\r\nincr nx 1\r\nversion\r\n",
                set("f1", "hello")
            ),
            1,
        ),
    );
    g.case(
        "one byte per write, error paths",
        Script::new().split(
            "set f2 0 0 1\r\nabc\r\nfoo\r\nget\r\nset f2 0 0 -1\r\n\r\n",
            1,
        ),
    );
    g.case(
        "value split across writes",
        Script::new()
            .send("set f3 0 0 10\r\n0123")
            .send("456")
            .send("789\r")
            .send("\nget f3\r\n"),
    );
    g.case(
        "command split at CR/LF",
        Script::new().send("get f3\r").send("\nget").send(" f3\r\n"),
    );
    g.case(
        "sync between commands",
        Script::new()
            .send(set("f4", "x"))
            .sync()
            .send("get f4\r\n")
            .sync()
            .send("delete f4\r\n"),
    );
    let mut pipelined = String::new();
    for i in 0..50 {
        pipelined.push_str(&set(&format!("pl{i}"), &format!("value-{i}")));
    }
    for i in 0..50 {
        pipelined.push_str(&format!("get pl{i}\r\nincr pl{i} 1\r\n"));
    }
    g.case("many pipelined commands in one write", pipelined.clone());
    g.case(
        "many pipelined commands, 7 bytes per write",
        Script::new().split(pipelined, 7),
    );
    g.case(
        "large value pipelined with commands",
        format!("{}get big\r\nversion\r\n", set("big", &"z".repeat(100_000))),
    );
    g.case(
        "large value in small writes",
        Script::new().split(
            format!("{}get big2\r\n", set("big2", &"y".repeat(20_000))),
            999,
        ),
    );
    g.case(
        "line of 3000 garbage bytes with newline (one write)",
        format!("{}\r\n", "x".repeat(3000)),
    );
    // The 16 KiB read buffer: a line whose LF is within the first 16384
    // buffered bytes is parsed (when it arrives in one piece).
    g.case(
        "line of 16382 bytes + CRLF (16384 in all)",
        format!("{}\r\n", "x".repeat(16_382)),
    );
    g.case(
        "line of 16383 bytes + LF (16384 in all)",
        format!("{}\n", "x".repeat(16_383)),
    );
    g.case(
        "line of 16383 bytes + CRLF (16385 in all): closed",
        format!("{}\r\n", "x".repeat(16_383)),
    );
    g.case(
        "set line of 10000 bytes (key too long) in one write",
        format!("set {} 0 0 1\r\na\r\n", "k".repeat(10_000)),
    );
    g.case(
        "line of 20000 garbage bytes: connection closed",
        "x".repeat(20_000),
    );
    g.case(
        "line of 20000 garbage bytes then newline: connection closed",
        format!("{}\r\n", "x".repeat(20_000)),
    );
    g.case(
        "20000 spaces then newline: connection closed",
        format!("{}\r\n", " ".repeat(20_000)),
    );
    g.case(
        "long non-get command line: connection closed",
        format!("delete {}\r\n", "d".repeat(20_000)),
    );
    g.case(
        "gat with a huge line is not a multiget: connection closed",
        format!("gat 0 {}\r\n", "k".repeat(20_000)),
    );
    let mut setup = String::new();
    for i in 0..20 {
        setup.push_str(&format!("set long{i} 0 0 1 noreply\r\n{}\r\n", i % 10));
    }
    let long_get: Vec<String> = (0..800).map(|i| format!("long{}", i % 40)).collect();
    g.case(
        "get line over 2048 bytes (800 keys)",
        format!("{setup}get {}\r\n", long_get.join(" ")),
    );
    g.case(
        "get line over 16 KiB (3000 keys)",
        format!(
            "get {}\r\n",
            (0..3000)
                .map(|i| format!("k{i}"))
                .collect::<Vec<_>>()
                .join(" ")
        ),
    );
    g.case(
        "get with a 20000-byte key",
        format!("get {}\r\n", "k".repeat(20_000)),
    );
    g.case(
        "gets with a 20000-byte key",
        format!("gets {}\r\n", "k".repeat(20_000)),
    );
    g.case(
        "get with 99 leading spaces and a huge line",
        format!("{}get {}\r\n", " ".repeat(99), "k".repeat(20_000)),
    );
    g.case(
        "get with 101 leading spaces and a huge line: closed",
        format!("{}get {}\r\n", " ".repeat(101), "k".repeat(20_000)),
    );
    g.case(
        "binary junk without newline: closed",
        (0..20_000u32)
            .map(|i| (i % 251) as u8 | 0x01)
            .filter(|b| *b != b'\n')
            .collect::<Vec<u8>>(),
    );
    g.finish();
}

// ---------------------------------------------------------------------------
// Item size limits
// ---------------------------------------------------------------------------

#[test]
fn too_large_small_items() {
    let Some(mut g) = Group::start("too_large_small_items", SMALL_ITEMS) else {
        return;
    };
    // Item total = 48 header + key+1 + (flags? 4 : 0) + data+2 + 8 (cas) <= 1024.
    for (key, flags, n) in [
        ("k", "0", 963),
        ("k", "0", 964),
        ("k", "0", 965),
        ("k", "1", 960),
        ("k", "1", 961),
        ("kk", "0", 963),
        ("kk", "0", 964),
        ("k", "0", 1000),
        ("k", "0", 2000),
    ] {
        g.case(
            &format!("set key {key} flags {flags} bytes {n}"),
            format!(
                "delete {key}\r\nset {key} {flags} 0 {n}\r\n{}\r\nget {key}\r\n",
                "x".repeat(n)
            ),
        );
    }
    let big = "x".repeat(2000);
    g.case(
        "too large set removes the old value",
        format!("set tl1 0 0 1\r\na\r\nset tl1 0 0 2000\r\n{big}\r\nget tl1\r\n"),
    );
    for cmd in ["add", "replace", "append", "prepend"] {
        g.case(
            &format!("too large {cmd} keeps the old value"),
            format!("set tl2 0 0 1\r\na\r\n{cmd} tl2 0 0 2000\r\n{big}\r\nget tl2\r\n"),
        );
    }
    g.case(
        "too large cas keeps the old value",
        format!("set tl3 0 0 1\r\na\r\ncas tl3 0 0 2000 1\r\n{big}\r\nget tl3\r\n"),
    );
    g.case(
        "too large on a missing key",
        format!("add tl4 0 0 2000\r\n{big}\r\nget tl4\r\n"),
    );
    g.case(
        "too large noreply: silent, old value removed",
        format!("set tl5 0 0 1\r\na\r\nset tl5 0 0 2000 noreply\r\n{big}\r\nget tl5\r\n"),
    );
    g.case(
        "append growing past the limit",
        format!(
            "set tl6 0 0 10\r\naaaaaaaaaa\r\nappend tl6 0 0 962\r\n{}\r\nget tl6\r\n",
            "y".repeat(962)
        ),
    );
    g.case(
        "prepend growing exactly to the limit",
        format!(
            "set tl7 0 0 1\r\na\r\nprepend tl7 0 0 961\r\n{}\r\nget tl7 tl7\r\n",
            "y".repeat(961)
        ),
    );
    g.case(
        "swallowed bytes are not parsed as commands",
        format!(
            "set tl8 0 0 1\r\na\r\nset tl8 0 0 2000\r\n{}abcdget tl8\r\n",
            "get tl8\r\n".repeat(222)
        ),
    );
    g.case(
        "swallow counts bytes, CRLF not required",
        format!("set tl9 0 0 2000\r\n{}get tl9\r\n", "w".repeat(2002)),
    );
    g.case(
        "swallow ends mid-line: the rest is a command",
        format!("set tl10 0 0 2000\r\n{}\r\nversion\r\n", "w".repeat(1999)),
    );
    g.case(
        "swallow across many writes",
        Script::new()
            .send("set tl11 0 0 2000\r\n")
            .split("v".repeat(2002), 100)
            .send("get tl11\r\n"),
    );
    g.case(
        "incr on a zero-padded value at the size limit (in place)",
        format!(
            "set tl12 0 0 961\r\n{}99\r\nincr tl12 1\r\nget tl12\r\n",
            "0".repeat(959)
        ),
    );
    g.finish();
}

#[test]
fn too_large_default_limit() {
    let Some(mut g) = Group::start("too_large_default_limit", DEFAULT) else {
        return;
    };
    for (key, n) in [
        ("k", 1_048_516usize),
        ("k", 1_048_517),
        ("kk", 1_048_515),
        ("kk", 1_048_516),
    ] {
        g.case(
            &format!("set key {key} bytes {n}"),
            format!(
                "set {key} 0 0 {n}\r\n{}\r\nget nx\r\ndelete {key}\r\n",
                "x".repeat(n)
            ),
        );
    }
    g.case(
        "declared 2000000 bytes: swallowed",
        format!(
            "set big 0 0 2000000\r\n{}\r\nget big\r\n",
            "x".repeat(2_000_000)
        ),
    );
    g.case(
        "value of 600000 bytes round trip",
        format!("{}get mid\r\n", set("mid", &"m".repeat(600_000))),
    );
    g.fresh(
        "-C raises the limit by 8 bytes",
        &["-C", "-I", "1k", "-o", "slab_chunk_max=512"],
        format!(
            "set k 0 0 972\r\n{}\r\nset k 0 0 973\r\n{}\r\nget nx\r\n",
            "x".repeat(972),
            "x".repeat(973)
        ),
    );
    g.finish();
}

// ---------------------------------------------------------------------------
// Stats counters (filtered view)
// ---------------------------------------------------------------------------

const COUNTERS: &[&str] = &[
    "cmd_get",
    "cmd_set",
    "get_hits",
    "get_misses",
    "delete_hits",
    "delete_misses",
    "incr_hits",
    "incr_misses",
    "decr_hits",
    "decr_misses",
    "cas_hits",
    "cas_misses",
    "cas_badval",
    "touch_hits",
    "touch_misses",
    "curr_items",
    "total_items",
    "get_expired",
    "get_flushed",
    "cmd_flush",
    "cmd_touch",
];

/// Runs `script` on a fresh pair, compares the replies, then compares the
/// filtered `stats` output.
fn stats_case(g: &mut Group, name: &str, args: &[&'static str], script: &str) {
    let mut pair = Pair::start(args);
    let script = Script::from(script);
    if let Err(r) = pair.check(name, &script) {
        g.fail(r);
        return;
    }
    let stats = Script::from("stats\r\n");
    let o = pair.oracle.run(&stats);
    let u = pair.ours.run(&stats);
    let fo = filter_stats(&o.reply, COUNTERS);
    let fu = filter_stats(&u.reply, COUNTERS);
    if fo != fu || o.error.is_some() || u.error.is_some() {
        g.fail(format!(
            "=== MISMATCH in case `{name} (stats)` (server args {args:?})\nscript:\n{}\
             --- oracle stats (filtered):\n{fo}--- ours stats (filtered):\n{fu}{}",
            render_script(&script),
            u.error.as_deref().unwrap_or("")
        ));
    } else {
        g.pass();
    }
}

#[test]
fn stats_counters() {
    let Some(mut g) = Group::start("stats_counters", DEFAULT) else {
        return;
    };
    stats_case(&mut g, "fresh server", DEFAULT, "");
    stats_case(
        &mut g,
        "gets and sets",
        DEFAULT,
        "set a 0 0 1\r\na\r\nset b 0 0 1\r\nb\r\nget a\r\nget a b nx\r\ngets a nx2\r\n\
         add a 0 0 1\r\nx\r\nreplace nx 0 0 1\r\nx\r\nappend a 0 0 1\r\nx\r\nprepend nx 0 0 1\r\nx\r\n",
    );
    stats_case(
        &mut g,
        "delete incr decr",
        DEFAULT,
        "set n 0 0 1\r\n5\r\nincr n 1\r\nincr nx 1\r\ndecr n 1\r\ndecr nx 1\r\ndecr n 100\r\n\
         set s 0 0 1\r\nx\r\nincr s 1\r\ndelete n\r\ndelete n\r\ndelete nx 0\r\n",
    );
    stats_case(
        &mut g,
        "cas",
        DEFAULT,
        "set a 0 0 1\r\na\r\ncas a 0 0 1 1\r\nb\r\ncas a 0 0 1 1\r\nc\r\ncas nx 0 0 1 1\r\nd\r\n\
         cas a 0 0 1 abc\r\nd\r\n",
    );
    stats_case(
        &mut g,
        "touch and gat",
        DEFAULT,
        "set a 0 0 1\r\na\r\ntouch a 10\r\ntouch nx 10\r\ngat 10 a nx\r\ngats 10 a\r\ntouch a abc\r\n",
    );
    stats_case(
        &mut g,
        "expired and flushed",
        DEFAULT,
        "set e 0 -1 1\r\na\r\nget e\r\nset f 0 0 1\r\nb\r\nflush_all\r\nget f\r\nflush_all 0\r\n\
         flush_all abc\r\nget f\r\n",
    );
    stats_case(
        &mut g,
        "errors count or not",
        DEFAULT,
        "set a 0 0 1\r\nabc\r\nset a -1 0 1\r\nget\r\nget a aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\
         incr a abc\r\nfoo\r\n",
    );
    stats_case(
        &mut g,
        "stats reset",
        DEFAULT,
        "set a 0 0 1\r\na\r\nget a\r\nget nx\r\nstats reset\r\nget a\r\n",
    );
    stats_case(
        &mut g,
        "too large",
        SMALL_ITEMS,
        &format!(
            "set a 0 0 1\r\na\r\nset a 0 0 2000\r\n{}\r\nget a\r\n",
            "x".repeat(2000)
        ),
    );
    g.finish();
}

// ---------------------------------------------------------------------------
// Time-dependent cases (real waiting, kept few and short)
// ---------------------------------------------------------------------------

/// Waits until the oracle no longer returns `keys`, then gives ours a short
/// grace period (the two clocks tick at different instants), and compares.
fn wait_gone_and_compare(g: &mut Group, name: &str, keys: &str) {
    let probe = Script::from(format!("get {keys}\r\n"));
    let pair = g.pair();
    let (o, gone) = poll_until(&pair.oracle, &probe, Duration::from_secs(6), |o| {
        o.reply == b"END\r\n"
    });
    if !gone {
        let msg = format!(
            "=== MISMATCH in case `{name}`: the ORACLE still returns the items after 6 s:\n{}",
            o.render()
        );
        g.fail(msg);
        return;
    }
    let (u, gone) = poll_until(&pair.ours, &probe, Duration::from_millis(1500), |u| {
        u.reply == b"END\r\n"
    });
    if gone {
        g.pass();
    } else {
        let msg = format!(
            "=== MISMATCH in case `{name}`: the oracle dropped `{keys}`, ours still has them \
             1.5 s later:\n{}",
            u.render()
        );
        g.fail(msg);
    }
}

#[test]
fn expiry_timed() {
    let Some(mut g) = Group::start("expiry_timed", DEFAULT) else {
        return;
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let start = Instant::now();
    // Exptime 2 so that the items are certainly still there right after the
    // set (the clock ticks at most once in between).
    g.case(
        "items with a 2 s lifetime are there at first",
        format!(
            "set e1 0 2 1\r\na\r\nset e2 0 0 1\r\nb\r\ntouch e2 2\r\nset e3 0 0 1\r\nc\r\n\
             gat 2 e3\r\nset e4 0 {} 1\r\nd\r\nset e5 0 2 1\r\n5\r\nincr e5 1\r\n\
             set keep 0 0 1\r\nk\r\nget e1 e2 e3 e4 e5 keep\r\n",
            now + 3
        ),
    );
    wait_gone_and_compare(
        &mut g,
        "expired by set/touch/gat/absolute/incr",
        "e1 e2 e3 e4 e5",
    );
    g.case(
        "after expiry: misses, add succeeds, replace fails",
        "get e1 keep\r\nadd e1 0 0 1\r\nA\r\nreplace e2 0 0 1\r\nB\r\nincr e5 1\r\ntouch e3 10\r\n\
         get e1 e2 e3\r\n",
    );
    eprintln!("expiry_timed waited {:?}", start.elapsed());
    g.finish();
}

#[test]
fn delayed_flush_timed() {
    let Some(mut g) = Group::start("delayed_flush_timed", DEFAULT) else {
        return;
    };
    g.case(
        "flush_all 2 leaves items visible at first",
        "set f1 0 0 1\r\na\r\nset f2 0 0 1\r\nb\r\nflush_all 2\r\nget f1 f2\r\n",
    );
    wait_gone_and_compare(&mut g, "delayed flush takes effect", "f1 f2");
    // An item stored in the very second the flush takes effect is flushed
    // too; one stored a clock tick later survives. Poll for that tick.
    let probe = Script::from("set f3 0 0 1\r\nc\r\nget f3\r\n");
    let visible = |o: &Outcome| o.reply == b"STORED\r\nVALUE f3 0 1\r\nc\r\nEND\r\n";
    let pair = g.pair();
    let (o, ok_o) = poll_until(&pair.oracle, &probe, Duration::from_secs(3), visible);
    let (u, ok_u) = poll_until(&pair.ours, &probe, Duration::from_secs(3), visible);
    if ok_o && ok_u {
        g.pass();
    } else {
        g.fail(format!(
            "=== MISMATCH in case `items stored after the delayed flush survive`: \
             oracle ok={ok_o} ours ok={ok_u}\n--- oracle:\n{}--- ours:\n{}",
            o.render(),
            u.render()
        ));
    }
    g.case(
        "after the delayed flush: add works, flushed keys miss",
        "get f1 f2 f3\r\nadd f1 0 0 1\r\nA\r\nget f1\r\n",
    );
    g.finish();
}

// ---------------------------------------------------------------------------
// Reply flushing vs. closing (see NOTES.md, "When replies are written")
// ---------------------------------------------------------------------------

/// memcached buffers replies and writes them only when it runs out of
/// complete commands, after get/gets/gat/gats/mn, when quitting, and on its
/// per-event request limit (-R, default 20: after the 21st command of a batch,
/// then every 20). A connection closed for an over-long line, an `HTTP/`
/// request or `shutdown` loses whatever was still buffered.
#[test]
fn close_discards_unflushed_replies() {
    let Some(mut g) = Group::start("close_discards_unflushed_replies", DEFAULT) else {
        return;
    };
    let sets = |n: usize| -> String {
        (0..n)
            .map(|i| format!("set c{i} 0 0 1\r\nv\r\n"))
            .collect::<String>()
    };
    g.case(
        "set then HTTP request",
        format!("{}GET / HTTP/1.1\r\n", sets(1)),
    );
    g.case("get then HTTP request", "get c0\r\nfoo HTTP/1.0\r\n");
    g.case("gat then HTTP request", "gat 0 c0\r\nfoo HTTP/1.0\r\n");
    g.case(
        "version, delete, incr then HTTP request",
        "version\r\ndelete c0\r\nincr c0 1\r\nfoo HTTP/1.0\r\n",
    );
    g.case(
        "20 sets then HTTP request",
        format!("{}foo HTTP/1.1\r\n", sets(20)),
    );
    g.case(
        "21 sets then HTTP request",
        format!("{}foo HTTP/1.1\r\n", sets(21)),
    );
    g.case(
        "40 sets then HTTP request",
        format!("{}foo HTTP/1.1\r\n", sets(40)),
    );
    g.case(
        "41 sets then HTTP request",
        format!("{}foo HTTP/1.1\r\n", sets(41)),
    );
    g.case(
        "set then over-long garbage line",
        format!("{}{}", sets(1), "x".repeat(20_000)),
    );
    g.case(
        "get then over-long garbage line",
        format!("get c0\r\n{}", "x".repeat(20_000)),
    );
    g.case(
        "value longer than announced by 20000 bytes",
        format!("set f5 0 0 1\r\n{}\r\n", "k".repeat(20_000)),
    );
    g.case("set then quit", format!("{}quit\r\n", sets(1)));
    g.fresh(
        "-R 5: 6 sets then HTTP request",
        &["-R", "5"],
        format!("{}foo HTTP/1.1\r\n", sets(6)),
    );
    g.fresh(
        "-R 5: 15 sets then HTTP request",
        &["-R", "5"],
        format!("{}foo HTTP/1.1\r\n", sets(15)),
    );
    g.fresh(
        "-R 5: 16 sets then HTTP request",
        &["-R", "5"],
        format!("{}foo HTTP/1.1\r\n", sets(16)),
    );
    g.finish();
}

#[test]
fn shutdown_enabled() {
    let Some(mut g) = Group::start("shutdown_enabled", DEFAULT) else {
        return;
    };
    g.fresh(
        "-A: shutdown with bad modes",
        &["-A"],
        "shutdown x\r\nshutdown x y\r\nshutdown graceful x\r\nshutdown noreply\r\n",
    );
    for cmd in ["shutdown", "shutdown graceful"] {
        let mut pair = Pair::start(&["-A"]);
        let name = format!("-A: get then {cmd}");
        let script = Script::from(format!("get a\r\n{cmd}\r\nversion\r\n"));
        match pair.check(&name, &script) {
            Ok(_) => g.pass(),
            Err(r) => g.fail(r),
        }
        // Both processes must now exit by themselves.
        for server in [&mut pair.oracle, &mut pair.ours] {
            let deadline = Instant::now() + Duration::from_secs(5);
            while server.alive() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if server.alive() {
                g.fail(format!(
                    "=== MISMATCH in case `{name}`: {} still running 5 s after `{cmd}`\n",
                    server.kind.label()
                ));
            }
        }
    }
    g.finish();
}

// ---------------------------------------------------------------------------
// Memory full without eviction (-M): exact point depends on the slab
// allocator (1 MiB pages, 1.25 growth factor, 48-byte header...)
// ---------------------------------------------------------------------------

#[test]
fn out_of_memory_no_evict() {
    let Some(mut g) = Group::start("out_of_memory_no_evict", &["-M", "-m", "2"]) else {
        return;
    };
    let value = "x".repeat(1000);
    let fill: String = (0..2500)
        .map(|i| format!("set k{i} 0 0 1000\r\n{value}\r\n"))
        .collect();
    g.case("fill 2 MiB with 1000-byte values", fill);
    g.case(
        "full: set over an existing key fails and unlinks it",
        format!("set k0 0 0 1000\r\n{value}\r\nget k0\r\nget k1 k2499\r\n"),
    );
    g.case(
        "full: other sizes, append, incr",
        format!(
            "set small 0 0 1\r\na\r\nget small\r\nappend k1 0 0 1\r\nz\r\nset n 0 0 2\r\n10\r\n\
             incr n 1\r\nincr n 100\r\nget n\r\nset mid 0 0 500\r\n{}\r\nget nx\r\n",
            "m".repeat(500)
        ),
    );
    g.case(
        "full: delete frees one slot",
        format!("delete k1\r\nset again 0 0 1000\r\n{value}\r\nset again2 0 0 1000\r\n{value}\r\nget nx\r\n"),
    );
    g.finish();
}

/// The simplest form: one script, a fresh pair, panic on mismatch.
#[test]
fn assert_same_smoke() {
    assert_same(
        Script::new()
            .send("set smoke 0 0 5\r\nhello\r\n")
            .sync()
            .split("gets smoke\r\nversion\r\n", 3),
        DEFAULT,
    );
}
