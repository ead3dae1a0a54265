//! `-S` and `-Y` at start-up: checking that SASL has a configuration and
//! reading the ascii-auth file, at memcached's point and in its words.

use std::path::Path;

use super::errno::io_strerror;
use super::exit::Exit;
use crate::authfile::{Credentials, LoadError};

/// `-S`. Debian's memcached (Cyrus SASL) refuses to start without a SASL
/// configuration: `SASL_CONF_PATH`, else `memcached.conf` under /etc/sasl
/// or /etc/sasl2. Ours checks PLAIN against the `MEMCACHED_SASL_PWDB`
/// file, so that file is enough; without either there is nothing to
/// authenticate against.
pub(super) fn init_sasl(verbose: u8) -> Result<(), Exit> {
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
pub(super) fn load_authfile(path: &str) -> Result<Credentials, Exit> {
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
