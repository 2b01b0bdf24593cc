//! The completion-time CDF as a self-contained SVG (no plotting dependency needed for one
//! line chart).

use std::fmt::Write as _;

use kraken_p2p::sim::Report;

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 420.0;
const MARGIN: f64 = 60.0;

/// An SVG of the share of hosts done against time, with T* as a vertical line.
pub(super) fn completion_cdf(report: &Report) -> String {
    let times = &report.completion_times;
    let population = (report.completed + report.unfinished).max(1) as f64;
    let x_max = times
        .last()
        .copied()
        .unwrap_or(0.0)
        .max(report.t_star)
        .max(1e-9)
        * 1.05;
    let x = |t: f64| MARGIN + t / x_max * (WIDTH - 2.0 * MARGIN);
    let y = |share: f64| HEIGHT - MARGIN - share * (HEIGHT - 2.0 * MARGIN);
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    // Axes with ticks: five on each.
    let _ = writeln!(
        svg,
        r#"<path d="M{m} {b} H{r} M{m} {b} V{t}" stroke="black" fill="none"/>"#,
        m = MARGIN,
        b = HEIGHT - MARGIN,
        r = WIDTH - MARGIN,
        t = MARGIN,
    );
    for i in 0..=5 {
        let t = x_max * f64::from(i) / 5.0;
        let share = f64::from(i) / 5.0;
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{t:.1}</text>"#,
            x(t),
            HEIGHT - MARGIN + 18.0
        );
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{:.0}%</text>"#,
            MARGIN - 6.0,
            y(share) + 4.0,
            share * 100.0
        );
    }
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">seconds since each host's arrival</text>"#,
        WIDTH / 2.0,
        HEIGHT - 15.0
    );
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="30" text-anchor="middle">{} hosts, image {:.2} GB: share of hosts done</text>"#,
        WIDTH / 2.0,
        report.scenario.hosts,
        report.image_bytes as f64 / 1e9
    );
    // T*.
    let _ = writeln!(
        svg,
        r#"<line x1="{x:.1}" y1="{t}" x2="{x:.1}" y2="{b}" stroke="gray" stroke-dasharray="4 3"/><text x="{x:.1}" y="{ty}" fill="gray" text-anchor="middle">T* {:.2} s</text>"#,
        report.t_star,
        x = x(report.t_star),
        t = MARGIN,
        b = HEIGHT - MARGIN,
        ty = MARGIN - 6.0,
    );
    // The CDF as a step line.
    let mut path = format!("M{:.1} {:.1}", x(0.0), y(0.0));
    for (i, &t) in times.iter().enumerate() {
        let before = i as f64 / population;
        let after = (i + 1) as f64 / population;
        let _ = write!(
            path,
            " L{:.1} {:.1} L{:.1} {:.1}",
            x(t),
            y(before),
            x(t),
            y(after)
        );
    }
    let _ = writeln!(
        svg,
        r#"<path d="{path}" stroke="steelblue" stroke-width="2" fill="none"/>"#
    );
    svg.push_str("</svg>\n");
    svg
}
