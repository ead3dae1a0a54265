use super::*;

const MB: u32 = 1 << 20;

/// A store over a temporary file: `pages` pages of 2 MB, 2 MB buffers,
/// I/O done inline.
fn store(pages: u32) -> (ExtStore, std::path::PathBuf) {
    store_in(&std::env::temp_dir(), pages)
}

/// `store` with its file in `dir`.
fn store_in(dir: &std::path::Path, pages: u32) -> (ExtStore, std::path::PathBuf) {
    let path = dir.join(format!(
        "extstore-unit-{}-{}",
        std::process::id(),
        rand_suffix()
    ));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .unwrap();
    let s = ExtStore::with_files(vec![Arc::new(file)], &[pages], 2 * MB, 2 * MB, None);
    (s, path)
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

fn put(s: &mut ExtStore, byte: u8, len: usize) -> Option<Loc> {
    s.write(BUCKET_DEFAULT, len, |b| b.fill(byte))
}

fn read_now(s: &mut ExtStore, loc: Loc, len: usize) -> Option<Vec<u8>> {
    match s.read(loc, len, Ticket::Conn(7)) {
        ReadStart::Ready(v) => Some(v),
        ReadStart::Gone => None,
        ReadStart::Pending => {
            let mut f = s.complete();
            assert_eq!(f.len(), 1);
            f.pop().unwrap().data
        }
    }
}

#[test]
fn page_zero_is_never_handed_out_and_versions_grow() {
    let (mut s, path) = store(4);
    assert_eq!(s.pages_free(), 3);
    let a = put(&mut s, 1, 1000).unwrap();
    assert_eq!(a.page, 1);
    assert_eq!(a.version, 1);
    assert_eq!(a.offset, 0);
    let b = put(&mut s, 2, 1000).unwrap();
    assert_eq!((b.page, b.offset), (1, 1000));
    // A record that does not fit the open buffer's rest goes to the next
    // page (one buffer per page here).
    let c = put(&mut s, 3, 2 * MB as usize - 10).unwrap();
    assert_eq!((c.page, c.version), (2, 2));
    std::fs::remove_file(path).unwrap();
}

#[test]
fn records_read_back_from_the_buffer_and_from_the_file() {
    let (mut s, path) = store(4);
    let a = put(&mut s, 0xab, 5000).unwrap();
    // Still in the open buffer: at once.
    assert!(matches!(
        s.read(a, 5000, Ticket::Conn(1)),
        ReadStart::Ready(_)
    ));
    // Fill the page so the buffer is written out.
    put(&mut s, 0xcd, 2 * MB as usize - 5000).unwrap();
    put(&mut s, 0xef, 10).unwrap();
    s.complete();
    let back = read_now(&mut s, a, 5000).unwrap();
    assert!(back.iter().all(|&b| b == 0xab));
    assert_eq!(s.counters.objects_read, 2);
    std::fs::remove_file(path).unwrap();
}

#[test]
fn deleting_every_record_frees_the_page_and_its_records_read_as_gone() {
    let (mut s, path) = store(4);
    let a = put(&mut s, 1, 2 * MB as usize).unwrap();
    put(&mut s, 2, 10).unwrap(); // opens page 2; page 1's buffer goes out
    s.complete();
    assert_eq!(s.counters.objects_used, 2);
    s.delete(a, 2 * MB as usize);
    assert_eq!(s.counters.objects_used, 1);
    s.maint();
    assert_eq!(s.counters.page_reclaims, 1);
    assert!(!s.holds(a));
    assert!(read_now(&mut s, a, 10).is_none());
    std::fs::remove_file(path).unwrap();
}

#[test]
fn with_no_page_free_the_oldest_is_evicted() {
    let (mut s, path) = store(3);
    let first = put(&mut s, 1, 2 * MB as usize).unwrap();
    put(&mut s, 2, 2 * MB as usize).unwrap();
    s.complete();
    // Both usable pages hold data; the next write needs one.
    let third = put(&mut s, 3, 100);
    s.complete();
    assert!(third.is_some());
    assert_eq!(s.counters.page_evictions, 1);
    assert_eq!(s.counters.objects_evicted, 1);
    assert!(!s.holds(first));
    assert!(third.unwrap().version > first.version);
    std::fs::remove_file(path).unwrap();
}

#[test]
fn compaction_picks_the_oldest_fragmented_page_only_when_few_are_free() {
    let (mut s, path) = store(5);
    let mut locs = Vec::new();
    for _ in 0..4 {
        locs.push(put(&mut s, 1, MB as usize).unwrap());
    }
    put(&mut s, 1, 10).unwrap();
    s.complete();
    let mut cfg = ExtSettings {
        compact_under: 1,
        max_frag: 0.9,
        ..ExtSettings::default()
    };
    // Pages 1 and 2 full, page 3 open: two free would be needed under 1.
    assert_eq!(s.pages_free(), 1);
    assert!(s.compact_pick(&cfg).is_none(), "nothing fragmented yet");
    s.delete(locs[2], MB as usize);
    let (page, version, drop) = s.compact_pick(&cfg).unwrap();
    assert_eq!(
        (page, version, drop),
        (locs[2].page, locs[2].version, false)
    );
    cfg.compact_under = 0;
    assert!(s.compact_pick(&cfg).is_none());
    std::fs::remove_file(path).unwrap();
}

#[test]
fn jbod_pages_interleave_across_files() {
    let pages = interleave(&[2, 3], 8 * MB);
    let files: Vec<usize> = pages.iter().map(|p| p.file).collect();
    assert_eq!(files, [0, 1, 0, 1, 1]);
    let bases: Vec<u64> = pages.iter().map(|p| p.base).collect();
    let m = 8u64 << 20;
    assert_eq!(bases, [0, 0, m, m, 2 * m]);
}

#[test]
fn a_bucket_without_a_buffer_gets_one_back_from_another_bucket() {
    let (mut s, path) = store(8);
    // Four buckets each hold an open, partly filled buffer: none is spare.
    for b in 0..BUCKETS {
        assert!(s.write(b, 100, |x| x.fill(1)).is_some());
    }
    // The default bucket's buffer fills and goes out; the next write needs
    // a fresh one while the other three are open: it fails, but sends the
    // fullest open one to disk...
    put(&mut s, 2, 2 * MB as usize - 100).unwrap();
    assert!(put(&mut s, 3, 10).is_none());
    // ...and once the writes are done, buffers are back.
    s.complete();
    assert!(s.has_spare_wbuf());
    assert!(put(&mut s, 3, 10).is_some());
    std::fs::remove_file(path).unwrap();
}

/// A record written through a buffer, which has gone to the file since.
fn on_file(s: &mut ExtStore, byte: u8, len: usize) -> Loc {
    let a = put(s, byte, len).unwrap();
    put(s, 0, 2 * MB as usize - len).unwrap();
    put(s, 0, 10).unwrap();
    s.complete();
    a
}

#[test]
fn a_record_the_page_cache_holds_is_read_at_once_and_one_it_lacks_by_a_thread() {
    let (mut s, path) = store(4);
    let a = on_file(&mut s, 0x5a, 5000);
    // Just written: the page cache holds it.
    match s.read(a, 5000, Ticket::Conn(1)) {
        ReadStart::Ready(v) => assert!(v.iter().all(|&b| b == 0x5a)),
        ReadStart::Pending => {
            // Only a file system that cannot read without waiting may say
            // so, and then it is not asked again.
            assert!(!s.nowait[0], "a cached record went to a thread");
            s.complete();
            std::fs::remove_file(path).unwrap();
            return;
        }
        ReadStart::Gone => panic!("gone"),
    }
    // Dropped from the page cache: an I/O thread's job, whose result
    // comes back through `complete` as before.
    use std::os::fd::AsRawFd as _;
    s.files[0].sync_data().unwrap();
    crate::sys::drop_cached(s.files[0].as_raw_fd());
    assert!(matches!(
        s.read(a, 5000, Ticket::Conn(1)),
        ReadStart::Pending
    ));
    let f = s.complete();
    assert_eq!(f.len(), 1);
    assert!(f[0].data.as_ref().unwrap().iter().all(|&b| b == 0x5a));
    assert_eq!(s.counters.objects_read, 2);
    assert!(s.nowait[0]);
    std::fs::remove_file(path).unwrap();
}

#[test]
fn read_buffers_given_back_serve_the_next_reads() {
    let (mut s, path) = store(4);
    let a = put(&mut s, 7, 3000).unwrap();
    let b = put(&mut s, 8, 2000).unwrap();
    let first = read_now(&mut s, a, 3000).unwrap();
    let at = first.as_ptr();
    s.recycle(first);
    // Shorter: the same allocation, cut to the record's length.
    let second = read_now(&mut s, b, 2000).unwrap();
    assert_eq!(second.as_ptr(), at);
    assert_eq!(second, vec![8u8; 2000]);
    s.recycle(second);
    // Longer: grown, with the record's bytes only.
    let third = read_now(&mut s, a, 3000).unwrap();
    assert_eq!(third, vec![7u8; 3000]);
    // A large buffer is not kept.
    s.recycle(vec![0u8; READ_BUF_KEPT_MAX + 1]);
    assert!(s.read_bufs.is_empty());
    std::fs::remove_file(path).unwrap();
}

#[test]
fn a_file_system_without_nowait_reads_is_not_asked_again() {
    // tmpfs answers RWF_NOWAIT with EOPNOTSUPP (Linux 6.18 still does).
    let dir = std::path::Path::new("/dev/shm");
    if !dir.is_dir() {
        return;
    }
    let (mut s, path) = store_in(dir, 4);
    let a = on_file(&mut s, 0x33, 4000);
    use std::os::fd::AsRawFd as _;
    let probe = crate::sys::pread_nowait(s.files[0].as_raw_fd(), &mut [0u8; 16], 0);
    if probe != crate::sys::NowaitRead::Unsupported {
        // A kernel whose tmpfs reads without waiting: nothing to learn.
        std::fs::remove_file(path).unwrap();
        return;
    }
    assert!(s.nowait[0]);
    assert!(matches!(
        s.read(a, 4000, Ticket::Conn(1)),
        ReadStart::Pending
    ));
    assert!(!s.nowait[0], "tmpfs read without waiting");
    let f = s.complete();
    assert!(f[0].data.as_ref().unwrap().iter().all(|&b| b == 0x33));
    assert_eq!(read_now(&mut s, a, 4000).unwrap(), vec![0x33; 4000]);
    std::fs::remove_file(path).unwrap();
}
