//! What memcached checks after its option loop, in its order (the first
//! failing check's message is the one printed), and the hand-over of the
//! checked C values to [`Settings`].

use super::Parsed;
use super::state::{Outcome, ParseState, lossy};
use crate::numbers::safe_strtoul;
use crate::process::{EX_USAGE, Exit};
use crate::settings::{Protocol, Settings};

/// memcached's `ITEM_SIZE_MAX_LOWER_LIMIT` and `_UPPER_LIMIT`.
pub(super) const ITEM_SIZE_MAX_LOWER_LIMIT: i32 = 1024;
pub(super) const ITEM_SIZE_MAX_UPPER_LIMIT: i32 = 1024 * 1024 * 1024;
/// memcached's `CHUNK_ALIGN_BYTES` and `MAX_NUMBER_OF_SLAB_CLASSES`, which
/// bound a custom `-o slab_sizes` list.
const CHUNK_ALIGN_BYTES: u32 = 8;
const MAX_NUMBER_OF_SLAB_CLASSES: usize = 63 + 1;

impl ParseState {
    /// The checks memcached makes after the option loop, in its order.
    pub(super) fn finish(mut self) -> Result<Parsed, Exit> {
        self.check_napi()?;
        self.check_item_size()?;
        self.check_slab_chunk_max()?;
        self.check_ext()?;
        self.parse_slab_sizes()?;
        self.check_lru()?;
        self.check_auth()?;
        self.check_port()?;
        self.check_tls()?;
        let mut settings = self.to_settings();
        settings.tuning = self.tuning;
        Ok(Parsed {
            settings,
            warnings: self.stderr,
        })
    }

    /// memcached's first TLS step, before it loads the certificates
    /// (`tls::Server::start`): TLS needs a TCP port.
    fn check_tls(&mut self) -> Outcome {
        if self.settings.tls.enabled && self.c_ints.port == 0 {
            return self.fail(
                EX_USAGE,
                "ERROR: You cannot enable SSL without a TCP port.\n",
            );
        }
        self.check_repl_tls()
    }

    /// `-o repl_tls` (ours): a link with nothing to replicate, or with no
    /// certificate to show or to check the peer's against, is refused
    /// rather than left to fail at the first handshake.
    fn check_repl_tls(&mut self) -> Outcome {
        let repl = &self.settings.repl;
        if !repl.tls && repl.tls_name.is_none() {
            return Ok(());
        }
        if !repl.tls {
            return self.fail(EX_USAGE, "repl_tls_name is given without repl_tls\n");
        }
        if !repl.enabled() {
            let message = "repl_tls needs replication: -x <peer> or a replication port\n";
            return self.fail(EX_USAGE, message);
        }
        let tls = &self.settings.tls;
        if tls.chain_cert.is_none() || tls.key.is_none() || tls.ca_cert.is_none() {
            let message = "repl_tls needs ssl_chain_cert, ssl_key and ssl_ca_cert \
                           (the peer's certificate is checked against ssl_ca_cert)\n";
            return self.fail(EX_USAGE, message);
        }
        Ok(())
    }

    fn check_napi(&mut self) -> Outcome {
        let (napi, threads) = (self.tuning.napi_ids, self.c_ints.num_threads);
        if napi > threads {
            let message = format!(
                "Number of napi_ids({napi}) cannot be greater than number of threads({threads})\n"
            );
            return self.fail(EX_USAGE, message);
        }
        Ok(())
    }

    fn check_item_size(&mut self) -> Outcome {
        let item = self.c_ints.item_size_max;
        if item < ITEM_SIZE_MAX_LOWER_LIMIT {
            return self.fail(EX_USAGE, "Item max size cannot be less than 1024 bytes.\n");
        }
        if item as usize > self.settings.max_bytes / 2 {
            let message = "Cannot set item size limit higher than 1/2 of memory max.\n";
            return self.fail(EX_USAGE, message);
        }
        if item > ITEM_SIZE_MAX_UPPER_LIMIT {
            return self.fail(
                EX_USAGE,
                "Cannot set item size limit higher than a gigabyte.\n",
            );
        }
        if item > 1024 * 1024 && !self.slab_chunk_size_changed {
            // memcached: "Ideal new default is 16k, but needs stitching."
            self.c_ints.slab_chunk_max = self.c_ints.slab_page_size / 2;
        }
        Ok(())
    }

