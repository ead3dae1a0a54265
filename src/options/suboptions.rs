//! `-o key=value,...`: memcached's extended options, split the way glibc's
//! `getsubopt` splits them, each validated with memcached's message, plus
//! this server's own (`repl_*`, `aof*`, `metrics_*`), and extstore's (`options/ext.rs`).
//! TLS keys are refused with a message saying this server is built
//! without them in a build without TLS.

use super::aof::{is_aof_key, set_aof};
use super::state::{Outcome, ParseState};
use crate::numbers::{atof, atoi, safe_strtol, safe_strtoul};
#[cfg(not(feature = "tls"))]
use crate::process::EX_USAGE;
use crate::settings::HashAlgorithm;

impl ParseState {
    /// `-o a,b=c,...`, split the way glibc's `getsubopt` splits it.
    pub(super) fn suboptions(&mut self, list: &[u8]) -> Outcome {
        let mut rest = list;
        while !rest.is_empty() {
            let end = rest.iter().position(|&b| b == b',').unwrap_or(rest.len());
            let token = &rest[..end];
            rest = rest.get(end + 1..).unwrap_or_default();
            let (key, value) = match token.iter().position(|&b| b == b'=') {
                Some(at) => (&token[..at], Some(&token[at + 1..])),
                None => (token, None),
            };
            self.suboption(token, key, value)?;
        }
        Ok(())
    }

    fn suboption(&mut self, token: &[u8], key: &[u8], value: Option<&[u8]>) -> Outcome {
        let key_text = std::str::from_utf8(key).unwrap_or("");
        match key_text {
            "maxconns_fast" => self.settings.maxconns_fast = true,
            "no_maxconns_fast" => self.settings.maxconns_fast = false,
            "hashpower" => return self.hashpower(value),
            "no_hashexpand" => self.settings.hash_expand = false,
            "slab_reassign" => self.settings.slab_reassign = true,
            "no_slab_reassign" => self.settings.slab_reassign = false,
            "slab_automove" => return self.slab_automove(value),
            "no_slab_automove" => self.c_ints.slab_automove = 0,
            "slab_automove_ratio" => return self.slab_automove_ratio(value),
            "slab_automove_window" => return self.slab_automove_window(value),
            "tail_repair_time" => return self.tail_repair_time(value),
            "hash_algorithm" => return self.hash_algorithm(value),
            "lru_crawler" => self.settings.lru_crawler = true,
            "no_lru_crawler" => self.settings.lru_crawler = false,
            "lru_crawler_sleep" => return self.lru_crawler_sleep(value),
            "lru_crawler_tocrawl" => return self.lru_crawler_tocrawl(value),
            "lru_maintainer" | "no_lru_maintainer" => {
                self.tuning.lru_maintainer = key_text == "lru_maintainer";
                self.tuning.lru_segmented = self.tuning.lru_maintainer;
            }
            "hot_lru_pct" | "warm_lru_pct" => return self.lru_pct(key_text, value),
            "hot_max_factor" | "warm_max_factor" => return self.max_factor(key_text, value),
            "temporary_ttl" => return self.temporary_ttl(value),
            "idle_timeout" => {
                let value = self.need(value, "Missing numeric argument for idle_timeout")?;
                self.c_ints.idle_timeout = atoi(value);
            }
            "watcher_logbuf_size" | "worker_logbuf_size" => return self.logbuf(key_text, value),
            "slab_sizes" => {
                let value = self.need(value, "Missing slab_sizes argument")?;
                self.slab_sizes_unparsed = Some(value.to_vec());
            }
            "slab_chunk_max" => return self.slab_chunk_max(value),
            "track_sizes" => self.settings.track_sizes = true,
            // Accepted no-ops in 1.6.18 too.
            "inline_ascii_resp" | "no_inline_ascii_resp" | "modern" => {}
            "no_chunked_items" => self.c_ints.slab_chunk_max = self.c_ints.slab_page_size,
            "no_modern" => self.no_modern(),
            // Only memcached's debug builds know it (it loosens their
            // seccomp filter for the tests); its test suite, t/lib/
            // MemcachedTest.pm, passes it to every server it starts. We
            // have no filter to loosen: accepted so that suite runs.
            "relaxed_privileges" => {}
            "drop_privileges" | "no_drop_privileges" => {
                self.tuning.drop_privileges = key_text == "drop_privileges";
            }
            "resp_obj_mem_limit" => self.stderr.extend_from_slice(
                b"DEPRECATED: resp_obj_mem_limit no longer used. See read_buf_mem_limit,\n",
            ),
            "read_buf_mem_limit" => return self.read_buf_mem_limit(value),
            "repl_peer" => {
                let value = self.need(value, "Missing repl_peer argument")?;
                return self.repl_peer(value);
            }
            "metrics_port" => {
                let value = self.need(value, "Missing metrics_port argument")?;
                return self.metrics_port(value);
            }
            "metrics_addr" => {
                let value = self.need(value, "Missing metrics_addr argument")?;
                self.settings.metrics.addr = Some(String::from_utf8_lossy(value).into_owned());
            }
            "repl_port" => {
                let value = self.need(value, "Missing repl_port argument")?;
                return self.repl_port(value);
            }
            #[cfg(feature = "tls")]
            "repl_tls" => self.settings.repl.tls = true,
            #[cfg(feature = "tls")]
            "repl_tls_name" => {
                let value = self.need(value, "Missing repl_tls_name argument")?;
                self.settings.repl.tls_name = Some(String::from_utf8_lossy(value).into_owned());
            }
            #[cfg(not(feature = "tls"))]
            "repl_tls" | "repl_tls_name" => {
                let message =
                    format!("This server is not built with TLS support (-o {key_text}).\n");
                return self.fail(EX_USAGE, message);
            }
            "sock_cookie_id" => {
                self.tuning.sock_cookie_id = value.and_then(safe_strtoul).unwrap_or(0);
            }
            _ if is_aof_key(key_text) => {
                if let Err(why) = set_aof(&mut self.settings.aof, key_text, value) {
                    return self.fail(1, format!("{why}\n"));
                }
            }
            #[cfg(feature = "tls")]
            _ if is_tls_key(key_text) => return self.tls_suboption(key_text, value),
            #[cfg(not(feature = "tls"))]
            _ if is_tls_key(key_text) => {
                let message =
                    format!("This server is not built with TLS support (-o {key_text}).\n");
                return self.fail(EX_USAGE, message);
            }
            _ if super::ext::is_ext_key(key_text) => return self.ext_option(key_text, value),
            _ => {
                let mut message = b"Illegal suboption \"".to_vec();
                message.extend_from_slice(token);
                message.extend_from_slice(b"\"\n");
                return self.fail(1, message);
            }
        }
        Ok(())
    }

