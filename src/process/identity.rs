//! `-u`: who the server runs as. Root must name a user and becomes that
//! user; anyone else keeps their identity and `-u` is ignored.

use nix::errno::Errno;
use nix::unistd::{User, geteuid, getuid, setgid, setgroups, setuid};

use super::errno::strerror;
use super::exit::{EX_NOUSER, EX_OSERR, EX_USAGE, Exit, eprint_bytes};

/// memcached's root check and switch, with its messages and exit codes.
pub(super) fn assume_identity(user: Option<&str>) -> Result<(), Exit> {
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
