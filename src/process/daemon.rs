//! `-d`: detaching from the terminal.

use crate::sys;
use nix::unistd::daemon;

use super::errno::strerror;
use super::exit::Exit;

/// Detach like memcached's `daemonize(maxcore, verbose)`: with `-r` the
/// working directory stays (for the core file), with `-v` stdio stays.
pub(super) fn daemonize(keep_directory: bool, keep_stdio: bool) -> Result<(), Exit> {
    // memcached ignores SIGHUP here so losing the controlling terminal
    // while detaching cannot kill it.
    if let Err(errno) = sys::ignore_sighup() {
        eprintln!("Failed to ignore SIGHUP: {}", strerror(errno));
    }
    daemon(keep_directory, keep_stdio)
        .map_err(|_| Exit::error(1, "failed to daemon() in order to daemonize\n"))
}
