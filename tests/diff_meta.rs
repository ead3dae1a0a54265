//! Differential tests for memcached 1.6.18's meta protocol (`mg`, `ms`,
//! `md`, `ma`, `me`, `mn`): every flag, mode and error path, base64 keys,
//! quiet pipelines, opaque tokens and stale-while-revalidate, compared byte
//! for byte between the real memcached (the oracle) and ours. See
//! `tests/common/mod.rs` for the harness and `tests/diff_cases/NOTES.md`
//! (section "Meta protocol") for what these cases pin down.
//!
//! The harness ends every script with `mn\r\n` and waits for its `MN`, so
//! an `mn` inside a pipeline is written as a `sync()` step.
//!
//! Run: `cargo test --test diff_meta`; oracle against itself:
//! `DIFF_SELF=1 cargo test --test diff_meta`.

mod common;

use common::*;

const DEFAULT: &[&str] = &[];
const NO_CAS: &[&str] = &["-C"];
const SMALL_ITEMS: &[&str] = &["-I", "1k", "-o", "slab_chunk_max=512"];

/// `ms <key> <len> <flags>` with its data block.
fn ms(key: &str, data: &str, flags: &str) -> String {
    if flags.is_empty() {
        format!("ms {key} {}\r\n{data}\r\n", data.len())
    } else {
        format!("ms {key} {} {flags}\r\n{data}\r\n", data.len())
    }
}

/// Classic `set`.
fn set(key: &str, data: &str) -> String {
    format!("set {key} 0 0 {}\r\n{data}\r\n", data.len())
}

/// A case whose replies depend on the server clock (TTLs, last access):
/// memcached's clock ticks once a second, so a tick in the middle of the
/// script can change a number on one server only. Such a case is retried
/// (up to three times); scripts must be repeatable (they store first).
fn timed(g: &mut Group, name: &str, script: impl Into<Script>) {
    let script = script.into();
    let mut last = String::new();
    for _ in 0..3 {
        match g.pair().check(name, &script) {
            Ok(_) => {
                g.pass();
                return;
            }
            Err(r) => last = r,
        }
    }
    g.fail(last);
}

// ---------------------------------------------------------------------------
// mg
// ---------------------------------------------------------------------------

#[test]
fn mg_flags() {
    let Some(mut g) = Group::start("mg_flags", DEFAULT) else {
        return;
    };
    g.case("miss", "mg nokey\r\n");
    g.case("miss with v", "mg nokey v\r\n");
    g.case(
        "miss echoes k and O only",
        "mg nokey s v f t c h l k Oab\r\n",
    );
    g.case("miss O before k", "mg nokey O1 k\r\n");
    g.case("miss q is silent", "mg nokey q\r\nmg nokey q k O5\r\n");
    g.case("store for the rest", ms("mk", "hello", "F77"));
    g.case("hit no flags is HD", "mg mk\r\n");
    g.case("v", "mg mk v\r\n");
    g.case("s", "mg mk s\r\n");
    g.case("f", "mg mk f\r\n");
    g.case("c", "mg mk c\r\n");
    g.case("k", "mg mk k\r\n");
    g.case("O", "mg mk Oopaque\r\n");
    g.case("O alone", "mg mk O\r\n");
    g.case("O of 32 bytes", format!("mg mk O{}\r\n", "x".repeat(31)));
    g.case(
        "O of 33 bytes on a hit",
        format!("mg mk O{}\r\n", "x".repeat(32)),
    );
    g.case(
        "O of 33 bytes on a miss",
        format!("mg nokey O{}\r\n", "x".repeat(32)),
    );
    g.case(
        "O too long with q on a miss is still an error",
        format!("mg nokey q O{}\r\n", "x".repeat(32)),
    );
    g.case("t without expiry", "mg mk t\r\n");
    g.case("hit with q still answers", "mg mk q\r\nmg mk q v\r\n");
    g.case("every flag, in order", "mg mk v s f c k Oz t q\r\n");
    g.case("order follows the request", "mg mk Oz k c f s v\r\n");
    g.case("flag tokens ignore their tail", "mg mk s99 vv fx cc kk\r\n");
    g.case("P and L are ignored", "mg mk Pproxy Lpath v\r\n");
    g.case(
        "M, I, C, F, J, D are accepted and ignored",
        "mg mk MX I C5 F3 J1 D2 v\r\n",
    );
    g.case(
        "u with h: not bumped",
        format!(
            "{}mg uk h u\r\nmg uk h u\r\nmg uk h\r\nmg uk h\r\n",
            ms("uk", "v", "")
        ),
    );
    g.case(
        "h reports the state before this fetch",
        format!("{}mg hk h\r\nmg hk h v\r\nmg hk h\r\n", ms("hk", "v", "")),
    );
    g.case(
        "plain mg bumps (h1 afterwards)",
        format!("{}mg bk\r\nmg bk h\r\n", ms("bk", "v", "")),
    );
    g.case(
        "u without h: no bump either",
        format!("{}mg bu u\r\nmg bu h\r\n", ms("bu", "v", "")),
    );
    g.case(
        "flags from classic set",
        "set cf 4294967295 0 2\r\nab\r\nmg cf f v\r\n",
    );
    g.case(
        "value with CRLF and NUL inside",
        b"ms bin 6\r\na\r\n\x00b\r\r\nmg bin v s\r\n".to_vec(),
    );
    g.case("empty value", format!("{}mg ev v s\r\n", ms("ev", "", "")));
    g.case(
        "expired item misses",
        format!("{}mg ex v\r\nmg ex\r\n", ms("ex", "v", "T-1")),
    );
    g.case(
        "flushed item misses",
        format!("{}flush_all\r\nmg fl v\r\n", ms("fl", "v", "")),
    );
    g.case(
        "key of 250 bytes",
        format!(
            "{}mg {} k s\r\n",
            ms(&"k".repeat(250), "v", ""),
            "k".repeat(250)
        ),
    );
    g.case("key of 251 bytes", format!("mg {} v\r\n", "k".repeat(251)));
    g.finish();
}

