//! The Prometheus text format (0.0.4): each family once, its `# HELP` and
//! `# TYPE` lines, then its samples, with label values and help texts
//! escaped as the format says.

use std::fmt::Write as _;

/// One metric family as the exporter declares it.
pub(crate) struct Desc {
    pub(crate) name: &'static str,
    pub(crate) help: &'static str,
    pub(crate) labels: &'static [&'static str],
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Kind {
    Counter,
    Gauge,
}

struct Family {
    desc: &'static Desc,
    kind: Kind,
    samples: String,
}

/// Families in the order their first sample came; a family without
/// samples is not written (as client_golang leaves it out).
#[derive(Default)]
pub(crate) struct Exposition {
    families: Vec<Family>,
}

impl Exposition {
    /// Adds one sample; `labels` are the values for `desc.labels`, in
    /// order.
    pub(crate) fn add(&mut self, desc: &'static Desc, kind: Kind, value: f64, labels: &[&str]) {
        debug_assert_eq!(labels.len(), desc.labels.len(), "{}", desc.name);
        let i = match self.families.iter().position(|f| f.desc.name == desc.name) {
            Some(i) => i,
            None => {
                self.families.push(Family {
                    desc,
                    kind,
                    samples: String::new(),
                });
                self.families.len() - 1
            }
        };
        let s = &mut self.families[i].samples;
        s.push_str(desc.name);
        if !labels.is_empty() {
            s.push('{');
            for (n, (name, value)) in desc.labels.iter().zip(labels).enumerate() {
                if n > 0 {
                    s.push(',');
                }
                let _ = write!(s, "{name}=\"{}\"", escape_label(value));
            }
            s.push('}');
        }
        s.push(' ');
        push_value(s, value);
        s.push('\n');
    }

    pub(crate) fn finish(self) -> String {
        let mut out =
            String::with_capacity(self.families.iter().map(|f| f.samples.len() + 200).sum());
        for f in self.families {
            let kind = match f.kind {
                Kind::Counter => "counter",
                Kind::Gauge => "gauge",
            };
            let name = f.desc.name;
            let _ = write!(
                out,
                "# HELP {name} {}\n# TYPE {name} {kind}\n",
                escape_help(f.desc.help)
            );
            out.push_str(&f.samples);
        }
        out
    }
}

/// Whole numbers as integers (exact up to 2^53, which every counter here
/// stays below for centuries); anything else as Rust's shortest float.
fn push_value(s: &mut String, v: f64) {
    if v.fract() == 0.0 && v.abs() < 9.007_199_254_740_992e15 {
        let _ = write!(s, "{}", v as i64);
    } else if v.is_nan() {
        s.push_str("NaN");
    } else if v.is_infinite() {
        s.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
    } else {
        let _ = write!(s, "{v}");
    }
}

/// A label value: backslash, double quote and newline escaped.
fn escape_label(v: &str) -> String {
    v.replace('\\', r"\\")
        .replace('"', "\\\"")
        .replace('\n', r"\n")
}

/// A help text: backslash and newline escaped.
fn escape_help(v: &str) -> String {
    v.replace('\\', r"\\").replace('\n', r"\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    static UP: Desc = Desc {
        name: "x_up",
        help: "Up.",
        labels: &[],
    };
    static CMD: Desc = Desc {
        name: "x_commands_total",
        help: "Back\\slash",
        labels: &["command", "status"],
    };

    #[test]
    fn families_are_grouped_and_escaped() {
        let mut e = Exposition::default();
        e.add(&CMD, Kind::Counter, 3.0, &["get", "hit"]);
        e.add(&UP, Kind::Gauge, 1.0, &[]);
        e.add(&CMD, Kind::Counter, 0.5, &["g\"e\nt", "miss"]);
        assert_eq!(
            e.finish(),
            "# HELP x_commands_total Back\\\\slash\n# TYPE x_commands_total counter\n\
             x_commands_total{command=\"get\",status=\"hit\"} 3\n\
             x_commands_total{command=\"g\\\"e\\nt\",status=\"miss\"} 0.5\n\
             # HELP x_up Up.\n# TYPE x_up gauge\nx_up 1\n"
        );
    }
}