    fn check_slab_chunk_max(&mut self) -> Outcome {
        let (chunk, item, page) = (
            self.c_ints.slab_chunk_max,
            self.c_ints.item_size_max,
            self.c_ints.slab_page_size,
        );
        if chunk > item {
            let message = format!(
                "slab_chunk_max (bytes: {chunk}) cannot be larger than -I (item_size_max {item})\n"
            );
            return self.fail(EX_USAGE, message);
        }
        // memcached divides by zero here; refuse instead.
        if chunk == 0 {
            return self.fail(
                EX_USAGE,
                "slab_chunk_max (bytes: 0) must be greater than 0\n",
            );
        }
        // `wrapping_rem` is C's `%` (the sign follows the dividend).
        if item.wrapping_rem(chunk) != 0 {
            let message = format!(
                "-I (item_size_max: {item}) must be evenly divisible by slab_chunk_max (bytes: {chunk})\n"
            );
            return self.fail(EX_USAGE, message);
        }
        if page.wrapping_rem(chunk) != 0 {
            let message = format!(
                "slab_chunk_max (bytes: {chunk}) must divide evenly into {page} (slab_page_size)\n"
            );
            return self.fail(EX_USAGE, message);
        }
        // Negative powers of two pass memcached's checks and then break
        // its slab allocator; refuse them.
        if chunk < 0 {
            return self.fail(
                EX_USAGE,
                format!("slab_chunk_max (bytes: {chunk}) must be greater than 0\n"),
            );
        }
        Ok(())
    }

    /// memcached's `_parse_slab_sizes`: increasing sizes separated by `-`.
    fn parse_slab_sizes(&mut self) -> Outcome {
        let Some(list) = self.slab_sizes_unparsed.take() else {
            return Ok(());
        };
        if list.is_empty() {
            return self.fail(EX_USAGE, ""); // memcached exits without a word
        }
        // memcached compares these `int`s with a `uint32_t` size, so C's
        // conversions make a negative -n reject every size.
        let min = self.c_ints.chunk_size as u32;
        let max = self.c_ints.slab_chunk_max as u32;
        let mut sizes: Vec<u32> = Vec::new();
        for part in list.split(|&b| b == b'-').filter(|p| !p.is_empty()) {
            let last = sizes.last().copied().unwrap_or(0);
            let size = match safe_strtoul(part) {
                Some(size) if (min..=max).contains(&size) => size,
                // memcached's out-parameter is 0 after a failed parse.
                parsed => {
                    let size = parsed.unwrap_or(0);
                    return self.fail(
                        EX_USAGE,
                        format!("slab size {size} is out of valid range\n"),
                    );
                }
            };
            if last >= size {
                let message = format!(
                    "slab size {size} cannot be lower than or equal to a previous class size\n"
                );
                return self.fail(EX_USAGE, message);
            }
            if size <= last.wrapping_add(CHUNK_ALIGN_BYTES) {
                let message = format!(
                    "slab size {size} must be at least {CHUNK_ALIGN_BYTES} bytes larger than previous class\n"
                );
                return self.fail(EX_USAGE, message);
            }
            sizes.push(size);
            if sizes.len() >= MAX_NUMBER_OF_SLAB_CLASSES - 1 {
                return self.fail(EX_USAGE, "too many slab classes specified\n");
            }
        }
        self.tuning.slab_sizes = Some(sizes);
        self.settings.slab_config = String::from_utf8_lossy(&list).into_owned();
        Ok(())
    }