#[test]
fn mg_errors() {
    let Some(mut g) = Group::start("mg_errors", DEFAULT) else {
        return;
    };
    g.case("mg alone", "mg\r\n");
    g.case("mg with spaces only", "mg    \r\n");
    g.case(
        "unknown meta command",
        "mx key\r\nm\r\nmgg key\r\nMG key\r\n",
    );
    g.case("duplicate flag", "mg k v v\r\n");
    g.case("duplicate by first character", "mg k s1 s2\r\n");
    g.case(
        "flag byte >= 127 reads as duplicate",
        b"mg k \xc3\xa9\r\nmg k \x7f\r\n".to_vec(),
    );
    for f in [
        "E5", "x", "S3", "W", "X", "Z", "a", "1", "-", "e", "n", "g", "i", "j", "m", "o", "p", "r",
        "w", "y", "z",
    ] {
        g.case(&format!("invalid flag {f}"), format!("mg k {f}\r\n"));
    }
    for f in [
        "T", "Tx", "T1.5", "N", "Nabc", "R", "R-", "C", "Cx", "C-1", "F", "F-1", "J", "Jx", "D",
        "D-1", "M", "MAB",
    ] {
        g.case(&format!("bad token {f}"), format!("mg k {f}\r\n"));
    }
    g.case(
        "the last bad token's error string wins (F sets none)",
        "mg k Tx Jx\r\nmg k Jx Tx\r\nmg k Fx\r\nmg k Tx Fx\r\n",
    );
    g.case("invalid flag after a bad token", "mg k Tx Q\r\n");
    g.case("duplicate after a bad token", "mg k Tx v v\r\n");
    // 17 distinct flags: 19 words, ntokens 20, the most accepted.
    let flags17 = "s v f t c k h l q u O1 P L M1 I C1 F1";
    g.case("19 words are fine", format!("mg k {flags17}\r\n"));
    g.case(
        "19 words on a hit",
        format!("{}mg k19 {flags17}\r\n", ms("k19", "v", "")),
    );
    g.case("20 words are too many", format!("mg k {flags17} J1\r\n"));
    g.case("30 words", format!("mg k {}\r\n", "v ".repeat(28)));
    g.case(
        "key too long before flags",
        format!("mg {} v v\r\n", "k".repeat(251)),
    );
    g.case("errors are sent under q", "mg k q Tx\r\nmg k q v v\r\n");
    g.finish();
}

#[test]
fn mg_touch_and_pins() {
    let Some(mut g) = Group::start("mg_touch_and_pins", DEFAULT) else {
        return;
    };
    timed(
        &mut g,
        "T then t",
        format!("{}mg tt T100 t\r\nmg tt t v\r\n", ms("tt", "v", "")),
    );
    timed(
        &mut g,
        "t then T",
        format!("{}mg tt t T100\r\nmg tt t\r\n", ms("tt", "v", "T50")),
    );
    timed(
        &mut g,
        "T0 clears the expiry",
        format!("{}mg tt T0 t\r\n", ms("tt", "v", "T50")),
    );
    timed(
        &mut g,
        "T-1 expires",
        format!("{}mg tt T-1 v\r\nmg tt v\r\n", ms("tt", "v", "")),
    );
    timed(
        &mut g,
        "T-1 then t wraps",
        format!("{}mg tt T-1 t\r\n", ms("tt", "v", "")),
    );
    timed(
        &mut g,
        "T with absolute past time",
        format!("{}mg tt T2592001 t\r\nmg tt\r\n", ms("tt", "v", "")),
    );
    timed(
        &mut g,
        "ms T then mg t",
        format!("{}mg tt t\r\n", ms("tt", "v", "T1000")),
    );
    timed(
        &mut g,
        "l just after store",
        format!("{}mg tl l h t\r\n", ms("tl", "v", "")),
    );
    timed(
        &mut g,
        "opaque error after T keeps the touch",
        format!(
            "{}mg te T99 O{}\r\nmg te t\r\n",
            ms("te", "v", ""),
            "x".repeat(40)
        ),
    );
    // An mg reply keeps its item referenced until written; incr then
    // replaces the item instead of rewriting it in place (no padding).
    g.case(
        "mg pins: decr after mg in one batch",
        format!("{}mg pn\r\ndecr pn 1\r\nget pn\r\n", ms("pn", "10", "")),
    );
    g.case(
        "mg miss does not pin",
        format!("{}mg nopin\r\ndecr pn 1\r\nget pn\r\n", ms("pn", "10", "")),
    );
    g.case(
        "pin released at mn",
        Script::new()
            .send(format!("{}mg pn v\r\n", ms("pn", "10", "")))
            .sync()
            .send("decr pn 1\r\nget pn\r\n"),
    );
    g.case(
        "pin released at a get's write",
        format!(
            "{}mg pn\r\nget other\r\ndecr pn 1\r\nget pn\r\n",
            ms("pn", "10", "")
        ),
    );
    g.case(
        "pinned ma loses its T",
        format!(
            "{}mg pn\r\nma pn T100 t MD v\r\nmg pn t v\r\n",
            ms("pn", "10", "")
        ),
    );
    g.case(
        "pin then delete and reuse",
        format!(
            "{}mg pd\r\ndelete pd\r\n{}decr pd2 1\r\nget pd2\r\n",
            ms("pd", "10", ""),
            ms("pd2", "10", "")
        ),
    );
    g.finish();
}

// ---------------------------------------------------------------------------
// ms
// ---------------------------------------------------------------------------

