//! The latency CDF plot (`latency_cdf.svg`): per service, the share of its *scheduled* requests
//! that succeeded within x ms of their scheduled time (log x axis). A curve that levels off below
//! 1 shows failed or dropped requests. Each service's SLO is a dashed vertical line in its colour,
//! the pass/fail percentile a grey horizontal line; a service passes when its curve crosses the
//! percentile line left of its SLO line (a ring marks that point; a failing service gets a cross
//! there and a red FAIL in the legend). Every service has its own colour (ten from the usual
//! palette, then evenly spread hues), and the legend sits beside the chart, never over a curve.

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

/// The `i`-th service's colour: the palette, then hues spread by the golden ratio (distinct for
/// any number of services a plot can show).
fn color(i: usize) -> RGBAColor {
    match COLORS.get(i) {
        Some(c) => c.to_rgba(),
        None => HSLColor(((i - COLORS.len()) as f64 * 0.618_034 + 0.05) % 1.0, 0.7, 0.42).to_rgba(),
    }
}

/// Width of the plot, of which the legend takes the right part.
const WIDTH: u32 = 1240;
const LEGEND_WIDTH: u32 = 300;

/// Tick marks on a log axis: 1, 2 and 5 times each power of ten in `[lo, hi]` (plotters' own
/// marks only the powers of ten, which left a 12-300 ms axis with one label).
pub fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
    if !(lo > 0.0 && hi > lo && hi.is_finite()) {
        return Vec::new();
    }
    let mut out = Vec::new();
    let mut e = lo.log10().floor() as i32;
    while e <= hi.log10().ceil() as i32 && out.len() < 64 {
        for m in [1.0, 2.0, 5.0] {
            let v = m * 10f64.powi(e);
            if v >= lo && v <= hi {
                out.push(v);
            }
        }
        e += 1;
    }
    out
}

/// An axis label: whole numbers without decimals (`25`, `20000`, not `25.0`, `20000.0`), small
/// ones with what they need (`0.5`, `0.25`).
pub fn number(v: f64) -> String {
    if v == v.round() && v.abs() < 1e15 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        let t = format!("{v:.3}");
        t.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

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
        let height = 620u32.max(80 + 18 * curves.len() as u32);
        let root = SVGBackend::with_string(&mut svg, (WIDTH, height)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        let (plot_area, legend_area) = root.split_horizontally(WIDTH - LEGEND_WIDTH);
        let mut chart = ChartBuilder::on(&plot_area)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(44)
            .y_label_area_size(56)
            .build_cartesian_2d((lo..hi).log_scale().with_key_points(log_ticks(lo, hi)), 0.0..1.02)
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .light_line_style(TRANSPARENT)
            .x_labels(20)
            .x_desc("latency from scheduled send time (ms, log scale)")
            .y_desc("share of scheduled requests done within x")
            .x_label_formatter(&|v| number(*v))
            .draw()
            .map_err(plot_err)?;
        let q = percentile / 100.0;
        let grey = RGBColor(120, 120, 120);
        chart
            .draw_series(DashedLineSeries::new([(lo, q), (hi, q)], 4, 4, grey.stroke_width(1)))
            .map_err(plot_err)?;
        // The legend, beside the chart: the percentile line, then each service.
        let font = ("sans-serif", 13).into_font();
        let entry = |row: usize| 40 + 18 * row as i32;
        legend_area
            .draw(&PathElement::new([(8, entry(0)), (28, entry(0))], grey.stroke_width(1)))
            .map_err(plot_err)?;
        legend_area.draw(&Text::new(format!("p{percentile} (pass line)"), (34, entry(0) - 7), font.clone())).map_err(plot_err)?;
        for (i, c) in curves.iter().enumerate() {
            let color = color(i);
            let y = entry(i + 1);
            legend_area.draw(&PathElement::new([(8, y), (28, y)], color.stroke_width(2))).map_err(plot_err)?;
            let verdict = if c.pass { "pass" } else { "FAIL" };
            let style = if c.pass { font.color(&BLACK) } else { font.color(&RED) };
            legend_area
                .draw(&Text::new(format!("{} (SLO {} ms): {verdict}", c.name, c.slo_ms), (34, y - 7), style))
                .map_err(plot_err)?;
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
            chart.draw_series(LineSeries::new(steps, color.stroke_width(2))).map_err(plot_err)?;
            chart
                .draw_series(DashedLineSeries::new([(c.slo_ms, 0.0), (c.slo_ms, 1.02)], 6, 4, color.stroke_width(1)))
                .map_err(plot_err)?;
            chart.draw_series([Circle::new((c.slo_ms, q), 5, color.stroke_width(2))]).map_err(plot_err)?;
            if !c.pass {
                chart.draw_series([Cross::new((c.slo_ms, q), 7, RED.stroke_width(2))]).map_err(plot_err)?;
            }
        }
        root.present().map_err(plot_err)?;
    }
    Ok(svg)
}

