//! glibc's `getopt_long`, reproduced because memcached's messages depend on
//! its exact behaviour: long options abbreviated to any unique prefix, its
//! own error texts ("invalid option -- 'q'", "option '--ver' is ambiguous;
//! possibilities: ..."), and reporting each problem when it reaches it, so
//! that an earlier option's error wins. Nothing here knows memcached's
//! options; they come in an [`OptionTable`].

/// Whether an option takes an argument (glibc's `no_argument`,
/// `required_argument`, `optional_argument`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum HasArg {
    No,
    Required,
    Optional,
}

/// One entry of `longopts`.
pub(super) struct LongOpt {
    pub(super) name: &'static str,
    pub(super) has_arg: HasArg,
    /// What getopt returns for it (a short option letter, or a code of
    /// its own for a long option without one).
    pub(super) val: u8,
    /// Whether a unique prefix selects it; glibc abbreviates every long
    /// option, this server's own ones opt out (see `table.rs`).
    pub(super) abbreviable: bool,
}

pub(super) const fn long(name: &'static str, has_arg: HasArg, val: u8) -> LongOpt {
    LongOpt {
        name,
        has_arg,
        val,
        abbreviable: true,
    }
}

impl LongOpt {
    /// Only the full name selects it.
    pub(super) const fn never_abbreviated(self) -> LongOpt {
        LongOpt {
            abbreviable: false,
            ..self
        }
    }
}

/// What a program hands to `getopt_long`.
pub(super) struct OptionTable {
    /// `optstring`: the short option letters, each followed by `:` when it
    /// takes an argument.
    pub(super) short: &'static [u8],
    /// `longopts`, in order (the order of getopt's "possibilities" list for
    /// an ambiguous abbreviation).
    pub(super) long: &'static [LongOpt],
}

impl OptionTable {
    /// Whether `c` is a short option, and if so whether it takes an
    /// argument. `:` is never an option letter, as in glibc.
    fn short_opt(&self, c: u8) -> Option<HasArg> {
        if c == b':' {
            return None;
        }
        let at = self.short.iter().position(|&b| b == c)?;
        match self.short.get(at + 1) {
            Some(b':') => Some(HasArg::Required),
            _ => Some(HasArg::No),
        }
    }

    /// An exact match, else the one option `name` abbreviates; on failure
    /// the options it could abbreviate (none, or several: ambiguous).
    fn find_long(&self, name: &[u8]) -> Result<&LongOpt, Vec<&LongOpt>> {
        if let Some(opt) = self.long.iter().find(|o| o.name.as_bytes() == name) {
            return Ok(opt);
        }
        let candidates: Vec<&LongOpt> = self
            .long
            .iter()
            .filter(|o| o.abbreviable && o.name.as_bytes().starts_with(name))
            .collect();
        match candidates.as_slice() {
            [one] => Ok(one),
            _ => Err(candidates),
        }
    }
}

/// What getopt returns: an option with its argument, or the text of
/// getopt's own complaint (after the program name) for which memcached
/// then prints `Illegal argument "?"`.
#[derive(Debug, PartialEq)]
pub(super) enum Step<'a> {
    Opt(u8, Option<&'a [u8]>),
    Bad(Vec<u8>),
}

/// glibc's `getopt_long` in its default (permuting) mode: non-options are
/// skipped, `--` ends the options, short options cluster, long options may
/// be abbreviated to any unambiguous prefix.
pub(super) struct GetoptLong<'a, 'b> {
    table: &'b OptionTable,
    argv: &'b [&'a [u8]],
    /// Next element of `argv` to look at (C's `optind`).
    optind: usize,
    /// Inside a cluster of short options: the element and the byte offset.
    cluster: Option<(usize, usize)>,
    /// The last step was a short option without an argument that ended
    /// its element (`-X`, or the `X` of `-vX`): see `number_after_flag`.
    flag_ended_element: bool,
}

