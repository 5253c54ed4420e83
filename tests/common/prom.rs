//! A strict reader of the Prometheus text format, for tests that scrape `/metrics`.

use std::collections::{BTreeMap, HashMap};

#[derive(Debug, Default)]
pub struct Scrape {
    pub types: HashMap<String, String>,
    pub helps: HashMap<String, String>,
    pub samples: Vec<(String, BTreeMap<String, String>, f64)>,
}

fn valid_name(name: &str) -> bool {
    let mut c = name.chars();
    c.next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && c.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn parse_labels(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut chars = text.chars().peekable();
    loop {
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() {
            break;
        }
        assert!(valid_name(&key), "label name {key:?}");
        assert_eq!(chars.next(), Some('"'), "label {key} value must be quoted");
        let mut value = String::new();
        loop {
            match chars.next().expect("closing quote") {
                '\\' => match chars.next().expect("escaped char") {
                    'n' => value.push('\n'),
                    c @ ('\\' | '"') => value.push(c),
                    c => panic!("bad escape \\{c}"),
                },
                '"' => break,
                c => value.push(c),
            }
        }
        out.insert(key, value);
        match chars.next() {
            Some(',') => continue,
            None => break,
            Some(c) => panic!("unexpected {c:?} after a label"),
        }
    }
    out
}

fn family_of<'a>(name: &'a str, types: &HashMap<String, String>) -> &'a str {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix) {
            if types.get(base).map(String::as_str) == Some("histogram") {
                return base;
            }
        }
    }
    name
}

/// Parses and checks the text: HELP and TYPE once per family, before its samples;
/// valid names; counters end in `_total`; values are numbers.
pub fn parse(text: &str) -> Scrape {
    let mut s = Scrape::default();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').expect("help text");
            assert!(
                s.helps.insert(name.into(), help.into()).is_none(),
                "HELP {name} twice"
            );
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("type");
            assert!(valid_name(name), "metric name {name:?}");
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                "{kind}"
            );
            assert!(s.helps.contains_key(name), "HELP before TYPE for {name}");
            if kind == "counter" {
                assert!(
                    name.ends_with("_total"),
                    "counter {name} must end in _total"
                );
            } else {
                assert!(
                    !name.ends_with("_total"),
                    "{kind} {name} must not end in _total"
                );
            }
            assert!(
                s.types.insert(name.into(), kind.into()).is_none(),
                "TYPE {name} twice"
            );
        } else if line.is_empty() || line.starts_with('#') {
            continue;
        } else {
            let (series, value) = line.rsplit_once(' ').expect("sample value");
            let (name, labels) = match series.split_once('{') {
                Some((n, l)) => (n, parse_labels(l.strip_suffix('}').expect("closing brace"))),
                None => (series, BTreeMap::new()),
            };
            assert!(valid_name(name), "sample name {name:?}");
            let family = family_of(name, &s.types);
            assert!(s.types.contains_key(family), "sample {name} without TYPE");
            let v = match value {
                "NaN" => f64::NAN,
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                v => v
                    .parse()
                    .unwrap_or_else(|_| panic!("value {v:?} in {line}")),
            };
            s.samples.push((name.to_string(), labels, v));
        }
    }
    s
}

impl Scrape {
    /// The first sample of `name` whose labels include `labels`.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples
            .iter()
            .find(|(n, l, _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|(_, _, v)| *v)
    }

    pub fn kind(&self, name: &str) -> Option<&str> {
        self.types.get(name).map(String::as_str)
    }

    /// Every sample of `name`.
    pub fn all(&self, name: &str) -> Vec<&(String, BTreeMap<String, String>, f64)> {
        self.samples.iter().filter(|(n, _, _)| n == name).collect()
    }
}
