//! The `-Y` authfile: `user:password` lines, read as memcached 1.6 reads
//! them (at most 8 entries; a line without a colon spoils the whole file),
//! and the check of a pair against them.
//!
//! A leaf the rest of the server shares: `main.rs` loads the file at
//! start, `settings` holds what was loaded, the reactor reloads it on
//! SIGHUP and the ascii gate (`proto/auth.rs`) checks pairs against it.

use std::fmt;
use std::io::{self, Read};

/// memcached reads at most this many entries; the rest are ignored.
const MAX_ENTRIES: usize = 8;

/// The `user:password` pairs of an authfile.
#[derive(Clone, Default)]
pub struct Credentials {
    entries: Vec<(Vec<u8>, Vec<u8>)>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print passwords, even in a debug dump of the settings.
        write!(f, "Credentials({} entries)", self.entries.len())
    }
}

/// Why an authfile could not be used, worded by `main.rs` as memcached
/// words it.
#[derive(Debug)]
pub enum LoadError {
    Open(io::Error),
    Malformed,
}

impl Credentials {
    /// Reads `path`. Like memcached (which uses `fopen`), a directory opens
    /// fine and reads as an empty file: nobody can authenticate.
    pub fn load(path: &str) -> Result<Credentials, LoadError> {
        let mut file = std::fs::File::open(path).map_err(LoadError::Open)?;
        let mut data = Vec::new();
        if file.read_to_end(&mut data).is_err() {
            data.clear();
        }
        Credentials::parse(&data)
    }

    /// SIGHUP: reads the `-Y` file at `path` again. As in memcached, a file
    /// that cannot be read or is malformed leaves `loaded` as it was.
    pub(crate) fn reload(path: Option<&str>, loaded: &mut Option<Credentials>) {
        if let Some(path) = path
            && let Ok(credentials) = Credentials::load(path)
        {
            *loaded = Some(credentials);
        }
    }

    /// One entry per line; a line without a colon (an empty line too) makes
    /// the whole file malformed. The password ends at CR, LF or NUL.
    pub fn parse(data: &[u8]) -> Result<Credentials, LoadError> {
        let mut entries = Vec::new();
        for line in data.split_inclusive(|&b| b == b'\n') {
            let Some(colon) = line.iter().position(|&b| matches!(b, b':' | 0)) else {
                return Err(LoadError::Malformed);
            };
            if line[colon] == 0 {
                return Err(LoadError::Malformed);
            }
            let pass = &line[colon + 1..];
            let end = pass
                .iter()
                .position(|&b| matches!(b, b'\r' | b'\n' | 0))
                .unwrap_or(pass.len());
            entries.push((line[..colon].to_vec(), pass[..end].to_vec()));
            if entries.len() == MAX_ENTRIES {
                break;
            }
        }
        Ok(Credentials { entries })
    }

    /// Whether `user` and `pass` name an entry. Every entry is compared in
    /// full so the time taken does not tell how much of a guess was right.
    pub(crate) fn check(&self, user: &[u8], pass: &[u8]) -> bool {
        let mut found = false;
        for (u, p) in &self.entries {
            found |= same_bytes(u, user) & same_bytes(p, pass);
        }
        found
    }
}

/// Compares without stopping at the first difference.
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_user_password_lines() {
        let c = Credentials::parse(b"alice:secret\r\nbob:pa:ss\ncarol:x").unwrap();
        assert!(c.check(b"alice", b"secret"));
        assert!(c.check(b"bob", b"pa:ss"));
        assert!(c.check(b"carol", b"x"));
        assert!(!c.check(b"alice", b"secret\r"));
        assert!(!c.check(b"alice", b"Secret"));
        assert!(!c.check(b"", b""));
    }

    #[test]
    fn a_line_without_colon_is_malformed() {
        assert!(matches!(
            Credentials::parse(b"alice:secret\n\nbob:x\n"),
            Err(LoadError::Malformed)
        ));
        assert!(matches!(
            Credentials::parse(b"nocolon\n"),
            Err(LoadError::Malformed)
        ));
        assert!(Credentials::parse(b"").unwrap().entries.is_empty());
    }

    #[test]
    fn only_eight_entries_are_read() {
        let text: String = (0..10).map(|i| format!("u{i}:p{i}\n")).collect();
        let c = Credentials::parse(text.as_bytes()).unwrap();
        assert!(c.check(b"u7", b"p7"));
        assert!(!c.check(b"u8", b"p8"));
    }
}