#[test]
fn ms_modes_and_flags() {
    let Some(mut g) = Group::start("ms_modes_and_flags", DEFAULT) else {
        return;
    };
    g.case(
        "plain set",
        format!("{}mg s1 v f c\r\n", ms("s1", "abc", "")),
    );
    g.case(
        "F and T",
        format!("{}mg s2 v f\r\nget s2\r\n", ms("s2", "abc", "F123 T0")),
    );
    g.case(
        "F wraps like strtoul",
        format!("{}mg s3 f\r\n", ms("s3", "x", "F4294967297")),
    );
    g.case("returns k O c", ms("s4", "x", "k Oop c"));
    g.case("return order follows the request", ms("s4", "x", "c Oop k"));
    g.case(
        "ms q hides HD",
        format!("{}mg s5 v\r\n", ms("s5", "x", "q")),
    );
    g.case(
        "ms q keeps NS",
        ms("s6", "x", "q ME") + &ms("s6", "x", "q ME k c O1"),
    );
    g.case("MS", format!("{}mg s7 v\r\n", ms("s7", "x", "MS")));
    g.case(
        "ME on missing",
        format!("{}mg me1 v\r\n", ms("me1", "new", "ME c")),
    );
    g.case(
        "ME on existing",
        format!("{}mg me1 v\r\n", ms("me1", "again", "ME c")),
    );
    g.case(
        "MR on missing",
        format!("{}mg mr1 v\r\n", ms("mr1", "x", "MR")),
    );
    g.case(
        "MR on existing",
        format!(
            "{}{}mg mr2 v f\r\n",
            ms("mr2", "a", "F5"),
            ms("mr2", "b", "MR F6")
        ),
    );
    g.case("MA on missing", ms("ma1", "x", "MA"));
    g.case(
        "MA on existing keeps flags and TTL",
        format!(
            "{}{}mg ma2 v f\r\n",
            ms("ma2", "a", "F5"),
            ms("ma2", "b", "MA F9 c")
        ),
    );
    g.case(
        "MP on existing",
        format!(
            "{}{}mg mp2 v\r\n",
            ms("mp2", "a", ""),
            ms("mp2", "b", "MP k")
        ),
    );
    g.case("MP on missing", ms("mp1", "x", "MP"));
    g.case("lowercase mode", ms("ml", "x", "Ms"));
    g.case("unknown mode", ms("ml", "x", "MX"));
    g.case("mode token too long", ms("ml", "x", "MSS"));
    g.case("mode token too short", ms("ml", "x", "M"));
    g.case("M with an invalid flag too", ms("ml", "x", "MX Q"));
    g.case(
        "invalid mode beats opaque too long",
        ms("ml", "x", &format!("O{} MX", "y".repeat(40))),
    );
    g.case("empty value", format!("{}mg em s v\r\n", ms("em", "", "")));
    g.case(
        "value of CRLFs",
        format!("{}mg cr v\r\n", ms("cr", "\r\n\r\n", "")),
    );
    g.case(
        "classic get sees ms values",
        format!("{}gets cl\r\n", ms("cl", "val", "F42")),
    );
    g.case(
        "ms after classic set replaces",
        format!("{}{}get cs\r\n", set("cs", "old"), ms("cs", "new", "")),
    );
    g.finish();
}

#[test]
fn ms_cas() {
    let Some(mut g) = Group::start("ms_cas", DEFAULT) else {
        return;
    };
    g.case("store (cas 1)", ms("c1", "a", "c"));
    g.case(
        "C matches",
        format!("{}mg c1 v c\r\n", ms("c1", "b", "C1 c")),
    );
    g.case("C mismatch", ms("c1", "c", "C1 c"));
    g.case("C0 on existing", ms("c1", "c", "C0 c"));
    g.case("C on missing", ms("cmiss", "c", "C5 c"));
    g.case("C0 on missing", ms("cmiss", "c", "C0"));
    g.case("C with MR", ms("c1", "d", "C2 MR c"));
    g.case(
        "C with ME ignores the CAS",
        ms("c1", "d", "C999 ME c") + &ms("cnew", "d", "C999 ME c"),
    );
    g.case(
        "C with MA matching",
        format!("{}mg c1 v c\r\n", ms("c1", "z", "C3 MA c")),
    );
    g.case("C with MA mismatch", ms("c1", "z", "C1 MA c"));
    g.case("C with MP on missing", ms("cmiss2", "z", "C1 MP c"));
    g.case("C with q: EX is sent", ms("c1", "z", "C1 q"));
    g.case("C with q: NF is sent", ms("cmiss3", "z", "C1 q"));
    g.case(
        "I without C is a plain set",
        format!("{}mg c1 v c\r\n", ms("c1", "i", "I c")),
    );
    g.case(
        "I with an older CAS stores a stale value",
        format!("{}mg c1 v c t\r\nmg c1 v\r\n", ms("c1", "stale", "I C2 c")),
    );
    g.case(
        "I with the current CAS stores a fresh value",
        format!("mg c1 c\r\n{}mg c1 v c\r\n", ms("c1", "fresh", "I C7 c")),
    );
    g.case("I with a newer CAS", ms("c1", "x", "I C999 c"));
    g.case("I with C on missing", ms("cmiss4", "x", "I C1 c"));
    g.case("I with C and ME", ms("c1", "x", "I C1 ME c"));
    g.case("bad C", ms("c1", "x", "Cabc"));
    g.finish();

    let Some(mut g) = Group::start("ms_cas_disabled", NO_CAS) else {
        return;
    };
    g.case("store", format!("{}mg n1 c v\r\n", ms("n1", "a", "c")));
    g.case("C0 under -C", ms("n1", "b", "C0 c"));
    g.case("C1 under -C", ms("n1", "b", "C1 c"));
    g.case("C on missing under -C", ms("n2", "b", "C1 c"));
    g.case(
        "MA with C under -C",
        format!("{}mg n1 v\r\n", ms("n1", "b", "C7 MA")),
    );
    g.case(
        "md C0 under -C",
        "md n1 C0 I\r\nmg n1 c v\r\nmd n1 C1\r\nmd n1 C0\r\n",
    );
    g.case(
        "ma under -C",
        format!(
            "{}ma n3 c v\r\nma n3 C0 v\r\nma n3 C1 v\r\n",
            ms("n3", "5", "")
        ),
    );
    g.case("me under -C", format!("{}me n4\r\n", ms("n4", "5", "")));
    g.finish();
}

