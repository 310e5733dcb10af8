//! Charts drawn on the server as inline SVG: no script is needed to see them.
//!
//! Long series are downsampled before drawing: the x range is cut into buckets (see
//! [`MAX_POINTS`]) and each bucket keeps its first, lowest and highest point, so spikes survive
//! and a 50k-point series costs a few kilobytes of markup.

use std::fmt::Write as _;

use serde_json::Value;

use super::html::esc;

/// Points drawn per series at most.
pub const MAX_POINTS: usize = 600;
const W: f64 = 640.0;
const H: f64 = 300.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 28.0;
const BOTTOM: f64 = 40.0;
const COLORS: &[&str] = &[
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf",
];

pub struct Line {
    pub name: String,
    /// Points in x order.
    pub points: Vec<(f64, f64)>,
    /// Draw markers only (plotly `mode: "markers"`).
    pub markers: bool,
}

/// Keeps at most about [`MAX_POINTS`] points: per x bucket the first, the lowest and the highest.
pub fn downsample(points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    if points.len() <= MAX_POINTS {
        return points.to_vec();
    }
    let buckets = MAX_POINTS / 3;
    let per = points.len().div_ceil(buckets);
    let mut out = Vec::with_capacity(MAX_POINTS + 3);
    for chunk in points.chunks(per) {
        let first = chunk[0];
        let mut lo = first;
        let mut hi = first;
        for p in chunk {
            if p.1 < lo.1 {
                lo = *p;
            }
            if p.1 > hi.1 {
                hi = *p;
            }
        }
        let mut three = [first, lo, hi];
        three.sort_by(|a, b| a.0.total_cmp(&b.0));
        for p in three {
            if out.last() != Some(&p) {
                out.push(p);
            }
        }
    }
    if let Some(last) = points.last()
        && out.last() != Some(last)
    {
        out.push(*last);
    }
    out
}

/// About five round tick values covering `[lo, hi]`.
fn ticks(lo: f64, hi: f64) -> Vec<f64> {
    let span = hi - lo;
    if !(span.is_finite() && span > 0.0) {
        return vec![lo];
    }
    let raw = span / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| span / s <= 6.0)
        .unwrap_or(10.0 * mag);
    let mut t = (lo / step).ceil() * step;
    let mut out = Vec::new();
    while t <= hi + step * 1e-9 && out.len() < 12 {
        out.push(if t.abs() < step * 1e-9 { 0.0 } else { t });
        t += step;
    }
    out
}

fn fmt_num(v: f64) -> String {
    let a = v.abs();
    if a != 0.0 && !(1e-3..1e6).contains(&a) {
        format!("{v:.2e}")
    } else if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        let s = format!("{v:.4}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// An SVG line chart with axes, ticks and a legend.
pub fn line_chart(title: &str, x_label: &str, y_label: &str, lines: &[Line]) -> String {
    let all = lines.iter().flat_map(|l| l.points.iter());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in all {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    let mut svg = String::new();
    let _ = write!(
        svg,
        "<svg class=\"chart\" viewBox=\"0 0 {W} {H}\" role=\"img\" aria-label=\"{}\" xmlns=\"http://www.w3.org/2000/svg\">\
         <text x=\"{LEFT}\" y=\"18\" class=\"ct\">{}</text>",
        esc(title),
        esc(title)
    );
    if x0 > x1 {
        svg.push_str("<text x=\"320\" y=\"150\" text-anchor=\"middle\">no data</text></svg>");
        return svg;
    }
    if x1 == x0 {
        x0 -= 1.0;
        x1 += 1.0;
    }
    if y1 == y0 {
        y0 -= 1.0;
        y1 += 1.0;
    }
    let pad = (y1 - y0) * 0.05;
    y0 -= pad;
    y1 += pad;
    let (pw, ph) = (W - LEFT - RIGHT, H - TOP - BOTTOM);
    let sx = |x: f64| LEFT + (x - x0) / (x1 - x0) * pw;
    let sy = |y: f64| TOP + (1.0 - (y - y0) / (y1 - y0)) * ph;
    let _ = write!(
        svg,
        "<rect x=\"{LEFT}\" y=\"{TOP}\" width=\"{pw}\" height=\"{ph}\" class=\"plot\"/>"
    );
    for t in ticks(y0, y1) {
        let y = sy(t);
        let _ = write!(
            svg,
            "<line x1=\"{LEFT}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\" class=\"grid\"/>\
             <text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\" class=\"tick\">{}</text>",
            LEFT + pw,
            LEFT - 4.0,
            y + 4.0,
            fmt_num(t)
        );
    }
    for t in ticks(x0, x1) {
        let x = sx(t);
        let _ = write!(
            svg,
            "<line x1=\"{x:.1}\" x2=\"{x:.1}\" y1=\"{TOP}\" y2=\"{}\" class=\"grid\"/>\
             <text x=\"{x:.1}\" y=\"{}\" text-anchor=\"middle\" class=\"tick\">{}</text>",
            TOP + ph,
            TOP + ph + 14.0,
            fmt_num(t)
        );
    }
    let _ = write!(
        svg,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" class=\"axis\">{}</text>\
         <text x=\"12\" y=\"{}\" text-anchor=\"middle\" class=\"axis\" transform=\"rotate(-90 12 {})\">{}</text>",
        LEFT + pw / 2.0,
        H - 6.0,
        esc(x_label),
        TOP + ph / 2.0,
        TOP + ph / 2.0,
        esc(y_label)
    );
    for (i, line) in lines.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let pts = downsample(&line.points);
        let _ = write!(
            svg,
            "<g class=\"series\"><title>{}</title>",
            esc(&line.name)
        );
        if line.markers || pts.len() == 1 {
            for (x, y) in &pts {
                let _ = write!(
                    svg,
                    "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"2.5\" fill=\"{color}\"/>",
                    sx(*x),
                    sy(*y)
                );
            }
        } else {
            svg.push_str("<polyline fill=\"none\" stroke-width=\"1.6\" stroke=\"");
            svg.push_str(color);
            svg.push_str("\" points=\"");
            for (x, y) in &pts {
                let _ = write!(svg, "{:.1},{:.1} ", sx(*x), sy(*y));
            }
            svg.push_str("\"/>");
        }
        svg.push_str("</g>");
    }
    // The legend: in the top band, right-aligned, as many entries as fit (every line also has
    // its name as a tooltip).
    let title_end = LEFT + 8.0 * title.chars().count() as f64 + 16.0;
    let mut x = LEFT + pw;
    for (i, line) in lines.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let name: String = line.name.chars().take(24).collect();
        let width = 5.5 * name.chars().count() as f64 + 18.0;
        if x - width < title_end {
            let _ = write!(
                svg,
                "<text x=\"{x:.1}\" y=\"18\" class=\"legend\" text-anchor=\"end\">+{} more</text>",
                lines.len() - i
            );
            break;
        }
        let _ = write!(
            svg,
            "<rect x=\"{:.1}\" y=\"12\" width=\"10\" height=\"3\" fill=\"{color}\"/>\
             <text x=\"{x:.1}\" y=\"17\" class=\"legend\" text-anchor=\"end\">{}</text>",
            x - width + 2.0,
            esc(&name)
        );
        x -= width + 6.0;
    }
    svg.push_str("</svg>");
    svg
}

fn numbers(v: Option<&Value>) -> Option<Vec<f64>> {
    let arr = v?.as_array()?;
    arr.iter()
        .map(|x| match x {
            Value::Number(n) => n.as_f64(),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        })
        .collect()
}

fn text_of(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Object(m)) => m
            .get("text")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        _ => String::new(),
    }
}

