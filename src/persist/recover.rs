//! Recovery at start, before any listener is open: the append-only file is
//! read in large pieces and every record applied to the cache, in order.
//!
//! - A record cut short at the end of the file (a crash mid-write) is cut
//!   off, with a warning; the server starts.
//! - A record that is damaged (checksum or layout wrong) refuses the start
//!   with its byte offset, since what follows cannot be trusted -- unless
//!   `-o aof_fix` is given, which truncates the file there.
//! - Items whose absolute expiry passed while the server was down are not
//!   stored. Items that do not fit into `-m` are evicted as any store
//!   would evict, or with `-M` counted and reported.
//! - With tombstones kept (replication on), every stamped DELETE -- a
//!   delete of this node's own -- is remembered again (`tombs.rs`), the
//!   last `TOMBS` of them, in the order they were made.

use super::record::{self, Decoded, MAGIC, Op};
use super::replay::{Applied, Replay};
use super::tombs::Tombs;
use crate::items::Cache;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::Path;
use std::time::Instant;

/// How much of the file is read at a time.
const READ_CHUNK: usize = 8 << 20;
/// Hash buckets moved between records while the table grows.
const REHASH_STEP: usize = 64;

/// The file, open for appending after the last good record.
pub(crate) struct Recovered {
    pub(crate) file: File,
    pub(crate) bytes: u64,
    /// This node's deletes the file remembers, when asked for.
    pub(crate) tombs: Option<Tombs>,
}

#[derive(Default)]
struct Counts {
    records: u64,
    expired: u64,
    did_not_fit: u64,
    /// Stamped DELETEs, when tombstones are kept.
    tombs: Option<Tombs>,
}

/// Replays the file at `path` into `cache`; with `keep_tombs`, rebuilds
/// the tombstones its stamped DELETEs are.
pub(crate) fn recover(
    path: &Path,
    fix: bool,
    cache: &mut Cache,
    verbose: u8,
    keep_tombs: bool,
) -> io::Result<Recovered> {
    let mut counts = Counts {
        tombs: keep_tombs.then(Tombs::new),
        ..Counts::default()
    };
    recover_in_pieces(path, fix, cache, verbose, READ_CHUNK, &mut counts)
}

/// `recover`, reading `chunk` bytes at a time (small in tests, so records
/// straddle reads).
fn recover_in_pieces(
    path: &Path,
    fix: bool,
    cache: &mut Cache,
    verbose: u8,
    chunk: usize,
    counts: &mut Counts,
) -> io::Result<Recovered> {
    let started = Instant::now();
    let mut file = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(path)
        .map_err(|e| io::Error::new(e.kind(), format!("AOF {}: {e}", path.display())))?;
    let len = file.metadata()?.len();
    if !read_magic(path, &mut file, len)? {
        file.set_len(0)?;
        file.write_all(MAGIC)?;
        file.sync_data()?;
        return Ok(Recovered {
            file,
            bytes: MAGIC.len() as u64,
            tombs: counts.tombs.take(),
        });
    }
    let evictions_before = cache.stats.evictions;
    let mut replayed = Replay::recovery();
    let good_end = replay(path, fix, &mut file, cache, &mut replayed, counts, chunk)?;
    replayed.finish(cache);
    if good_end < len {
        file.set_len(good_end)?;
        file.sync_data()?;
    }
    report(
        path,
        cache,
        counts,
        cache.stats.evictions - evictions_before,
    );
    if verbose > 0 {
        eprintln!(
            "AOF {}: {} records replayed, {} items live, in {} ms",
            path.display(),
            counts.records,
            cache.stats.curr_items,
            started.elapsed().as_millis()
        );
    }
    Ok(Recovered {
        file,
        bytes: good_end,
        tombs: counts.tombs.take(),
    })
}

/// Checks the header. False for a file to start afresh: empty, or holding
/// only the beginning of the header (a crash right after creating it).
fn read_magic(path: &Path, file: &mut File, len: u64) -> io::Result<bool> {
    let mut head = [0u8; MAGIC.len()];
    let n = (len as usize).min(head.len());
    file.read_exact(&mut head[..n])?;
    if head[..n] != MAGIC[..n] {
        return Err(refusal(format!(
            "AOF {}: not an append-only file of this server (bad header); refusing to start",
            path.display()
        )));
    }
    Ok(n == MAGIC.len())
}

fn refusal(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message)
}