#[test]
fn ms_errors() {
    let Some(mut g) = Group::start("ms_errors", DEFAULT) else {
        return;
    };
    g.case("ms alone", "ms\r\n");
    g.case("no length: data line is a command", "ms k\r\nab\r\n");
    g.case("bad length: no swallow", "ms k abc\r\nab\r\n");
    g.case("negative length", "ms k -1\r\nab\r\n");
    g.case("length with a tail", "ms k 2x\r\nab\r\n");
    g.case(
        "length +2 and 02",
        "ms k +2\r\nab\r\nms k2 02\r\ncd\r\nmg k v\r\nmg k2 v\r\n",
    );
    g.case(
        "length wraps like strtol",
        "ms k 4294967298\r\nab\r\nmg k v\r\n",
    );
    g.case("length 2147483646", "ms k 2147483646\r\nab\r\n");
    g.case(
        "key too long: no swallow",
        format!("ms {} 2\r\nab\r\n", "k".repeat(251)),
    );
    g.case(
        "too many words: no swallow",
        format!("ms k 2 {}\r\nab\r\n", "P ".repeat(18)),
    );
    g.case(
        "invalid flag swallows the data",
        "ms k 2 Q\r\nab\r\nmg k v\r\n",
    );
    g.case("duplicate flag swallows", "ms k 2 T1 T2\r\nab\r\nmg k\r\n");
    g.case("bad T swallows", "ms k 2 Tx\r\nab\r\n");
    g.case("bad F: default error string", "ms k 2 Fx\r\nab\r\n");
    g.case("bad F then bad T", "ms k 2 Fx Tx\r\nab\r\n");
    g.case(
        "opaque too long swallows",
        format!("ms k 2 O{}\r\nab\r\n", "o".repeat(32)),
    );
    g.case(
        "swallow counts the declared length",
        "ms k 5 Q\r\nab\r\nmg k\r\n",
    );
    g.case("errors are sent under q", "ms k 2 q Q\r\nab\r\n");
    g.case("bad data chunk", "ms k 2\r\nabc\r\nmg k v\r\n");
    g.case("bad data chunk under q", "ms k 2 q\r\nabc\r\n");
    g.case(
        "bad data chunk keeps the old value",
        format!("{}ms k 2 k c\r\nabc\r\nmg k v\r\n", ms("k", "old", "")),
    );
    g.case(
        "data block split over writes",
        Script::new().split("ms sp 10 k\r\n0123456789\r\nmg sp v\r\n", 3),
    );
    g.case("LF-only command line", "ms lf 2\nab\r\nmg lf v\n");
    g.finish();

    let Some(mut g) = Group::start("ms_size_limit", SMALL_ITEMS) else {
        return;
    };
    for len in [963, 964, 965] {
        g.case(
            &format!("length {len} at -I 1k"),
            format!("ms k {len} c\r\n{}\r\nmg k s\r\n", "x".repeat(len)),
        );
    }
    g.case(
        "F makes it 4 bytes bigger",
        format!("ms k 961 F1\r\n{}\r\nmg k s\r\n", "x".repeat(961)),
    );
    g.case(
        "chunked value",
        format!("ms ck 900\r\n{}\r\nmg ck s v\r\nme ck\r\n", "y".repeat(900)),
    );
    g.case(
        "chunked value appended",
        format!(
            "{}{}mg ck2 s v\r\n",
            ms("ck2", &"a".repeat(600), ""),
            ms("ck2", &"b".repeat(300), "MA")
        ),
    );
    g.case("ma on chunked value", "ma ck v\r\n");
    let big = "x".repeat(2000);
    g.case(
        "too large",
        format!("ms big 2000 k c\r\n{big}\r\nmg big\r\n"),
    );
    g.case(
        "too large removes the old value (any mode)",
        format!(
            "{}{}ms tl1 2000 ME\r\n{big}\r\nmg tl1 v\r\nms tl2 2000 MA q\r\n{big}\r\nmg tl2 v\r\n",
            ms("tl1", "a", ""),
            ms("tl2", "b", "")
        ),
    );
    g.case(
        "too large swallows exactly the declared length",
        format!(
            "ms big 2000\r\n{}\r\nversion\r\nmg big\r\n",
            "x".repeat(1999)
        ),
    );
    g.finish();
}

/// Flags later memcached versions added (E: explicit CAS, x: md keeps the
/// item, S: ms size) and flags a command simply ignores.
#[test]
fn flags_of_1_6_18() {
    let Some(mut g) = Group::start("flags_of_1_6_18", DEFAULT) else {
        return;
    };
    g.case("store", ms("f", "v", ""));
    for f in [
        "E5", "x", "S1", "W", "X", "Z", "e", "r", "w", "y", "z", "A", "B", "G", "H", "K", "U", "V",
        "Y", "0", "+", "=", "~",
    ] {
        g.case(
            &format!("{f} everywhere"),
            format!("mg f {f}\r\nmd f {f}\r\nma f {f}\r\nms f 1 {f}\r\nx\r\nmg f v\r\n"),
        );
    }
    g.case(
        "ms ignores what it does not use",
        format!(
            "{}mg f2 v f s\r\n",
            ms("f2", "v", "s t f h l u v N5 R5 J1 D1 P L")
        ),
    );
    g.case(
        "ms b with no k",
        format!("{}mg Zm9v b v k\r\n", ms("Zm9v", "v", "b")),
    );
    g.finish();
}

// ---------------------------------------------------------------------------
// md
// ---------------------------------------------------------------------------

#[test]
fn md_all() {
    let Some(mut g) = Group::start("md_all", DEFAULT) else {
        return;
    };
    g.case("miss", "md nokey\r\n");
    g.case("miss with q is sent", "md nokey q\r\n");
    g.case("miss echoes O and k", "md nokey k Oab\r\n");
    g.case("hit", format!("{}md d1\r\nmg d1\r\n", ms("d1", "v", "")));
    g.case(
        "hit with q is silent",
        format!("{}md d1 q\r\nmg d1\r\n", ms("d1", "v", "")),
    );
    g.case(
        "hit echoes O and k",
        format!("{}md d1 Oxy k\r\n", ms("d1", "v", "")),
    );
    g.case(
        "C match",
        format!("{}mg d2 c\r\nmd d2 C4\r\nmg d2\r\n", ms("d2", "v", "")),
    );
    g.case(
        "C mismatch",
        format!("{}md d3 C1\r\nmg d3 v\r\n", ms("d3", "v", "")),
    );
    g.case("C mismatch with q", "md d3 C1 q k\r\n");
    g.case("C0 mismatch", "md d3 C0\r\n");
    g.case(
        "I marks stale",
        format!("{}md d4 I\r\nmg d4 v c\r\nmg d4 v c\r\n", ms("d4", "v", "")),
    );
    g.case(
        "I twice re-arms the win",
        "md d4 I q\r\nmg d4 c\r\nmg d4 c\r\n",
    );
    g.case("I with C match", "mg d4 c\r\nmd d4 I C8 c\r\nmg d4 c\r\n");
    g.case("I with C mismatch", "md d4 I C1\r\n");
    g.case(
        "T without I does nothing but delete",
        format!("{}md d5 T30\r\nmg d5\r\n", ms("d5", "v", "")),
    );
    timed(
        &mut g,
        "I with T sets the TTL",
        format!("{}md d6 I T30\r\nmg d6 t v\r\n", ms("d6", "v", "T500")),
    );
    timed(
        &mut g,
        "I with T-1 expires",
        format!("{}md d7 I T-1\r\nmg d7 t v\r\nmg d7\r\n", ms("d7", "v", "")),
    );
    g.case("I on missing", "md nokey I\r\n");
    g.case("invalid flag", "md k Q\r\n");
    g.case("duplicate flag", "md k q q\r\n");
    g.case("bad T", "md k Tx\r\n");
    g.case("bad C", "md k Cx\r\n");
    g.case("flag >= 127", b"md k \xff\r\n".to_vec());
    g.case("opaque too long", format!("md k O{}\r\n", "o".repeat(32)));
    g.case(
        "opaque too long under q",
        format!("md k q O{}\r\n", "o".repeat(32)),
    );
    g.case("md alone", "md\r\n");
    g.case("key too long", format!("md {}\r\n", "k".repeat(251)));
    g.case("too many words", format!("md k {}\r\n", "P ".repeat(18)));
    g.case(
        "other flags accepted",
        format!(
            "{}md d8 v s t c f h l u P L MX N5 R5 J1 D1 F1\r\n",
            ms("d8", "v", "")
        ),
    );
    g.case(
        "delete then classic get",
        format!("{}md d9\r\nget d9\r\n", set("d9", "v")),
    );
    g.finish();
}

