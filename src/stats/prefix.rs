//! Per-prefix statistics (`-D`, `stats detail on|off|dump`).
//!
//! A key's prefix is what precedes the first delimiter; keys without one
//! are not counted. `stats detail dump` lists prefixes in the order of
//! memcached's own table -- 256 buckets chosen by MurmurHash3 of the
//! prefix, newest first within a bucket -- so the report matches it line
//! for line.

const BUCKETS: usize = 256;

#[derive(Clone, Debug, Default)]
struct Entry {
    prefix: Vec<u8>,
    gets: u64,
    hits: u64,
    sets: u64,
    deletes: u64,
}

#[derive(Clone, Debug, Default)]
pub(crate) struct PrefixStats {
    buckets: Vec<Vec<Entry>>,
}

impl PrefixStats {
    fn entry(&mut self, key: &[u8], delimiter: u8) -> Option<&mut Entry> {
        let end = key.iter().position(|&b| b == delimiter || b == 0)?;
        if key[end] == 0 {
            return None;
        }
        let prefix = &key[..end];
        if self.buckets.is_empty() {
            self.buckets = vec![Vec::new(); BUCKETS];
        }
        let bucket = &mut self.buckets[murmur3_32(prefix) as usize % BUCKETS];
        // Newest first, as memcached links new entries at the chain head.
        let i = match bucket.iter().position(|e| e.prefix == prefix) {
            Some(i) => i,
            None => {
                bucket.insert(
                    0,
                    Entry {
                        prefix: prefix.to_vec(),
                        ..Entry::default()
                    },
                );
                0
            }
        };
        Some(&mut bucket[i])
    }

    pub(crate) fn record_get(&mut self, key: &[u8], delimiter: u8, hit: bool) {
        if let Some(e) = self.entry(key, delimiter) {
            e.gets += 1;
            e.hits += hit as u64;
        }
    }

    pub(crate) fn record_set(&mut self, key: &[u8], delimiter: u8) {
        if let Some(e) = self.entry(key, delimiter) {
            e.sets += 1;
        }
    }

    pub(crate) fn record_delete(&mut self, key: &[u8], delimiter: u8) {
        if let Some(e) = self.entry(key, delimiter) {
            e.deletes += 1;
        }
    }

    /// The `stats detail dump` report.
    pub(crate) fn dump(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for e in self.buckets.iter().flatten() {
            out.extend_from_slice(b"PREFIX ");
            out.extend_from_slice(&e.prefix);
            let counts = format!(
                " get {} hit {} set {} del {}\r\n",
                e.gets, e.hits, e.sets, e.deletes
            );
            out.extend_from_slice(counts.as_bytes());
        }
        out.extend_from_slice(b"END\r\n");
        out
    }
}

/// MurmurHash3, x86 32-bit variant, seed 0 (memcached's default hash).
pub(crate) fn murmur3_32(data: &[u8]) -> u32 {
    const C1: u32 = 0xcc9e_2d51;
    const C2: u32 = 0x1b87_3593;
    let mix = |k: u32| k.wrapping_mul(C1).rotate_left(15).wrapping_mul(C2);
    let mut h: u32 = 0;
    let mut blocks = data.chunks_exact(4);
    for b in &mut blocks {
        h ^= mix(u32::from_le_bytes(b.try_into().unwrap()));
        h = h.rotate_left(13).wrapping_mul(5).wrapping_add(0xe654_6b64);
    }
    let tail = blocks.remainder();
    if !tail.is_empty() {
        let mut k = 0u32;
        for (i, &b) in tail.iter().enumerate() {
            k ^= (b as u32) << (8 * i);
        }
        h ^= mix(k);
    }
    h ^= data.len() as u32;
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur3_matches_reference_vectors() {
        assert_eq!(murmur3_32(b""), 0);
        assert_eq!(murmur3_32(b"hello"), 0x248b_fa47);
        assert_eq!(
            murmur3_32(b"The quick brown fox jumps over the lazy dog"),
            0x2e4f_f723
        );
    }

    #[test]
    fn counts_by_prefix_and_skips_keys_without_one() {
        let mut p = PrefixStats::default();
        p.record_set(b"user:1", b':');
        p.record_get(b"user:1", b':', true);
        p.record_get(b"user:2", b':', false);
        p.record_get(b"plain", b':', false);
        p.record_delete(b"user:1", b':');
        assert_eq!(p.dump(), b"PREFIX user get 2 hit 1 set 1 del 1\r\nEND\r\n");
    }
}
