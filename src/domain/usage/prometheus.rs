//! The Prometheus text exposition format (version 0.0.4): `# HELP` and `# TYPE` once per
//! metric family, then its samples with escaped label values.

use std::fmt::Write;

/// The content type of the exposition.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// Whether `name` is a valid metric or label name (`[a-zA-Z_:][a-zA-Z0-9_:]*`; label
/// names may not contain `:`, which virtdeck never uses).
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// A label value with `\`, `"` and newlines escaped.
pub fn escape_label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

fn escape_help(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\n', "\\n")
}

/// A sample value: whole numbers without a fraction, `NaN`, `+Inf`, `-Inf`.
pub fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// A histogram of observations in fixed buckets (upper bounds, ascending).
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    bounds: &'static [f64],
    /// Observations ≤ each bound (not cumulative here; summed when written).
    counts: Vec<u64>,
    count: u64,
    sum: f64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            counts: vec![0; bounds.len()],
            count: 0,
            sum: 0.0,
        }
    }

    pub fn observe(&mut self, v: f64) {
        if let Some(i) = self.bounds.iter().position(|b| v <= *b) {
            self.counts[i] += 1;
        }
        self.count += 1;
        self.sum += v;
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn sum(&self) -> f64 {
        self.sum
    }
}

/// Builds one exposition. Families must be written whole: `family`, then its samples.
#[derive(Debug, Default)]
pub struct Exposition {
    out: String,
    current: Option<(String, Kind)>,
}

fn labels_text(labels: &[(&str, &str)], extra: Option<(&str, &str)>) -> String {
    let all: Vec<String> = labels
        .iter()
        .copied()
        .chain(extra)
        .map(|(k, v)| {
            debug_assert!(valid_name(k) && !k.contains(':'), "bad label name {k}");
            format!("{k}=\"{}\"", escape_label(v))
        })
        .collect();
    if all.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", all.join(","))
    }
}

impl Exposition {
    pub fn new() -> Exposition {
        Exposition::default()
    }

    /// Starts a metric family with its help text and type.
    pub fn family(&mut self, name: &str, help: &str, kind: Kind) -> &mut Self {
        debug_assert!(valid_name(name), "bad metric name {name}");
        let _ = writeln!(self.out, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.out, "# TYPE {name} {}", kind.as_str());
        self.current = Some((name.to_string(), kind));
        self
    }

    /// A sample of the current counter or gauge family.
    pub fn sample(&mut self, labels: &[(&str, &str)], value: f64) -> &mut Self {
        if let Some((name, _)) = &self.current {
            let _ = writeln!(
                self.out,
                "{name}{} {}",
                labels_text(labels, None),
                format_value(value)
            );
        }
        self
    }

    /// The `_bucket`, `_sum` and `_count` samples of the current histogram family.
    pub fn histogram(&mut self, labels: &[(&str, &str)], h: &Histogram) -> &mut Self {
        let Some((name, _)) = self.current.clone() else {
            return self;
        };
        let mut cumulative = 0;
        for (bound, n) in h.bounds.iter().zip(&h.counts) {
            cumulative += n;
            let le = format_value(*bound);
            let _ = writeln!(
                self.out,
                "{name}_bucket{} {cumulative}",
                labels_text(labels, Some(("le", &le)))
            );
        }
        let _ = writeln!(
            self.out,
            "{name}_bucket{} {}",
            labels_text(labels, Some(("le", "+Inf"))),
            h.count
        );
        let l = labels_text(labels, None);
        let _ = writeln!(self.out, "{name}_sum{l} {}", format_value(h.sum));
        let _ = writeln!(self.out, "{name}_count{l} {}", h.count);
        self
    }

    pub fn finish(self) -> String {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(valid_name("virtdeck_http_requests_total"));
        assert!(valid_name("_x:y"));
        assert!(!valid_name("9lives"));
        assert!(!valid_name("a-b"));
        assert!(!valid_name(""));
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(escape_label("x\ny"), "x\\ny");
    }

    #[test]
    fn values() {
        assert_eq!(format_value(3.0), "3");
        assert_eq!(format_value(0.25), "0.25");
        assert_eq!(format_value(f64::NAN), "NaN");
        assert_eq!(format_value(f64::INFINITY), "+Inf");
        assert_eq!(format_value(f64::NEG_INFINITY), "-Inf");
    }

    #[test]
    fn families_and_samples() {
        let mut e = Exposition::new();
        e.family(
            "virtdeck_http_requests_total",
            "HTTP requests answered.\nBy route.",
            Kind::Counter,
        )
        .sample(&[("route", "/vms/{name}"), ("status", "200")], 7.0)
        .sample(&[("route", "say \"hi\""), ("status", "404")], 1.0);
        e.family("virtdeck_up", "Always 1.", Kind::Gauge)
            .sample(&[], 1.0);
        assert_eq!(
            e.finish(),
            "# HELP virtdeck_http_requests_total HTTP requests answered.\\nBy route.\n\
             # TYPE virtdeck_http_requests_total counter\n\
             virtdeck_http_requests_total{route=\"/vms/{name}\",status=\"200\"} 7\n\
             virtdeck_http_requests_total{route=\"say \\\"hi\\\"\",status=\"404\"} 1\n\
             # HELP virtdeck_up Always 1.\n\
             # TYPE virtdeck_up gauge\n\
             virtdeck_up 1\n"
        );
    }

    #[test]
    fn histograms_are_cumulative_with_inf_sum_and_count() {
        static BOUNDS: [f64; 3] = [0.5, 1.0, 5.0];
        let mut h = Histogram::new(&BOUNDS);
        for v in [0.2, 0.7, 0.9, 3.0, 60.0] {
            h.observe(v);
        }
        assert_eq!(h.count(), 5);
        let mut e = Exposition::new();
        e.family("job_duration_seconds", "Jobs.", Kind::Histogram)
            .histogram(&[("job", "vm.create")], &h);
        let text = e.finish();
        for line in [
            "job_duration_seconds_bucket{job=\"vm.create\",le=\"0.5\"} 1",
            "job_duration_seconds_bucket{job=\"vm.create\",le=\"1\"} 3",
            "job_duration_seconds_bucket{job=\"vm.create\",le=\"5\"} 4",
            "job_duration_seconds_bucket{job=\"vm.create\",le=\"+Inf\"} 5",
            "job_duration_seconds_sum{job=\"vm.create\"} 64.8",
            "job_duration_seconds_count{job=\"vm.create\"} 5",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
        assert!(text.contains("# TYPE job_duration_seconds histogram"));
    }
}