// ---------------------------------------------------------------------------
// ma
// ---------------------------------------------------------------------------

#[test]
fn ma_all() {
    let Some(mut g) = Group::start("ma_all", DEFAULT) else {
        return;
    };
    g.case("miss", "ma nokey\r\n");
    g.case("miss with q is sent", "ma nokey q\r\n");
    g.case("miss echoes O and k", "ma nokey Oq k v t c\r\n");
    g.case("decr miss", "ma nokey MD\r\n");
    g.case(
        "incr by one",
        format!("{}ma a1\r\nmg a1 v\r\n", ms("a1", "5", "")),
    );
    g.case("v", "ma a1 v\r\n");
    g.case("D", "ma a1 D10 v\r\n");
    g.case("MI, M+", "ma a1 MI v\r\nma a1 M+ v\r\n");
    g.case(
        "MD, M- floor at zero",
        "ma a1 MD D3 v\r\nma a1 M- D1000 v\r\n",
    );
    g.case("in place keeps the length (padding)", "get a1\r\n");
    g.case("grows", "ma a1 D123456 v\r\nget a1\r\n");
    g.case("c", "ma a1 c v\r\n");
    g.case("k and O", "ma a1 k Oxx\r\n");
    g.case("q hides HD and VA", "ma a1 q\r\nma a1 q v\r\nmg a1 v\r\n");
    g.case(
        "wraps at 2^64",
        format!("{}ma a2 v\r\n", ms("a2", "18446744073709551615", "")),
    );
    g.case(
        "D max",
        format!("{}ma a3 D18446744073709551615 v\r\n", ms("a3", "1", "")),
    );
    g.case("non-numeric", format!("{}ma a4\r\n", ms("a4", "abc", "")));
    g.case("non-numeric under q", "ma a4 q\r\n");
    g.case("empty value", format!("{}ma a5\r\n", ms("a5", "", "")));
    g.case(
        "number with spaces",
        format!("{}ma a6 v\r\nget a6\r\n", ms("a6", " 5 ", "")),
    );
    g.case(
        "negative number",
        format!("{}ma a7 v\r\n", ms("a7", "-5", "")),
    );
    g.case("N creates with 0", "ma n1 N0 v c t\r\nmg n1 v\r\n");
    g.case("N with J", "ma n2 N0 J42 v\r\nma n2 N0 J42 v\r\n");
    g.case("J without N", "ma n3 J5 v\r\n");
    g.case("N decr creates the initial value", "ma n4 N0 J10 MD v\r\n");
    g.case("N under q still answers", "ma n5 N0 q\r\nma n5 N0 q v\r\n");
    g.case("created item: flags 0", "ma n6 N0 J3\r\nmg n6 f s v\r\n");
    timed(&mut g, "N TTL", "md n7 q\r\nma n7 N100 t v\r\nmg n7 t\r\n");
    timed(
        &mut g,
        "N then T",
        "md n8 q\r\nma n8 N100 T50 t\r\nmg n8 t\r\n",
    );
    timed(
        &mut g,
        "T then N",
        "md n9 q\r\nma n9 T50 N100 t\r\nmg n9 t\r\n",
    );
    timed(&mut g, "t before N", "md n10 q\r\nma n10 t N100\r\n");
    timed(
        &mut g,
        "T in place",
        format!("{}ma t1 T100 t v\r\nmg t1 t\r\n", ms("t1", "10", "")),
    );
    timed(
        &mut g,
        "t before T",
        format!("{}ma t2 t T100\r\nmg t2 t\r\n", ms("t2", "10", "T50")),
    );
    timed(
        &mut g,
        "T lost when the value grows",
        format!("{}ma t3 T100 t v\r\nmg t3 t v\r\n", ms("t3", "99", "")),
    );
    g.case("invalid mode", "ma a1 MX\r\nma a1 Mi\r\n");
    g.case("mode too long", "ma a1 MII\r\n");
    g.case("bad D", "ma a1 Dx\r\nma a1 D-1\r\nma a1 D\r\n");
    g.case("bad J", "ma a1 Jx\r\n");
    g.case("bad N", "ma a1 Nx\r\n");
    g.case("invalid flag", "ma a1 Q\r\n");
    g.case("duplicate", "ma a1 v v\r\n");
    g.case(
        "opaque too long on hit",
        format!("ma a1 O{} v\r\nmg a1 v\r\n", "o".repeat(32)),
    );
    g.case(
        "opaque too long on miss",
        format!("ma nokey O{}\r\n", "o".repeat(32)),
    );
    g.case(
        "opaque too long on hit under q",
        format!("ma a1 q O{}\r\n", "o".repeat(32)),
    );
    g.case("ma alone", "ma\r\n");
    g.case("key too long", format!("ma {}\r\n", "k".repeat(251)));
    g.case("too many words", format!("ma k {}\r\n", "P ".repeat(18)));
    g.case(
        "other flags accepted",
        format!("{}ma a8 s f h l u I P L R5 F1\r\n", ms("a8", "1", "")),
    );
    g.case("classic incr after ma", "incr a8 5\r\nma a8 v\r\n");
    g.finish();
}

