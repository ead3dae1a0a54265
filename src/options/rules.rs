//! memcached's short options: its big `switch` in `main()`, one option
//! at a time as getopt returns it, with memcached's validation and words
//! for each (`-c 0`: "Maximum connections must be greater than 0"), plus
//! this server's `-x`, `--repl-port` and `--aof-file`.

use super::help::license;
use super::state::{Outcome, ParseState, contains, lossy};
use super::table::{AOF_FILE, METRICS_PORT, REPL_PORT};
use crate::numbers::{atof, atoi, safe_strtoul, strtol};
use crate::process::EX_USAGE;
use crate::repl::split_peer;
use crate::settings::{Protocol, VERSION};

impl ParseState {
    /// One option, as memcached's big `switch`.
    pub(super) fn option(&mut self, c: u8, arg: Option<&[u8]>) -> Outcome {
        let arg = arg.unwrap_or_default();
        match c {
            b'A' => self.settings.shutdown_command = true,
            #[cfg(feature = "tls")]
            b'Z' => self.settings.tls.enabled = true,
            #[cfg(not(feature = "tls"))]
            b'Z' => return self.fail(EX_USAGE, "This server is not built with TLS support.\n"),
            b'a' => self.c_ints.access = strtol(arg, 8).0 as i32,
            b'U' => {
                self.c_ints.udp_port = atoi(arg);
                self.udp_specified = true;
            }
            b'p' => {
                self.c_ints.port = atoi(arg);
                self.tcp_specified = true;
            }
            b's' => self.settings.socket_path = Some(lossy(arg)),
            b'm' => self.settings.max_bytes = (atoi(arg) as i64 as usize).wrapping_mul(1024 * 1024),
            b'M' => self.settings.evict_to_free = false,
            b'c' => return self.max_conns(arg),
            b'h' => return self.print_and_exit_usage(),
            b'i' => return self.print_and_exit(0, license()),
            b'V' => return self.print_and_exit(0, format!("memcached {VERSION}\n").into_bytes()),
            b'k' => self.settings.lock_memory = true,
            b'v' => self.settings.verbose = self.settings.verbose.saturating_add(1),
            b'l' => self.listen(arg),
            b'd' => self.settings.daemonize = true,
            b'r' => self.settings.max_core = true,
            b'R' => return self.reqs_per_event(arg),
            b'u' => self.settings.user = Some(lossy(arg)),
            b'P' => self.settings.pid_file = Some(lossy(arg)),
            b'e' => self.settings.memory_file = Some(lossy(arg)),
            b'f' => {
                self.settings.slab_config = lossy(arg);
                return self.factor(arg);
            }
            b'n' => return self.chunk_size(arg),
            b't' => return self.threads(arg),
            b'D' => return self.delimiter(arg),
            b'L' => return self.large_pages(),
            b'C' => self.settings.use_cas = false,
            b'b' => self.settings.backlog = atoi(arg),
            b'B' => return self.protocol(arg),
            b'I' => self.c_ints.item_size_max = item_size(arg),
            b'S' => self.settings.sasl = true,
            b'F' => self.settings.flush_enabled = false,
            b'X' => self.settings.dump_enabled = false,
            b'W' => self.tuning.watch_enabled = false,
            b'Y' => self.settings.auth_file = Some(lossy(arg)),
            b'N' => return self.napi_ids(arg),
            b'o' => return self.suboptions(arg),
            b'x' => return self.repl_peer(arg),
            REPL_PORT => return self.repl_port(arg),
            AOF_FILE => self.settings.aof.path = Some(lossy(arg)),
            METRICS_PORT => return self.metrics_port(arg),
            _ => unreachable!("getopt only returns listed options"),
        }
        Ok(())
    }

    fn max_conns(&mut self, arg: &[u8]) -> Outcome {
        self.c_ints.max_conns = atoi(arg);
        if self.c_ints.max_conns <= 0 {
            return self.fail(1, "Maximum connections must be greater than 0\n");
        }
        Ok(())
    }

    /// memcached appends each `-l` to a comma-joined string, skipping one
    /// that is a substring of what it already has (so `-l 10.0.0.10 -l
    /// 10.0.0.1` keeps only the first).
    fn listen(&mut self, arg: &[u8]) {
        match &mut self.listen_joined {
            Some(joined) if contains(joined, arg) => {}
            Some(joined) => {
                joined.push(b',');
                joined.extend_from_slice(arg);
            }
            None => self.listen_joined = Some(arg.to_vec()),
        }
    }

    fn reqs_per_event(&mut self, arg: &[u8]) -> Outcome {
        self.c_ints.reqs_per_event = atoi(arg);
        if self.c_ints.reqs_per_event == 0 {
            return self.fail(1, "Number of requests per event must be greater than 0\n");
        }
        Ok(())
    }

    fn factor(&mut self, arg: &[u8]) -> Outcome {
        self.settings.factor = atof(arg);
        // Written as memcached's `factor <= 1.0` so that NaN passes, as there.
        if self.settings.factor <= 1.0 {
            return self.fail(1, "Factor must be greater than 1\n");
        }
        Ok(())
    }

    fn chunk_size(&mut self, arg: &[u8]) -> Outcome {
        self.c_ints.chunk_size = atoi(arg);
        if self.c_ints.chunk_size == 0 {
            return self.fail(1, "Chunk size must be greater than 0\n");
        }
        Ok(())
    }