/// One policy's GPUs over time: `(from s, to s, GPUs)` steps, and its SLO attainment:
/// `(from s, to s, % within the SLO)` steps (the worst service of each 10 minutes).
pub struct DaySeries<'a> {
    pub name: &'a str,
    pub gpus: Vec<(f64, f64, f64)>,
    pub attainment: Vec<(f64, f64, f64)>,
}

/// The day plot of `parva simulate --rates` (`day.svg`): above, the total demand (requests/s,
/// thick grey line, right axis) and each policy's GPUs (steps, left axis) over hours; below, on
/// the same hours, each policy's SLO attainment (the worst service's share of requests within
/// the SLO per 10 minutes), with the 95 % line dashed.
pub fn day_svg(title: &str, demand: &[(f64, f64, f64)], series: &[DaySeries<'_>]) -> Result<String, VerifyError> {
    let end_h = demand.iter().chain(series.iter().flat_map(|s| s.gpus.iter())).map(|p| p.1 / 3600.0).fold(0.0f64, f64::max).max(1e-3);
    let max_gpus = series.iter().flat_map(|s| s.gpus.iter().map(|p| p.2)).fold(1.0f64, f64::max) * 1.1;
    let max_demand = demand.iter().map(|p| p.2).fold(1.0f64, f64::max) * 1.1;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, 800)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        let (plot_area, legend_area) = root.split_horizontally(WIDTH - LEGEND_WIDTH);
        let (plot_area, slo_area) = plot_area.split_vertically(540);
        let mut chart = ChartBuilder::on(&plot_area)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(44)
            .y_label_area_size(56)
            .right_y_label_area_size(64)
            .build_cartesian_2d(0.0..end_h, 0.0..max_gpus)
            .map_err(plot_err)?
            .set_secondary_coord(0.0..end_h, 0.0..max_demand);
        chart
            .configure_mesh()
            .light_line_style(TRANSPARENT)
            .x_desc("hours")
            .y_desc("GPUs")
            .x_label_formatter(&|v| number(*v))
            .y_label_formatter(&|v| number(*v))
            .draw()
            .map_err(plot_err)?;
        chart.configure_secondary_axes().y_desc("demand (requests/s)").y_label_formatter(&|v| number(*v)).draw().map_err(plot_err)?;
        let grey = RGBColor(150, 150, 150);
        let steps = |pts: &[(f64, f64, f64)]| -> Vec<(f64, f64)> {
            pts.iter().flat_map(|&(a, b, v)| [(a / 3600.0, v), (b / 3600.0, v)]).collect()
        };
        chart
            .draw_secondary_series(LineSeries::new(steps(demand), grey.stroke_width(3)))
            .map_err(plot_err)?;
        let font = ("sans-serif", 13).into_font();
        let entry = |row: usize| 40 + 18 * row as i32;
        legend_area.draw(&PathElement::new([(8, entry(0)), (28, entry(0))], grey.stroke_width(3))).map_err(plot_err)?;
        legend_area.draw(&Text::new("demand (right axis)", (34, entry(0) - 7), font.clone())).map_err(plot_err)?;
        for (i, s) in series.iter().enumerate() {
            let c = color(i);
            chart.draw_series(LineSeries::new(steps(&s.gpus), c.stroke_width(2))).map_err(plot_err)?;
            let y = entry(i + 1);
            legend_area.draw(&PathElement::new([(8, y), (28, y)], c.stroke_width(2))).map_err(plot_err)?;
            legend_area.draw(&Text::new(format!("{} GPUs", s.name), (34, y - 7), font.clone())).map_err(plot_err)?;
        }
        // Below: SLO attainment on the same hours.
        let low = series.iter().flat_map(|s| s.attainment.iter().map(|p| p.2)).fold(100.0f64, f64::min);
        let floor = if low >= 90.0 { 90.0 } else { (low / 10.0).floor() * 10.0 };
        let mut slo = ChartBuilder::on(&slo_area)
            .margin(12)
            .x_label_area_size(44)
            .y_label_area_size(56)
            .right_y_label_area_size(64)
            .build_cartesian_2d(0.0..end_h, floor..100.5)
            .map_err(plot_err)?;
        slo.configure_mesh()
            .light_line_style(TRANSPARENT)
            .x_desc("hours")
            .y_desc("% within SLO (worst service, 10 min)")
            .x_label_formatter(&|v| number(*v))
            .y_label_formatter(&|v| number(*v))
            .draw()
            .map_err(plot_err)?;
        slo.draw_series(DashedLineSeries::new([(0.0, 95.0), (end_h, 95.0)], 6, 4, RED.stroke_width(1))).map_err(plot_err)?;
        for (i, s) in series.iter().enumerate() {
            let pts: Vec<(f64, f64)> = steps(&s.attainment).into_iter().map(|(x, y)| (x, y.clamp(floor, 100.0))).collect();
            slo.draw_series(LineSeries::new(pts, color(i).stroke_width(2))).map_err(plot_err)?;
        }
        let y = entry(series.len() + 2);
        legend_area.draw(&PathElement::new([(8, y), (28, y)], RED.stroke_width(1))).map_err(plot_err)?;
        legend_area.draw(&Text::new("95 % within SLO (below)", (34, y - 7), font.clone())).map_err(plot_err)?;
        root.present().map_err(plot_err)?;
    }
    Ok(svg)
}

