//! The C library's text for an errno, as memcached's `strerror`/`perror`
//! print it in its start-up messages.

use nix::errno::Errno;

pub(super) fn strerror(errno: Errno) -> String {
    io_strerror(&std::io::Error::from_raw_os_error(errno as i32))
}

pub(super) fn io_strerror(e: &std::io::Error) -> String {
    // std appends " (os error N)" to the C library's message.
    let text = e.to_string();
    match text.rfind(" (os error ") {
        Some(at) => text[..at].to_string(),
        None => text,
    }
}
