use super::*;

fn cache(mb: usize, evict: bool) -> Cache {
    Cache::new(CacheConfig {
        evict_to_free: evict,
        ..CacheConfig::for_tests(mb)
    })
    .unwrap()
}

fn set(c: &mut Cache, mode: StoreMode, key: &[u8], val: &[u8]) -> Result<StoreResult, AllocError> {
    let it = c.alloc(key, 0, 0, val.len())?;
    c.value_window_mut(it, 0).copy_from_slice(val);
    Ok(c.store(it, mode, 0))
}

fn value(c: &mut Cache, key: &[u8]) -> Option<Vec<u8>> {
    let it = c.get(key, None)?;
    Some(c.value_segments(it).flatten().copied().collect())
}

#[test]
fn set_get_delete() {
    let mut c = cache(8, true);
    assert_eq!(
        set(&mut c, StoreMode::Set, b"k", b"v1"),
        Ok(StoreResult::Stored)
    );
    assert_eq!(value(&mut c, b"k").unwrap(), b"v1");
    assert_eq!(
        set(&mut c, StoreMode::Add, b"k", b"v2"),
        Ok(StoreResult::NotStored)
    );
    assert_eq!(
        set(&mut c, StoreMode::Replace, b"k", b"v3"),
        Ok(StoreResult::Stored)
    );
    assert_eq!(
        set(&mut c, StoreMode::Append, b"k", b"+"),
        Ok(StoreResult::Stored)
    );
    assert_eq!(
        set(&mut c, StoreMode::Prepend, b"k", b"-"),
        Ok(StoreResult::Stored)
    );
    assert_eq!(value(&mut c, b"k").unwrap(), b"-v3+");
    assert!(c.delete(b"k"));
    assert!(!c.delete(b"k"));
    assert_eq!(value(&mut c, b"k"), None);
    assert_eq!(c.stats.curr_items, 0);
}

#[test]
fn cas_counts_from_one() {
    let mut c = cache(8, true);
    set(&mut c, StoreMode::Set, b"a", b"1").unwrap();
    set(&mut c, StoreMode::Set, b"b", b"1").unwrap();
    let a = c.get(b"a", None).unwrap();
    let b = c.get(b"b", None).unwrap();
    assert_eq!(c.view(a).cas(), 1);
    assert_eq!(c.view(b).cas(), 2);
    let it = c.alloc(b"a", 0, 0, 1).unwrap();
    assert_eq!(c.store(it, StoreMode::Cas, 2), StoreResult::Exists);
    let it = c.alloc(b"a", 0, 0, 1).unwrap();
    assert_eq!(c.store(it, StoreMode::Cas, 1), StoreResult::Stored);
    let it = c.alloc(b"zz", 0, 0, 1).unwrap();
    assert_eq!(c.store(it, StoreMode::Cas, 1), StoreResult::NotFound);
}

#[test]
fn incr_decr_follow_memcached() {
    let mut c = cache(8, true);
    set(&mut c, StoreMode::Set, b"n", b"10").unwrap();
    assert_eq!(c.add_delta(b"n", false, 1), Delta::Value(9));
    assert_eq!(value(&mut c, b"n").unwrap(), b"9 ");
    assert_eq!(c.add_delta(b"n", true, 991), Delta::Value(1000));
    assert_eq!(value(&mut c, b"n").unwrap(), b"1000");
    assert_eq!(c.add_delta(b"n", false, 5000), Delta::Value(0));
    set(&mut c, StoreMode::Set, b"m", b"18446744073709551615").unwrap();
    assert_eq!(c.add_delta(b"m", true, 2), Delta::Value(1));
    set(&mut c, StoreMode::Set, b"x", b"abc").unwrap();
    assert_eq!(c.add_delta(b"x", true, 1), Delta::NonNumeric);
    assert_eq!(c.add_delta(b"nope", true, 1), Delta::NotFound);
}

#[test]
fn large_values_are_chunked_and_read_back() {
    let mut c = cache(8, true);
    let val: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    let it = c.alloc(b"big", 0, 0, val.len()).unwrap();
    let mut pos = 0;
    while pos < val.len() {
        let w = c.value_window_mut(it, pos);
        let n = w.len();
        w.copy_from_slice(&val[pos..pos + n]);
        pos += n;
    }
    assert_eq!(c.store(it, StoreMode::Set, 0), StoreResult::Stored);
    assert_eq!(value(&mut c, b"big").unwrap(), val);
    assert_eq!(
        set(&mut c, StoreMode::Append, b"big", b"tail"),
        Ok(StoreResult::Stored)
    );
    let got = value(&mut c, b"big").unwrap();
    assert_eq!(&got[..val.len()], &val[..]);
    assert_eq!(&got[val.len()..], b"tail");
    assert!(c.delete(b"big"));
}