/// Applies every whole record; returns the offset just after the last good
/// one (where appending resumes).
fn replay(
    path: &Path,
    fix: bool,
    file: &mut File,
    cache: &mut Cache,
    replayed: &mut Replay,
    counts: &mut Counts,
    chunk: usize,
) -> io::Result<u64> {
    let mut buf: Vec<u8> = Vec::with_capacity(chunk);
    // File offset of buf[0], and the parse position in buf.
    let mut base = MAGIC.len() as u64;
    let mut pos = 0;
    let mut eof = false;
    loop {
        match record::decode(&buf[pos..]) {
            Decoded::Complete(rec, used) => {
                match replayed.apply(cache, &rec, false) {
                    Applied::Done => {}
                    Applied::Expired => counts.expired += 1,
                    Applied::DidNotFit => counts.did_not_fit += 1,
                }
                counts.records += 1;
                if let (
                    Some(tombs),
                    Op::Delete {
                        key,
                        stamp: Some(stamp),
                    },
                ) = (&mut counts.tombs, rec.op)
                {
                    tombs.record(key, stamp);
                }
                pos += used;
                if cache.hash.is_expanding() {
                    cache.rehash_step(REHASH_STEP);
                }
            }
            Decoded::Torn(need) if !eof => {
                buf.drain(..pos);
                base += pos as u64;
                pos = 0;
                eof = fill(file, &mut buf, need.max(chunk))?;
            }
            Decoded::Torn(_) => {
                let at = base + pos as u64;
                if pos < buf.len() {
                    eprintln!(
                        "AOF {}: the last record (at byte offset {at}, {} bytes) is incomplete, \
                         cut short by a crash mid-write: cutting it off",
                        path.display(),
                        buf.len() - pos
                    );
                }
                return Ok(at);
            }
            Decoded::Corrupt { offset, why } => {
                let at = base + (pos + offset) as u64;
                return corrupt(path, fix, at, why, file);
            }
        }
    }
}

/// Reads until `buf` holds `want` bytes or the file ends; true at the end.
fn fill(file: &mut File, buf: &mut Vec<u8>, want: usize) -> io::Result<bool> {
    while buf.len() < want {
        let old = buf.len();
        buf.resize(want, 0);
        let n = match file.read(&mut buf[old..]) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => 0,
            Err(e) => return Err(e),
        };
        buf.truncate(old + n);
        if n == 0 {
            return Ok(true);
        }
    }
    Ok(false)
}

fn corrupt(path: &Path, fix: bool, at: u64, why: &str, file: &File) -> io::Result<u64> {
    let len = file.metadata()?.len();
    let lost = len - at;
    if fix {
        eprintln!(
            "AOF {}: corrupt record at byte offset {at} ({why}); aof_fix: truncating the file \
             there ({lost} bytes dropped)",
            path.display()
        );
        return Ok(at);
    }
    Err(refusal(format!(
        "AOF {}: corrupt record at byte offset {at} ({why}); refusing to start. Start with \
         -o aof_fix to truncate the file at that offset (dropping the {lost} bytes from there \
         on), or move the file away",
        path.display()
    )))
}

