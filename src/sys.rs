//! The thin, unsafe layer between the server and the kernel: epoll,
//! signalfd, the few socket calls std does not expose, fork and waitpid.
//! Each wrapper checks the return value and turns it into `io::Result`;
//! nothing above this file touches raw syscalls. A leaf room of its own
//! because the reactor, the AOF rewrite (`persist`) and the replication
//! link (`repl`) all call it, and the reactor calls those two.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

fn check(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

pub(crate) struct Epoll {
    fd: RawFd,
}

pub(crate) const READ: u32 = libc::EPOLLIN as u32 | libc::EPOLLRDHUP as u32;
pub(crate) const WRITE: u32 = libc::EPOLLOUT as u32;
pub(crate) const EDGE: u32 = libc::EPOLLET as u32;
pub(crate) const HANGUP: u32 = (libc::EPOLLHUP | libc::EPOLLERR | libc::EPOLLRDHUP) as u32;

pub(crate) type Event = libc::epoll_event;

pub(crate) fn empty_event() -> Event {
    libc::epoll_event { events: 0, u64: 0 }
}

impl Epoll {
    pub(crate) fn new() -> io::Result<Epoll> {
        // SAFETY: epoll_create1 takes no pointers; the fd is owned by Epoll.
        let fd = check(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
        Ok(Epoll { fd })
    }

    fn ctl(&self, op: libc::c_int, fd: RawFd, events: u32, token: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event { events, u64: token };
        // SAFETY: `ev` is a valid epoll_event for the duration of the call.
        check(unsafe { libc::epoll_ctl(self.fd, op, fd, &mut ev) })?;
        Ok(())
    }

    pub(crate) fn add(&self, fd: RawFd, events: u32, token: u64) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd, events, token)
    }

    /// Waits up to `timeout_ms` (-1 forever); returns how many events were
    /// written to the front of `events`. EINTR counts as zero events.
    pub(crate) fn wait(&self, events: &mut [Event], timeout_ms: i32) -> io::Result<usize> {
        // SAFETY: the kernel writes at most `events.len()` entries into the
        // slice we own.
        let rc = unsafe {
            libc::epoll_wait(
                self.fd,
                events.as_mut_ptr(),
                events.len() as libc::c_int,
                timeout_ms,
            )
        };
        match check(rc) {
            Ok(n) => Ok(n as usize),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(0),
            Err(e) => Err(e),
        }
    }
}

impl Drop for Epoll {
    fn drop(&mut self) {
        // SAFETY: we own this descriptor and close it once.
        unsafe { libc::close(self.fd) };
    }
}

/// Changes a listening socket's backlog (`-b`); std always uses 128.
pub(crate) fn relisten(fd: RawFd, backlog: i32) -> io::Result<()> {
    // SAFETY: listen takes no pointers; on a bound socket it only resizes
    // the accept queue.
    check(unsafe { libc::listen(fd, backlog) })?;
    Ok(())
}

/// Whether `fd` has input (for a listener: a connection waiting) at this
/// moment, for a descriptor registered edge-triggered.
pub(crate) fn readable_now(fd: RawFd) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, counted as one; a zero timeout never blocks.
    let rc = unsafe { libc::poll(&mut p, 1, 0) };
    rc > 0 && p.revents & libc::POLLIN != 0
}

/// The C library's text for an I/O error (as `perror` prints it), without
/// std's " (os error N)".
pub(crate) fn strerror(e: &io::Error) -> String {
    let text = e.to_string();
    match text.rfind(" (os error ") {
        Some(at) => text[..at].to_string(),
        None => text,
    }
}

/// Writes without raising SIGPIPE if the peer has gone; used for the
/// one-line refusal sent to connections over `-c`.
pub(crate) fn send_nosignal(fd: RawFd, buf: &[u8]) -> isize {
    // SAFETY: the pointer and length describe `buf`, which outlives the call.
    unsafe {
        libc::send(
            fd,
            buf.as_ptr() as *const libc::c_void,
            buf.len(),
            libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
        )
    }
}

/// Blocks the termination signals and returns a signalfd that reports them,
/// so they arrive as ordinary epoll events in the one thread; ignores
/// SIGPIPE so a vanished client can never kill the server, and SIGXFSZ so
/// that a file grown to RLIMIT_FSIZE fails its write with EFBIG (which the
/// append-only file survives) instead of killing the process. SIGHUP is
/// reported too when `hangup` (memcached reloads its authfile on it),
/// ignored otherwise.
pub(crate) fn termination_signals(hangup: bool) -> io::Result<RawFd> {
    // SAFETY: sigset_t is plain data initialised by sigemptyset before use;
    // signal/sigprocmask/signalfd only read the set we pass.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGUSR1);
        if hangup {
            libc::sigaddset(&mut set, libc::SIGHUP);
        }
        check(libc::sigprocmask(
            libc::SIG_BLOCK,
            &set,
            std::ptr::null_mut(),
        ))?;
        // Blocked first, so a SIGHUP between the two calls waits in the
        // signalfd; an inherited "ignore" would discard it.
        let hup = if hangup { libc::SIG_DFL } else { libc::SIG_IGN };
        libc::signal(libc::SIGHUP, hup);
        check(libc::signalfd(
            -1,
            &set,
            libc::SFD_NONBLOCK | libc::SFD_CLOEXEC,
        ))
    }
}

