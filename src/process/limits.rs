//! Resource limits memcached adjusts at start: core files (`-r`), open
//! files for `-c` connections, and locked memory (`-k`).

use nix::errno::Errno;
use nix::sys::mman::{MlockAllFlags, mlockall};
use nix::sys::resource::{RLIM_INFINITY, Resource, getrlimit, setrlimit};

use super::errno::strerror;
use super::exit::{EX_OSERR, Exit};

/// File descriptors wanted beyond `-c`: memcached counts its listeners
/// and internal descriptors inside maxconns, but this server keeps stdio,
/// the epoll descriptor and its listeners outside it.
const FD_HEADROOM: u64 = 32;

/// `-r`: unlimited core files if allowed, else up to the hard limit; only
/// a soft limit of 0 (no core files at all) is fatal.
pub(super) fn raise_core_limit() -> Result<(), Exit> {
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
pub(super) fn raise_file_limit(max_conns: usize) -> Result<(), Exit> {
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

/// `-k`: failure is only a warning, as in memcached. Future mappings are
/// locked as they are touched (MCL_ONFAULT, Linux 4.4+), not when mapped:
/// memcached mallocs its pages as it needs them, so its locked memory grows
/// with use, and with plain MCL_FUTURE the whole `-m` arena would be faulted
/// in at start. If the arena does not fit under RLIMIT_MEMLOCK, the slab
/// room maps it unlocked with a warning (see `slab::arena`).
pub(super) fn lock_memory() {
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
