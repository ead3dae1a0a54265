//! The end of the append-only file: where the last whole record ends, and
//! how a failed write is undone.
//!
//! A write that fails part way (ENOSPC, EIO, EFBIG, a short write) leaves
//! the beginning of a record at the end of the file. That alone is
//! harmless -- recovery cuts a torn tail off -- but a record appended after
//! it would sit behind a damaged one, and recovery refuses such a file. So
//! the file is cut back (`ftruncate`) to the end of the last whole record
//! before anything else is appended, and if even the cut fails, nothing is
//! appended until it succeeds: at every instant the file is a run of whole
//! records, possibly followed by one torn one, and replays without
//! `aof_fix`.

use std::fs::File;
use std::io::{self, Write};

/// What the tail needs of a file: append, and cut back. A trait so that
/// the logic is tested against a file that fails on demand.
pub(super) trait Sink {
    /// One `write(2)`: appends up to `buf.len()` bytes.
    fn append(&mut self, buf: &[u8]) -> io::Result<usize>;
    /// `ftruncate(2)` to `len` bytes.
    fn cut(&mut self, len: u64) -> io::Result<()>;
}

impl Sink for File {
    fn append(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write(buf)
    }

    fn cut(&mut self, len: u64) -> io::Result<()> {
        self.set_len(len)
    }
}

/// A probe written to learn whether the file takes writes again, then cut
/// off: a record frame whose length runs past its end, so that if the
/// process dies before the cut, recovery reads it as a torn tail.
const PROBE_LEN: usize = 4096;
const PROBE_CLAIMS: u32 = 1 << 16;

#[derive(Debug)]
pub(super) struct Tail {
    /// The file's length up to the end of its last whole record.
    good: u64,
    /// Bytes past `good` may be in the file (a write or a cut failed).
    torn: bool,
}

impl Tail {
    /// A file that ends with a whole record at `len`.
    pub(super) fn new(len: u64) -> Tail {
        Tail {
            good: len,
            torn: false,
        }
    }

    /// The end of the last whole record.
    pub(super) fn len(&self) -> u64 {
        self.good
    }

