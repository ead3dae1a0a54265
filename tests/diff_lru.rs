//! Differential tests for the segmented LRU: after the same script, once
//! both servers' LRU maintainers have settled, `stats items` and `stats`
//! show the same segment sizes, moves and hits per segment as memcached
//! 1.6.18's. Only the ages (seconds since an item was touched, which
//! depend on when in a second each step landed), the juggle count and
//! memcached's count of items its threads held at a tail are left out.

mod common;

use common::*;
use std::time::Duration;

/// Lines that depend on the clock, on how often the maintainer woke, or
/// (`lrutail_reflocked`) on memcached's maintainer meeting an item a worker
/// thread still holds.
fn timing(name: &str) -> bool {
    let field = name.rsplit(':').next().unwrap_or(name);
    matches!(
        field,
        "age"
            | "age_hot"
            | "age_warm"
            | "evicted_time"
            | "lru_maintainer_juggles"
            | "lrutail_reflocked"
    )
}

/// `stats items` plus the LRU lines of `stats`, without the timing ones.
fn lru_view(server: &Server) -> String {
    let items = server.run(&Script::from("stats items\r\n")).reply;
    let stats = server.run(&Script::from("stats\r\n")).reply;
    let global = filter_stats(
        &stats,
        &[
            "reclaimed",
            "evictions",
            "evicted_active",
            "moves_to_cold",
            "moves_to_warm",
            "moves_within_lru",
            "direct_reclaims",
            "lru_bumps_dropped",
            "get_hits",
        ],
    );
    let mut out = String::new();
    for line in String::from_utf8_lossy(&items).split("\r\n") {
        let name = line.split(' ').nth(1).unwrap_or("");
        if line.starts_with("STAT ") && !timing(name) {
            out.push_str(line);
            out.push('\n');
        }
    }
    out + &global
}

/// Polls one server until `stat` of `stats items` reads `want`.
fn wait_for(server: &Server, stat: &str, want: &str) {
    let script = Script::from("stats items\r\n");
    let line = format!("STAT {stat} {want}\n");
    let (o, ok) = poll_until(server, &script, Duration::from_secs(15), |o| {
        filter_stats(&o.reply, &[stat]) == line
    });
    assert!(
        ok,
        "{:?}: {stat} never became {want}:\n{}",
        server.kind,
        escape(&o.reply)
    );
}

fn settle(pair: &Pair, stat: &str, want: &str) {
    wait_for(&pair.oracle, stat, want);
    wait_for(&pair.ours, stat, want);
}

fn same(pair: &Pair, step: &str) -> String {
    let (o, u) = (lru_view(&pair.oracle), lru_view(&pair.ours));
    assert_eq!(u, o, "after {step}");
    o
}

/// New items enter HOT; with COLD empty HOT's age limit is zero, so the
/// maintainer sends every HOT item older than a second to COLD. Two
/// fetches make a COLD item active and it is bumped to WARM (its hits
/// counted toward COLD); a fetch in WARM makes it active again, and the
/// maintainer moves it within WARM.
#[test]
fn items_flow_hot_cold_warm_as_in_memcached() {
    if !oracle_available() {
        return;
    }
    let mut pair = Pair::start(&["-o", "no_lru_crawler"]);
    let sets: String = (0..10)
        .map(|i| format!("set k{i} 0 0 1\r\n{i}\r\n"))
        .collect();
    pair.check("sets", &Script::from(sets.as_str())).unwrap();
    settle(&pair, "items:1:number_cold", "10");
    let v = same(&pair, "the sets settled");
    assert!(v.contains("STAT items:1:moves_to_cold 10\n"), "{v}");

    pair.check("two fetches", &Script::from("get k3\r\nget k3\r\n"))
        .unwrap();
    settle(&pair, "items:1:number_warm", "1");
    let v = same(&pair, "the bump to WARM");
    assert!(v.contains("STAT items:1:hits_to_cold 2\n"), "{v}");
    assert!(v.contains("STAT items:1:moves_to_warm 1\n"), "{v}");

    pair.check("a fetch in WARM", &Script::from("get k3\r\n"))
        .unwrap();
    settle(&pair, "items:1:moves_within_lru", "1");
    let v = same(&pair, "the move within WARM");
    assert!(v.contains("STAT items:1:hits_to_warm 1\n"), "{v}");
}

/// `-o temporary_ttl`: an item whose TTL is within it goes to TEMP and
/// stays there; a longer-lived one goes through HOT to COLD.
#[test]
fn short_ttls_go_to_temp() {
    if !oracle_available() {
        return;
    }
    let mut pair = Pair::start(&["-o", "no_lru_crawler,temporary_ttl=61"]);
    let script = "set t 0 30 1\r\nx\r\nset l 0 0 1\r\ny\r\nget t\r\nget t\r\n";
    pair.check("sets", &Script::from(script)).unwrap();
    settle(&pair, "items:1:number_cold", "1");
    let v = same(&pair, "the sets settled");
    assert!(v.contains("STAT items:1:number_temp 1\n"), "{v}");
    assert!(v.contains("STAT items:1:hits_to_temp 2\n"), "{v}");
}

/// `lru mode flat` at run time: new items go to COLD, the one list a flat
/// LRU keeps; `lru mode segmented` sends the next ones to HOT again.
#[test]
fn lru_mode_switches_where_new_items_go() {
    if !oracle_available() {
        return;
    }
    let mut pair = Pair::start(&["-o", "no_lru_crawler"]);
    let script = "lru mode flat\r\nset a 0 0 1\r\n1\r\nget a\r\nget a\r\nstats items\r\n";
    let (o, _) = pair.check("flat", &Script::from(script)).unwrap();
    let v = filter_stats(&o.reply, &["items:1:number_cold", "items:1:hits_to_cold"]);
    assert_eq!(
        v,
        "STAT items:1:number_cold 1\nSTAT items:1:hits_to_cold 2\n"
    );
    let script = "lru mode segmented\r\nset b 0 0 1\r\n1\r\n";
    pair.check("segmented", &Script::from(script)).unwrap();
    settle(&pair, "items:1:number_cold", "2");
    same(&pair, "the switch back");
}
