//! The table of slab class sizes.
//!
//! Computed exactly as memcached 1.6 computes it, so `stats slabs` and the
//! `-vv` start-up lines show the same chunk sizes for the same `-n`/`-f`:
//! start at memcached's item header (48 bytes) plus `-n`, round up to 8,
//! multiply by `-f`, and stop when the next step would reach the largest
//! chunk; the last class is exactly `slab_chunk_max`.

/// memcached's `sizeof(item)` on 64-bit builds; part of the size formula.
pub(crate) const MEMCACHED_ITEM_HEADER: usize = 48;
/// Class ids are kept in one byte; memcached uses the same limit.
pub(crate) const MAX_CLASSES: usize = 64;
const CHUNK_ALIGN: usize = 8;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ClassSize {
    pub(crate) size: usize,
    pub(crate) perslab: usize,
}

/// Sizes for classes `1..=largest`; index 0 is unused (class 0 means "none").
pub(crate) fn class_sizes(
    min_space: usize,
    factor: f64,
    page_size: usize,
    chunk_max: usize,
) -> Vec<ClassSize> {
    let mut classes = vec![ClassSize {
        size: 0,
        perslab: 0,
    }];
    let mut size = MEMCACHED_ITEM_HEADER + min_space;
    while classes.len() < MAX_CLASSES - 1 {
        if size as f64 >= chunk_max as f64 / factor {
            break;
        }
        if !size.is_multiple_of(CHUNK_ALIGN) {
            size += CHUNK_ALIGN - size % CHUNK_ALIGN;
        }
        classes.push(ClassSize {
            size,
            perslab: page_size / size,
        });
        // memcached multiplies an unsigned int by a double and truncates.
        size = (size as f64 * factor) as usize;
    }
    classes.push(ClassSize {
        size: chunk_max,
        perslab: page_size / chunk_max,
    });
    classes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_table_matches_memcached_1_6() {
        // From `memcached -vv` 1.6.18 with default options.
        let want = [
            96, 120, 152, 192, 240, 304, 384, 480, 600, 752, 944, 1184, 1480, 1856, 2320, 2904,
            3632, 4544, 5680, 7104, 8880, 11104, 13880, 17352, 21696, 27120, 33904, 42384, 52984,
            66232, 82792, 103496, 129376, 161720, 202152, 252696, 315872, 394840, 524288,
        ];
        let got = class_sizes(48, 1.25, 1 << 20, 512 * 1024);
        let sizes: Vec<usize> = got[1..].iter().map(|c| c.size).collect();
        assert_eq!(sizes, want);
        assert_eq!(got[1].perslab, 10922);
        assert_eq!(got[22].perslab, 94);
        assert_eq!(got[39].perslab, 2);
    }

    #[test]
    fn never_more_than_the_class_limit() {
        let got = class_sizes(8, 1.01, 1 << 20, 512 * 1024);
        assert_eq!(got.len(), MAX_CLASSES);
        assert_eq!(got.last().unwrap().size, 512 * 1024);
    }
}
