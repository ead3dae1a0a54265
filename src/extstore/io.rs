//! `ext_threads` I/O threads: each takes jobs from its own queue, does
//! the blocking `pread`/`pwrite`, puts the result on a shared list and
//! adds to an eventfd that the reactor has in its epoll set. The threads
//! touch nothing but the files and these queues; everything they finish
//! is applied by the reactor (see `ExtStore::complete`).

use std::fs::File;
use std::io::{self, Read as _, Write as _};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::FileExt as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};

/// Who a read is for: a connection (by descriptor), the compactor, or the
/// replication full copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ticket {
    Conn(i32),
    Compact,
    Copy,
}

pub(crate) enum Job {
    Write {
        file: Arc<File>,
        pos: u64,
        buf: Arc<Vec<u8>>,
        page: u16,
        offset: u32,
    },
    Read {
        file: Arc<File>,
        pos: u64,
        /// Read into, whole (its length is the record's).
        buf: Vec<u8>,
        ticket: Ticket,
        page: u16,
        version: u32,
        offset: u32,
    },
}

pub(crate) enum Done {
    Write {
        page: u16,
        offset: u32,
        ok: bool,
    },
    Read {
        ticket: Ticket,
        page: u16,
        version: u32,
        offset: u32,
        data: io::Result<Vec<u8>>,
        /// For a connection's read, one record: whether its CRC matched
        /// (checked here, off the loop, as memcached's I/O callback does).
        crc_ok: Option<bool>,
    },
}

struct Shared {
    done: Mutex<Vec<Done>>,
    wake: File,
}

/// One I/O thread as the submitter sees it.
struct Thread {
    queue: Sender<Job>,
    /// Jobs queued and not yet taken by the thread (memcached's `depth`).
    depth: Arc<AtomicUsize>,
}

pub(crate) struct Io {
    threads: Vec<Thread>,
    shared: Arc<Shared>,
    /// Jobs handed out and not yet taken back (`extstore_io_queue`).
    pub(crate) in_flight: usize,
}

impl Io {
    /// `threads` threads (`ext_threads`), each taking up to `depth` queued
    /// jobs at a time (`ext_io_depth`).
    pub(crate) fn start(threads: usize, depth: usize) -> io::Result<Io> {
        let efd: OwnedFd = crate::sys::eventfd()?;
        let shared = Arc::new(Shared {
            done: Mutex::new(Vec::new()),
            wake: File::from(efd),
        });
        let mut all = Vec::new();
        for _ in 0..threads.max(1) {
            let (tx, rx) = channel();
            let shared = Arc::clone(&shared);
            let queued = Arc::new(AtomicUsize::new(0));
            let mine = Arc::clone(&queued);
            std::thread::Builder::new()
                .name("mc-ext-io".into())
                .spawn(move || worker(rx, &shared, &mine, depth.max(1)))?;
            all.push(Thread {
                queue: tx,
                depth: queued,
            });
        }
        Ok(Io {
            threads: all,
            shared,
            in_flight: 0,
        })
    }

    /// The descriptor the reactor watches.
    pub(crate) fn wake_fd(&self) -> RawFd {
        self.shared.wake.as_raw_fd()
    }

    /// Queues `job` on the thread with the fewest jobs waiting (the first
    /// idle one), as memcached's `_get_io_thread` picks.
    pub(crate) fn submit(&mut self, job: Job) {
        let t = self
            .threads
            .iter()
            .find(|t| t.depth.load(Ordering::Relaxed) == 0)
            .or_else(|| {
                self.threads
                    .iter()
                    .min_by_key(|t| t.depth.load(Ordering::Relaxed))
            })
            .expect("at least one thread");
        t.depth.fetch_add(1, Ordering::Relaxed);
        self.in_flight += 1;
        // A worker only stops when its queue is dropped, with the store.
        let _ = t.queue.send(job);
    }

