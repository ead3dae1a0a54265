//! The `memcached` binary: parse the command line like memcached 1.6.18,
//! prepare the process the way its `main()` does, then hand the settings
//! to the reactor. Each step is a library room; this only wires them.

use std::ffi::OsString;

use memcached::options;
use memcached::process::{self, Exit, PidFile};
use memcached::reactor;

fn main() {
    // Before anything opens a descriptor or forks (-d): the LISTEN_PID
    // check is against this process.
    let inherited = reactor::Inherited::take();
    let argv: Vec<OsString> = std::env::args_os().collect();
    let mut parsed = options::parse_args(&argv).unwrap_or_else(|exit| exit.leave());
    parsed.settings.socket_activated = inherited.is_some();
    let (settings, tls) =
        process::start(parsed.settings, &parsed.warnings).unwrap_or_else(|exit| exit.leave());
    let mut pid_file = PidFile::new(&settings);
    let served = reactor::serve(settings, tls, inherited, || pid_file.save());
    pid_file.remove();
    if let Err(e) = served {
        Exit::serving_failed(&e).leave();
    }
}
