//! The latency CDF plot (`latency_cdf.svg`): per service, the share of its *scheduled* requests
//! that succeeded within x ms of their scheduled time (log x axis). A curve that levels off below
//! 1 shows failed or dropped requests. Each service's SLO is a dashed vertical line in its colour,
//! the pass/fail percentile a grey horizontal line; a service passes when its curve crosses the
//! percentile line left of its SLO line (a ring marks that point).

use plotters::prelude::*;

use crate::error::VerifyError;

/// One service's curve.
pub struct Curve<'a> {
    pub name: &'a str,
    pub slo_ms: f64,
    pub pass: bool,
    /// (latency ms, fraction of scheduled requests), ascending.
    pub points: Vec<(f64, f64)>,
}

const COLORS: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

fn plot_err(e: impl std::fmt::Display) -> VerifyError {
    VerifyError::Plot(e.to_string())
}

/// Render the plot as an SVG document.
pub fn cdf_svg(title: &str, curves: &[Curve<'_>], percentile: f64) -> Result<String, VerifyError> {
    let xs = curves.iter().flat_map(|c| c.points.iter().map(|p| p.0).chain([c.slo_ms])).filter(|x| *x > 0.0);
    let (lo, hi) = xs.fold((f64::INFINITY, 0.0f64), |(lo, hi), x| (lo.min(x), hi.max(x)));
    let (lo, hi) = if lo.is_finite() { (lo / 1.5, hi * 1.5) } else { (0.1, 1000.0) };
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (1000, 620)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(44)
            .y_label_area_size(56)
            .build_cartesian_2d((lo..hi).log_scale(), 0.0..1.02)
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .light_line_style(TRANSPARENT)
            .x_labels(10)
            .x_desc("latency from scheduled send time (ms, log scale)")
            .y_desc("share of scheduled requests done within x")
            .x_label_formatter(&|v| if *v >= 10.0 { format!("{v:.0}") } else { format!("{v:.2}") })
            .draw()
            .map_err(plot_err)?;
        let q = percentile / 100.0;
        let grey = RGBColor(120, 120, 120);
        chart
            .draw_series(DashedLineSeries::new([(lo, q), (hi, q)], 4, 4, grey.stroke_width(1)))
            .map_err(plot_err)?
            .label(format!("p{percentile}"))
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], grey.stroke_width(1)));
        for (i, c) in curves.iter().enumerate() {
            let color = COLORS[i % COLORS.len()];
            // A step curve: each point holds until the next latency.
            let mut steps = Vec::with_capacity(c.points.len() * 2 + 1);
            let mut prev = 0.0;
            for &(x, y) in &c.points {
                steps.push((x, prev));
                steps.push((x, y));
                prev = y;
            }
            if let Some(&(x, y)) = c.points.last() {
                steps.push((hi.max(x), y));
            }
            let verdict = if c.pass { "pass" } else { "FAIL" };
            chart
                .draw_series(LineSeries::new(steps, color.stroke_width(2)))
                .map_err(plot_err)?
                .label(format!("{} (SLO {} ms): {verdict}", c.name, c.slo_ms))
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2)));
            chart
                .draw_series(DashedLineSeries::new([(c.slo_ms, 0.0), (c.slo_ms, 1.02)], 6, 4, color.stroke_width(1)))
                .map_err(plot_err)?;
            chart.draw_series([Circle::new((c.slo_ms, q), 5, color.stroke_width(2))]).map_err(plot_err)?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(plot_err)?;
        root.present().map_err(plot_err)?;
    }
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_service_and_its_slo_are_drawn() {
        let curves = [
            Curve { name: "photo-tags", slo_ms: 120.0, pass: true, points: vec![(10.0, 0.5), (20.0, 1.0)] },
            Curve { name: "moderation", slo_ms: 80.0, pass: false, points: vec![(50.0, 0.2), (900.0, 0.8)] },
            Curve { name: "idle", slo_ms: 30.0, pass: false, points: vec![] },
        ];
        let svg = cdf_svg("parva verify", &curves, 99.0).unwrap();
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        for want in ["photo-tags (SLO 120 ms): pass", "moderation (SLO 80 ms): FAIL", "idle (SLO 30 ms): FAIL", "p99", "parva verify"] {
            assert!(svg.contains(want), "{want} missing");
        }
        // Three SLO rings and at least one path per curve.
        assert_eq!(svg.matches("<circle").count(), 3);
        assert!(svg.matches("<polyline").count() >= 3);
    }

    #[test]
    fn an_empty_run_still_draws_axes() {
        let svg = cdf_svg("t", &[], 99.0).unwrap();
        assert!(svg.contains("latency from scheduled send time"));
    }
}