/// Draws a plotly figure's `scatter`/`scattergl` traces (lines, markers) as an SVG chart; a
/// figure with other kinds of traces or non-numeric axes is `Err` with what could not be drawn.
pub fn plotly(fig: &Value, fallback_title: &str) -> Result<String, String> {
    let data = fig
        .get("data")
        .and_then(Value::as_array)
        .ok_or("the figure has no data list")?;
    let layout = fig.get("layout");
    let title = match text_of(layout.and_then(|l| l.get("title"))) {
        t if t.is_empty() => fallback_title.to_string(),
        t => t,
    };
    let x_label = text_of(
        layout
            .and_then(|l| l.get("xaxis"))
            .and_then(|a| a.get("title")),
    );
    let y_label = text_of(
        layout
            .and_then(|l| l.get("yaxis"))
            .and_then(|a| a.get("title")),
    );
    let mut lines = Vec::new();
    for (i, trace) in data.iter().enumerate() {
        let kind = trace
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("scatter");
        if kind != "scatter" && kind != "scattergl" {
            return Err(format!("trace type \"{kind}\""));
        }
        let ys = numbers(trace.get("y")).ok_or("non-numeric y values")?;
        let xs = match trace.get("x") {
            None | Some(Value::Null) => (0..ys.len()).map(|i| i as f64).collect(),
            x => numbers(x).ok_or("non-numeric x values")?,
        };
        let mode = trace.get("mode").and_then(Value::as_str).unwrap_or("lines");
        let name = trace
            .get("name")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| format!("trace {i}"));
        let mut points: Vec<(f64, f64)> = xs
            .into_iter()
            .zip(ys)
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .collect();
        let markers = !mode.contains("lines");
        if !markers {
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
        }
        lines.push(Line {
            name,
            points,
            markers,
        });
    }
    Ok(line_chart(&title, &x_label, &y_label, &lines))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn downsampling_keeps_extremes_and_ends() {
        let pts: Vec<(f64, f64)> = (0..50_000)
            .map(|i| (i as f64, if i == 31_337 { 1e6 } else { (i % 7) as f64 }))
            .collect();
        let d = downsample(&pts);
        assert!(d.len() <= MAX_POINTS + 1, "{}", d.len());
        assert!(d.contains(&(31_337.0, 1e6)));
        assert_eq!(d.first(), Some(&(0.0, 0.0)));
        assert_eq!(d.last(), pts.last());
        assert!(d.windows(2).all(|w| w[0].0 <= w[1].0));
    }

    #[test]
    fn chart_escapes_names() {
        let svg = line_chart(
            "<t>",
            "x",
            "y",
            &[Line {
                name: "<script>".into(),
                points: vec![(0.0, 1.0), (1.0, 2.0)],
                markers: false,
            }],
        );
        assert!(!svg.contains("<script>"));
        assert!(svg.contains("&lt;script&gt;"));
        assert!(svg.contains("<polyline"));
    }

    #[test]
    fn plotly_scatter_draws_and_others_say_why() {
        let fig = json!({"data": [{"type": "scatter", "x": [1, 2, 3], "y": [3, 1, 2], "mode": "lines", "name": "a"}],
                         "layout": {"title": {"text": "T"}}});
        assert!(plotly(&fig, "f").expect("drawn").contains("<polyline"));
        let fig = json!({"data": [{"type": "heatmap", "z": [[1]]}]});
        assert_eq!(plotly(&fig, "f"), Err("trace type \"heatmap\"".into()));
    }
}