/// One panel of [`over_time_svg`]: the time axis and a y axis, both labelled, without a grid.
fn panel<'a, DB, Y>(area: &'a DrawingArea<DB, plotters::coord::Shift>, x: std::ops::Range<f64>, y: Y, x_desc: &str, y_desc: &str) -> Result<ChartContext<'a, DB, Cartesian2d<plotters::coord::types::RangedCoordf64, Y::CoordDescType>>, VerifyError>
where
    DB: DrawingBackend,
    Y: plotters::coord::ranged1d::AsRangedCoord<Value = f64>,
    Y::CoordDescType: plotters::coord::ranged1d::ValueFormatter<f64>,
{
    let mut chart = ChartBuilder::on(area).margin(12).x_label_area_size(40).y_label_area_size(64).build_cartesian_2d(x, y).map_err(plot_err)?;
    chart
        .configure_mesh()
        .light_line_style(TRANSPARENT)
        .x_desc(x_desc)
        .y_desc(y_desc)
        .x_label_formatter(&|v| number(*v))
        .y_label_formatter(&|v| number(*v))
        .draw()
        .map_err(plot_err)?;
    Ok(chart)
}

/// One service over the run, for [`over_time_svg`].
pub struct TimeSeries<'a> {
    pub name: &'a str,
    pub slo_ms: f64,
    pub pass: bool,
    pub points: &'a [crate::stats::TimePoint],
}

/// Runs of consecutive intervals that have a value, each as a step line `(x, y)`: a gap where an
/// interval has none (no request, or none succeeded) breaks the line rather than bridging it.
fn step_runs(points: &[crate::stats::TimePoint], unit_s: f64, value: impl Fn(&crate::stats::TimePoint) -> Option<f64>) -> Vec<Vec<(f64, f64)>> {
    let mut runs = Vec::new();
    let mut run: Vec<(f64, f64)> = Vec::new();
    for p in points {
        match value(p) {
            Some(v) => run.extend([(p.from_s / unit_s, v), (p.to_s / unit_s, v)]),
            None => runs.extend((!run.is_empty()).then(|| std::mem::take(&mut run))),
        }
    }
    runs.extend((!run.is_empty()).then_some(run));
    runs
}