/// Reads one pending signal number from a signalfd, if any.
pub(crate) fn read_signal(fd: RawFd) -> Option<u32> {
    // SAFETY: signalfd_siginfo is plain data; read writes at most its size.
    unsafe {
        let mut info: libc::signalfd_siginfo = std::mem::zeroed();
        let size = std::mem::size_of::<libc::signalfd_siginfo>();
        let n = libc::read(fd, &mut info as *mut _ as *mut libc::c_void, size);
        (n == size as isize).then_some(info.ssi_signo)
    }
}

/// An IPv6 socket (stream or datagram) bound to `addr` that does not also
/// take IPv4 (IPV6_V6ONLY), with SO_REUSEADDR, as memcached makes them.
/// A stream socket still has to `listen`.
pub(crate) fn bind_v6only(addr: std::net::SocketAddr, stream: bool) -> io::Result<OwnedFd> {
    if !addr.is_ipv6() {
        return Err(io::ErrorKind::InvalidInput.into());
    }
    let kind = if stream {
        libc::SOCK_STREAM
    } else {
        libc::SOCK_DGRAM
    };
    // SAFETY: socket takes no pointers; on success the descriptor is ours
    // and moves into the OwnedFd exactly once, which closes it on error.
    let fd = unsafe {
        let raw = check(libc::socket(libc::AF_INET6, kind | libc::SOCK_CLOEXEC, 0))?;
        OwnedFd::from_raw_fd(raw)
    };
    set_int_option(fd.as_raw_fd(), libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, 1)?;
    set_int_option(fd.as_raw_fd(), libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)?;
    let (sa, len) = sockaddr_of(&addr);
    // SAFETY: `sa` is a sockaddr_storage holding a sockaddr_in6 of `len`
    // bytes; bind only reads it during the call.
    check(unsafe {
        libc::bind(
            fd.as_raw_fd(),
            &sa as *const _ as *const libc::sockaddr,
            len,
        )
    })?;
    Ok(fd)
}

fn set_int_option(fd: RawFd, level: libc::c_int, name: libc::c_int, value: i32) -> io::Result<()> {
    let len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: the pointer and length describe `value`, which outlives the call.
    check(unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            &value as *const i32 as *const libc::c_void,
            len,
        )
    })?;
    Ok(())
}

fn get_int_option(fd: RawFd, level: libc::c_int, name: libc::c_int) -> io::Result<i32> {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: the kernel writes at most `len` bytes into `value`.
    check(unsafe {
        libc::getsockopt(
            fd,
            level,
            name,
            &mut value as *mut i32 as *mut libc::c_void,
            &mut len,
        )
    })?;
    Ok(value)
}

/// The socket's send buffer size (SO_SNDBUF), as getsockopt reports it.
pub(crate) fn send_buffer(fd: RawFd) -> io::Result<i32> {
    get_int_option(fd, libc::SOL_SOCKET, libc::SO_SNDBUF)
}

/// What an inherited descriptor is: a socket's family (`AF_*`), type
/// (`SOCK_*`) and whether it is already listening.
pub(crate) struct SocketKind {
    pub(crate) family: i32,
    pub(crate) kind: i32,
    pub(crate) listening: bool,
    /// A stream socket with a peer: one connection (systemd's
    /// `Accept=yes`), not a socket to listen on.
    pub(crate) connected: bool,
}

/// Looks at descriptor `fd` (not ours yet): an error if it is no socket.
pub(crate) fn socket_kind(fd: RawFd) -> io::Result<SocketKind> {
    let kind = get_int_option(fd, libc::SOL_SOCKET, libc::SO_TYPE)?;
    let listening = get_int_option(fd, libc::SOL_SOCKET, libc::SO_ACCEPTCONN)? != 0;
    // SAFETY: an all-zero sockaddr_storage is a valid value.
    let mut sa: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: the kernel writes at most `len` bytes into `sa`.
    check(unsafe { libc::getsockname(fd, &mut sa as *mut _ as *mut libc::sockaddr, &mut len) })?;
    // SAFETY: an all-zero sockaddr_storage is a valid value.
    let mut peer: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut peer_len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: the kernel writes at most `peer_len` bytes into `peer`.
    let connected = unsafe {
        libc::getpeername(
            fd,
            &mut peer as *mut _ as *mut libc::sockaddr,
            &mut peer_len,
        )
    } == 0;
    Ok(SocketKind {
        family: i32::from(sa.ss_family),
        kind,
        listening,
        connected,
    })
}