    /// Everything finished since the last call (the eventfd is reset).
    pub(crate) fn take_done(&mut self) -> Vec<Done> {
        let mut counter = [0u8; 8];
        let _ = (&self.shared.wake).read(&mut counter);
        let done = std::mem::take(&mut *self.shared.done.lock().unwrap());
        self.in_flight -= done.len();
        done
    }
}

/// An I/O thread: takes up to `io_depth` queued jobs at a time (so with
/// several threads the queues stay even, as memcached's threads "chew
/// small batches"), does each and hands each result back at once.
fn worker(rx: Receiver<Job>, shared: &Shared, queued: &AtomicUsize, io_depth: usize) {
    // Signals are the reactor's (its signalfd): a thread that left them
    // unblocked would take SIGTERM or SIGUSR1 with the default action.
    let _ = nix::sys::signal::SigSet::all().thread_block();
    let mut gate = test_gate::Gate::from_env();
    let mut batch = Vec::with_capacity(io_depth);
    while let Ok(first) = rx.recv() {
        batch.push(first);
        while batch.len() < io_depth {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        queued.fetch_sub(batch.len(), Ordering::Relaxed);
        for job in batch.drain(..) {
            if matches!(job, Job::Read { .. }) {
                gate.pass();
            }
            let done = run_job(job);
            let mut list = shared.done.lock().unwrap();
            let first = list.is_empty();
            list.push(done);
            drop(list);
            // The loop takes the whole list when woken: only the first
            // result since it last did needs to wake it.
            if first {
                let _ = (&shared.wake).write(&1u64.to_ne_bytes());
            }
        }
    }
}

/// Does one job where it is called (an I/O thread; a unit test).
pub(crate) fn run_job(job: Job) -> Done {
    match job {
        Job::Write {
            file,
            pos,
            buf,
            page,
            offset,
        } => {
            let ok = file.write_all_at(&buf, pos).is_ok();
            // The buffer's last other owner is the store, which takes it
            // back once this is seen.
            drop(buf);
            Done::Write { page, offset, ok }
        }
        Job::Read {
            file,
            pos,
            mut buf,
            ticket,
            page,
            version,
            offset,
        } => {
            let data = file.read_exact_at(&mut buf, pos).map(|()| buf);
            let crc_ok = match (&data, ticket) {
                (Ok(d), Ticket::Conn(_)) => Some(super::record::crc_matches(d)),
                _ => None,
            };
            Done::Read {
                ticket,
                page,
                version,
                offset,
                data,
                crc_ok,
            }
        }
    }
}

/// A test hook, in debug builds only: with `MEMCACHED_TEST_EXT_GATE`
/// naming a FIFO, each read waits for one byte from it, so a test holds a
/// flash read in flight for as long as it likes (and shows that other
/// clients are served meanwhile) without timing anything.
pub(super) mod test_gate {
    #[cfg(debug_assertions)]
    pub(crate) struct Gate(Option<std::fs::File>);

    /// Whether reads are held at the gate: then every read goes through
    /// an I/O thread, none is served on the loop from the page cache.
    #[cfg(debug_assertions)]
    pub(crate) fn is_set() -> bool {
        std::env::var_os("MEMCACHED_TEST_EXT_GATE").is_some()
    }

    #[cfg(not(debug_assertions))]
    pub(crate) fn is_set() -> bool {
        false
    }

    #[cfg(debug_assertions)]
    impl Gate {
        pub(crate) fn from_env() -> Gate {
            let path = std::env::var_os("MEMCACHED_TEST_EXT_GATE");
            Gate(path.and_then(|p| std::fs::File::open(p).ok()))
        }

        pub(crate) fn pass(&mut self) {
            use std::io::Read as _;
            if let Some(f) = &mut self.0 {
                let _ = f.read(&mut [0u8; 1]);
            }
        }
    }

    #[cfg(not(debug_assertions))]
    pub(crate) struct Gate;

    #[cfg(not(debug_assertions))]
    impl Gate {
        pub(crate) fn from_env() -> Gate {
            Gate
        }

        pub(crate) fn pass(&mut self) {}
    }
}