/// The plot over time (`over_time.svg`), for runs at changing rates (`verify --rates`, a trace)
/// and fixed ones alike. Three panels on one time axis (seconds since the load started; minutes
/// or hours for long runs), each service in its colour: the offered load (requests/s scheduled),
/// the p99 latency of each interval (log scale, the service's SLO dashed in its colour) and the
/// share of the interval's requests within the SLO (the pass percentile dashed grey).
pub fn over_time_svg(title: &str, series: &[TimeSeries<'_>], percentile: f64) -> Result<String, VerifyError> {
    let end_s = series.iter().flat_map(|s| s.points.iter().map(|p| p.to_s)).fold(0.0f64, f64::max);
    let start_s = series.iter().flat_map(|s| s.points.first().map(|p| p.from_s)).fold(end_s, f64::min);
    let (unit_s, unit) = if end_s <= 600.0 {
        (1.0, "s")
    } else if end_s <= 3.0 * 3600.0 {
        (60.0, "min")
    } else {
        (3600.0, "hours")
    };
    let (x0, x1) = (start_s / unit_s, (end_s / unit_s).max(start_s / unit_s + 1e-6));
    let max_rate = series.iter().flat_map(|s| s.points.iter().map(|p| p.offered_rate)).fold(1.0f64, f64::max) * 1.1;
    let lat = series.iter().flat_map(|s| s.points.iter().filter_map(|p| p.p99_ms).chain([s.slo_ms])).filter(|v| *v > 0.0);
    let (lo, hi) = lat.fold((f64::INFINITY, 0.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let (lo, hi) = if lo.is_finite() { (lo / 1.5, hi * 1.5) } else { (0.1, 1000.0) };
    let low = series.iter().flat_map(|s| s.points.iter().filter_map(|p| p.attainment_pct)).fold(100.0f64, f64::min).min(percentile);
    let floor = if low >= 90.0 { 90.0 } else { (low / 10.0).floor() * 10.0 };
    let x_desc = format!("time since the load started ({unit})");
    let mut svg = String::new();
    {
        let height = 960u32.max(80 + 18 * series.len() as u32);
        let root = SVGBackend::with_string(&mut svg, (WIDTH, height)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        let (plot_area, legend_area) = root.split_horizontally(WIDTH - LEGEND_WIDTH);
        let (title_area, plot_area) = plot_area.split_vertically(36);
        title_area.titled(title, ("sans-serif", 18)).map_err(plot_err)?;
        let panels = plot_area.split_evenly((3, 1));
        let mut rate = panel(&panels[0], x0..x1, 0.0..max_rate, &x_desc, "offered (requests/s)")?;
        let mut p99 = panel(&panels[1], x0..x1, (lo..hi).log_scale().with_key_points(log_ticks(lo, hi)), &x_desc, "p99 per interval (ms, log)")?;
        let mut slo = panel(&panels[2], x0..x1, floor..100.5, &x_desc, "% within SLO per interval")?;
        let grey = RGBColor(120, 120, 120);
        slo.draw_series(DashedLineSeries::new([(x0, percentile), (x1, percentile)], 6, 4, grey.stroke_width(1))).map_err(plot_err)?;
        let font = ("sans-serif", 13).into_font();
        let entry = |row: usize| 40 + 18 * row as i32;
        legend_area.draw(&PathElement::new([(8, entry(0)), (28, entry(0))], grey.stroke_width(1))).map_err(plot_err)?;
        legend_area.draw(&Text::new(format!("{percentile} % within SLO (pass line)"), (34, entry(0) - 7), font.clone())).map_err(plot_err)?;
        for (i, s) in series.iter().enumerate() {
            let c = color(i);
            for run in step_runs(s.points, unit_s, |p| Some(p.offered_rate)) {
                rate.draw_series(LineSeries::new(run, c.stroke_width(2))).map_err(plot_err)?;
            }
            for run in step_runs(s.points, unit_s, |p| p.p99_ms.map(|v| v.clamp(lo, hi))) {
                p99.draw_series(LineSeries::new(run, c.stroke_width(2))).map_err(plot_err)?;
            }
            p99.draw_series(DashedLineSeries::new([(x0, s.slo_ms), (x1, s.slo_ms)], 6, 4, c.stroke_width(1))).map_err(plot_err)?;
            for run in step_runs(s.points, unit_s, |p| p.attainment_pct.map(|v| v.clamp(floor, 100.0))) {
                slo.draw_series(LineSeries::new(run, c.stroke_width(2))).map_err(plot_err)?;
            }
            let y = entry(i + 1);
            legend_area.draw(&PathElement::new([(8, y), (28, y)], c.stroke_width(2))).map_err(plot_err)?;
            let verdict = if s.pass { "pass" } else { "FAIL" };
            let style = if s.pass { font.color(&BLACK) } else { font.color(&RED) };
            legend_area.draw(&Text::new(format!("{} (SLO {} ms): {verdict}", s.name, s.slo_ms), (34, y - 7), style)).map_err(plot_err)?;
        }
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
    fn twelve_services_get_twelve_colours_a_legend_beside_the_chart_and_failures_are_marked() {
        let names: Vec<String> = (0..12).map(|i| format!("svc{i:02}")).collect();
        let curves: Vec<Curve<'_>> = names
            .iter()
            .enumerate()
            .map(|(i, n)| Curve { name: n, slo_ms: 10.0 * (i + 1) as f64, pass: i % 4 != 0, points: vec![(5.0, 0.5), (8.0, 1.0)] })
            .collect();
        let svg = cdf_svg("t", &curves, 99.0).unwrap();
        let mut colours: Vec<&str> = svg.match_indices("stroke=\"#").map(|(at, _)| &svg[at + 8..at + 15]).collect();
        colours.sort_unstable();
        colours.dedup();
        // 12 services + grey percentile line + black axes (+ red crosses).
        assert!(colours.len() >= 13, "{colours:?}");
        for c in 0..12 {
            assert_ne!(color(c), color(c + 1));
            for d in 0..c {
                assert_ne!(color(c), color(d), "services {c} and {d} share a colour");
            }
        }
        // The legend's entries start right of the chart area.
        for n in &names {
            let at = svg.find(&format!("{n} (SLO")).unwrap_or_else(|| panic!("{n} not in the legend"));
            let tag = &svg[svg[..at].rfind("<text").unwrap()..at];
            let x: f64 = tag.split("x=\"").nth(1).unwrap().split('"').next().unwrap().parse().unwrap();
            assert!(x >= f64::from(WIDTH - LEGEND_WIDTH), "{n} legend at x={x}");
        }
        // The three failing services (0, 4, 8) are crossed and named FAIL.
        assert_eq!(svg.matches(": FAIL").count(), 3);
        assert_eq!(svg.matches("fill=\"#FF0000\"").count(), 3, "failing services' legend entries in red");
    }

    #[test]
    fn the_day_plot_draws_demand_and_every_policy() {
        let demand = [(0.0, 3600.0, 100.0), (3600.0, 7200.0, 300.0)];
        let series = [
            DaySeries { name: "static", gpus: vec![(0.0, 7200.0, 6.0)], attainment: vec![(0.0, 7200.0, 100.0)] },
            DaySeries {
                name: "follow",
                gpus: vec![(0.0, 3600.0, 2.0), (3600.0, 7200.0, 6.0)],
                attainment: vec![(0.0, 3600.0, 99.0), (3600.0, 4200.0, 80.0), (4200.0, 7200.0, 100.0)],
            },
        ];
        let svg = day_svg("day", &demand, &series).unwrap();
        for want in ["static GPUs", "follow GPUs", "demand (right axis)", "hours", "demand (requests/s)", "% within SLO", "95 % within SLO"] {
            assert!(svg.contains(want), "{want} missing");
        }
        // Demand, two GPU curves, two attainment curves (and the dashed 95 % line).
        assert!(svg.matches("<polyline").count() >= 5, "{}", svg.matches("<polyline").count());
    }

    /// Issue 38: the CDF had no x label below 100 ms, and day.svg read `25.0` and `20000.0`.
    #[test]
    fn axes_are_labelled_below_100_ms_and_whole_numbers_read_as_such() {
        assert_eq!(log_ticks(8.0, 450.0), vec![10.0, 20.0, 50.0, 100.0, 200.0]);
        assert_eq!(log_ticks(0.3, 3.0), vec![0.5, 1.0, 2.0]);
        assert!(log_ticks(0.0, 1.0).is_empty() && log_ticks(5.0, 5.0).is_empty());
        assert_eq!((number(25.0), number(20000.0), number(0.5), number(0.25), number(12.5)), ("25".into(), "20000".into(), "0.5".into(), "0.25".into(), "12.5".into()));
        let curves = [Curve { name: "a", slo_ms: 60.0, pass: true, points: vec![(12.0, 0.5), (30.0, 1.0)] }];
        let svg = cdf_svg("t", &curves, 99.0).unwrap();
        // plotters writes a label's text on its own line: `<text ...>\n10\n</text>`.
        let labels: Vec<&str> = svg.lines().map(str::trim).collect();
        for label in ["10", "20", "50"] {
            assert!(labels.contains(&label), "no x label {label}");
        }
        let day = day_svg("d", &[(0.0, 3600.0, 20000.0)], &[DaySeries { name: "static", gpus: vec![(0.0, 3600.0, 25.0)], attainment: vec![(0.0, 3600.0, 99.0)] }]).unwrap();
        assert!(!day.lines().any(|l| l.trim().ends_with(".0") && l.trim().parse::<f64>().is_ok()), "decimals on whole-number labels");
    }

    fn interval(from_s: f64, rate: f64, attainment: Option<f64>, p99: Option<f64>) -> crate::stats::TimePoint {
        crate::stats::TimePoint {
            from_s,
            to_s: from_s + 10.0,
            scheduled: (rate * 10.0) as u64,
            succeeded: 0,
            within_slo: 0,
            offered_rate: rate,
            attainment_pct: attainment,
            p99_ms: p99,
        }
    }

    /// Issue 38: `verify --rates` had no plot over time.
    #[test]
    fn the_plot_over_time_draws_rate_p99_and_attainment_per_service_with_gaps_where_nothing_was_measured() {
        let a = [interval(0.0, 50.0, Some(100.0), Some(20.0)), interval(10.0, 200.0, Some(93.0), Some(140.0)), interval(20.0, 0.0, None, None), interval(30.0, 40.0, Some(100.0), Some(18.0))];
        let b = [interval(0.0, 5.0, Some(100.0), Some(8.0)), interval(10.0, 5.0, Some(0.0), None), interval(20.0, 5.0, Some(100.0), Some(9.0)), interval(30.0, 5.0, Some(100.0), Some(9.0))];
        let series = [TimeSeries { name: "chat", slo_ms: 100.0, pass: false, points: &a }, TimeSeries { name: "tags", slo_ms: 50.0, pass: true, points: &b }];
        let svg = over_time_svg("parva verify over time", &series, 99.0).unwrap();
        for want in ["parva verify over time", "offered (requests/s)", "p99 per interval (ms, log)", "% within SLO per interval", "time since the load started (s)", "chat (SLO 100 ms): FAIL", "tags (SLO 50 ms): pass", "99 % within SLO (pass line)"] {
            assert!(svg.contains(want), "{want} missing");
        }
        // Rate: one line each. p99: chat is broken by its empty interval (2 runs), tags by the
        // interval where nothing succeeded (2 runs). Attainment: chat 2 runs, tags 1. Plus a
        // legend line per service (dashed lines are drawn thinner).
        let thick = svg.lines().filter(|l| l.contains("<polyline") && l.contains("stroke-width=\"2\"")).count();
        assert_eq!(thick, 2 + 4 + 3 + 2, "{svg}");
        assert_eq!(step_runs(&a, 1.0, |p| p.p99_ms), vec![vec![(0.0, 20.0), (10.0, 20.0), (10.0, 140.0), (20.0, 140.0)], vec![(30.0, 18.0), (40.0, 18.0)]]);
        // An hour-long run is drawn in minutes.
        let long: Vec<_> = (0..60).map(|i| interval(60.0 * i as f64, 10.0, Some(100.0), Some(5.0))).collect();
        let svg = over_time_svg("t", &[TimeSeries { name: "x", slo_ms: 10.0, pass: true, points: &long }], 99.0).unwrap();
        assert!(svg.contains("time since the load started (min)"));
        assert!(over_time_svg("t", &[], 99.0).unwrap().contains("offered (requests/s)"), "an empty run still draws its axes");
    }

    #[test]
    fn an_empty_run_still_draws_axes() {
        let svg = cdf_svg("t", &[], 99.0).unwrap();
        assert!(svg.contains("latency from scheduled send time"));
    }
}
