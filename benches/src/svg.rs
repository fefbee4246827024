//! A hand-written SVG plot: one-way ping-pong latency (p50) against payload
//! size, both axes logarithmic, one polyline per contender. A contender with
//! a single point (the payload-less `raw_floor`) is drawn as a dashed
//! horizontal reference line across the whole plot.

use std::fmt::Write as _;

use crate::report::{fmt_size, Row, Status};
use crate::transport::Scenario;

const W: f64 = 960.0;
const H: f64 = 580.0;
const LEFT: f64 = 90.0;
const RIGHT: f64 = 210.0;
const TOP: f64 = 70.0;
const BOTTOM: f64 = 70.0;
const PALETTE: [&str; 10] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
    "#7f7f7f", "#bcbd22",
];

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// `1 ns`, `10 ns`, `100 ns`, `1 µs`, ... for a power of ten.
fn fmt_decade(exp: i32) -> String {
    let (unit, base) = match exp {
        i32::MIN..=2 => ("ns", 0),
        3..=5 => ("µs", 3),
        6..=8 => ("ms", 6),
        _ => ("s", 9),
    };
    format!("{} {unit}", 10u64.pow((exp - base).clamp(0, 18) as u32))
}

/// One series per contender: `(name, [(payload, p50 ns)])`, payload-sorted.
fn series(rows: &[Row]) -> Vec<(String, Vec<(usize, u64)>)> {
    let mut out: Vec<(String, Vec<(usize, u64)>)> = Vec::new();
    for r in rows
        .iter()
        .filter(|r| r.scenario == Scenario::PingPong && r.status != Status::Skipped)
    {
        let Some(l) = r.latency else { continue };
        let point = (r.payload_bytes, l.p50.max(1));
        match out.iter_mut().find(|(n, _)| *n == r.transport) {
            Some((_, pts)) => pts.push(point),
            None => out.push((r.transport.clone(), vec![point])),
        }
    }
    for (_, pts) in &mut out {
        pts.sort_unstable();
    }
    out
}

