//! The thin, unsafe layer between the reactor and the kernel: epoll,
//! signalfd, and the few socket calls std does not expose. Each wrapper
//! checks the return value and turns it into `io::Result`; nothing above
//! this file touches raw syscalls.

use std::io;
use std::os::fd::{AsRawFd as _, RawFd};

fn check(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

pub struct Epoll {
    fd: RawFd,
}

pub const READ: u32 = libc::EPOLLIN as u32 | libc::EPOLLRDHUP as u32;
pub const WRITE: u32 = libc::EPOLLOUT as u32;
pub const EDGE: u32 = libc::EPOLLET as u32;
pub const HANGUP: u32 = (libc::EPOLLHUP | libc::EPOLLERR | libc::EPOLLRDHUP) as u32;

pub type Event = libc::epoll_event;

pub fn empty_event() -> Event {
    libc::epoll_event { events: 0, u64: 0 }
}

impl Epoll {
    pub fn new() -> io::Result<Epoll> {
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

    pub fn add(&self, fd: RawFd, events: u32, token: u64) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd, events, token)
    }

    /// Waits up to `timeout_ms` (-1 forever); returns how many events were
    /// written to the front of `events`. EINTR counts as zero events.
    pub fn wait(&self, events: &mut [Event], timeout_ms: i32) -> io::Result<usize> {
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
pub fn relisten(fd: RawFd, backlog: i32) -> io::Result<()> {
    // SAFETY: listen takes no pointers; on a bound socket it only resizes
    // the accept queue.
    check(unsafe { libc::listen(fd, backlog) })?;
    Ok(())
}

/// Writes without raising SIGPIPE if the peer has gone; used for the
/// one-line refusal sent to connections over `-c`.
pub fn send_nosignal(fd: RawFd, buf: &[u8]) -> isize {
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
/// SIGPIPE so a vanished client can never kill the server.
pub fn termination_signals() -> io::Result<RawFd> {
    // SAFETY: sigset_t is plain data initialised by sigemptyset before use;
    // signal/sigprocmask/signalfd only read the set we pass.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
        libc::signal(libc::SIGHUP, libc::SIG_IGN);
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGUSR1);
        check(libc::sigprocmask(
            libc::SIG_BLOCK,
            &set,
            std::ptr::null_mut(),
        ))?;
        check(libc::signalfd(
            -1,
            &set,
            libc::SFD_NONBLOCK | libc::SFD_CLOEXEC,
        ))
    }
}

/// Reads one pending signal number from a signalfd, if any.
pub fn read_signal(fd: RawFd) -> Option<u32> {
    // SAFETY: signalfd_siginfo is plain data; read writes at most its size.
    unsafe {
        let mut info: libc::signalfd_siginfo = std::mem::zeroed();
        let size = std::mem::size_of::<libc::signalfd_siginfo>();
        let n = libc::read(fd, &mut info as *mut _ as *mut libc::c_void, size);
        (n == size as isize).then_some(info.ssi_signo)
    }
}

/// An IPv6 listening socket that does not also take IPv4 (IPV6_V6ONLY),
/// with SO_REUSEADDR like std's.
pub fn bind_v6only(addr: std::net::SocketAddr) -> io::Result<std::net::TcpListener> {
    use std::os::fd::FromRawFd;
    let std::net::SocketAddr::V6(v6) = addr else {
        return Err(io::ErrorKind::InvalidInput.into());
    };
    // SAFETY: plain socket calls on a descriptor we create here; every
    // pointer passed refers to a local that outlives the call; on success
    // ownership of the descriptor moves into the TcpListener exactly once.
    unsafe {
        let fd = check(libc::socket(
            libc::AF_INET6,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
            0,
        ))?;
        let listener = std::net::TcpListener::from_raw_fd(fd);
        let one: libc::c_int = 1;
        let optlen = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        let one_ptr = &one as *const libc::c_int as *const libc::c_void;
        check(libc::setsockopt(
            fd,
            libc::IPPROTO_IPV6,
            libc::IPV6_V6ONLY,
            one_ptr,
            optlen,
        ))?;
        check(libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_REUSEADDR,
            one_ptr,
            optlen,
        ))?;
        let mut sa: libc::sockaddr_in6 = std::mem::zeroed();
        sa.sin6_family = libc::AF_INET6 as libc::sa_family_t;
        sa.sin6_port = v6.port().to_be();
        sa.sin6_addr.s6_addr = v6.ip().octets();
        sa.sin6_scope_id = v6.scope_id();
        check(libc::bind(
            fd,
            &sa as *const libc::sockaddr_in6 as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
        ))?;
        check(libc::listen(fd, 1024))?;
        Ok(listener)
    }
}

/// Starts a TCP connection without waiting for it: the stream is
/// non-blocking and the handshake completes (or fails) later, reported by
/// epoll as writability; `TcpStream::take_error` then tells which.
pub fn connect_nonblocking(addr: std::net::SocketAddr) -> io::Result<std::net::TcpStream> {
    use std::os::fd::FromRawFd;
    let (family, storage, len) = sockaddr_of(addr);
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

/// The C form of a socket address: family, storage, length.
fn sockaddr_of(
    addr: std::net::SocketAddr,
) -> (libc::c_int, libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain data, valid when zeroed; it is
    // large and aligned enough for either address family written into it.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    match addr {
        std::net::SocketAddr::V4(v4) => {
            let sa = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: v4.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(v4.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_in fits in sockaddr_storage (checked by its
            // definition); both are plain data.
            unsafe { std::ptr::write(&mut storage as *mut _ as *mut libc::sockaddr_in, sa) };
            let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            (libc::AF_INET, storage, len)
        }
        std::net::SocketAddr::V6(v6) => {
            let sa = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: v6.port().to_be(),
                sin6_flowinfo: v6.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: v6.ip().octets(),
                },
                sin6_scope_id: v6.scope_id(),
            };
            // SAFETY: as above, for sockaddr_in6.
            unsafe { std::ptr::write(&mut storage as *mut _ as *mut libc::sockaddr_in6, sa) };
            let len = std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t;
            (libc::AF_INET6, storage, len)
        }
    }
}