    fn hashpower(&mut self, value: Option<&[u8]>) -> Outcome {
        let value = self.need(value, "Missing numeric argument for hashpower")?;
        let power = atoi(value);
        self.c_ints.hashpower = power;
        if power < 12 {
            return self.fail(
                1,
                format!("Initial hashtable multiplier of {power} is too low\n"),
            );
        }
        if power > 32 {
            let message = format!(
                "Initial hashtable multiplier of {power} is too high\n\
                 Choose a value based on \"STAT hash_power_level\" from a running instance\n"
            );
            return self.fail(1, message);
        }
        Ok(())
    }

    fn slab_automove(&mut self, value: Option<&[u8]>) -> Outcome {
        // A bare `slab_automove` means 1.
        self.c_ints.slab_automove = value.map_or(1, atoi);
        if !(0..=2).contains(&self.c_ints.slab_automove) {
            return self.fail(1, "slab_automove must be between 0 and 2\n");
        }
        Ok(())
    }

    fn slab_automove_ratio(&mut self, value: Option<&[u8]>) -> Outcome {
        let value = self.need(value, "Missing slab_automove_ratio argument")?;
        let ratio = atof(value);
        self.tuning.slab_automove_ratio = ratio;
        if ratio <= 0.0 || ratio > 1.0 {
            return self.fail(1, "slab_automove_ratio must be > 0 and < 1\n");
        }
        Ok(())
    }

    fn slab_automove_window(&mut self, value: Option<&[u8]>) -> Outcome {
        let value = self.need(value, "Missing slab_automove_window argument")?;
        self.tuning.slab_automove_window = atoi(value);
        if self.tuning.slab_automove_window < 3 {
            return self.fail(1, "slab_automove_window must be > 2\n");
        }
        Ok(())
    }

