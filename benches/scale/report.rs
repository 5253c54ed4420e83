//! The benchmark report: figures with their same-run reference, ratio and target, rendered
//! as markdown and JSON, and spliced into docs/benchmarks.md. Plain values, no I/O.

use serde_json::{json, Value};

/// What a figure is compared with, measured in the same run.
#[derive(Debug, Clone, PartialEq)]
pub struct Reference {
    pub label: String,
    pub value: f64,
}

/// A figure's goal.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Target {
    /// The value must be below this (in the figure's unit).
    Below(f64),
    /// The value must be at least this.
    AtLeast(f64),
    /// value / reference must be at most this.
    RatioAtMost(f64),
    /// value / reference must be at least this.
    RatioAtLeast(f64),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Figure {
    pub section: String,
    /// Stable key for the JSON report, e.g. `api_vms_c64_rps`.
    pub key: String,
    pub label: String,
    pub unit: String,
    pub value: f64,
    pub reference: Option<Reference>,
    pub target: Option<Target>,
}

impl Figure {
    pub fn new(section: &str, key: &str, label: &str, unit: &str, value: f64) -> Figure {
        Figure {
            section: section.into(),
            key: key.into(),
            label: label.into(),
            unit: unit.into(),
            value,
            reference: None,
            target: None,
        }
    }

    pub fn vs(mut self, label: &str, value: f64) -> Figure {
        self.reference = Some(Reference {
            label: label.into(),
            value,
        });
        self
    }

    pub fn target(mut self, t: Target) -> Figure {
        self.target = Some(t);
        self
    }

    /// value / reference, when there is a non-zero reference.
    pub fn ratio(&self) -> Option<f64> {
        self.reference
            .as_ref()
            .filter(|r| r.value != 0.0)
            .map(|r| self.value / r.value)
    }

    /// Whether the target is met; `None` without a target (or without the reference a
    /// ratio target needs).
    pub fn pass(&self) -> Option<bool> {
        match self.target? {
            Target::Below(t) => Some(self.value < t),
            Target::AtLeast(t) => Some(self.value >= t),
            Target::RatioAtMost(t) => self.ratio().map(|r| r <= t),
            Target::RatioAtLeast(t) => self.ratio().map(|r| r >= t),
        }
    }

    pub fn target_text(&self) -> String {
        match self.target {
            None => String::new(),
            Some(Target::Below(t)) => format!("< {} {}", num(t), self.unit),
            Some(Target::AtLeast(t)) => format!("≥ {} {}", num(t), self.unit),
            Some(Target::RatioAtMost(t)) => format!("ratio ≤ {}", num(t)),
            Some(Target::RatioAtLeast(t)) => format!("ratio ≥ {}", num(t)),
        }
    }
}