#[test]
fn ma_cas() {
    let Some(mut g) = Group::start("ma_cas", DEFAULT) else {
        return;
    };
    g.case("store (cas 1)", ms("ac", "1", ""));
    g.case("C match", "ma ac C1 v c\r\nmg ac c v\r\n");
    g.case("C mismatch", "ma ac C1 v c k\r\n");
    g.case("C mismatch under q", "ma ac C1 q\r\n");
    g.case("C0 means no check", "ma ac C0 v c\r\n");
    g.case("C on missing", "ma nokey C1\r\n");
    g.case(
        "C is checked before the value is parsed (empty is not)",
        format!("{}ma nn C1\r\nma nn C4\r\n", ms("nn", "abc", "")),
    );
    g.case("C is ignored when N creates", "ma nv C5 N0 v c\r\n");
    g.case(
        "md C match",
        "md ac C3 I\r\nmg ac c\r\nmd ac C6\r\nmg ac\r\n",
    );
    g.finish();
}

// ---------------------------------------------------------------------------
// me
// ---------------------------------------------------------------------------

#[test]
fn me_all() {
    for (name, args) in [
        ("me_default", DEFAULT),
        ("me_no_dump", &["-X"][..]),
        ("me_no_cas", NO_CAS),
        ("me_small_items", SMALL_ITEMS),
    ] {
        let Some(mut g) = Group::start(name, args) else {
            return;
        };
        g.case("miss", "me nokey\r\n");
        g.case("me alone", "me\r\n");
        g.case("key too long", format!("me {}\r\n", "k".repeat(251)));
        timed(&mut g, "hit", format!("{}me e1\r\n", ms("e1", "abc", "")));
        timed(
            &mut g,
            "fetched",
            format!("{}mg e2\r\nme e2\r\n", ms("e2", "abc", "")),
        );
        timed(
            &mut g,
            "with TTL and flags",
            format!("{}me e3\r\n", ms("e3", "abc", "T100 F1")),
        );
        for len in [10, 100, 500, 900, 5000, 100000, 600000] {
            timed(
                &mut g,
                &format!("size {len}"),
                format!("ms e4 {len} q\r\n{}\r\nme e4\r\n", "z".repeat(len)),
            );
        }
        g.case(
            "b key",
            format!(
                "{}me Zm9v b\r\nme Zm9v b extra\r\nme Zm9v\r\n",
                ms("Zm9v", "v", "b")
            ),
        );
        g.case("b must be the whole token", "me Zm9v bb\r\nme Zm9v B\r\n");
        g.case("bad base64", "me foo b\r\nme ==== b\r\n");
        g.case("b is the third token only", "me x y b\r\n");
        g.case("no flags parsed", "me nokey v v\r\n");
        g.finish();
    }
}

// ---------------------------------------------------------------------------
// Base64 keys
// ---------------------------------------------------------------------------

#[test]
fn base64_keys() {
    let Some(mut g) = Group::start("base64_keys", DEFAULT) else {
        return;
    };
    // "foo" = Zm9v, "a b\r\n" = YSBiDQo=, "\0\x01\x02" = AAEC.
    g.case(
        "ms b then classic get of the raw key",
        format!("{}get foo\r\n", ms("Zm9v", "v", "b")),
    );
    g.case("mg b k echoes the encoded key", "mg Zm9v b k v\r\n");
    g.case("mg of the raw key: k is encoded", "mg foo k\r\n");
    g.case("ms b k c O", ms("Zm9v", "w", "b k c O1"));
    g.case(
        "key with space and CRLF",
        format!("{}mg YSBiDQo= b k v s\r\n", ms("YSBiDQo=", "sp", "b k")),
    );
    g.case(
        "key with NUL",
        format!("{}mg AAEC b k v\r\nme AAEC b\r\n", ms("AAEC", "nul", "b")),
    );
    g.case(
        "miss echoes the encoded key",
        "mg YmFy b k\r\nmd YmFy b k\r\nma YmFy b k\r\n",
    );
    g.case("decode skips junk", "mg Zm9v! b k v\r\n");
    g.case("decode stops after padding", "mg Zg==Zm9v b k\r\n");
    g.case(
        "bad base64",
        "mg foo b\r\nmg Zm9 b\r\nmg ==== b\r\nmg A=== b\r\n",
    );
    g.case(
        "bad base64 in ms swallows",
        "ms foo 2 b\r\nab\r\nmg foo v\r\n",
    );
    g.case("bad base64 in md and ma", "md foo b\r\nma foo b\r\n");
    g.case("bad base64 and a later bad token", "mg foo b Tx\r\n");
    g.case("b twice", "mg Zm9v b b\r\n");
    g.case(
        "md b",
        format!("{}md Zm9v b k\r\nmg foo\r\n", ms("Zm9v", "v", "b")),
    );
    g.case("ma b", format!("{}ma MTA= b k v\r\n", ms("MTA=", "1", "b")));
    g.case("ma N b creates", "ma MTE= b N0 k v\r\nmg MTE= b k v\r\n");
    g.case(
        "mg N b: the stub key is not marked binary",
        "mg MTI= b N30 k\r\nmg MTI= b k\r\n",
    );
    g.case(
        "append drops the binary mark",
        format!(
            "{}{}mg MTM= b k v\r\n",
            ms("MTM=", "a", "b"),
            ms("MTM=", "b", "b MA")
        ),
    );
    g.case(
        "classic set drops the binary mark",
        format!("{}{}mg MTQ= b k\r\n", ms("MTQ=", "a", "b"), set("14", "b")),
    );
    g.case(
        "key of 250 base64 bytes",
        format!("mg {} b k\r\n", "QUFB".repeat(62) + "QQ=="),
    );
    g.case(
        "key over 250 before decoding",
        format!("mg {} b\r\n", "QUFB".repeat(63)),
    );
    g.finish();
}

// ---------------------------------------------------------------------------
// Quiet pipelines, opaque tokens, mn
// ---------------------------------------------------------------------------