/// Takes ownership of descriptor `fd`, handed to this process by its
/// parent (sd_listen_fds), marking it close-on-exec as sd_listen_fds does.
pub(crate) fn adopt_inherited(fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: F_GETFD/F_SETFD take no pointers.
    let flags = check(unsafe { libc::fcntl(fd, libc::F_GETFD) })?;
    check(unsafe { libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC) })?;
    // SAFETY: the LISTEN_FDS protocol gives this process descriptors
    // 3..3+N; the caller adopts each once, at start, before anything else
    // could own it, so exactly one OwnedFd closes it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Removes a variable from the environment (the LISTEN_* ones, so that
/// children do not take the sockets for theirs).
pub(crate) fn unset_env(name: &str) {
    // SAFETY: called at start-up, before the server makes any thread or
    // reads the environment anywhere else: nothing reads it concurrently.
    unsafe { std::env::remove_var(name) };
}

/// Asks for a send buffer of `size` bytes; false if the kernel refuses.
pub(crate) fn set_send_buffer(fd: RawFd, size: i32) -> bool {
    set_int_option(fd, libc::SOL_SOCKET, libc::SO_SNDBUF, size).is_ok()
}

/// A second descriptor for the same socket (memcached gives each worker
/// thread its own descriptor for a UDP port; they show in `stats conns`).
pub(crate) fn dup(fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC takes no pointers; the new descriptor is ours
    // and moves into the OwnedFd exactly once.
    unsafe {
        let raw = check(libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0))?;
        Ok(OwnedFd::from_raw_fd(raw))
    }
}

/// Which side of a [`fork`] this is.
pub(crate) enum Forked {
    Child,
    Parent(libc::pid_t),
}

/// `fork()`: the child gets a copy-on-write image of the whole process
/// (the arena included), which the AOF rewrite snapshots while the parent
/// goes on serving.
pub(crate) fn fork() -> io::Result<Forked> {
    // SAFETY: the server's state is owned by one thread; the only other
    // threads are extstore's I/O threads, whose locks the child never
    // takes (glibc's fork resets the allocator's). The child only reads
    // memory and files, writes one file and leaves through `exit_child`.
    let pid = unsafe { libc::fork() };
    match pid {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(Forked::Child),
        pid => Ok(Forked::Parent(pid)),
    }
}

/// In a forked child: closes every descriptor from 3 up (listeners,
/// clients, epoll), so that connections the parent closes really close and
/// a restarted server can bind its port while the child still runs.
/// `keep`: descriptors the child still reads (extstore's files).
pub(crate) fn close_inherited_fds(keep: &[RawFd]) {
    let fds: Vec<RawFd> = match std::fs::read_dir("/proc/self/fd") {
        Ok(dir) => dir
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .filter(|&fd| fd > 2 && !keep.contains(&fd))
            .collect(),
        Err(_) => return,
    };
    for fd in fds {
        // SAFETY: closes descriptors of this (child) process only; nothing
        // in the child uses them afterwards (the one it reads the list
        // with is already closed, so EBADF for it is harmless).
        unsafe { libc::close(fd) };
    }
}

/// Ends a forked child at once: no destructors, no atexit handlers, no
/// flushing of stdio buffers it shares with the parent.
pub(crate) fn exit_child(code: i32) -> ! {
    // SAFETY: _exit takes no pointers and never returns.
    unsafe { libc::_exit(code) }
}

/// How a child ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ChildEnd {
    Exited(i32),
    Signaled(i32),
}

/// Reaps child `pid` if it has ended, without waiting.
pub(crate) fn try_wait(pid: libc::pid_t) -> io::Result<Option<ChildEnd>> {
    let mut status: libc::c_int = 0;
    // SAFETY: `status` is a local the kernel writes one int into.
    let rc = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
    match rc {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(None),
        _ if libc::WIFEXITED(status) => Ok(Some(ChildEnd::Exited(libc::WEXITSTATUS(status)))),
        _ => Ok(Some(ChildEnd::Signaled(libc::WTERMSIG(status)))),
    }
}

/// Kills and reaps child `pid` (a rewrite abandoned at shutdown).
pub(crate) fn kill_child(pid: libc::pid_t) {
    // SAFETY: signals only our own child, then waits for it; `status` is a
    // local.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
        let mut status: libc::c_int = 0;
        libc::waitpid(pid, &mut status, 0);
    }
}