    fn check_lru(&mut self) -> Outcome {
        if self.tuning.hot_lru_pct + self.tuning.warm_lru_pct > 80 {
            let message = "hot_lru_pct + warm_lru_pct cannot be more than 80% combined\n";
            return self.fail(EX_USAGE, message);
        }
        if self.tuning.temp_lru && !self.tuning.lru_maintainer {
            return self.fail(
                EX_USAGE,
                "temporary_ttl requires lru_maintainer to be enabled\n",
            );
        }
        Ok(())
    }

    /// SASL forces the binary protocol and ascii auth the ascii one, unless
    /// `-B` said otherwise (then it is an error).
    fn check_auth(&mut self) -> Outcome {
        if self.settings.sasl {
            if !self.protocol_specified {
                self.settings.protocol = Protocol::Binary;
            } else if self.settings.protocol != Protocol::Binary {
                let message = "ERROR: You cannot allow the ASCII protocol while using SASL.\n";
                return self.fail(EX_USAGE, message);
            }
            if self.c_ints.udp_port != 0 {
                let message = "ERROR: Cannot enable UDP while using binary SASL authentication.\n";
                return self.fail(EX_USAGE, message);
            }
        }
        if self.settings.auth_file.is_some() {
            if !self.protocol_specified {
                self.settings.protocol = Protocol::Ascii;
            } else if self.settings.protocol != Protocol::Ascii {
                let message = "ERROR: You cannot allow the BINARY protocol while using ascii \
                               authentication tokens.\n";
                return self.fail(EX_USAGE, message);
            }
        }
        Ok(())
    }

    /// `-U` alone also moves the TCP port; only the TCP port is range-checked.
    fn check_port(&mut self) -> Outcome {
        if self.udp_specified && self.c_ints.udp_port != 0 && !self.tcp_specified {
            self.c_ints.port = self.c_ints.udp_port;
        }
        if self.c_ints.port > 65535 {
            return self.fail(
                EX_USAGE,
                format!("ERROR: Invalid port number {}.\n", self.c_ints.port),
            );
        }
        Ok(())
    }

    /// The validated C values, in `Settings`' types. Out-of-range values
    /// memcached lets through map onto what memcached does with them: ports
    /// stay as given (the listener maps them as memcached's `bind` does), negative counts become their floor.
    fn to_settings(&self) -> Settings {
        let ints = &self.c_ints;
        let mut settings = self.settings.clone();
        settings.port = ints.port;
        settings.udp_port = ints.udp_port;
        settings.access_mask = ints.access as u32;
        settings.max_conns = ints.max_conns as usize;
        settings.chunk_size = ints.chunk_size.max(0) as usize;
        settings.num_threads = ints.num_threads as usize;
        // memcached livelocks on a negative value; one request per event is
        // the nearest sane reading.
        settings.reqs_per_event = ints.reqs_per_event.max(1) as usize;
        settings.item_size_max = ints.item_size_max as usize;
        settings.slab_chunk_size_max = ints.slab_chunk_max as usize;
        settings.hashpower_init = ints.hashpower as u32;
        settings.tail_repair_time = ints.tail_repair_time as u32;
        settings.lru_crawler_sleep = ints.lru_crawler_sleep as u32;
        settings.lru_crawler_tocrawl = ints.lru_crawler_tocrawl;
        settings.slab_automove = ints.slab_automove as u8;
        // memcached subtracts it from an unsigned clock, so wrapping keeps
        // its arithmetic.
        settings.idle_timeout = ints.idle_timeout as u32;
        settings.read_buf_mem_limit = ints.read_buf_mem_limit as usize;
        settings.listen = self.listen_list();
        settings
    }

    /// memcached later splits `inter` on `;` and `,`, skipping empties.
    fn listen_list(&self) -> Vec<String> {
        let Some(joined) = &self.listen_joined else {
            return Vec::new();
        };
        joined
            .split(|&b| b == b',' || b == b';')
            .filter(|part| !part.is_empty())
            .map(lossy)
            .collect()
    }
}