#[test]
fn quiet_pipelines() {
    let Some(mut g) = Group::start("quiet_pipelines", DEFAULT) else {
        return;
    };
    g.case(
        "ms q batch then mg q batch",
        Script::new()
            .send(ms("q1", "one", "q O1") + &ms("q2", "two", "q O2") + &ms("q3", "three", "q O3"))
            .sync()
            .send("mg q1 q v O1 k\r\nmg qx q v O2 k\r\nmg q3 q v O3 k\r\nmg qy q v O4\r\n")
            .sync()
            .send("md q1 q O5\r\nmd q1 q O6\r\nma q2 q O7\r\nma cnt q N0 O8\r\nma cnt q O9\r\n")
            .sync()
            .send("mg cnt v\r\n"),
    );
    g.case(
        "mn alone and after quiet misses",
        Script::new().send("mg a q\r\nmg b q\r\n").sync().sync(),
    );
    g.case(
        "opaque tokens match replies",
        "mg q2 v Oa\r\nmg nope Ob\r\nms q4 1 Oc\r\nx\r\nmd q4 Od\r\nma nope Oe\r\n",
    );
    g.case(
        "q with classic commands around",
        "set c 0 0 1 noreply\r\nx\r\nmg c q v\r\nmg d q v\r\nget c\r\n",
    );
    g.case(
        "mixed hits and misses under q",
        (0..10)
            .map(|i| format!("mg q{} q k v\r\n", i % 4))
            .collect::<String>(),
    );
    g.finish();
}

#[test]
fn meta_write_points() {
    let Some(mut g) = Group::start("meta_write_points", DEFAULT) else {
        return;
    };
    g.case("store", ms("w", "v", ""));
    // mg replies are not written at once (unlike get's END), so a close for
    // a protocol violation drops them.
    g.case("mg then HTTP close", "mg w v\r\nGET / HTTP/1.1\r\n");
    g.case("get then HTTP close", "get w\r\nGET / HTTP/1.1\r\n");
    g.case(
        "mg then mn then HTTP close",
        Script::new()
            .send("mg w v\r\n")
            .sync()
            .send("GET / HTTP/1.1\r\n"),
    );
    g.case(
        "ms then HTTP close",
        format!("{}foo HTTP/1.0\r\n", ms("w", "x", "")),
    );
    g.case(
        "md ma then HTTP close",
        "ma w\r\nmd nokey\r\nfoo HTTP/1.0\r\n",
    );
    g.case(
        "mg then over-long line",
        format!("mg w v\r\n{}", "x".repeat(20000)),
    );
    g.finish();
}

/// With `-R 5` memcached writes its replies after every few requests of a
/// batch, which releases the items `mg` replies hold: whether an `incr`
/// further down may rewrite in place depends on where those writes fall.
#[test]
fn pins_and_request_budget() {
    let Some(mut g) = Group::start("pins_and_request_budget", &["-R", "5"]) else {
        return;
    };
    for fill in 0..9 {
        g.case(
            &format!("mg, {fill} more requests, decr"),
            format!(
                "{}mg rb\r\n{}decr rb 1\r\nget rb\r\n",
                ms("rb", "10", ""),
                "mg other\r\n".repeat(fill)
            ),
        );
    }
    for fill in 0..9 {
        g.case(
            &format!("{fill} requests, mg, ma"),
            format!(
                "{}{}mg rc\r\nma rc MD v\r\nmg rc v\r\n",
                ms("rc", "10", ""),
                "md nokey q\r\n".repeat(fill)
            ),
        );
    }
    g.finish();
}

// ---------------------------------------------------------------------------
// Stale-while-revalidate
// ---------------------------------------------------------------------------

#[test]
fn stale_while_revalidate() {
    let Some(mut g) = Group::start("stale_while_revalidate", DEFAULT) else {
        return;
    };
    // Each case is a separate connection: several clients in turn.
    g.case("store (cas 1)", ms("swr", "old", "T0 c"));
    g.case("invalidate (cas 2)", "md swr I T30\r\n");
    g.case("first client wins", "mg swr c v\r\n");
    g.case("second client sees Z X", "mg swr c v\r\n");
    g.case("third client too", "mg swr c s k\r\n");
    g.case("winner recaches with its CAS", ms("swr", "new", "C2 T0 c"));
    g.case(
        "everyone sees the fresh value",
        "mg swr c v\r\nmg swr c v\r\n",
    );
    g.case("invalidate again (cas 4)", "md swr I\r\n");
    g.case("win again", "mg swr c\r\nmg swr c\r\n");
    g.case(
        "a late writer with an older CAS stores stale",
        format!("{}mg swr c v\r\n", ms("swr", "late", "C1 I c")),
    );
    g.case(
        "the winner's CAS is now stale too",
        ms("swr", "mine", "C4 c"),
    );
    g.case(
        "fresh store with the current CAS",
        format!("mg swr c\r\n{}mg swr c v\r\n", ms("swr", "mine", "C5 c")),
    );
    g.case(
        "plain ms clears the stale state",
        format!("md swr I q\r\n{}mg swr v\r\n", ms("swr", "plain", "")),
    );
    g.case(
        "stale item with q still answers",
        "md swr I q\r\nmg swr q\r\nmg swr q v\r\n",
    );
    g.case(
        "md I on the stale item re-arms",
        "md swr I\r\nmg swr\r\nmg swr\r\n",
    );
    g.case("md deletes a stale item", "md swr\r\nmg swr\r\n");

    // N: vivify on miss.
    g.case("N on miss: stub and win", "mg viv N30 c v s\r\n");
    g.case("N again: Z", "mg viv N30 c v s\r\n");
    g.case("without N: plain hit with Z", "mg viv v\r\n");
    g.case(
        "N stub with q",
        "md viv2 q\r\nmg viv2 N30 q\r\nmg viv2 N30 q v\r\n",
    );
    timed(
        &mut g,
        "N TTL",
        "md viv3 q\r\nmg viv3 N77 t\r\nmg viv3 t\r\n",
    );
    timed(&mut g, "N then T", "md viv4 q\r\nmg viv4 N77 T20 t\r\n");
    timed(&mut g, "T then N", "md viv5 q\r\nmg viv5 T20 N77 t\r\n");
    g.case("N with bad token", "mg viv6 Nx\r\n");
    g.case(
        "recache fills the stub",
        format!("{}mg viv c v\r\n", ms("viv", "filled", "T0")),
    );
    g.case(
        "N on expired item",
        "md viv7 q\r\nmg viv7 N-1 v\r\nmg viv7 N30 v\r\n",
    );
    g.case(
        "O too long after N keeps the stub",
        format!(
            "md viv8 q\r\nmg viv8 N30 O{}\r\nmg viv8 v\r\n",
            "x".repeat(40)
        ),
    );

    // R: recache when the TTL is below the token.
    g.case(
        "R: TTL below",
        format!("{}mg rc R30 v\r\nmg rc R30 v\r\n", ms("rc", "v", "T10")),
    );
    g.case(
        "R: TTL above",
        format!("{}mg rc2 R30 v\r\n", ms("rc2", "v", "T100")),
    );
    g.case(
        "R: no TTL never wins",
        format!("{}mg rc3 R30 v\r\n", ms("rc3", "v", "")),
    );
    g.case(
        "R with N on a miss: N wins",
        "md rc4 q\r\nmg rc4 N10 R30 v\r\nmg rc4 R30\r\n",
    );
    g.case(
        "R after T in the same request",
        format!("{}mg rc5 T5 R30\r\n", ms("rc5", "v", "T100")),
    );
    g.case(
        "R before T",
        format!("{}mg rc6 R30 T5\r\nmg rc6 R30\r\n", ms("rc6", "v", "T100")),
    );
    g.case(
        "R and stale: one W",
        format!(
            "{}md rc7 I\r\nmg rc7 R30\r\nmg rc7 R30\r\n",
            ms("rc7", "v", "T10")
        ),
    );
    g.case(
        "R with u",
        format!("{}mg rc8 R30 u\r\nmg rc8 R30 h\r\n", ms("rc8", "v", "T10")),
    );
    g.finish();
}

