//! What memcached's `main()` holds while it walks the options: the settings
//! so far, its C-typed integers, what it has printed, and the flags its
//! later checks look at.

use crate::process::Exit;
use crate::settings::{Settings, Tuning};

/// memcached's `int`/`uint32_t` settings, kept in their C types while
/// parsing so that wrap-around and signs behave as in memcached (and `-h`
/// prints them the same way); converted into `Settings` at the end.
pub(super) struct CInts {
    pub(super) port: i32,
    pub(super) udp_port: i32,
    pub(super) access: i32,
    pub(super) max_conns: i32,
    pub(super) chunk_size: i32,
    pub(super) num_threads: i32,
    pub(super) reqs_per_event: i32,
    pub(super) item_size_max: i32,
    pub(super) slab_chunk_max: i32,
    pub(super) slab_page_size: i32,
    pub(super) hashpower: i32,
    pub(super) tail_repair_time: i32,
    pub(super) lru_crawler_sleep: i32,
    pub(super) lru_crawler_tocrawl: u32,
    pub(super) slab_automove: i32,
    pub(super) idle_timeout: i32,
    pub(super) read_buf_mem_limit: u32,
}

impl CInts {
    fn from_settings(s: &Settings) -> CInts {
        CInts {
            port: s.port,
            udp_port: s.udp_port,
            access: s.access_mask as i32,
            max_conns: s.max_conns as i32,
            chunk_size: s.chunk_size as i32,
            num_threads: s.num_threads as i32,
            reqs_per_event: s.reqs_per_event as i32,
            item_size_max: s.item_size_max as i32,
            slab_chunk_max: s.slab_chunk_size_max as i32,
            slab_page_size: s.slab_page_size as i32,
            hashpower: s.hashpower_init as i32,
            tail_repair_time: s.tail_repair_time as i32,
            lru_crawler_sleep: s.lru_crawler_sleep as i32,
            lru_crawler_tocrawl: s.lru_crawler_tocrawl,
            slab_automove: i32::from(s.slab_automove),
            idle_timeout: s.idle_timeout as i32,
            read_buf_mem_limit: s.read_buf_mem_limit as u32,
        }
    }
}

/// What applying one option gives: go on, or end the process as [`Exit`] says.
pub(super) type Outcome = Result<(), Exit>;

/// memcached's `main()` state while it walks the options.
pub(super) struct ParseState {
    /// The settings so far, for what has no C-typed copy in `c_ints`.
    pub(super) settings: Settings,
    pub(super) c_ints: CInts,
    pub(super) tuning: Tuning,
    /// What memcached has printed to stderr so far (warnings).
    pub(super) stderr: Vec<u8>,
    /// `settings.inter`: the `-l` values joined with commas.
    pub(super) listen_joined: Option<Vec<u8>>,
    /// Whether `-B`, `-p` and `-U` were given: the checks after the loop
    /// treat a default differently from the same value given explicitly.
    pub(super) protocol_specified: bool,
    pub(super) tcp_specified: bool,
    pub(super) udp_specified: bool,
    /// `-o slab_chunk_max` was given: `-I` and `no_modern` leave it alone.
    pub(super) slab_chunk_size_changed: bool,
    /// `-o slab_sizes` (or `worker_logbuf_size`, see there), parsed after
    /// the loop once `-n` and the chunk size are final.
    pub(super) slab_sizes_unparsed: Option<Vec<u8>>,
}

impl ParseState {
    pub(super) fn new() -> ParseState {
        let settings = Settings::default();
        ParseState {
            c_ints: CInts::from_settings(&settings),
            settings,
            tuning: Tuning::default(),
            stderr: Vec::new(),
            listen_joined: None,
            protocol_specified: false,
            tcp_specified: false,
            udp_specified: false,
            slab_chunk_size_changed: false,
            slab_sizes_unparsed: None,
        }
    }

    /// Ends the parse: everything printed so far plus `message`.
    pub(super) fn exit(&mut self, code: i32, message: impl AsRef<[u8]>) -> Exit {
        let mut stderr = std::mem::take(&mut self.stderr);
        stderr.extend_from_slice(message.as_ref());
        Exit {
            code,
            stdout: Vec::new(),
            stderr,
        }
    }

    pub(super) fn fail(&mut self, code: i32, message: impl AsRef<[u8]>) -> Outcome {
        Err(self.exit(code, message))
    }

    /// The value of a `-o key=value`, or memcached's "missing" message.
    pub(super) fn need<'v>(
        &mut self,
        value: Option<&'v [u8]>,
        missing: &str,
    ) -> Result<&'v [u8], Exit> {
        value.ok_or_else(|| self.exit(1, format!("{missing}\n")))
    }

    /// Ends the parse successfully with text on stdout (`-h`, `-V`, `-i`).
    pub(super) fn print_and_exit(&mut self, code: i32, stdout: Vec<u8>) -> Outcome {
        Err(Exit {
            code,
            stdout,
            stderr: std::mem::take(&mut self.stderr),
        })
    }
}

pub(super) fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

pub(super) fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
