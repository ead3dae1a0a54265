//! The `memcached` binary: parse the command line like memcached 1.6.18,
//! prepare the process the way its `main()` does (core and file limits,
//! dropping root, daemonizing, locking memory, the pid file), then hand the
//! settings to the reactor.

mod exposure;

use std::ffi::OsString;
use std::io::Write as _;
use std::path::Path;

use memcached::numbers::safe_strtoul;
use memcached::options::{self, EX_NOUSER, EX_OSERR, EX_USAGE, Exit};
use memcached::proto::auth::{Credentials, LoadError};
use memcached::settings::Settings;
use nix::errno::Errno;
use nix::sys::mman::{MlockAllFlags, mlockall};
use nix::sys::resource::{RLIM_INFINITY, Resource, getrlimit, setrlimit};
use nix::sys::signal::{SigHandler, Signal, kill, signal};
use nix::unistd::{Pid, User, daemon, geteuid, getpid, getuid, setgid, setgroups, setuid};

/// File descriptors wanted beyond `-c`: memcached counts its listeners
/// and internal descriptors inside maxconns, but this server keeps stdio,
/// the epoll descriptor and its listeners outside it.
const FD_HEADROOM: u64 = 32;

fn main() {
    let argv: Vec<OsString> = std::env::args_os().collect();
    let mut parsed = options::parse_args(&argv).unwrap_or_else(|exit| leave(exit));
    eprint_bytes(&parsed.warnings);
    // `-d` changes to `/`: a relative AOF path means the starting directory.
    if let Some(path) = &mut parsed.settings.aof.path
        && let Ok(abs) = std::path::absolute(&*path)
    {
        *path = abs.to_string_lossy().into_owned();
    }
    if let Err(exit) = prepare(&mut parsed.settings) {
        leave(exit);
    }
    if let Some(warning) = exposure::warning(&parsed.settings) {
        eprint_bytes(warning.as_bytes());
    }
    let pid_file = parsed.settings.pid_file.clone();
    let daemonized = parsed.settings.daemonize;
    let mut started = false;
    let served = memcached::reactor::serve(parsed.settings, || {
        started = true;
        if let Some(path) = &pid_file {
            save_pid(path);
        }
    });
    // Like memcached, the pid file is removed when the server stops after
    // it started (SIGTERM, SIGINT, SIGUSR1, `shutdown`, a failed event
    // loop), and only if it daemonized itself: a foreground server leaves
    // its pid file for whoever supervises it.
    if let (true, true, Some(path)) = (started, daemonized, &pid_file) {
        remove_pid(path);
    }
    if let Err(e) = served {
        // The reactor words its errors the way memcached does ("failed to
        // listen on TCP port 11211: ..."), so they are printed verbatim.
        eprintln!("{e}");
        // A configuration the reactor rejects is memcached's EXIT_FAILURE;
        // anything else is an operating-system failure.
        let code = if e.kind() == std::io::ErrorKind::InvalidInput {
            1
        } else {
            EX_OSERR
        };
        std::process::exit(code);
    }
}

/// Prints what an [`Exit`] carries and ends the process with its code.
fn leave(exit: Exit) -> ! {
    eprint_bytes(&exit.stderr);
    let mut stdout = std::io::stdout().lock();
    // Nothing useful can be done if stdout is gone (e.g. `-h | head`).
    let _ = stdout.write_all(&exit.stdout).and_then(|()| stdout.flush());
    std::process::exit(exit.code)
}

fn eprint_bytes(bytes: &[u8]) {
    let _ = std::io::stderr().write_all(bytes);
}

/// memcached's start-up steps between parsing and opening sockets, in its
/// order (each one's failure message depends on the ones before it).
fn prepare(settings: &mut Settings) -> Result<(), Exit> {
    if settings.max_core {
        raise_core_limit()?;
    }
    raise_file_limit(settings.max_conns)?;
    assume_identity(settings.user.as_deref())?;
    if settings.sasl {
        init_sasl(settings.verbose)?;
    }
    if settings.daemonize {
        daemonize(settings)?;
    }
    if settings.lock_memory {
        lock_memory();
    }
    if settings.auth_file.is_some() && settings.udp_port != 0 {
        let message = "Cannot use UDP with ascii authentication enabled (-U 0 to disable)\n";
        return Err(Exit::error(EX_USAGE, message));
    }
    if let Some(path) = &settings.auth_file {
        settings.auth = Some(load_authfile(path)?);
    }
    Ok(())
}

