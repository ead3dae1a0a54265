//! memcached's ascii tokenizer: words separated by single spaces (tabs and
//! other white space are part of a word), at most 23 words, the rest of the
//! line left as one remainder. Counts include memcached's empty terminal
//! token, so `ntokens()` compares directly with the numbers in its source
//! (`set k 0 0 1` is 6 tokens).

pub(super) const MAX_TOKENS: usize = 24;

pub(super) struct Tokens<'a> {
    words: [&'a [u8]; MAX_TOKENS],
    n: usize,
    /// Unsplit text after the last word when the line had too many.
    pub(crate) rest: Option<&'a [u8]>,
}

impl<'a> Tokens<'a> {
    pub(super) fn new(line: &'a [u8]) -> Tokens<'a> {
        let mut t = Tokens {
            words: [&[]; MAX_TOKENS],
            n: 0,
            rest: None,
        };
        let mut start = 0;
        let mut i = 0;
        while i < line.len() {
            if line[i] == b' ' {
                if start != i {
                    t.words[t.n] = &line[start..i];
                    t.n += 1;
                    if t.n == MAX_TOKENS - 1 {
                        let after = &line[i + 1..];
                        t.rest = (!after.is_empty()).then_some(after);
                        return t;
                    }
                }
                start = i + 1;
            }
            i += 1;
        }
        if start != i {
            t.words[t.n] = &line[start..i];
            t.n += 1;
        }
        t
    }

    /// memcached's `ntokens`: words plus the terminal token.
    pub(super) fn ntokens(&self) -> usize {
        self.n + 1
    }

    pub(super) fn len(&self) -> usize {
        self.n
    }

    /// Word `i`, or empty past the end (memcached's terminal token).
    pub(super) fn get(&self, i: usize) -> &'a [u8] {
        if i < self.n { self.words[i] } else { &[] }
    }

    /// The last word, where memcached looks for `noreply`.
    pub(super) fn last(&self) -> &'a [u8] {
        if self.n == 0 {
            &[]
        } else {
            self.words[self.n - 1]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_on_single_spaces_only() {
        let t = Tokens::new(b"  set k\t 0  0 1 ");
        assert_eq!(t.ntokens(), 6);
        assert_eq!(t.get(0), b"set");
        assert_eq!(t.get(1), b"k\t");
        assert_eq!(t.get(4), b"1");
        assert_eq!(t.get(5), b"");
        assert!(t.rest.is_none());
    }

    #[test]
    fn stops_at_23_words() {
        let line: Vec<u8> = (0..30).map(|i| format!("k{i} ")).collect::<String>().into();
        let t = Tokens::new(&line);
        assert_eq!(t.ntokens(), 24);
        assert_eq!(t.get(22), b"k22");
        assert_eq!(t.rest.unwrap(), b"k23 k24 k25 k26 k27 k28 k29 ");
    }
}
