//! Server-rendered SVG charts: small sparklines for the VM list, larger charts with
//! labels for the VM and host pages. Fixed `viewBox`, every text escaped, a `<title>`
//! for screen readers, no scripts and no inline styles (the pages' CSP forbids them).

use std::fmt::Write;

/// What a chart's numbers are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Percent,
    Mib,
    BytesPerSecond,
}

/// A number with its unit, for labels: `12.5 %`, `812 MiB`, `1.5 GiB`, `3.2 KiB/s`.
pub fn format_value(v: f64, unit: Unit) -> String {
    if !v.is_finite() {
        return "–".into();
    }
    // Usage is never below zero: a rounding or counter-reset artefact (and -0.0 itself)
    // shows as 0, never as "-0 B/s".
    let v = if v > 0.0 { v } else { 0.0 };
    match unit {
        Unit::Percent => format!("{v:.1} %"),
        Unit::Mib if v >= 1024.0 => format!("{:.1} GiB", v / 1024.0),
        Unit::Mib => format!("{v:.0} MiB"),
        Unit::BytesPerSecond => {
            let mut x = v;
            for u in ["B/s", "KiB/s", "MiB/s"] {
                if x < 1024.0 {
                    return if u == "B/s" {
                        format!("{x:.0} {u}")
                    } else {
                        format!("{x:.1} {u}")
                    };
                }
                x /= 1024.0;
            }
            format!("{x:.1} GiB/s")
        }
    }
}

/// Escapes text for XML content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// One line of a chart: `(unix seconds, value)` points, oldest first; NaN = no value.
#[derive(Debug, Clone)]
pub struct Line {
    pub label: String,
    pub points: Vec<(u32, f32)>,
}

impl Line {
    fn values(&self) -> impl Iterator<Item = f64> + '_ {
        self.points
            .iter()
            .map(|(_, v)| f64::from(*v))
            .filter(|v| v.is_finite())
    }
    fn min(&self) -> Option<f64> {
        self.values().reduce(f64::min)
    }
    fn max(&self) -> Option<f64> {
        self.values().reduce(f64::max)
    }
    fn now(&self) -> Option<f64> {
        self.points
            .last()
            .map(|(_, v)| f64::from(*v))
            .filter(|v| v.is_finite())
    }
}

/// A chart over the time window `from..=to`.
#[derive(Debug, Clone)]
pub struct Chart {
    /// What is shown, e.g. "CPU of web01"; goes into `<title>`.
    pub title: String,
    /// e.g. "last hour".
    pub window: String,
    pub unit: Unit,
    pub lines: Vec<Line>,
    pub from: u32,
    pub to: u32,
    /// Points further apart than this are not joined (the VM was off, or sampling stopped).
    pub max_gap_seconds: u32,
    /// The scale reaches at least this (100 for percent, so 3 % looks small).
    pub floor_max: f64,
}

impl Chart {
    fn scale_max(&self) -> f64 {
        let data = self.lines.iter().filter_map(Line::max).fold(0.0, f64::max);
        data.max(self.floor_max).max(f64::MIN_POSITIVE)
    }

    fn has_data(&self) -> bool {
        self.lines.iter().any(|l| l.values().next().is_some())
    }