#[test]
fn seed_without_evictions_stops_at_282() {
    let mut c = cache(3, false);
    let val = vec![b'x'; 10240];
    let mut stored = 0;
    loop {
        let key = stored.to_string();
        match set(&mut c, StoreMode::Set, key.as_bytes(), &val) {
            Ok(StoreResult::Stored) => stored += 1,
            Err(AllocError::NoMemory) => break,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(stored, 282);
    assert_eq!(value(&mut c, b"0").unwrap().len(), 10240);
}

#[test]
fn seed_with_evictions_keeps_the_newest() {
    let mut c = cache(3, true);
    let val = vec![b'x'; 10240];
    for i in 0..1000 {
        let key = i.to_string();
        assert_eq!(
            set(&mut c, StoreMode::Set, key.as_bytes(), &val),
            Ok(StoreResult::Stored)
        );
    }
    assert!(c.stats.evictions > 0);
    assert!(value(&mut c, b"999").is_some());
    assert!(value(&mut c, b"0").is_none());
}

#[test]
fn hash_table_grows_without_losing_items() {
    let mut c = cache(64, true);
    for i in 0..200_000 {
        let key = format!("key:{i}");
        set(&mut c, StoreMode::Set, key.as_bytes(), b"v").unwrap();
    }
    assert!(c.hash.power() > 16);
    for i in (0..200_000).step_by(997) {
        let key = format!("key:{i}");
        assert!(value(&mut c, key.as_bytes()).is_some(), "{key}");
    }
}

#[test]
fn flush_all_hides_older_items() {
    let mut c = cache(8, true);
    set(&mut c, StoreMode::Set, b"a", b"1").unwrap();
    c.flush_all(0);
    assert_eq!(value(&mut c, b"a"), None);
    set(&mut c, StoreMode::Set, b"b", b"1").unwrap();
    assert!(value(&mut c, b"b").is_some());
}

fn store_big(c: &mut Cache, key: &[u8], len: usize, byte: u8) -> ChunkRef {
    let it = c.alloc(key, 0, 0, len).unwrap();
    let mut pos = 0;
    while pos < len {
        let w = c.value_window_mut(it, pos);
        w.fill(byte);
        pos += w.len();
    }
    it
}

/// Steps the pending move to its end (a page takes several steps).
fn finish_move(c: &mut Cache) {
    for _ in 0..1000 {
        if c.rebalance_step() {
            return;
        }
    }
    panic!("the move did not finish");
}

#[test]
fn moving_a_page_evicts_large_items_when_the_class_has_no_free_chunk() {
    let mut c = cache(8, true);
    let largest = c.slabs.largest();
    let a = store_big(&mut c, b"a", 600_000, b'a');
    assert_eq!(c.store(a, StoreMode::Set, 0), StoreResult::Stored);
    let b = store_big(&mut c, b"b", 600_000, b'b');
    assert_eq!(c.store(b, StoreMode::Set, 0), StoreResult::Stored);
    assert_eq!(c.slabs.class(largest).pages, 2);
    assert_eq!(c.reassign(largest as i32, 1), rebalance::Reassign::Ok);
    finish_move(&mut c);
    assert_eq!(c.stats.slabs_moved, 1);
    assert_eq!(c.stats.slab_reassign_evictions_nomem, 1);
    assert_eq!(c.stats.slab_reassign_chunk_rescues, 0);
    assert_eq!(c.slabs.class(largest).pages, 1);
    // "a" owned chunks of the first page; "b" is untouched.
    assert_eq!(value(&mut c, b"a"), None);
    let got = value(&mut c, b"b").unwrap();
    assert!(got.len() == 600_000 && got.iter().all(|&x| x == b'b'));
}

#[test]
fn an_item_being_written_holds_its_page_until_stored() {
    let mut c = cache(8, true);
    // The in-flight item takes the first chunk of the class's first page;
    // enough others follow to give the class a second page to spare.
    let pending = c.alloc(b"z", 0, 0, 100).unwrap();
    let class = c.class_of(pending);
    let mut i = 0;
    while c.slabs.class(class).pages < 2 {
        set(
            &mut c,
            StoreMode::Set,
            format!("k{i}").as_bytes(),
            &[b'k'; 99],
        )
        .unwrap();
        i += 1;
    }
    assert_eq!(c.reassign(class as i32, 0), rebalance::Reassign::Ok);
    assert!(
        !c.rebalance_step(),
        "the in-flight item must block the move"
    );
    for _ in 0..100 {
        c.rebalance_step();
    }
    assert!(
        c.rebalance.is_some(),
        "still waiting for the in-flight item"
    );
    assert!(c.stats.slab_reassign_busy_items > 0);
    c.value_window_mut(pending, 0).fill(b'z');
    assert_eq!(c.store(pending, StoreMode::Set, 0), StoreResult::Stored);
    finish_move(&mut c);
    assert_eq!(c.stats.slabs_moved, 1);
    assert_eq!(c.slabs.free_pages(), 1);
    // The second page had room for all the first page's items but one
    // (the in-flight one, stored last, found the room taken).
    let perslab = c.slabs.class(class).perslab as u64;
    assert_eq!(c.stats.slab_reassign_rescues, perslab - 1);
    assert_eq!(c.stats.slab_reassign_evictions_nomem, 1);
}

#[test]
fn moving_a_page_rescues_chunks_of_large_items() {
    let mut c = cache(8, true);
    let largest = c.slabs.largest();
    // Two chunks a page: "a" fills the first page, "b" the second, "c"
    // the third; deleting "b" leaves room to rescue "a" into.
    for (k, byte) in [(b"a", b'a'), (b"b", b'b'), (b"c", b'c')] {
        let it = store_big(&mut c, k, 600_000, byte);
        assert_eq!(c.store(it, StoreMode::Set, 0), StoreResult::Stored);
    }
    let a = c.get(b"a", None).unwrap();
    let cas = c.view(a).cas();
    assert!(c.delete(b"b"));
    assert_eq!(c.slabs.class(largest).pages, 3);
    assert_eq!(c.reassign(largest as i32, 0), rebalance::Reassign::Ok);
    finish_move(&mut c);
    assert_eq!(c.stats.slab_reassign_chunk_rescues, 2);
    assert_eq!(c.stats.slab_reassign_evictions_nomem, 0);
    assert_eq!(c.slabs.class(largest).pages, 2);
    assert_eq!(c.slabs.free_pages(), 1);
    let got = value(&mut c, b"a").unwrap();
    assert!(got.len() == 600_000 && got.iter().all(|&x| x == b'a'));
    let a = c.get(b"a", None).unwrap();
    assert_eq!(c.view(a).cas(), cas);
    let got = value(&mut c, b"c").unwrap();
    assert!(got.len() == 600_000 && got.iter().all(|&x| x == b'c'));
    // The freed chunks are usable again: two more large values fit.
    for k in [b"d", b"e"] {
        let it = store_big(&mut c, k, 600_000, b'd');
        assert_eq!(c.store(it, StoreMode::Set, 0), StoreResult::Stored);
    }
    assert!(value(&mut c, b"a").is_some());
}

#[test]
fn moving_a_page_rescues_live_items_keeping_what_clients_see() {
    let mut c = cache(8, true);
    let mut keys = Vec::new();
    let class = {
        let it = c.alloc(b"k0", 7, 0, 1000).unwrap();
        let class = c.class_of(it);
        c.free_unlinked(it);
        class
    };
    // Fill two pages and a bit, then delete every other item.
    let mut i = 0;
    while c.slabs.class(class).pages < 3 {
        let key = format!("k{i}");
        let it = c.alloc(key.as_bytes(), 7, 0, 1000).unwrap();
        c.value_window_mut(it, 0).fill(b'0' + (i % 10) as u8);
        assert_eq!(c.store(it, StoreMode::Set, 0), StoreResult::Stored);
        keys.push(key);
        i += 1;
    }
    for k in keys.iter().step_by(2) {
        assert!(c.delete(k.as_bytes()));
    }
    let before: Vec<(u64, u32)> = keys
        .iter()
        .skip(1)
        .step_by(2)
        .map(|k| {
            let it = c.get(k.as_bytes(), None).unwrap();
            (c.view(it).cas(), c.view(it).flags())
        })
        .collect();
    let items = c.stats.curr_items;
    assert_eq!(c.reassign(class as i32, 0), rebalance::Reassign::Ok);
    finish_move(&mut c);
    assert!(c.stats.slab_reassign_rescues > 0);
    assert_eq!(c.stats.slab_reassign_evictions_nomem, 0);
    assert_eq!(c.stats.curr_items, items);
    assert_eq!(c.slabs.class(class).pages, 2);
    assert_eq!(c.lru_len(class), items as usize);
    for (n, (k, (cas, flags))) in keys.iter().skip(1).step_by(2).zip(before).enumerate() {
        let i = 2 * n + 1;
        let it = c.get(k.as_bytes(), None).unwrap();
        assert_eq!((c.view(it).cas(), c.view(it).flags()), (cas, flags));
        let want = vec![b'0' + (i % 10) as u8; 1000];
        assert_eq!(value(&mut c, k.as_bytes()).unwrap(), want, "{k}");
    }
    // The LRU is whole: walking it finds every item once.
    let walked: usize = lru::SEGMENTS
        .iter()
        .map(|&seg| c.segment_iter(class, seg).count())
        .sum();
    assert_eq!(walked, items as usize);
}

#[test]
fn automove_gives_pages_of_mostly_free_classes_to_the_pool_once_quiet() {
    let mut c = cache(16, true);
    let mut keys = Vec::new();
    // A baseline check, then the class grows to five pages: its window is
    // dirty.
    assert!(!c.automove_tick(1, 0.8, 3));
    let mut i = 0;
    let class = loop {
        let key = format!("k{i}");
        set(&mut c, StoreMode::Set, key.as_bytes(), &[b'v'; 1000]).unwrap();
        keys.push(key);
        i += 1;
        let class = c.class_of(c.hash.find(&c.slabs.arena, b"k0", c.hv(b"k0")).unwrap());
        if c.slabs.class(class).pages == 5 {
            break class;
        }
    };
    // This check sees the growth (and too few free chunks to give any).
    assert!(!c.automove_tick(1, 0.8, 3));
    assert_eq!(c.rebalance, None);
    for k in &keys[..keys.len() - 10] {
        assert!(c.delete(k.as_bytes()));
    }
    // The growth stays in the window for the next two checks.
    for _ in 0..2 {
        c.automove_tick(1, 0.8, 3);
        assert_eq!(c.rebalance, None, "a class that grew keeps its pages");
    }
    assert!(
        c.automove_tick(1, 0.8, 3),
        "a page went to the pool: look again soon"
    );
    finish_move(&mut c);
    assert_eq!(c.slabs.free_pages(), 1);
    assert_eq!(c.slabs.class(class).pages, 4);
    // Every live item survived (rescued or elsewhere).
    for k in &keys[keys.len() - 10..] {
        assert!(value(&mut c, k.as_bytes()).is_some());
    }
}

/// t/slabs_reassign.t with the race forced: a store lands in the class a
/// page is leaving after the mover's first step. The items the store must
/// evict (the class's oldest) all lie in that page, ahead of the walk;
/// memcached hands their freed chunks straight to the store (its mover
/// deals with the new item when it gets there), so the store succeeds.
#[test]
fn a_store_in_a_class_losing_a_page_uses_the_chunks_ahead_of_the_walk() {
    let mut c = cache(4, true);
    let (big, small) = (vec![b'x'; 70_000], vec![b'y'; 20_000]);
    for i in 1..=60 {
        let key = format!("bfoo{i}");
        assert_eq!(
            set(&mut c, StoreMode::Set, key.as_bytes(), &big),
            Ok(StoreResult::Stored)
        );
    }
    for i in 1..=60 {
        let key = format!("sfoo{i}");
        assert_eq!(
            set(&mut c, StoreMode::Set, key.as_bytes(), &small),
            Ok(StoreResult::Stored)
        );
    }
    let find = |c: &Cache, key: &[u8]| c.hash.find(&c.slabs.arena, key, c.hv(key)).unwrap();
    let (b, s) = (find(&c, b"bfoo60"), find(&c, b"sfoo60"));
    assert_eq!(
        (c.class_of(b), c.class_of(s)),
        (31, 25),
        "the file's classes"
    );
    assert_eq!(c.reassign(31, 25), rebalance::Reassign::Ok);
    finish_move(&mut c);
    assert_eq!(c.reassign(31, 25), rebalance::Reassign::Ok);
    assert!(!c.rebalance_step(), "one step into the move");
    assert_eq!(
        set(&mut c, StoreMode::Set, b"bfoo51", &big),
        Ok(StoreResult::Stored)
    );
    assert_eq!(
        set(&mut c, StoreMode::Set, b"sfoo51", &small),
        Ok(StoreResult::Stored)
    );
    finish_move(&mut c);
    assert_eq!(c.stats.slabs_moved, 2);
    assert_eq!((c.slabs.class(31).pages, c.slabs.class(25).pages), (2, 3));
    // Whatever survived the move reads back whole.
    for i in 1..=60 {
        let key = format!("bfoo{i}");
        if let Some(v) = value(&mut c, key.as_bytes()) {
            assert_eq!(v, big, "{key}");
        }
    }
}

#[test]
fn format_u64_matches_display() {
    let mut buf = [0u8; 20];
    let mut probes = vec![0, 1, 9, 10, 11, 99, 100, 101, 999, 1000, 65535, u64::MAX];
    probes.extend((0..64).map(|s| 1u64 << s));
    probes.extend((1..20).map(|e| 10u64.pow(e) - 1));
    for v in probes {
        assert_eq!(super::format_u64(v, &mut buf), v.to_string().as_bytes());
    }
}
