//! How the process ends early: what it prints and the exit code, in
//! memcached's `sysexits.h` terms. Parsing and each start-up step hand back
//! an [`Exit`] instead of exiting, so they stay testable; `main` calls
//! [`Exit::leave`].

use std::io::Write as _;

/// `sysexits.h` codes, as memcached uses them.
pub(crate) const EX_USAGE: i32 = 64;
pub(crate) const EX_NOUSER: i32 = 67;
pub(crate) const EX_OSERR: i32 = 71;

/// The process must end now: print `stderr`, then `stdout`, and exit with
/// `code` (0 for `-h`, `-V`, `-i`).
#[derive(Debug)]
pub struct Exit {
    pub code: i32,
    pub(crate) stdout: Vec<u8>,
    pub(crate) stderr: Vec<u8>,
}

impl Exit {
    /// An error exit with one message.
    pub(crate) fn error(code: i32, message: impl Into<Vec<u8>>) -> Exit {
        Exit {
            code,
            stdout: Vec::new(),
            stderr: message.into(),
        }
    }

    /// The reactor stopped with an error. It words its errors the way
    /// memcached does ("failed to listen on TCP port 11211: ..."), so they
    /// are printed verbatim. A configuration the reactor rejects is
    /// memcached's EXIT_FAILURE; anything else is an operating-system
    /// failure.
    pub fn serving_failed(e: &std::io::Error) -> Exit {
        let code = if e.kind() == std::io::ErrorKind::InvalidInput {
            1
        } else {
            EX_OSERR
        };
        Exit::error(code, format!("{e}\n"))
    }

    /// Prints what the exit carries and ends the process with its code.
    pub fn leave(self) -> ! {
        eprint_bytes(&self.stderr);
        let mut stdout = std::io::stdout().lock();
        // Nothing useful can be done if stdout is gone (e.g. `-h | head`).
        let _ = stdout.write_all(&self.stdout).and_then(|()| stdout.flush());
        std::process::exit(self.code)
    }
}

/// Writes to stderr; there is nowhere to report a failure to.
pub(super) fn eprint_bytes(bytes: &[u8]) {
    let _ = std::io::stderr().write_all(bytes);
}