/// Runs `f` with the process umask set to `mask`, then restores it (the
/// unix socket's file mode comes from the umask at bind time).
pub(crate) fn with_umask<T>(mask: u32, f: impl FnOnce() -> T) -> T {
    // SAFETY: umask takes no pointers and cannot fail; the reactor is the
    // only thread, so nothing else creates files meanwhile.
    let old = unsafe { libc::umask(mask as libc::mode_t) };
    let out = f();
    // SAFETY: as above; restores the previous mask.
    unsafe { libc::umask(old) };
    out
}

/// One datagram to `to`, gathered from `head` and `body` (sendmsg, so the
/// reply body is not copied behind its frame header). Returns bytes sent.
pub(crate) fn send_datagram(
    fd: RawFd,
    head: &[u8],
    body: &[u8],
    to: &std::net::SocketAddr,
) -> io::Result<usize> {
    let (mut sa, len) = sockaddr_of(to);
    let mut iov = [
        libc::iovec {
            iov_base: head.as_ptr() as *mut libc::c_void,
            iov_len: head.len(),
        },
        libc::iovec {
            iov_base: body.as_ptr() as *mut libc::c_void,
            iov_len: body.len(),
        },
    ];
    // SAFETY: msghdr is plain data; every pointer in it refers to locals
    // (`sa`, `iov`) or to the caller's slices, all alive for the call, and
    // sendmsg only reads through them.
    let rc = unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_name = &mut sa as *mut _ as *mut libc::c_void;
        msg.msg_namelen = len;
        msg.msg_iov = iov.as_mut_ptr();
        msg.msg_iovlen = iov.len();
        libc::sendmsg(fd, &msg, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL)
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc as usize)
    }
}

/// The C form of a socket address.
fn sockaddr_of(addr: &std::net::SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain data for which all-zero is valid,
    // and it is large and aligned enough to hold either address type.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        std::net::SocketAddr::V4(a) => {
            // SAFETY: see above; the cast stays within `storage`.
            let sin = unsafe { &mut *(&mut storage as *mut _ as *mut libc::sockaddr_in) };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = a.port().to_be();
            sin.sin_addr.s_addr = u32::from_ne_bytes(a.ip().octets());
            std::mem::size_of::<libc::sockaddr_in>()
        }
        std::net::SocketAddr::V6(a) => {
            // SAFETY: see above; the cast stays within `storage`.
            let sin6 = unsafe { &mut *(&mut storage as *mut _ as *mut libc::sockaddr_in6) };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = a.port().to_be();
            sin6.sin6_addr.s6_addr = a.ip().octets();
            sin6.sin6_flowinfo = a.flowinfo();
            sin6.sin6_scope_id = a.scope_id();
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

/// Whether stderr is open for reading and writing (a terminal usually is;
/// a pipe or a redirected file is not).
pub(crate) fn stderr_is_read_write() -> bool {
    // SAFETY: F_GETFL takes no pointers and only reads descriptor flags.
    let flags = unsafe { libc::fcntl(libc::STDERR_FILENO, libc::F_GETFL) };
    flags >= 0 && flags & libc::O_ACCMODE == libc::O_RDWR
}

/// Starts a TCP connection without waiting for it: the stream is
/// non-blocking and the handshake completes (or fails) later, reported by
/// epoll as writability; `TcpStream::take_error` then tells which.
pub(crate) fn connect_nonblocking(addr: std::net::SocketAddr) -> io::Result<std::net::TcpStream> {
    let family = if addr.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    let (storage, len) = sockaddr_of(&addr);
    // SAFETY: a plain socket call; on success the descriptor is owned by
    // the TcpStream made right away, which closes it on every later path.
    let stream = unsafe {
        let fd = check(libc::socket(
            family,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        ))?;
        std::net::TcpStream::from_raw_fd(fd)
    };
    // SAFETY: `storage` is a local sockaddr_storage holding a valid address
    // of `len` bytes; connect only reads it.
    let rc = unsafe {
        libc::connect(
            stream.as_raw_fd(),
            &storage as *const libc::sockaddr_storage as *const libc::sockaddr,
            len,
        )
    };
    if rc < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINPROGRESS) {
            return Err(e);
        }
    }
    Ok(stream)
}

/// Ignores SIGHUP for the rest of the process's life (`-d`).
pub(crate) fn ignore_sighup() -> nix::Result<()> {
    use nix::sys::signal::{SigHandler, Signal, signal};
    // SAFETY: SIG_IGN installs no handler code, so nothing can run in
    // signal context.
    unsafe { signal(Signal::SIGHUP, SigHandler::SigIgn) }.map(drop)
}