impl<'a, 'b> GetoptLong<'a, 'b> {
    /// `argv` with the program name first, as `main` receives it.
    pub(super) fn new(table: &'b OptionTable, argv: &'b [&'a [u8]]) -> Self {
        GetoptLong {
            table,
            argv,
            optind: 1,
            cluster: None,
            flag_ended_element: false,
        }
    }

    /// Not glibc's: when the option just returned was a short flag (no
    /// argument) at the end of its element and the next element is a
    /// number (ASCII digits only), consumes that element and returns it.
    /// getopt itself would skip such an element as a non-option, which
    /// memcached ignores, so taking it changes nothing for any command line
    /// without a number there. This is how repcached's `-X <port>` is told
    /// from memcached's bare `-X` (see `parse_args`).
    pub(super) fn number_after_flag(&mut self) -> Option<&'a [u8]> {
        if !self.flag_ended_element {
            return None;
        }
        let next = *self.argv.get(self.optind)?;
        if next.is_empty() || !next.iter().all(u8::is_ascii_digit) {
            return None;
        }
        self.optind += 1;
        self.flag_ended_element = false;
        Some(next)
    }

    /// The next option, or `None` when there are no more.
    pub(super) fn next_step(&mut self) -> Option<Step<'a>> {
        self.flag_ended_element = false;
        if self.cluster.is_some() {
            return Some(self.short_step());
        }
        loop {
            let arg = *self.argv.get(self.optind)?;
            if arg == b"--" {
                self.optind = self.argv.len();
                return None;
            }
            self.optind += 1;
            if let Some(body) = arg.strip_prefix(b"--") {
                return Some(self.long_step(body));
            }
            if arg.len() > 1 && arg[0] == b'-' {
                self.cluster = Some((self.optind - 1, 1));
                return Some(self.short_step());
            }
        }
    }

    /// The next argument element, consumed as an option's value.
    fn take_next(&mut self) -> Option<&'a [u8]> {
        let arg = *self.argv.get(self.optind)?;
        self.optind += 1;
        Some(arg)
    }

    fn short_step(&mut self) -> Step<'a> {
        let (index, offset) = self.cluster.take().expect("inside a cluster");
        let arg = self.argv[index];
        let c = arg[offset];
        let rest = &arg[offset + 1..];
        if !rest.is_empty() {
            self.cluster = Some((index, offset + 1));
        }
        match self.table.short_opt(c) {
            None => Step::Bad(getopt_message(b": invalid option -- '", &[c], b"'\n")),
            Some(HasArg::Required) if !rest.is_empty() => {
                self.cluster = None;
                Step::Opt(c, Some(rest))
            }
            Some(HasArg::Required) => match self.take_next() {
                Some(value) => Step::Opt(c, Some(value)),
                None => Step::Bad(getopt_message(
                    b": option requires an argument -- '",
                    &[c],
                    b"'\n",
                )),
            },
            Some(_) => {
                self.flag_ended_element = rest.is_empty();
                Step::Opt(c, None)
            }
        }
    }

    /// `body` is the element after its leading `--`.
    fn long_step(&mut self, body: &'a [u8]) -> Step<'a> {
        let eq = body.iter().position(|&b| b == b'=');
        let (name, value) = match eq {
            Some(at) => (&body[..at], Some(&body[at + 1..])),
            None => (body, None),
        };
        let (opt_name, has_arg, val) = match self.table.find_long(name) {
            Ok(opt) => (opt.name, opt.has_arg, opt.val),
            Err(candidates) if candidates.is_empty() => {
                return Step::Bad(getopt_message(b": unrecognized option '--", body, b"'\n"));
            }
            Err(candidates) => return Step::Bad(ambiguous(body, &candidates)),
        };
        let quoted = |text: &[u8]| getopt_message(b": option '--", opt_name.as_bytes(), text);
        match (value, has_arg) {
            (Some(_), HasArg::No) => Step::Bad(quoted(b"' doesn't allow an argument\n")),
            (Some(value), _) => Step::Opt(val, Some(value)),
            (None, HasArg::Required) => match self.take_next() {
                Some(value) => Step::Opt(val, Some(value)),
                None => Step::Bad(quoted(b"' requires an argument\n")),
            },
            (None, _) => Step::Opt(val, None),
        }
    }
}

fn ambiguous(body: &[u8], candidates: &[&LongOpt]) -> Vec<u8> {
    let mut message = getopt_message(b": option '--", body, b"' is ambiguous; possibilities:");
    for opt in candidates {
        message.extend_from_slice(b" '--");
        message.extend_from_slice(opt.name.as_bytes());
        message.push(b'\'');
    }
    message.push(b'\n');
    message
}