// ---------------------------------------------------------------------------
// Statistics
// ---------------------------------------------------------------------------

const COUNTERS: &[&str] = &[
    "cmd_get",
    "cmd_set",
    "cmd_touch",
    "cmd_meta",
    "get_hits",
    "get_misses",
    "get_expired",
    "get_flushed",
    "delete_misses",
    "delete_hits",
    "incr_misses",
    "incr_hits",
    "decr_misses",
    "decr_hits",
    "cas_misses",
    "cas_hits",
    "cas_badval",
    "touch_hits",
    "touch_misses",
    "store_too_large",
    "store_no_memory",
    "curr_items",
    "total_items",
];

fn stats_case(g: &mut Group, name: &str, args: &[&'static str], script: impl Into<Script>) {
    let mut pair = Pair::start(args);
    let script = script.into();
    if let Err(r) = pair.check(name, &script) {
        g.fail(r);
        return;
    }
    for what in ["stats\r\n", "stats slabs\r\n", "stats items\r\n"] {
        let s = Script::from(what);
        let o = pair.oracle.run(&s);
        let u = pair.ours.run(&s);
        let names: Vec<&str> = if what == "stats\r\n" {
            COUNTERS.to_vec()
        } else {
            vec![]
        };
        let (fo, fu) = if names.is_empty() {
            (per_class(&o.reply), per_class(&u.reply))
        } else {
            (
                filter_stats(&o.reply, &names),
                filter_stats(&u.reply, &names),
            )
        };
        if fo != fu {
            g.fail(format!(
                "=== MISMATCH in case `{name} ({})` (server args {args:?})\nscript:\n{}\
                 --- oracle (filtered):\n{fo}--- ours (filtered):\n{fu}",
                what.trim(),
                render_script(&script),
            ));
            return;
        }
    }
    g.pass();
}

/// The per-class hit counters of `stats slabs` / `stats items`, without
/// the class numbers (which depend on item header sizes).
fn per_class(reply: &[u8]) -> String {
    let text = String::from_utf8_lossy(reply);
    let mut out: Vec<String> = Vec::new();
    for line in text.split("\r\n") {
        let mut it = line.split(' ');
        if it.next() != Some("STAT") {
            continue;
        }
        let (Some(name), Some(value)) = (it.next(), it.next()) else {
            continue;
        };
        let field = name.rsplit(':').next().unwrap_or(name);
        if [
            "get_hits",
            "cmd_set",
            "delete_hits",
            "incr_hits",
            "decr_hits",
            "cas_hits",
            "cas_badval",
            "touch_hits",
        ]
        .contains(&field)
            && value != "0"
        {
            out.push(format!("{field} {value}"));
        }
    }
    out.sort();
    out.join("\n") + "\n"
}

#[test]
fn meta_stats() {
    let Some(mut g) = Group::start("meta_stats", DEFAULT) else {
        return;
    };
    stats_case(&mut g, "fresh", DEFAULT, "");
    stats_case(
        &mut g,
        "mg hits, misses, touches",
        DEFAULT,
        format!(
            "{}mg a v\r\nmg a\r\nmg b\r\nmg b q\r\nmg a T10\r\nmg b T10\r\nmg c N10\r\nmg c N10 T5\r\nmg a Tx\r\n",
            ms("a", "1", "")
        ),
    );
    stats_case(
        &mut g,
        "ms results",
        DEFAULT,
        format!(
            "{}{}{}{}{}{}ms bad 1\r\nxx\r\n",
            ms("a", "1", ""),
            ms("a", "2", "ME"),
            ms("a", "3", "C99"),
            ms("m", "3", "C1"),
            ms("a", "4", "C1 I"),
            ms("a", "5", "MA")
        ),
    );
    stats_case(
        &mut g,
        "md results",
        DEFAULT,
        format!(
            "{}{}md a\r\nmd a\r\nmd b C1\r\nmd b I\r\nmd b C99 I\r\nmd zz Q\r\n",
            ms("a", "1", ""),
            ms("b", "1", "")
        ),
    );
    stats_case(
        &mut g,
        "ma results",
        DEFAULT,
        format!(
            "{}ma a\r\nma a MD\r\nma x\r\nma x MD\r\nma x N0\r\nma a C1\r\nma n\r\n{}ma n\r\n",
            ms("a", "1", ""),
            ms("n", "x", "")
        ),
    );
    stats_case(
        &mut g,
        "me counts cmd_meta",
        DEFAULT,
        format!("{}me a\r\nme b\r\nme\r\nme foo b\r\n", ms("a", "1", "")),
    );
    stats_case(
        &mut g,
        "flushed through mg",
        DEFAULT,
        format!("{}flush_all\r\nmg f\r\n", ms("f", "1", "")),
    );
    stats_case(
        &mut g,
        "stats detail ignores meta commands",
        DEFAULT,
        format!(
            "stats detail on\r\n{}mg p:a\r\nmd p:a\r\nstats detail dump\r\n",
            ms("p:a", "1", "")
        ),
    );
    g.finish();
}