/// A non-blocking eventfd: extstore's I/O threads add to it when they have
/// finished something; the reactor has it in its epoll set.
pub(crate) fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: eventfd takes no pointers; the descriptor it returns is new
    // and owned by nobody else.
    let fd = check(unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) })?;
    // SAFETY: `fd` was just created above and is closed only by this OwnedFd.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// What a read that must not wait for the disk found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum NowaitRead {
    /// All of the buffer was read (the page cache held it).
    Whole,
    /// Part or none of it is cached (`EAGAIN` or a short read), or the
    /// read failed: a thread that may block has to do it.
    NotNow,
    /// The file (its file system) or the kernel cannot read without
    /// waiting (`EOPNOTSUPP`, `ENOSYS`, `EINVAL`): no use trying again.
    Unsupported,
}

/// `preadv2(..., RWF_NOWAIT)`: fills `buf` from `fd` at `pos` only if the
/// page cache already holds it, never waiting for I/O.
pub(crate) fn pread_nowait(fd: RawFd, buf: &mut [u8], pos: u64) -> NowaitRead {
    let iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: one iovec describing `buf`, exclusively borrowed for the
    // call; the kernel writes at most `buf.len()` bytes into it.
    let n = unsafe { libc::preadv2(fd, &iov, 1, pos as libc::off_t, libc::RWF_NOWAIT) };
    if n >= 0 {
        return if n as usize == buf.len() {
            NowaitRead::Whole
        } else {
            NowaitRead::NotNow
        };
    }
    match io::Error::last_os_error().raw_os_error() {
        Some(libc::EOPNOTSUPP | libc::ENOSYS | libc::EINVAL) => NowaitRead::Unsupported,
        _ => NowaitRead::NotNow,
    }
}

/// Drops `fd`'s cached pages (`POSIX_FADV_DONTNEED`; dirty ones stay):
/// tests use it to make the next read go to the disk.
#[cfg(test)]
pub(crate) fn drop_cached(fd: RawFd) {
    // SAFETY: posix_fadvise takes no pointers.
    unsafe { libc::posix_fadvise(fd, 0, 0, libc::POSIX_FADV_DONTNEED) };
}

/// Takes a write lock on the whole of `fd`'s file (memcached's guard
/// against two servers sharing an extstore file); fails if another
/// process holds one.
pub(crate) fn lock_whole_file(fd: RawFd) -> io::Result<()> {
    // SAFETY: a zeroed `flock` is a valid value of the plain C struct.
    let mut lock: libc::flock = unsafe { std::mem::zeroed() };
    lock.l_type = libc::F_WRLCK as libc::c_short;
    lock.l_whence = libc::SEEK_SET as libc::c_short;
    // SAFETY: `lock` lives across the call, and F_SETLK only reads it.
    check(unsafe { libc::fcntl(fd, libc::F_SETLK, &lock) })?;
    Ok(())
}

/// The calling thread's id as OpenSSL prints it at the start of its error
/// lines (`ERR_print_errors_fp`): the `pthread_t`'s bytes in hex.
#[cfg(feature = "tls")]
pub(crate) fn thread_id_hex() -> String {
    // SAFETY: pthread_self has no preconditions and cannot fail.
    let id = unsafe { libc::pthread_self() };
    id.to_ne_bytes()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect()
}

/// CRC-32C of `data` continuing from `crc` (pre- and post-inverted by the
/// caller) with the CPU's `crc32` instruction (SSE4.2), when it has one:
/// about ten times faster than tables, and every flash read is checked.
/// None: no such instruction here.
#[cfg(target_arch = "x86_64")]
pub(crate) fn crc32c_hw(crc: u32, data: &[u8]) -> Option<u32> {
    if !std::arch::is_x86_feature_detected!("sse4.2") {
        return None;
    }
    // SAFETY: the one requirement of a `target_feature` function, that the
    // CPU has the feature, was checked just above.
    Some(unsafe { crc32c_sse42(crc, data) })
}

#[cfg(not(target_arch = "x86_64"))]
pub(crate) fn crc32c_hw(_crc: u32, _data: &[u8]) -> Option<u32> {
    None
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse4.2")]
fn crc32c_sse42(mut crc: u32, data: &[u8]) -> u32 {
    use std::arch::x86_64::{_mm_crc32_u8, _mm_crc32_u64};
    let mut words = data.chunks_exact(8);
    let mut wide = crc as u64;
    for w in &mut words {
        wide = _mm_crc32_u64(wide, u64::from_le_bytes(w.try_into().unwrap()));
    }
    crc = wide as u32;
    for &b in words.remainder() {
        crc = _mm_crc32_u8(crc, b);
    }
    crc
}

/// Gives the pages wholly inside `buf` back to the kernel
/// (`MADV_DONTNEED`): they leave RSS and read as zeros when next touched.
/// For an idle buffer that keeps its size but need not keep its memory.
pub(crate) fn discard_pages(buf: &mut [u8]) {
    const PAGE: usize = 4096;
    let start = (buf.as_mut_ptr() as usize).next_multiple_of(PAGE);
    let end = (buf.as_mut_ptr() as usize + buf.len()) / PAGE * PAGE;
    if end <= start {
        return;
    }
    // SAFETY: [start, end) lies inside `buf`, which this function holds
    // exclusively; on private anonymous memory (the heap) MADV_DONTNEED
    // only makes those bytes read as zero later, a valid value for u8.
    unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED) };
}