/// `-S`, at memcached's point in start-up and in its words. Debian's
/// memcached (Cyrus SASL) refuses to start without a SASL configuration:
/// `SASL_CONF_PATH`, else `memcached.conf` under /etc/sasl or /etc/sasl2.
/// Ours checks PLAIN against the `MEMCACHED_SASL_PWDB` file, so that file
/// is enough; without either there is nothing to authenticate against.
fn init_sasl(verbose: u8) -> Result<(), Exit> {
    let conf = std::env::var("SASL_CONF_PATH").ok().or_else(|| {
        ["/etc/sasl", "/etc/sasl2"]
            .into_iter()
            .find(|dir| Path::new(dir).join("memcached.conf").exists())
            .map(str::to_owned)
    });
    let pwdb = std::env::var_os("MEMCACHED_SASL_PWDB").is_some();
    if verbose > 0 {
        match &conf {
            Some(path) => eprintln!("Reading configuration from: <{path}>"),
            None => eprintln!("Failed to locate a config path"),
        }
    }
    if conf.is_none() && !pwdb {
        return Err(Exit::error(1, "Error initializing sasl.\n"));
    }
    if verbose > 0 {
        eprintln!("Initialized SASL.");
    }
    Ok(())
}

/// `-Y`: the credentials, or memcached's words for why they cannot be read
/// (its `perror` repeats the error text; the malformed message has no
/// newline).
fn load_authfile(path: &str) -> Result<Credentials, Exit> {
    Credentials::load(path).map_err(|e| match e {
        LoadError::Open(e) => {
            let why = io_strerror(&e);
            let message =
                format!("Could not open authfile [{path}] for reading, error {why}: {why}\n");
            Exit::error(1, message)
        }
        LoadError::Malformed => Exit::error(
            1,
            format!("Authfile [{path}] has a malformed entry. Should be 'user:password'"),
        ),
    })
}

/// `-r`: unlimited core files if allowed, else up to the hard limit; only
/// a soft limit of 0 (no core files at all) is fatal.
fn raise_core_limit() -> Result<(), Exit> {
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_CORE)
        && setrlimit(Resource::RLIMIT_CORE, RLIM_INFINITY, RLIM_INFINITY).is_err()
    {
        let _ = setrlimit(Resource::RLIMIT_CORE, hard, hard);
    }
    match getrlimit(Resource::RLIMIT_CORE) {
        Ok((soft, _)) if soft != 0 => Ok(()),
        _ => Err(Exit::error(
            EX_OSERR,
            "failed to ensure corefile creation\n",
        )),
    }
}

/// Enough descriptors for `-c` connections. memcached sets both limits to
/// exactly maxconns (even lowering them); this only raises, wanting some
/// headroom, and settles for maxconns when the hard limit allows no more.
fn raise_file_limit(max_conns: usize) -> Result<(), Exit> {
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return Err(Exit::error(
            EX_OSERR,
            "failed to getrlimit number of files\n",
        ));
    };
    let needed = max_conns as u64;
    let wanted = needed.saturating_add(FD_HEADROOM);
    if soft >= wanted {
        return Ok(());
    }
    // Root may raise the hard limit too.
    if setrlimit(Resource::RLIMIT_NOFILE, wanted, hard.max(wanted)).is_ok() {
        return Ok(());
    }
    // Otherwise as much as the hard limit allows, if that is enough.
    let raised = hard >= needed && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok();
    if raised || soft >= needed {
        return Ok(());
    }
    let message = "failed to set rlimit for open files. Try starting as root or requesting smaller \
                   maxconns value.\n";
    Err(Exit::error(EX_OSERR, message))
}

/// Root must name a user with `-u` and becomes that user; anyone else keeps
/// their identity and `-u` is ignored.
fn assume_identity(user: Option<&str>) -> Result<(), Exit> {
    if !getuid().is_root() && !geteuid().is_root() {
        return Ok(());
    }
    let name = user.unwrap_or_default();
    if name.is_empty() {
        return Err(Exit::error(
            EX_USAGE,
            "can't run as root without the -u switch\n",
        ));
    }
    let Ok(Some(account)) = User::from_name(name) else {
        let message = format!("can't find the user {name} to switch to\n");
        return Err(Exit::error(EX_NOUSER, message));
    };
    if let Err(errno) = setgroups(&[]) {
        // EPERM means we are already without the privilege to change them.
        let message = format!("failed to drop supplementary groups: {}\n", strerror(errno));
        if errno != Errno::EPERM {
            return Err(Exit::error(EX_OSERR, message));
        }
        eprint_bytes(message.as_bytes());
    }
    if setgid(account.gid).is_err() || setuid(account.uid).is_err() {
        let message = format!("failed to assume identity of user {name}\n");
        return Err(Exit::error(EX_OSERR, message));
    }
    Ok(())
}