fn getopt_message(before: &[u8], middle: &[u8], after: &[u8]) -> Vec<u8> {
    [before, middle, after].concat()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: OptionTable = OptionTable {
        short: b"ab:",
        long: &[
            long("alpha", HasArg::No, b'a'),
            long("alps", HasArg::Required, b'p'),
            long("beta", HasArg::Optional, b'b').never_abbreviated(),
        ],
    };

    /// Each step as text: `c=value`, `c`, or getopt's complaint.
    fn steps(args: &[&str]) -> Vec<String> {
        let argv: Vec<&[u8]> = std::iter::once("prog")
            .chain(args.iter().copied())
            .map(str::as_bytes)
            .collect();
        let mut getopt = GetoptLong::new(&TABLE, &argv);
        std::iter::from_fn(|| getopt.next_step())
            .map(|step| match step {
                Step::Opt(c, Some(v)) => format!("{}={}", c as char, String::from_utf8_lossy(v)),
                Step::Opt(c, None) => (c as char).to_string(),
                Step::Bad(text) => String::from_utf8_lossy(&text).into_owned(),
            })
            .collect()
    }

    #[test]
    fn short_options_cluster_and_take_values() {
        assert_eq!(
            steps(&["-ab1", "x", "-b", "-a", "--", "-a"]),
            ["a", "b=1", "b=-a"]
        );
        assert_eq!(steps(&["-:"]), [": invalid option -- ':'\n"]);
        assert_eq!(steps(&["-b"]), [": option requires an argument -- 'b'\n"]);
    }

    #[test]
    fn a_number_after_a_flag_is_taken_only_when_asked_and_only_after_a_flag() {
        let argv: Vec<&[u8]> = vec![b"prog", b"-a", b"12", b"-aa", b"7", b"--alpha", b"8", b"-a"];
        let mut g = GetoptLong::new(&TABLE, &argv);
        assert_eq!(g.next_step(), Some(Step::Opt(b'a', None)));
        assert_eq!(g.number_after_flag(), Some(&b"12"[..]));
        assert_eq!(g.number_after_flag(), None);
        // Inside a cluster, only its last flag ends the element.
        assert_eq!(g.next_step(), Some(Step::Opt(b'a', None)));
        assert_eq!(g.number_after_flag(), None);
        assert_eq!(g.next_step(), Some(Step::Opt(b'a', None)));
        assert_eq!(g.number_after_flag(), Some(&b"7"[..]));
        // A long option never takes one.
        assert_eq!(g.next_step(), Some(Step::Opt(b'a', None)));
        assert_eq!(g.number_after_flag(), None);
        // Not asked: getopt skips the non-option as glibc does.
        assert_eq!(g.next_step(), Some(Step::Opt(b'a', None)));
        assert_eq!(g.number_after_flag(), None);
        assert_eq!(g.next_step(), None);
        let argv: Vec<&[u8]> = vec![b"prog", b"-a", b"12x", b"-a", b"-b", b"1"];
        let mut g = GetoptLong::new(&TABLE, &argv);
        assert_eq!(g.next_step(), Some(Step::Opt(b'a', None)));
        assert_eq!(g.number_after_flag(), None);
        assert_eq!(g.next_step(), Some(Step::Opt(b'a', None)));
        assert_eq!(g.number_after_flag(), None);
    }

    #[test]
    fn long_options_abbreviate_unless_told_not_to() {
        assert_eq!(
            steps(&["--alph", "--alps=3", "--alps", "4", "--beta", "--beta=x"]),
            ["a", "p=3", "p=4", "b", "b=x"]
        );
        assert_eq!(
            steps(&["--al"]),
            [": option '--al' is ambiguous; possibilities: '--alpha' '--alps'\n"]
        );
        assert_eq!(steps(&["--be"]), [": unrecognized option '--be'\n"]);
        assert_eq!(
            steps(&["--alpha=1"]),
            [": option '--alpha' doesn't allow an argument\n"]
        );
        assert_eq!(
            steps(&["--alps"]),
            [": option '--alps' requires an argument\n"]
        );
    }
}