/// The plot, or `None` when there are no ping-pong results.
pub fn latency_svg(rows: &[Row], subtitle: &str) -> Option<String> {
    let series = series(rows);
    let all: Vec<(usize, u64)> = series.iter().flat_map(|(_, p)| p.iter().copied()).collect();
    let pmin = all.iter().map(|p| p.0).min()?;
    let pmax = all.iter().map(|p| p.0).max()?;
    let lmin = all.iter().map(|p| p.1).min()?;
    let lmax = all.iter().map(|p| p.1).max()?;

    let (x0, x1) = ((pmin as f64).log2() - 0.5, (pmax as f64).log2() + 0.5);
    let y0 = (lmin as f64).log10().floor() as i32;
    let mut y1 = (lmax as f64).log10().ceil() as i32;
    if y1 <= y0 {
        y1 = y0 + 1;
    }
    let pw = W - LEFT - RIGHT;
    let ph = H - TOP - BOTTOM;
    let sx = |p: usize| LEFT + ((p as f64).log2() - x0) / (x1 - x0) * pw;
    let sy = |ns: u64| TOP + ph - ((ns as f64).log10() - f64::from(y0)) / f64::from(y1 - y0) * ph;

    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="28" font-size="17" text-anchor="middle">busbench: one-way latency p50 (ping-pong RTT/2)</text>"#,
        W / 2.0
    );
    let _ = writeln!(
        s,
        r##"<text x="{}" y="48" font-size="11" fill="#555" text-anchor="middle">{}</text>"##,
        W / 2.0,
        esc(subtitle)
    );

    // Horizontal grid: decades (labelled) and 2x/5x (light).
    for e in y0..=y1 {
        let y = sy(10u64.pow(e.clamp(0, 18) as u32));
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#bbb"/>"##,
            LEFT + pw
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
            LEFT - 8.0,
            y + 4.0,
            esc(&fmt_decade(e))
        );
        if e < y1 {
            for m in [2u64, 5] {
                let y = sy(m * 10u64.pow(e.clamp(0, 18) as u32));
                let _ = writeln!(
                    s,
                    r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#eee"/>"##,
                    LEFT + pw
                );
            }
        }
    }
    // Vertical ticks at every measured payload size.
    let mut sizes: Vec<usize> = all.iter().map(|p| p.0).collect();
    sizes.sort_unstable();
    sizes.dedup();
    for &p in &sizes {
        let x = sx(p);
        let _ = writeln!(
            s,
            r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{:.1}" stroke="#eee"/>"##,
            TOP + ph
        );
        let _ = writeln!(
            s,
            r#"<text x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            TOP + ph + 18.0,
            esc(&fmt_size(p))
        );
    }
    let _ = writeln!(
        s,
        r##"<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="#333"/>"##
    );
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="13">payload size (log scale)</text>"#,
        LEFT + pw / 2.0,
        H - 22.0
    );
    let _ = writeln!(
        s,
        r#"<text transform="translate(24 {:.1}) rotate(-90)" text-anchor="middle" font-size="13">one-way latency p50 (log scale)</text>"#,
        TOP + ph / 2.0
    );

    for (i, (name, pts)) in series.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let _ = writeln!(s, r#"<g class="series" data-name="{}">"#, esc(name));
        if pts.len() == 1 {
            let y = sy(pts[0].1);
            let _ = writeln!(
                s,
                r#"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="{color}" stroke-width="1.5" stroke-dasharray="6 4"/>"#,
                LEFT + pw
            );
        } else {
            let coords: Vec<String> = pts
                .iter()
                .map(|&(p, ns)| format!("{:.1},{:.1}", sx(p), sy(ns)))
                .collect();
            let _ = writeln!(
                s,
                r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="2"/>"#,
                coords.join(" ")
            );
        }
        for &(p, ns) in pts {
            let _ = writeln!(
                s,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3.5" fill="{color}"><title>{} {}: p50 {ns} ns</title></circle>"#,
                sx(p),
                sy(ns),
                esc(name),
                esc(&fmt_size(p))
            );
        }
        let _ = writeln!(s, "</g>");

        // Legend entry.
        let lx = LEFT + pw + 20.0;
        let ly = TOP + 10.0 + 22.0 * i as f64;
        let dash = if pts.len() == 1 {
            r#" stroke-dasharray="6 4""#
        } else {
            ""
        };
        let label = if pts.len() == 1 {
            format!("{name} ({} only)", fmt_size(pts[0].0))
        } else {
            name.clone()
        };
        let _ = writeln!(
            s,
            r#"<line x1="{lx:.1}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{color}" stroke-width="2"{dash}/>"#,
            lx + 26.0
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}">{}</text>"#,
            lx + 32.0,
            ly + 4.0,
            esc(&label)
        );
    }
    s.push_str("</svg>\n");
    Some(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coordinator::Cell;
    use crate::stats::Summary;

    fn row(name: &str, payload: usize, p50: u64) -> Row {
        let cell = Cell {
            scenario: Scenario::PingPong,
            payload_bytes: payload,
            senders: 1,
            receivers: 1,
        };
        let mut r = Row::new(name, &cell);
        r.latency = Some(Summary {
            p50,
            p90: p50,
            p99: p50,
            p999: p50,
            max: p50,
            samples: 1,
        });
        r
    }

    #[test]
    fn plot_has_one_series_per_contender_and_a_legend() {
        let rows = vec![
            row("pipe", 8, 3000),
            row("pipe", 64, 3100),
            row("pipe", 4 << 20, 2_000_000),
            row("a&b", 8, 5000),
            row("a&b", 1024, 6000),
            row("raw_floor", 8, 120),
        ];
        let svg = latency_svg(&rows, "AMD <test>").unwrap();
        assert!(svg.starts_with("<svg ") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert_eq!(svg.matches("class=\"series\"").count(), 3);
        // The single-point floor is a dashed reference line.
        assert!(svg.contains("raw_floor (8 B only)"));
        assert!(svg.contains("stroke-dasharray"));
        // Text is escaped, axes are labelled, decades span 100 ns .. 10 ms.
        assert!(svg.contains("a&amp;b") && svg.contains("AMD &lt;test&gt;"));
        assert!(svg.contains("payload size (log scale)"));
        assert!(svg.contains(">100 ns<") && svg.contains(">10 ms<"));
        assert!(svg.contains(">4 MiB<"));
        assert!(!svg.contains("NaN"));
    }

    #[test]
    fn no_pingpong_rows_no_plot() {
        let mut r = row("pipe", 8, 1);
        r.scenario = Scenario::Throughput;
        assert!(latency_svg(&[r], "").is_none());
    }

    #[test]
    fn decade_labels() {
        assert_eq!(fmt_decade(0), "1 ns");
        assert_eq!(fmt_decade(2), "100 ns");
        assert_eq!(fmt_decade(3), "1 µs");
        assert_eq!(fmt_decade(7), "10 ms");
        assert_eq!(fmt_decade(9), "1 s");
    }
}