    /// Appends whole records, all or nothing: on failure the file is cut
    /// back to where it was (or will be, before the next append).
    pub(super) fn append<S: Sink>(&mut self, file: &mut S, records: &[u8]) -> io::Result<()> {
        self.mend(file)?;
        let mut done = 0;
        while done < records.len() {
            match file.append(&records[done..]) {
                Ok(0) => return Err(self.failed(file, io::ErrorKind::WriteZero.into())),
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.failed(file, e)),
            }
        }
        self.good += records.len() as u64;
        Ok(())
    }

    /// Whether the file takes a write again: writes a probe and cuts it
    /// off. Used when there is nothing of the cache's own to retry with.
    pub(super) fn probe<S: Sink>(&mut self, file: &mut S) -> io::Result<()> {
        let mut probe = [0u8; PROBE_LEN];
        probe[..4].copy_from_slice(&PROBE_CLAIMS.to_le_bytes());
        let good = self.good;
        self.append(file, &probe)?;
        self.forget_since(file, good)
    }

    /// Takes back whole records written after `len` (their sync failed, so
    /// they were never acknowledged).
    pub(super) fn forget_since<S: Sink>(&mut self, file: &mut S, len: u64) -> io::Result<()> {
        if len < self.good {
            self.good = len;
            self.torn = true;
        }
        self.mend(file)
    }

    /// Cuts off what a failed write left, if anything.
    pub(super) fn mend<S: Sink>(&mut self, file: &mut S) -> io::Result<()> {
        if self.torn {
            file.cut(self.good)?;
            self.torn = false;
        }
        Ok(())
    }

    /// A write failed after part of it may have reached the file.
    fn failed<S: Sink>(&mut self, file: &mut S, e: io::Error) -> io::Error {
        self.torn = true;
        // If this cut fails too, the next append tries it again first.
        let _ = self.mend(file);
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::persist::record::{Decoded, decode};

    /// A file in memory with room for `room` bytes; cuts fail while
    /// `cut_fails` is set.
    struct Disk {
        data: Vec<u8>,
        room: usize,
        cut_fails: bool,
        /// The largest a single write may be (short writes).
        max_write: usize,
    }

    impl Disk {
        fn new(room: usize) -> Disk {
            Disk {
                data: Vec::new(),
                room,
                cut_fails: false,
                max_write: usize::MAX,
            }
        }
    }

    impl Sink for Disk {
        fn append(&mut self, buf: &[u8]) -> io::Result<usize> {
            let free = self.room - self.data.len();
            if free == 0 {
                return Err(io::Error::from_raw_os_error(libc::ENOSPC));
            }
            let n = buf.len().min(free).min(self.max_write);
            self.data.extend_from_slice(&buf[..n]);
            Ok(n)
        }

        fn cut(&mut self, len: u64) -> io::Result<()> {
            if self.cut_fails {
                return Err(io::Error::from_raw_os_error(libc::EIO));
            }
            self.data.truncate(len as usize);
            Ok(())
        }
    }

    fn record(n: u8) -> Vec<u8> {
        let mut out = Vec::new();
        crate::persist::record::encode_delete(&mut out, 1, &[b'k', n]);
        out
    }

    /// Every record in `data` is whole, except perhaps a torn last one.
    fn replayable(data: &[u8]) -> usize {
        let mut pos = 0;
        let mut whole = 0;
        while pos < data.len() {
            match decode(&data[pos..]) {
                Decoded::Complete(_, used) => {
                    pos += used;
                    whole += 1;
                }
                Decoded::Torn(_) => return whole,
                Decoded::Corrupt { .. } => panic!("damaged record at {pos}"),
            }
        }
        whole
    }

    #[test]
    fn a_write_that_runs_out_of_room_is_cut_back() {
        let rec = record(1);
        let mut disk = Disk::new(rec.len() * 2 + 3);
        let mut tail = Tail::new(0);
        tail.append(&mut disk, &rec).unwrap();
        tail.append(&mut disk, &rec).unwrap();
        let e = tail.append(&mut disk, &rec).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOSPC));
        assert_eq!(disk.data.len(), rec.len() * 2, "the torn record is cut off");
        assert_eq!(tail.len(), disk.data.len() as u64);
        assert_eq!(replayable(&disk.data), 2);
    }

    #[test]
    fn several_records_in_one_write_are_all_or_nothing() {
        let batch = [record(1), record(2), record(3)].concat();
        let mut disk = Disk::new(batch.len() - 1);
        let mut tail = Tail::new(0);
        assert!(tail.append(&mut disk, &batch).is_err());
        assert!(disk.data.is_empty(), "no record of a failed batch stays");
    }

    #[test]
    fn short_writes_are_continued() {
        let batch = [record(1), record(2)].concat();
        let mut disk = Disk::new(1 << 20);
        disk.max_write = 3;
        let mut tail = Tail::new(0);
        tail.append(&mut disk, &batch).unwrap();
        assert_eq!(disk.data, batch);
        assert_eq!(tail.len(), batch.len() as u64);
    }

    #[test]
    fn nothing_is_appended_behind_a_torn_record_until_the_cut_succeeds() {
        let rec = record(1);
        let mut disk = Disk::new(rec.len() + 5);
        disk.cut_fails = true;
        let mut tail = Tail::new(0);
        tail.append(&mut disk, &rec).unwrap();
        assert!(tail.append(&mut disk, &rec).is_err());
        assert_eq!(disk.data.len(), rec.len() + 5, "the cut failed: torn tail");
        // Space comes back, the cut still fails: nothing is appended.
        disk.room = 1 << 20;
        assert!(tail.append(&mut disk, &record(2)).is_err());
        assert_eq!(disk.data.len(), rec.len() + 5);
        assert_eq!(replayable(&disk.data), 1);
        // The cut works again: the next append goes right after record 1.
        disk.cut_fails = false;
        tail.append(&mut disk, &record(2)).unwrap();
        assert_eq!(disk.data, [record(1), record(2)].concat());
        assert_eq!(replayable(&disk.data), 2);
    }

    #[test]
    fn a_probe_leaves_the_file_as_it_was_or_torn_at_worst() {
        let rec = record(1);
        let mut disk = Disk::new(rec.len() + 100);
        let mut tail = Tail::new(0);
        tail.append(&mut disk, &rec).unwrap();
        assert!(tail.probe(&mut disk).is_err(), "no room for a probe");
        assert_eq!(disk.data, rec);
        disk.room = 1 << 20;
        tail.probe(&mut disk).unwrap();
        assert_eq!(disk.data, rec);
        // A probe left behind (the cut never happened) reads as torn.
        let mut left = rec.clone();
        let mut probe = vec![0u8; PROBE_LEN];
        probe[..4].copy_from_slice(&PROBE_CLAIMS.to_le_bytes());
        left.extend_from_slice(&probe);
        assert_eq!(replayable(&left), 1);
    }

    #[test]
    fn records_whose_sync_failed_are_taken_back() {
        let mut disk = Disk::new(1 << 20);
        let mut tail = Tail::new(0);
        tail.append(&mut disk, &record(1)).unwrap();
        let before = tail.len();
        tail.append(&mut disk, &record(2)).unwrap();
        tail.forget_since(&mut disk, before).unwrap();
        assert_eq!(disk.data, record(1));
        tail.append(&mut disk, &record(3)).unwrap();
        assert_eq!(disk.data, [record(1), record(3)].concat());
    }
}