fn report(path: &Path, cache: &Cache, counts: &Counts, evicted: u64) {
    if counts.did_not_fit > 0 {
        let why = if cache.config().evict_to_free {
            "larger than the item size limit (-I)"
        } else {
            "no memory left and evictions are off (-M)"
        };
        eprintln!(
            "AOF {}: {} items did not fit and were not loaded ({why})",
            path.display(),
            counts.did_not_fit
        );
    }
    if evicted > 0 {
        eprintln!(
            "AOF {}: {evicted} items were evicted during recovery to fit the memory limit (-m)",
            path.display()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::items::CacheConfig;
    use crate::persist::record::{Put, encode_delete, encode_put};
    use std::path::PathBuf;

    fn cache() -> Cache {
        Cache::new(CacheConfig::for_tests(4)).unwrap()
    }

    /// A fresh path under the system temp directory, removed on drop.
    struct TempFile(PathBuf);

    impl TempFile {
        fn new(name: &str) -> TempFile {
            let p = std::env::temp_dir().join(format!(
                "aof-recover-{}-{name}-{:?}",
                std::process::id(),
                std::time::SystemTime::now()
            ));
            TempFile(p)
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    /// MAGIC, then `n` PUTs of k0.. and a DELETE of k0; the record starts.
    fn log(n: usize) -> (Vec<u8>, Vec<usize>) {
        let mut buf = MAGIC.to_vec();
        let mut starts = Vec::new();
        for i in 0..n {
            starts.push(buf.len());
            let key = format!("k{i}");
            let put = Put {
                flags: i as u32,
                exptime: 0,
                cas: 100 + i as u64,
                mflags: 0,
                key: key.as_bytes(),
                value: b"value",
            };
            encode_put(&mut buf, 1, &put, std::iter::once(&b"value"[..]));
        }
        starts.push(buf.len());
        encode_delete(&mut buf, 2, b"k0");
        (buf, starts)
    }

    #[test]
    fn a_missing_file_is_created_with_its_header() {
        let f = TempFile::new("new");
        let mut c = cache();
        let r = recover(&f.0, false, &mut c, 0, false).unwrap();
        assert_eq!(r.bytes, MAGIC.len() as u64);
        assert_eq!(std::fs::read(&f.0).unwrap(), MAGIC);
    }

    #[test]
    fn a_whole_file_replays_in_pieces_across_reads() {
        let f = TempFile::new("whole");
        let (buf, _) = log(3000);
        std::fs::write(&f.0, &buf).unwrap();
        let mut c = cache();
        // 7 bytes a read: every record straddles reads.
        let r = recover_in_pieces(&f.0, false, &mut c, 0, 7, &mut Counts::default()).unwrap();
        assert_eq!(r.bytes, buf.len() as u64);
        assert_eq!(c.stats.curr_items, 2999);
        let it = c.meta_find(b"k2999", false).unwrap();
        assert_eq!((c.view(it).cas(), c.view(it).flags()), (3099, 2999));
        assert!(c.meta_find(b"k0", false).is_none());
    }

    #[test]
    fn a_torn_tail_is_cut_off() {
        let f = TempFile::new("torn");
        let (buf, starts) = log(5);
        let last = *starts.last().unwrap();
        std::fs::write(&f.0, &buf[..buf.len() - 1]).unwrap();
        let mut c = cache();
        let r = recover_in_pieces(&f.0, false, &mut c, 0, 5, &mut Counts::default()).unwrap();
        assert_eq!(r.bytes, last as u64);
        assert_eq!(std::fs::metadata(&f.0).unwrap().len(), last as u64);
        // The DELETE was the torn record: k0 stays.
        assert_eq!(c.stats.curr_items, 5);
    }

    #[test]
    fn corruption_refuses_with_its_offset_unless_fixed() {
        let f = TempFile::new("corrupt");
        let (mut buf, starts) = log(5);
        buf[starts[2] + 12] ^= 1;
        std::fs::write(&f.0, &buf).unwrap();
        let err = recover(&f.0, false, &mut cache(), 0, false).err().unwrap();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        let text = err.to_string();
        assert!(
            text.contains(&format!("byte offset {}", starts[2])),
            "{text}"
        );
        assert_eq!(std::fs::read(&f.0).unwrap(), buf, "left alone");
        let mut c = cache();
        let r = recover_in_pieces(&f.0, true, &mut c, 0, 11, &mut Counts::default()).unwrap();
        assert_eq!(r.bytes, starts[2] as u64);
        assert_eq!(c.stats.curr_items, 2);
    }

    #[test]
    fn a_foreign_file_is_refused_and_a_torn_header_restarted() {
        let f = TempFile::new("foreign");
        std::fs::write(&f.0, b"not an aof at all").unwrap();
        let err = recover(&f.0, false, &mut cache(), 0, false).err().unwrap();
        assert!(err.to_string().contains("bad header"));
        std::fs::write(&f.0, &MAGIC[..3]).unwrap();
        let r = recover(&f.0, false, &mut cache(), 0, false).unwrap();
        assert_eq!(r.bytes, MAGIC.len() as u64);
        assert_eq!(std::fs::read(&f.0).unwrap(), MAGIC);
    }

    #[test]
    fn stamped_deletes_are_tombstones_again_when_kept() {
        let f = TempFile::new("tombs");
        let (mut buf, _) = log(3);
        crate::persist::record::encode_stamped_delete(&mut buf, 3, b"k1", 101);
        std::fs::write(&f.0, &buf).unwrap();
        let mut c = cache();
        let r = recover(&f.0, false, &mut c, 0, true).unwrap();
        let t = r.tombs.unwrap();
        // k0's delete is plain (a peer's, or an older build's); k1's is ours.
        assert_eq!((t.cas_of(b"k0"), t.cas_of(b"k1")), (None, Some(101)));
        assert_eq!(c.stats.curr_items, 1);
        let r = recover(&f.0, false, &mut cache(), 0, false).unwrap();
        assert!(r.tombs.is_none());
    }
}
