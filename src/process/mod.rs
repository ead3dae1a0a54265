//! The process around the server, as memcached's `main()` prepares it
//! between parsing its options and opening sockets: core and file limits
//! (`limits.rs`), dropping root (`identity.rs`), SASL and the `-Y` file
//! (`auth.rs`), detaching (`daemon.rs`), locking memory, the pid file
//! (`pid_file.rs`), a warning for a server open to everyone
//! (`exposure.rs`), and how the process ends early (`exit.rs`).

mod auth;
mod daemon;
mod errno;
mod exit;
mod exposure;
mod identity;
mod limits;
mod pid_file;

use crate::settings::Settings;
use crate::tls;
use exit::eprint_bytes;

pub(crate) use exit::EX_USAGE;
pub use exit::Exit;
pub use pid_file::PidFile;

/// Everything between parsing and serving: prints the parser's
/// `warnings`, prepares the process for `settings`, and hands them back
/// ready for the reactor (with the `-Y` credentials loaded), with the TLS
/// context when `-Z` asks for one.
pub fn start(mut settings: Settings, warnings: &[u8]) -> Result<(Settings, tls::Contexts), Exit> {
    eprint_bytes(warnings);
    // `-d` changes to `/`: a relative AOF path means the starting directory.
    if let Some(path) = &mut settings.aof.path
        && let Ok(abs) = std::path::absolute(&*path)
    {
        *path = abs.to_string_lossy().into_owned();
    }
    // memcached loads its certificates first, while still root.
    let tls = tls::start(&settings).map_err(|text| Exit::error(EX_USAGE, text))?;
    prepare(&mut settings)?;
    if let Some(warning) = exposure::warning(&settings) {
        eprint_bytes(warning.as_bytes());
    }
    Ok((settings, tls))
}

/// memcached's start-up steps between parsing and opening sockets, in its
/// order (each one's failure message depends on the ones before it).
fn prepare(settings: &mut Settings) -> Result<(), Exit> {
    if settings.max_core {
        limits::raise_core_limit()?;
    }
    limits::raise_file_limit(settings.max_conns)?;
    identity::assume_identity(settings.user.as_deref())?;
    if settings.sasl {
        auth::init_sasl(settings.verbose)?;
    }
    if settings.daemonize {
        daemon::daemonize(settings.max_core, settings.verbose > 0)?;
    }
    if settings.lock_memory {
        limits::lock_memory();
    }
    if settings.auth_file.is_some() && settings.udp_port != 0 {
        let message = "Cannot use UDP with ascii authentication enabled (-U 0 to disable)\n";
        return Err(Exit::error(EX_USAGE, message));
    }
    if let Some(path) = &settings.auth_file {
        settings.auth = Some(auth::load_authfile(path)?);
    }
    Ok(())
}