/// Waits up to `timeout_ms` for `fd` to have input; whether it has.
pub(crate) fn wait_readable(fd: RawFd, timeout_ms: i32) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, counted as one; poll writes only `revents`.
    let rc = unsafe { libc::poll(&mut p, 1, timeout_ms) };
    rc > 0 && p.revents & libc::POLLIN != 0
}

/// A TLS session on its socket: OpenSSL's own socket BIO reads and writes
/// the descriptor (as memcached's `SSL_set_fd` does), which is what lets
/// OpenSSL hand the record layer to the kernel (`ssl_kernel_tls`) and
/// saves a trip through a Rust I/O adapter per record. The `openssl`
/// crate makes and configures the session; these are the calls it only
/// offers around its adapter, and a socket BIO that notes short reads.
#[cfg(feature = "tls")]
pub(crate) mod ssl {
    use foreign_types::ForeignTypeRef;
    use openssl::ssl::{Ssl, SslRef};
    use std::cell::Cell;
    use std::os::fd::RawFd;
    use std::rc::Rc;
    use std::sync::OnceLock;

    use libc::{c_char, c_int, c_long, c_void};
    use openssl_sys::{BIO, BIO_METHOD, SSL};

    type ReadFn = unsafe extern "C" fn(*mut BIO, *mut c_char, c_int) -> c_int;
    type WriteFn = unsafe extern "C" fn(*mut BIO, *const c_char, c_int) -> c_int;
    type PutsFn = unsafe extern "C" fn(*mut BIO, *const c_char) -> c_int;
    type CtrlFn = unsafe extern "C" fn(*mut BIO, c_int, c_long, *mut c_void) -> c_long;
    type LifeFn = unsafe extern "C" fn(*mut BIO) -> c_int;

    /// `BIO_TYPE_SOURCE_SINK | BIO_TYPE_DESCRIPTOR`, as the socket BIO's.
    const SOCKET_KIND: c_int = 0x0400 | 0x0100;
    /// `BIO_C_SET_FD` (`BIO_set_fd`), and `BIO_NOCLOSE`.
    const BIO_C_SET_FD: c_int = 104;
    const BIO_NOCLOSE: c_long = 0;

    unsafe extern "C" {
        fn SSL_set_fd(ssl: *mut SSL, fd: c_int) -> c_int;
        fn SSL_has_pending(ssl: *const SSL) -> c_int;
        fn SSL_get_read_ahead(ssl: *const SSL) -> c_int;
        fn BIO_s_socket() -> *const BIO_METHOD;
        fn BIO_get_new_index() -> c_int;
        fn BIO_meth_new(kind: c_int, name: *const c_char) -> *mut BIO_METHOD;
        fn BIO_meth_get_read(m: *const BIO_METHOD) -> Option<ReadFn>;
        fn BIO_meth_get_write(m: *const BIO_METHOD) -> Option<WriteFn>;
        fn BIO_meth_get_puts(m: *const BIO_METHOD) -> Option<PutsFn>;
        fn BIO_meth_get_ctrl(m: *const BIO_METHOD) -> Option<CtrlFn>;
        fn BIO_meth_get_create(m: *const BIO_METHOD) -> Option<LifeFn>;
        fn BIO_meth_get_destroy(m: *const BIO_METHOD) -> Option<LifeFn>;
        fn BIO_meth_set_read(m: *mut BIO_METHOD, f: Option<ReadFn>) -> c_int;
        fn BIO_meth_set_write(m: *mut BIO_METHOD, f: Option<WriteFn>) -> c_int;
        fn BIO_meth_set_puts(m: *mut BIO_METHOD, f: Option<PutsFn>) -> c_int;
        fn BIO_meth_set_ctrl(m: *mut BIO_METHOD, f: Option<CtrlFn>) -> c_int;
        fn BIO_meth_set_create(m: *mut BIO_METHOD, f: Option<LifeFn>) -> c_int;
        fn BIO_meth_set_destroy(m: *mut BIO_METHOD, f: Option<LifeFn>) -> c_int;
        fn BIO_new(m: *const BIO_METHOD) -> *mut BIO;
        fn BIO_int_ctrl(bio: *mut BIO, cmd: c_int, larg: c_long, iarg: c_int) -> c_long;
        fn BIO_free(bio: *mut BIO) -> c_int;
        fn BIO_set_callback_arg(bio: *mut BIO, arg: *mut c_char);
        fn BIO_get_callback_arg(bio: *const BIO) -> *mut c_char;
    }