/// A number with as many decimals as its size deserves.
pub fn num(v: f64) -> String {
    let a = v.abs();
    if a >= 100.0 || v == v.trunc() && a < 1e15 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 0.1 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// The `p`-th percentile (0–100, nearest rank) of samples; `None` when empty.
pub fn percentile(samples: &[f64], p: f64) -> Option<f64> {
    if samples.is_empty() {
        return None;
    }
    let mut s = samples.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let rank = ((p / 100.0) * s.len() as f64).ceil() as usize;
    Some(s[rank.clamp(1, s.len()) - 1])
}

pub struct Report {
    /// When and where: date, commit, CPU, memory, versions.
    pub machine: Vec<(String, String)>,
    pub figures: Vec<Figure>,
    /// Explanations per section (where the time goes, what was skipped and why).
    pub notes: Vec<(String, String)>,
}

impl Report {
    fn sections(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for f in &self.figures {
            if !out.contains(&f.section.as_str()) {
                out.push(&f.section);
            }
        }
        for (s, _) in &self.notes {
            if !out.contains(&s.as_str()) {
                out.push(s);
            }
        }
        out
    }

    /// (met, missed) targets.
    pub fn target_counts(&self) -> (usize, usize) {
        let results: Vec<bool> = self.figures.iter().filter_map(Figure::pass).collect();
        let met = results.iter().filter(|p| **p).count();
        (met, results.len() - met)
    }

    pub fn markdown(&self) -> String {
        let mut md = String::new();
        md.push_str("| machine | |\n|---|---|\n");
        for (k, v) in &self.machine {
            md.push_str(&format!("| {k} | {} |\n", cell(v)));
        }
        let (met, missed) = self.target_counts();
        md.push_str(&format!("\nTargets: **{met} met, {missed} missed**.\n"));
        for section in self.sections() {
            md.push_str(&format!("\n### {section}\n\n"));
            let figures: Vec<&Figure> = self
                .figures
                .iter()
                .filter(|f| f.section == section)
                .collect();
            if !figures.is_empty() {
                md.push_str(
                    "| figure | virtdeck | reference (same run) | ratio | target | result |\n\
                     |---|---|---|---|---|---|\n",
                );
                for f in figures {
                    let reference = f
                        .reference
                        .as_ref()
                        .map(|r| format!("{} {} ({})", num(r.value), f.unit, cell(&r.label)))
                        .unwrap_or_default();
                    let ratio = f.ratio().map(|r| format!("{r:.2}")).unwrap_or_default();
                    let result = match f.pass() {
                        Some(true) => "met",
                        Some(false) => "**missed**",
                        None => "",
                    };
                    md.push_str(&format!(
                        "| {} | {} {} | {reference} | {ratio} | {} | {result} |\n",
                        cell(&f.label),
                        num(f.value),
                        f.unit,
                        f.target_text()
                    ));
                }
            }
            for (s, note) in &self.notes {
                if s == section {
                    md.push_str(&format!("\n{note}\n"));
                }
            }
        }
        md
    }

    pub fn json(&self) -> Value {
        let (met, missed) = self.target_counts();
        let machine: serde_json::Map<String, Value> = self
            .machine
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        let figures: Vec<Value> = self
            .figures
            .iter()
            .map(|f| {
                json!({
                    "section": f.section,
                    "key": f.key,
                    "label": f.label,
                    "unit": f.unit,
                    "value": f.value,
                    "reference": f.reference.as_ref().map(|r| json!({"label": r.label, "value": r.value})),
                    "ratio": f.ratio(),
                    "target": f.target.map(|_| f.target_text()),
                    "pass": f.pass(),
                })
            })
            .collect();
        let notes: Vec<Value> = self
            .notes
            .iter()
            .map(|(s, n)| json!({"section": s, "note": n}))
            .collect();
        json!({
            "machine": machine,
            "targets": {"met": met, "missed": missed},
            "figures": figures,
            "notes": notes,
        })
    }
}

/// A table cell: no line breaks or pipes.
fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

pub const RESULTS_BEGIN: &str = "<!-- results:begin (written by make bench) -->";
pub const RESULTS_END: &str = "<!-- results:end -->";

/// `doc` with the text between the results markers replaced by `results`.
pub fn splice_results(doc: &str, results: &str) -> Result<String, String> {
    let begin = doc
        .find(RESULTS_BEGIN)
        .ok_or_else(|| format!("the document has no {RESULTS_BEGIN} line"))?
        + RESULTS_BEGIN.len();
    let end = doc[begin..]
        .find(RESULTS_END)
        .ok_or_else(|| format!("the document has no {RESULTS_END} line after the begin marker"))?
        + begin;
    Ok(format!(
        "{}\n{}\n{}",
        &doc[..begin],
        results.trim(),
        &doc[end..]
    ))
}

/// What wrk's report script prints: one `WRK {...}` JSON line.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
pub struct WrkResult {
    pub requests: u64,
    pub duration_us: u64,
    pub bytes: u64,
    pub connect_errors: u64,
    pub read_errors: u64,
    pub write_errors: u64,
    pub timeouts: u64,
    pub non_2xx: u64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
}

impl WrkResult {
    pub fn parse(stdout: &str) -> Result<WrkResult, String> {
        let line = stdout
            .lines()
            .find_map(|l| l.strip_prefix("WRK "))
            .ok_or_else(|| format!("wrk printed no WRK line:\n{stdout}"))?;
        serde_json::from_str(line).map_err(|e| format!("wrk's WRK line is not valid: {e}: {line}"))
    }

    pub fn requests_per_second(&self) -> f64 {
        self.requests as f64 / (self.duration_us as f64 / 1e6)
    }

    pub fn errors(&self) -> u64 {
        self.connect_errors + self.read_errors + self.write_errors + self.timeouts + self.non_2xx
    }
}

/// wrk's Lua hook that prints the summary as one JSON line.
pub const WRK_SCRIPT: &str = r#"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK {"requests":%d,"duration_us":%d,"bytes":%d,"connect_errors":%d,"read_errors":%d,' ..
    '"write_errors":%d,"timeouts":%d,"non_2xx":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.timeout,
    e.status, latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
"#;
