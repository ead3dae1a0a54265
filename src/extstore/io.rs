//! `ext_threads` I/O threads: each takes jobs from its own queue, does
//! the blocking `pread`/`pwrite`, puts the result on a shared list and
//! adds to an eventfd that the reactor has in its epoll set. The threads
//! touch nothing but the files and these queues; everything they finish
//! is applied by the reactor (see `ExtStore::complete`).

use std::fs::File;
use std::io::{self, Read as _, Write as _};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::FileExt as _;
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
        len: usize,
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
    },
}

struct Shared {
    done: Mutex<Vec<Done>>,
    wake: File,
}

pub(crate) struct Io {
    queues: Vec<Sender<Job>>,
    next: usize,
    shared: Arc<Shared>,
    /// Jobs handed out and not yet taken back (`extstore_io_queue`).
    pub(crate) in_flight: usize,
}

impl Io {
    pub(crate) fn start(threads: usize) -> io::Result<Io> {
        let efd: OwnedFd = crate::sys::eventfd()?;
        let shared = Arc::new(Shared {
            done: Mutex::new(Vec::new()),
            wake: File::from(efd),
        });
        let mut queues = Vec::new();
        for _ in 0..threads.max(1) {
            let (tx, rx) = channel();
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("mc-ext-io".into())
                .spawn(move || worker(rx, shared))?;
            queues.push(tx);
        }
        Ok(Io {
            queues,
            next: 0,
            shared,
            in_flight: 0,
        })
    }

    /// The descriptor the reactor watches.
    pub(crate) fn wake_fd(&self) -> RawFd {
        self.shared.wake.as_raw_fd()
    }

    pub(crate) fn submit(&mut self, job: Job) {
        self.next = (self.next + 1) % self.queues.len();
        self.in_flight += 1;
        // A worker only stops when its queue is dropped, with the store.
        let _ = self.queues[self.next].send(job);
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

fn worker(rx: Receiver<Job>, shared: Arc<Shared>) {
    // Signals are the reactor's (its signalfd): a thread that left them
    // unblocked would take SIGTERM or SIGUSR1 with the default action.
    let _ = nix::sys::signal::SigSet::all().thread_block();
    let mut gate = test_gate::Gate::from_env();
    while let Ok(job) = rx.recv() {
        if matches!(job, Job::Read { .. }) {
            gate.pass();
        }
        let done = run_job(job);
        shared.done.lock().unwrap().push(done);
        let _ = (&shared.wake).write(&1u64.to_ne_bytes());
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
            len,
            ticket,
            page,
            version,
            offset,
        } => {
            let mut data = vec![0u8; len];
            let data = file.read_exact_at(&mut data, pos).map(|()| data);
            Done::Read {
                ticket,
                page,
                version,
                offset,
                data,
            }
        }
    }
}

/// A test hook, in debug builds only: with `MEMCACHED_TEST_EXT_GATE`
/// naming a FIFO, each read waits for one byte from it, so a test holds a
/// flash read in flight for as long as it likes (and shows that other
/// clients are served meanwhile) without timing anything.
mod test_gate {
    #[cfg(debug_assertions)]
    pub(super) struct Gate(Option<std::fs::File>);

    #[cfg(debug_assertions)]
    impl Gate {
        pub(super) fn from_env() -> Gate {
            let path = std::env::var_os("MEMCACHED_TEST_EXT_GATE");
            Gate(path.and_then(|p| std::fs::File::open(p).ok()))
        }

        pub(super) fn pass(&mut self) {
            use std::io::Read as _;
            if let Some(f) = &mut self.0 {
                let _ = f.read(&mut [0u8; 1]);
            }
        }
    }

    #[cfg(not(debug_assertions))]
    pub(super) struct Gate;

    #[cfg(not(debug_assertions))]
    impl Gate {
        pub(super) fn from_env() -> Gate {
            Gate
        }

        pub(super) fn pass(&mut self) {}
    }
}