/// `-d`: detach like memcached's `daemonize(maxcore, verbose)`: with `-r`
/// the working directory stays (for the core file), with `-v` stdio stays.
fn daemonize(settings: &Settings) -> Result<(), Exit> {
    // SAFETY: SIG_IGN installs no handler code, so nothing can run in
    // signal context; memcached ignores SIGHUP here so losing the
    // controlling terminal while detaching cannot kill it.
    if let Err(errno) = unsafe { signal(Signal::SIGHUP, SigHandler::SigIgn) } {
        eprintln!("Failed to ignore SIGHUP: {}", strerror(errno));
    }
    daemon(settings.max_core, settings.verbose > 0)
        .map_err(|_| Exit::error(1, "failed to daemon() in order to daemonize\n"))
}

/// `-k`: failure is only a warning, as in memcached. Future mappings are
/// locked as they are touched (MCL_ONFAULT, Linux 4.4+), not when mapped:
/// memcached mallocs its pages as it needs them, so its locked memory grows
/// with use, and with plain MCL_FUTURE the whole `-m` arena would be faulted
/// in at start. If the arena does not fit under RLIMIT_MEMLOCK, the slab
/// room maps it unlocked with a warning (see `slab::arena`).
fn lock_memory() {
    let all = MlockAllFlags::MCL_CURRENT | MlockAllFlags::MCL_FUTURE;
    let on_fault = MlockAllFlags::from_bits_retain(libc::MCL_ONFAULT);
    let mut locked = mlockall(all | on_fault);
    if locked == Err(Errno::EINVAL) {
        // A kernel without MCL_ONFAULT.
        locked = mlockall(all);
    }
    if let Err(errno) = locked {
        eprintln!(
            "warning: -k invalid, mlockall() failed: {}",
            strerror(errno)
        );
    }
}

/// memcached's `save_pid`: warn if the file names a live process, then
/// write `<path>.tmp` and rename it over `path` so readers never see it
/// empty. Failures are reported and start-up goes on. Removing the file at
/// exit (when daemonized) is `remove_pid`'s job. memcached writes it once
/// its sockets are bound, so a server that fails to start leaves none.
fn save_pid(path: &str) {
    if let Some(pid) = running_pid(path) {
        eprintln!("WARNING: The pid file contained the following (running) pid: {pid}");
    }
    let tmp = format!("{path}.tmp");
    if let Err(e) = std::fs::write(&tmp, format!("{}\n", getpid())) {
        eprintln!(
            "Could not open the pid file {tmp} for writing: {}",
            io_strerror(&e)
        );
        return;
    }
    if let Err(e) = std::fs::rename(&tmp, path) {
        eprintln!(
            "Could not rename the pid file from {tmp} to {path}: {}",
            io_strerror(&e)
        );
    }
}

/// memcached's `remove_pidfile`, run as the user `-u` switched to: the pid
/// file's directory must be writable by that user (or the file stays).
fn remove_pid(path: &str) {
    if let Err(e) = std::fs::remove_file(path) {
        eprintln!("Could not remove the pid file {path}: {}", io_strerror(&e));
    }
}

/// The pid in an existing pid file's first line, if that process exists.
fn running_pid(path: &str) -> Option<u32> {
    let text = std::fs::read(path).ok()?;
    let line = text.split_inclusive(|&b| b == b'\n').next()?;
    let pid = safe_strtoul(line)?;
    kill(Pid::from_raw(pid as i32), None).ok()?;
    Some(pid)
}

/// The C library's text for an errno, as `strerror`/`perror` print it.
fn strerror(errno: Errno) -> String {
    io_strerror(&std::io::Error::from_raw_os_error(errno as i32))
}

fn io_strerror(e: &std::io::Error) -> String {
    // std appends " (os error N)" to the C library's message.
    let text = e.to_string();
    match text.rfind(" (os error ") {
        Some(at) => text[..at].to_string(),
        None => text,
    }
}