    fn tail_repair_time(&mut self, value: Option<&[u8]>) -> Outcome {
        let value = self.need(value, "Missing numeric argument for tail_repair_time")?;
        self.c_ints.tail_repair_time = atoi(value);
        if self.c_ints.tail_repair_time < 10 {
            return self.fail(1, "Cannot set tail_repair_time to less than 10 seconds\n");
        }
        Ok(())
    }

    fn hash_algorithm(&mut self, value: Option<&[u8]>) -> Outcome {
        let value = self.need(value, "Missing hash_algorithm argument")?;
        self.tuning.hash_algorithm = match value {
            b"jenkins" => HashAlgorithm::Jenkins,
            b"murmur3" => HashAlgorithm::Murmur3,
            b"xxh3" => HashAlgorithm::Xxh3,
            _ => {
                return self.fail(
                    1,
                    "Unknown hash_algorithm option (jenkins, murmur3, xxh3)\n",
                );
            }
        };
        Ok(())
    }

    fn lru_crawler_sleep(&mut self, value: Option<&[u8]>) -> Outcome {
        let value = self.need(value, "Missing lru_crawler_sleep value")?;
        self.c_ints.lru_crawler_sleep = atoi(value);
        if !(0..=1_000_000).contains(&self.c_ints.lru_crawler_sleep) {
            return self.fail(1, "LRU crawler sleep must be between 0 and 1 second\n");
        }
        Ok(())
    }

    fn lru_crawler_tocrawl(&mut self, value: Option<&[u8]>) -> Outcome {
        let value = self.need(value, "Missing lru_crawler_tocrawl value")?;
        match safe_strtoul(value) {
            Some(tocrawl) => self.c_ints.lru_crawler_tocrawl = tocrawl,
            None => return self.fail(1, "lru_crawler_tocrawl takes a numeric 32bit value\n"),
        }
        Ok(())
    }

    /// `hot_lru_pct` / `warm_lru_pct`.
    fn lru_pct(&mut self, key: &str, value: Option<&[u8]>) -> Outcome {
        let value = self.need(value, &format!("Missing {key} argument"))?;
        let pct = atoi(value);
        if key == "hot_lru_pct" {
            self.tuning.hot_lru_pct = pct;
        } else {
            self.tuning.warm_lru_pct = pct;
        }
        if !(1..80).contains(&pct) {
            return self.fail(1, format!("{key} must be > 1 and < 80\n"));
        }
        Ok(())
    }

    /// `hot_max_factor` / `warm_max_factor`.
    fn max_factor(&mut self, key: &str, value: Option<&[u8]>) -> Outcome {
        let value = self.need(value, &format!("Missing {key} argument"))?;
        let factor = atof(value);
        if key == "hot_max_factor" {
            self.tuning.hot_max_factor = factor;
        } else {
            self.tuning.warm_max_factor = factor;
        }
        if factor <= 0.0 {
            return self.fail(1, format!("{key} must be > 0\n"));
        }
        Ok(())
    }

    fn temporary_ttl(&mut self, value: Option<&[u8]>) -> Outcome {
        let value = self.need(value, "Missing temporary_ttl argument")?;
        self.tuning.temp_lru = true;
        self.tuning.temporary_ttl = atoi(value);
        Ok(())
    }

    /// `watcher_logbuf_size` / `worker_logbuf_size`, in kilobytes.
    fn logbuf(&mut self, key: &str, value: Option<&[u8]>) -> Outcome {
        let value = self.need(value, &format!("Missing {key} argument"))?;
        let Some(kilobytes) = safe_strtoul(value) else {
            return self.fail(1, format!("could not parse argument to {key}\n"));
        };
        let bytes = kilobytes.wrapping_mul(1024);
        if key == "watcher_logbuf_size" {
            self.tuning.watcher_logbuf_size = bytes;
        } else {
            self.tuning.worker_logbuf_size = bytes;
            // memcached 1.6.18 lacks a `break` here and falls through into
            // `slab_sizes`: the same value also becomes the slab size list.
            self.slab_sizes_unparsed = Some(value.to_vec());
        }
        Ok(())
    }