    /// OpenSSL's socket BIO with its read wrapped: every function is the
    /// socket BIO's own (so the BIO's state is a socket BIO's), the read
    /// also notes whether it came back short. Made once; never freed.
    struct NotingSocket {
        method: *mut BIO_METHOD,
        socket_read: ReadFn,
    }

    // SAFETY: the method is built once, then only read (by OpenSSL, which
    // shares methods between threads), and the read is a plain function.
    unsafe impl Send for NotingSocket {}
    // SAFETY: as above: nothing in it changes after it is made.
    unsafe impl Sync for NotingSocket {}

    static NOTING_SOCKET: OnceLock<Option<NotingSocket>> = OnceLock::new();

    fn noting_socket() -> Option<&'static NotingSocket> {
        NOTING_SOCKET
            .get_or_init(|| {
                // SAFETY: BIO_s_socket is OpenSSL's static socket method;
                // its functions are copied, as they are, into a new method
                // that OpenSSL owns and that lives as long as the process,
                // with the read replaced by `read_noting`, which calls the
                // socket's own read first.
                unsafe {
                    let socket = BIO_s_socket();
                    let socket_read = BIO_meth_get_read(socket)?;
                    let index = BIO_get_new_index();
                    if index == -1 {
                        return None;
                    }
                    let kind = index | SOCKET_KIND;
                    let method = BIO_meth_new(kind, c"socket, short reads noted".as_ptr());
                    if method.is_null() {
                        return None;
                    }
                    let set = BIO_meth_set_read(method, Some(read_noting)) == 1
                        && BIO_meth_set_write(method, BIO_meth_get_write(socket)) == 1
                        && BIO_meth_set_puts(method, BIO_meth_get_puts(socket)) == 1
                        && BIO_meth_set_ctrl(method, BIO_meth_get_ctrl(socket)) == 1
                        && BIO_meth_set_create(method, BIO_meth_get_create(socket)) == 1
                        && BIO_meth_set_destroy(method, BIO_meth_get_destroy(socket)) == 1;
                    set.then_some(NotingSocket {
                        method,
                        socket_read,
                    })
                }
            })
            .as_ref()
    }

    /// The socket BIO's read, noting in the session's cell (the BIO's
    /// callback argument; no callback is set) whether it returned less
    /// than asked for: nothing (`EAGAIN`, end of file, an error) or a part.
    unsafe extern "C" fn read_noting(bio: *mut BIO, buf: *mut c_char, len: c_int) -> c_int {
        let Some(noting) = NOTING_SOCKET.get().and_then(Option::as_ref) else {
            return -1;
        };
        // SAFETY: OpenSSL calls this as the BIO's read, with its arguments
        // for the socket BIO's read (this BIO is one, but for the read);
        // the callback argument is the `last_read_short` cell of the
        // Session owning the SSL that owns this BIO (set in `on_socket`;
        // the Session frees the SSL before the cell), or null.
        unsafe {
            let n = (noting.socket_read)(bio, buf, len);
            if let Some(cell) = BIO_get_callback_arg(bio).cast::<Cell<bool>>().as_ref() {
                cell.set(n < len);
            }
            n
        }
    }

    /// A session reading and writing its socket. With read ahead on
    /// (`reads_ahead`), OpenSSL asks the socket for all the room its
    /// buffer has, and its BIO notes whether the last read came back with
    /// less (or nothing), which left the socket empty at that moment, so
    /// that an edge-triggered reader can stop without one more read to
    /// find that out. Without read ahead every read asks for exactly what
    /// the record needs, a short one says nothing, and the session is on
    /// a plain socket BIO (`SSL_set_fd`, where kernel TLS can engage).
    pub(crate) struct Session {
        /// Declared first: freed (with its BIO, which points at
        /// `last_read_short`) before the cell is.
        ssl: Ssl,
        /// Shared with the BIO (an `Rc`, not a `Box`, whose contents
        /// must not change behind its back).
        last_read_short: Rc<Cell<bool>>,
        reads_ahead: bool,
    }

    impl Session {
        /// `ssl` on socket `fd`, which the caller keeps open for as long as
        /// the session lives (OpenSSL does not close it).
        pub(crate) fn on_socket(ssl: Ssl, fd: RawFd) -> Option<Session> {
            let last_read_short = Rc::new(Cell::new(false));
            // SAFETY: SSL_get_read_ahead only reads the live SSL's setting.
            let reads_ahead = unsafe { SSL_get_read_ahead(ssl.as_ptr()) } != 0;
            let ok = match noting_socket().filter(|_| reads_ahead) {
                // SAFETY: the SSL is live (owned here). The BIO is made
                // from the noting socket method, given fd (BIO_NOCLOSE,
                // as SSL_set_fd does) and the cell, which outlives it
                // (above), then handed to the SSL as its read and write
                // BIO: one reference, which the SSL owns from then on. A
                // BIO not handed over is freed here.
                Some(noting) => unsafe {
                    let bio = BIO_new(noting.method);
                    if bio.is_null() {
                        false
                    } else if BIO_int_ctrl(bio, BIO_C_SET_FD, BIO_NOCLOSE, fd) != 1 {
                        BIO_free(bio);
                        false
                    } else {
                        BIO_set_callback_arg(bio, Rc::as_ptr(&last_read_short).cast_mut().cast());
                        openssl_sys::SSL_set_bio(ssl.as_ptr(), bio, bio);
                        true
                    }
                },
                // SAFETY: the SSL is live (owned here); SSL_set_fd only
                // makes a socket BIO for fd (BIO_NOCLOSE) and installs it
                // as the SSL's read and write BIO, which the SSL owns.
                None => unsafe { SSL_set_fd(ssl.as_ptr(), fd) == 1 },
            };
            ok.then_some(Session {
                ssl,
                last_read_short,
                reads_ahead,
            })
        }

        pub(crate) fn ssl(&self) -> &SslRef {
            &self.ssl
        }

        pub(crate) fn ssl_mut(&mut self) -> &mut SslRef {
            &mut self.ssl
        }

        /// Forgets how the last read from the socket ended. A note older
        /// than the caller's latest event says nothing: data may have come
        /// since, and its edge been taken already.
        #[inline]
        pub(crate) fn forget_last_read(&self) {
            self.last_read_short.set(false);
        }

        /// With read ahead, the socket is known empty once the last read
        /// from it (since `forget_last_read`) came back short and OpenSSL
        /// holds none of its bytes.
        #[inline]
        pub(crate) fn drained(&self) -> bool {
            self.reads_ahead && self.last_read_short.get() && !self.has_pending()
        }

        /// Bytes read from the socket that OpenSSL has not handed out yet
        /// (a whole record or part of one).
        pub(crate) fn has_pending(&self) -> bool {
            // SAFETY: the SSL is live; SSL_has_pending only reads its
            // record layer's buffers.
            unsafe { SSL_has_pending(self.ssl.as_ptr()) == 1 }
        }

        /// `SSL_read_ex`: plaintext into `buf`, or the error code.
        pub(crate) fn read(&mut self, buf: &mut [u8]) -> Result<usize, Code> {
            let mut n = 0;
            // SAFETY: buf is valid for writes of buf.len() bytes, n for one
            // usize; the SSL is live and borrowed mutably.
            let ok = unsafe {
                openssl_sys::SSL_read_ex(
                    self.ssl.as_ptr(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    &mut n,
                )
            };
            done(&self.ssl, ok, n)
        }

        /// `SSL_write_ex`: how much of `buf` was taken, or the error code.
        pub(crate) fn write(&mut self, buf: &[u8]) -> Result<usize, Code> {
            let mut n = 0;
            // SAFETY: buf is valid for reads of buf.len() bytes, n for one
            // usize; the SSL is live and borrowed mutably.
            let ok = unsafe {
                openssl_sys::SSL_write_ex(self.ssl.as_ptr(), buf.as_ptr().cast(), buf.len(), &mut n)
            };
            done(&self.ssl, ok, n)
        }

        /// `SSL_do_handshake`: Ok once the handshake is complete.
        pub(crate) fn handshake(&mut self) -> Result<(), Code> {
            // SAFETY: the SSL is live and borrowed mutably.
            let rc = unsafe { openssl_sys::SSL_do_handshake(self.ssl.as_ptr()) };
            done(&self.ssl, rc, 0).map(drop)
        }

        /// `SSL_shutdown`: one try at sending close_notify.
        pub(crate) fn shutdown(&mut self) {
            // SAFETY: the SSL is live and borrowed mutably.
            let rc = unsafe { openssl_sys::SSL_shutdown(self.ssl.as_ptr()) };
            if rc < 0 {
                // Whatever failed is of no interest at the close; the queue
                // must be empty for the next session's calls.
                drop(openssl::error::ErrorStack::get());
            }
        }
    }

    /// Why a call did not complete: `SSL_get_error`'s code.
    pub(crate) type Code = c_int;

    fn done(ssl: &SslRef, rc: c_int, n: usize) -> Result<usize, Code> {
        if rc > 0 {
            return Ok(n);
        }
        // SAFETY: the SSL is live; SSL_get_error reads its state and the
        // thread's error queue, which the caller drains on failure.
        Err(unsafe { openssl_sys::SSL_get_error(ssl.as_ptr(), rc) })
    }
}
