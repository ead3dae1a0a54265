//! A warning memcached does not give: a server reachable on every
//! interface with no authentication lets anyone who can reach the port
//! read, overwrite and flush the cache (and, with `-A`, stop it). Printed
//! once to stderr at start, only when that is the case, so the usual
//! `-l 127.0.0.1` setups (and every trace comparison) see nothing new.

use crate::settings::Settings;

/// The warning for `settings`, if the server would be exposed.
pub(super) fn warning(settings: &Settings) -> Option<String> {
    let authenticated = settings.auth_file.is_some() || settings.sasl;
    let listening =
        settings.socket_path.is_none() && (settings.port != 0 || settings.udp_port != 0);
    // Inherited sockets were bound by whoever passed them, not by -l.
    if authenticated || !listening || settings.socket_activated {
        return None;
    }
    let wildcard = if settings.listen.is_empty() {
        Some("no -l given")
    } else {
        settings
            .listen
            .iter()
            .flat_map(|l| l.split(','))
            .find(|l| is_wildcard(host_of(l)))
            .map(|_| "-l names a wildcard address")
    }?;
    // With TCP off (-p 0) the exposed port is the UDP one; -1 is ephemeral.
    let port = if settings.port != 0 {
        settings.port
    } else {
        settings.udp_port
    };
    let reach = match port {
        -1 => "the port the kernel picks".to_string(),
        _ => format!("port {port}"),
    };
    Some(format!(
        "WARNING: listening on all interfaces ({wildcard}) with no authentication (-Y or -S): \
         anyone who can reach {reach} can read, change and flush the cache. Bind to a private \
         interface with -l, or enable authentication.\n"
    ))
}

/// The host part of a `-l` entry: `host`, `host:port`, `[v6]` or `[v6]:port`.
fn host_of(entry: &str) -> &str {
    if let Some(rest) = entry.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match entry.matches(':').count() {
        1 => entry.split(':').next().unwrap_or(entry),
        _ => entry,
    }
}

fn is_wildcard(host: &str) -> bool {
    matches!(host, "" | "*" | "0.0.0.0" | "::" | "0:0:0:0:0:0:0:0")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_listen(listen: &[&str]) -> Settings {
        Settings {
            listen: listen.iter().map(|s| s.to_string()).collect(),
            ..Settings::default()
        }
    }

    #[test]
    fn warns_only_for_wildcards_without_auth() {
        assert!(warning(&with_listen(&[])).is_some());
        assert!(warning(&with_listen(&["0.0.0.0"])).is_some());
        assert!(warning(&with_listen(&["::"])).is_some());
        assert!(warning(&with_listen(&["[::]:11211"])).is_some());
        assert!(warning(&with_listen(&["127.0.0.1,0.0.0.0:11311"])).is_some());
        assert!(warning(&with_listen(&["127.0.0.1"])).is_none());
        assert!(warning(&with_listen(&["::1"])).is_none());
        assert!(warning(&with_listen(&["10.0.0.5:11211"])).is_none());
        let mut s = with_listen(&[]);
        s.auth_file = Some("/etc/memcached.auth".into());
        assert!(warning(&s).is_none());
        let mut s = with_listen(&[]);
        s.port = 0;
        assert!(warning(&s).is_none());
    }

    #[test]
    fn names_the_port_actually_exposed() {
        let mut s = with_listen(&[]);
        s.port = -1;
        assert!(
            warning(&s)
                .unwrap()
                .contains("reach the port the kernel picks can")
        );
        s.port = 0;
        s.udp_port = 11222;
        assert!(warning(&s).unwrap().contains("reach port 11222 can"));
    }
}