    /// In bytes, whatever the help text says; memcached carries on after a
    /// bad value and then crashes, so here the message ends the parse.
    fn slab_chunk_max(&mut self, value: Option<&[u8]>) -> Outcome {
        let value = self.need(value, "Missing slab_chunk_max argument")?;
        match safe_strtol(value) {
            Some(bytes) => self.c_ints.slab_chunk_max = bytes,
            None => return self.fail(1, "could not parse argument to slab_chunk_max\n"),
        }
        self.slab_chunk_size_changed = true;
        Ok(())
    }

    /// The 1.4-era defaults.
    fn no_modern(&mut self) {
        if !self.slab_chunk_size_changed {
            self.c_ints.slab_chunk_max = self.c_ints.slab_page_size;
        }
        self.settings.slab_reassign = false;
        self.c_ints.slab_automove = 0;
        self.settings.maxconns_fast = false;
        self.tuning.lru_segmented = false;
        self.tuning.hash_algorithm = HashAlgorithm::Jenkins;
        self.settings.lru_crawler = false;
        self.tuning.lru_maintainer = false;
    }

    fn read_buf_mem_limit(&mut self, value: Option<&[u8]>) -> Outcome {
        let value = self.need(value, "Missing read_buf_mem_limit argument")?;
        match safe_strtoul(value) {
            // Megabytes, multiplied in memcached's `uint32_t`.
            Some(mb) => self.c_ints.read_buf_mem_limit = mb.wrapping_mul(1024 * 1024),
            None => return self.fail(1, "could not parse argument to read_buf_mem_limit\n"),
        }
        Ok(())
    }
}

#[cfg(feature = "tls")]
impl ParseState {
    /// One `-o ssl_*` key, with memcached's messages (each exits 1).
    fn tls_suboption(&mut self, key: &str, value: Option<&[u8]>) -> Outcome {
        let missing = format!("Missing {key} argument");
        let unparsable = format!("could not parse argument to {key}\n");
        let text = |v: &[u8]| String::from_utf8_lossy(v).into_owned();
        match key {
            "ssl_session_cache" => self.settings.tls.session_cache = true,
            "ssl_kernel_tls" => self.settings.tls.kernel_tls = true,
            "ssl_chain_cert" => {
                self.settings.tls.chain_cert = Some(text(self.need(value, &missing)?))
            }
            "ssl_key" => self.settings.tls.key = Some(text(self.need(value, &missing)?)),
            "ssl_ciphers" => self.settings.tls.ciphers = Some(text(self.need(value, &missing)?)),
            "ssl_ca_cert" => self.settings.tls.ca_cert = Some(text(self.need(value, &missing)?)),
            "ssl_keyformat" => match safe_strtol(self.need(value, &missing)?) {
                Some(format) => self.settings.tls.keyformat = format,
                None => return self.fail(1, unparsable),
            },
            "ssl_wbuf_size" => match safe_strtoul(self.need(value, &missing)?) {
                Some(kb) => self.settings.tls.wbuf_size = kb.wrapping_mul(1024),
                None => return self.fail(1, unparsable),
            },
            "ssl_verify_mode" => {
                // OpenSSL's SSL_VERIFY_PEER, | FAIL_IF_NO_PEER_CERT, | CLIENT_ONCE.
                let mode = match safe_strtol(self.need(value, &missing)?) {
                    None => return self.fail(1, unparsable),
                    Some(level @ 0..=3) => [0, 1, 3, 7][level as usize],
                    Some(_) => {
                        let message = "Invalid ssl_verify_mode. Use help to see valid options.\n";
                        return self.fail(1, message);
                    }
                };
                self.settings.tls.verify_mode = mode;
            }
            _ => {
                // ssl_min_version
                let version = match safe_strtol(self.need(value, &missing)?) {
                    None => return self.fail(1, unparsable),
                    Some(v @ 0..=3) => crate::settings::TLS1_VERSION + v,
                    Some(_) => {
                        let message = "Invalid ssl_min_version. Use help to see valid options.\n";
                        return self.fail(1, message);
                    }
                };
                self.settings.tls.min_version = version;
            }
        }
        Ok(())
    }
}

fn is_tls_key(key: &str) -> bool {
    matches!(
        key,
        "ssl_chain_cert"
            | "ssl_key"
            | "ssl_verify_mode"
            | "ssl_keyformat"
            | "ssl_ciphers"
            | "ssl_ca_cert"
            | "ssl_wbuf_size"
            | "ssl_session_cache"
            | "ssl_kernel_tls"
            | "ssl_min_version"
    )
}