    fn threads(&mut self, arg: &[u8]) -> Outcome {
        self.c_ints.num_threads = atoi(arg);
        if self.c_ints.num_threads <= 0 {
            return self.fail(1, "Number of threads must be greater than 0\n");
        }
        if self.c_ints.num_threads > 64 {
            self.stderr.extend_from_slice(
                b"WARNING: Setting a high number of workerthreads is not recommended.\n \
                  Set this value to the number of cores in your machine or less.\n",
            );
        }
        Ok(())
    }

    fn delimiter(&mut self, arg: &[u8]) -> Outcome {
        let Some(&delimiter) = arg.first() else {
            return self.fail(1, "No delimiter specified\n");
        };
        self.settings.prefix_delimiter = delimiter;
        self.settings.detail_enabled = true;
        Ok(())
    }

    fn large_pages(&mut self) -> Outcome {
        match transparent_huge_pages() {
            Ok(()) => {
                self.settings.large_pages = true;
                Ok(())
            }
            Err(why) => {
                self.stderr.extend_from_slice(why.as_bytes());
                self.fail(
                    1,
                    "Cannot enable large pages on this system\n\
                     (There is no support as of this version)\n",
                )
            }
        }
    }

    fn protocol(&mut self, arg: &[u8]) -> Outcome {
        self.protocol_specified = true;
        self.settings.protocol = match arg {
            b"auto" => Protocol::Negotiating,
            b"binary" => Protocol::Binary,
            b"ascii" => Protocol::Ascii,
            _ => {
                let mut message = b"Invalid value for binding protocol: ".to_vec();
                message.extend_from_slice(arg);
                message.extend_from_slice(b"\n -- should be one of auto, binary, or ascii\n");
                return self.fail(EX_USAGE, message);
            }
        };
        Ok(())
    }

    fn napi_ids(&mut self, arg: &[u8]) -> Outcome {
        self.tuning.napi_ids = atoi(arg);
        if self.tuning.napi_ids <= 0 {
            return self.fail(1, "Maximum number of NAPI IDs must be greater than 0\n");
        }
        Ok(())
    }

    /// `-x host[:port]`: the replication peer. The host is resolved when
    /// the server starts; only the shape is checked here.
    pub(super) fn repl_peer(&mut self, arg: &[u8]) -> Outcome {
        let text = lossy(arg);
        if split_peer(&text).is_none() {
            let message = format!("Invalid replication peer \"{text}\": want host[:port]\n");
            return self.fail(EX_USAGE, message);
        }
        self.settings.repl.peer = Some(text);
        Ok(())
    }

    /// `--repl-port`, `-o repl_port` and repcached's `-X <port>` (see
    /// `parse_args`; that `-X` leaves dumping enabled): 1 to 65535. Giving
    /// the port turns replication on: without `-x` this node listens for
    /// its peer and is master, as repcached's master started with `-X`.
    pub(super) fn repl_port(&mut self, arg: &[u8]) -> Outcome {
        match safe_strtoul(arg) {
            Some(port @ 1..=65535) => {
                self.settings.repl.port = port as u16;
                self.settings.repl.listen = true;
                Ok(())
            }
            _ => {
                let message = format!("Invalid replication port \"{}\"\n", lossy(arg));
                self.fail(EX_USAGE, message)
            }
        }
    }

    /// `--metrics-port`, `-o metrics_port=`: 0 turns the endpoint off.
    pub(super) fn metrics_port(&mut self, arg: &[u8]) -> Outcome {
        match safe_strtoul(arg) {
            Some(port @ 0..=65535) => {
                self.settings.metrics.port = port as u16;
                Ok(())
            }
            _ => {
                let message = format!("Invalid metrics port \"{}\"\n", lossy(arg));
                self.fail(EX_USAGE, message)
            }
        }
    }

    fn print_and_exit_usage(&mut self) -> Outcome {
        let (text, code) = self.usage();
        self.print_and_exit(code, text)
    }
}

/// `-I`: a number with an optional k/m suffix, in memcached's `int`.
fn item_size(arg: &[u8]) -> i32 {
    let (number, scale) = match arg.split_last() {
        Some((b'k' | b'K', number)) => (number, 1024),
        Some((b'm' | b'M', number)) => (number, 1024 * 1024),
        _ => (arg, 1),
    };
    atoi(number).wrapping_mul(scale)
}

/// memcached's Linux `enable_large_pages()`: fine unless transparent huge
/// pages are missing or set to `never`; the error is its explanation.
fn transparent_huge_pages() -> Result<(), &'static str> {
    const PATHS: [&str; 2] = [
        "/sys/kernel/mm/transparent_hugepage/enabled",
        "/sys/kernel/mm/redhat_transparent_hugepage/enabled",
    ];
    let Some(mut file) = PATHS.iter().find_map(|p| std::fs::File::open(p).ok()) else {
        return Err("Transparent huge pages support not detected.\nWill use default page size.\n");
    };
    let mut buf = [0u8; 127];
    let read = std::io::Read::read(&mut file, &mut buf).unwrap_or(0);
    if read == 0 {
        return Err(
            "Transparent huge pages could not read the configuration.\nWill use default page size.\n",
        );
    }
    if contains(&buf[..read], b"[never]") {
        return Err("Transparent huge pages support disabled.\nWill use default page size.\n");
    }
    Ok(())
}