    /// "read: now 1.0 KiB/s, min 0 B/s, max 2.0 KiB/s" for each line.
    fn summary(&self) -> String {
        if !self.has_data() {
            return "no data yet".into();
        }
        self.lines
            .iter()
            .map(|l| {
                let f = |v: Option<f64>| format_value(v.unwrap_or(f64::NAN), self.unit);
                let name = if l.label.is_empty() {
                    String::new()
                } else {
                    format!("{}: ", l.label)
                };
                format!(
                    "{name}now {}, min {}, max {}",
                    f(l.now()),
                    f(l.min()),
                    f(l.max())
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// The accessible title: what, when, and the figures.
    pub fn title_text(&self) -> String {
        format!("{}, {}: {}", self.title, self.window, self.summary())
    }

    /// SVG path data for one line in a `w`×`h` box.
    fn path(&self, line: &Line, w: f64, top: f64, h: f64) -> String {
        let span = f64::from(self.to.saturating_sub(self.from).max(1));
        let max = self.scale_max();
        let mut d = String::new();
        let mut last_t: Option<u32> = None;
        for (t, v) in &line.points {
            let v = f64::from(*v);
            if !v.is_finite() || *t < self.from || *t > self.to {
                last_t = None;
                continue;
            }
            let x = f64::from(t - self.from) / span * w;
            let y = top + h - (v / max).clamp(0.0, 1.0) * h;
            let joined = last_t.is_some_and(|lt| t - lt <= self.max_gap_seconds);
            let _ = write!(d, "{}{x:.1} {y:.1}", if joined { " L" } else { " M" });
            last_t = Some(*t);
        }
        d.trim_start().to_string()
    }

    fn paths(&self, out: &mut String, w: f64, top: f64, h: f64) {
        for (i, line) in self.lines.iter().enumerate() {
            let d = self.path(line, w, top, h);
            if !d.is_empty() {
                let _ = write!(
                    out,
                    r#"<path class="line s{i}" d="{d}" fill="none" stroke="currentColor" stroke-width="1.5" vector-effect="non-scaling-stroke"/>"#
                );
            }
        }
    }
}

const SPARK_W: f64 = 120.0;
const SPARK_H: f64 = 24.0;

/// A small chart without labels (the title carries the figures), for table cells.
pub fn sparkline(chart: &Chart) -> String {
    let title = escape(&chart.title_text());
    let mut out = format!(
        r#"<svg class="spark" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {SPARK_W} {SPARK_H}" width="{SPARK_W}" height="{SPARK_H}" role="img" aria-label="{title}"><title>{title}</title>"#
    );
    let _ = write!(
        out,
        r#"<line class="base" x1="0" y1="{y}" x2="{SPARK_W}" y2="{y}" stroke="currentColor" stroke-opacity="0.25"/>"#,
        y = SPARK_H - 0.5
    );
    chart.paths(&mut out, SPARK_W, 1.0, SPARK_H - 2.0);
    out.push_str("</svg>");
    out
}

const CHART_W: f64 = 600.0;
const CHART_H: f64 = 160.0;
const PLOT_TOP: f64 = 18.0;
const PLOT_H: f64 = 122.0;

/// A larger chart: scale, time labels, each line's now/min/max in a legend.
pub fn chart(chart: &Chart) -> String {
    let title = escape(&chart.title_text());
    let mut out = format!(
        r#"<svg class="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {CHART_W} {CHART_H}" preserveAspectRatio="none" role="img" aria-label="{title}"><title>{title}</title>"#
    );
    let bottom = PLOT_TOP + PLOT_H;
    let _ = write!(
        out,
        r#"<rect class="plot" x="0" y="{PLOT_TOP}" width="{CHART_W}" height="{PLOT_H}" fill="none" stroke="currentColor" stroke-opacity="0.2"/>"#
    );
    let max = format_value(chart.scale_max(), chart.unit);
    let zero = format_value(0.0, chart.unit);
    let _ = write!(
        out,
        r#"<text class="scale max" x="4" y="{}" font-size="11">{}</text><text class="scale min" x="4" y="{}" font-size="11">{}</text>"#,
        PLOT_TOP + 12.0,
        escape(&max),
        bottom - 3.0,
        escape(&zero)
    );
    let _ = write!(
        out,
        r#"<text class="when" x="0" y="{y}" font-size="11">{}</text><text class="when" x="{CHART_W}" y="{y}" font-size="11" text-anchor="end">now</text>"#,
        escape(&chart.window),
        y = CHART_H - 4.0
    );
    chart.paths(&mut out, CHART_W, PLOT_TOP, PLOT_H);
    if chart.has_data() {
        let mut x = 0.0;
        for (i, line) in chart.lines.iter().enumerate() {
            let f = |v: Option<f64>| format_value(v.unwrap_or(f64::NAN), chart.unit);
            let label = if line.label.is_empty() {
                String::new()
            } else {
                format!("{} ", line.label)
            };
            let text = format!(
                "{label}now {} · min {} · max {}",
                f(line.now()),
                f(line.min()),
                f(line.max())
            );
            let _ = write!(
                out,
                r#"<text class="legend s{i}" x="{x}" y="12" font-size="11">{}</text>"#,
                escape(&text)
            );
            x += 300.0;
        }
    } else {
        let _ = write!(
            out,
            r#"<text class="empty" x="{}" y="{}" font-size="12" text-anchor="middle">No usage data yet</text>"#,
            CHART_W / 2.0,
            PLOT_TOP + PLOT_H / 2.0
        );
    }
    out.push_str("</svg>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cpu(points: Vec<(u32, f32)>) -> Chart {
        Chart {
            title: "CPU of <web01>".into(),
            window: "last hour".into(),
            unit: Unit::Percent,
            lines: vec![Line {
                label: String::new(),
                points,
            }],
            from: 1000,
            to: 1100,
            max_gap_seconds: 15,
            floor_max: 100.0,
        }
    }

    #[test]
    fn values_carry_their_units() {
        assert_eq!(format_value(12.345, Unit::Percent), "12.3 %");
        assert_eq!(format_value(812.0, Unit::Mib), "812 MiB");
        assert_eq!(format_value(1536.0, Unit::Mib), "1.5 GiB");
        assert_eq!(format_value(100.0, Unit::BytesPerSecond), "100 B/s");
        assert_eq!(format_value(-0.0, Unit::BytesPerSecond), "0 B/s");
        assert_eq!(format_value(-0.4, Unit::BytesPerSecond), "0 B/s");
        assert_eq!(format_value(-0.01, Unit::Percent), "0.0 %");
        assert_eq!(
            format_value(3.5 * 1024.0, Unit::BytesPerSecond),
            "3.5 KiB/s"
        );
        assert_eq!(
            format_value(2.0 * 1024.0 * 1024.0 * 1024.0, Unit::BytesPerSecond),
            "2.0 GiB/s"
        );
        assert_eq!(format_value(f64::NAN, Unit::Percent), "–");
    }

    #[test]
    fn a_sparkline_has_a_fixed_box_an_escaped_title_and_a_path() {
        let svg = sparkline(&cpu(vec![(1000, 0.0), (1050, 50.0), (1100, 25.0)]));
        assert!(svg.starts_with("<svg class=\"spark\""), "{svg}");
        assert!(svg.contains(r#"viewBox="0 0 120 24""#));
        assert!(
            svg.contains(
                "<title>CPU of &lt;web01&gt;, last hour: now 25.0 %, min 0.0 %, max 50.0 %</title>"
            ),
            "{svg}"
        );
        assert!(!svg.contains("<web01>"));
        // Points 50 s apart with a 15 s gap limit are not joined: three moves.
        let d = svg
            .split(" d=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        assert_eq!(d.matches('M').count(), 3, "{d}");
        assert!(svg.ends_with("</svg>"));
        assert!(!svg.contains("style="), "no inline styles under the CSP");
    }

    #[test]
    fn close_points_are_joined_and_scaled_to_the_box() {
        let c = cpu(vec![
            (1000, 0.0),
            (1010, 100.0),
            (1020, f32::NAN),
            (1030, 50.0),
        ]);
        let d = c.path(&c.lines[0], 100.0, 0.0, 10.0);
        // x = (t - 1000) / 100 * 100; y = 10 - v / 100 * 10; NaN breaks the line.
        assert_eq!(d, "M0.0 10.0 L10.0 0.0 M30.0 5.0");
    }

    #[test]
    fn the_scale_grows_past_the_floor_for_big_values() {
        let mut c = cpu(vec![(1000, 250.0)]);
        assert_eq!(c.scale_max(), 250.0);
        c.lines[0].points = vec![(1000, 3.0)];
        assert_eq!(c.scale_max(), 100.0);
    }

    #[test]
    fn a_chart_labels_its_scale_window_and_min_max() {
        let mut c = cpu(vec![(1000, 10.0), (1010, 30.0)]);
        c.lines[0].label = "read".into();
        let svg = chart(&c);
        assert!(svg.contains(r#"viewBox="0 0 600 160""#));
        assert!(svg.contains(">100.0 %</text>"), "{svg}");
        assert!(svg.contains(">0.0 %</text>"));
        assert!(svg.contains(">last hour</text>"));
        assert!(
            svg.contains("read now 30.0 % · min 10.0 % · max 30.0 %"),
            "{svg}"
        );
        assert!(svg.contains("<path class=\"line s0\""));
    }

    #[test]
    fn no_data_says_so() {
        let c = cpu(vec![]);
        assert!(chart(&c).contains("No usage data yet"));
        let s = sparkline(&c);
        assert!(s.contains("no data yet"));
        assert!(!s.contains("<path"));
    }

    #[test]
    fn escaping() {
        assert_eq!(escape(r#"a&b<c>"d'"#), "a&amp;b&lt;c&gt;&quot;d&#39;");
    }
}
