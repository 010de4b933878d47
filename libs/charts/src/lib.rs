//! # anoflow-charts
//!
//! Charts for anoflow's reports as SVG, drawn with plotters: text stays text (sharp at any
//! zoom and in print, no system font needed), every series is named in a legend beside the
//! plot, and both axes have titles. A plain library shared by the `report` sink (`anoflow-plugin-report`)
//! and the host's sweep page.

use std::ops::Range;

use plotters::coord::{types::RangedCoordf64, Shift};
use plotters::prelude::*;

/// A chart that could not be drawn (plotters' drawing error, as text).
#[derive(Debug, thiserror::Error)]
#[error("chart `{chart}`: {reason}")]
pub struct ChartError {
    pub chart: String,
    pub reason: String,
}

pub type Rgb = [u8; 3];

/// Distinct colours for series (matplotlib's tab10).
pub const PALETTE: [Rgb; 10] = [
    [31, 119, 180],
    [255, 127, 14],
    [44, 160, 44],
    [214, 39, 40],
    [148, 103, 189],
    [140, 86, 75],
    [227, 119, 194],
    [127, 127, 127],
    [188, 189, 34],
    [23, 190, 207],
];

/// The colour of series `i` (the palette repeats after 10).
pub fn series_colour(i: usize) -> Rgb {
    PALETTE[i % PALETTE.len()]
}

/// Width of the legend column right of the plot, in pixels.
const LEGEND_W: u32 = 220;
const FONT: &str = "sans-serif";
// plotters writes a font size of `size / 1.24` px: 18 gives 14.5 px text.

/// One named line.
#[derive(Clone, Debug)]
pub struct Line {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// One named marker (a mask's operating point on a PR chart).
#[derive(Clone, Debug)]
pub struct Marker {
    pub name: String,
    pub at: (f64, f64),
}

/// Bars grouped by category, one bar per series, with optional reference levels drawn as a
/// black tick across each group (e.g. the oracle F1-max).
#[derive(Clone, Debug)]
pub struct Bars {
    pub title: String,
    pub y_label: String,
    pub groups: Vec<String>,
    /// Per series, one value per group (`None`: not drawn).
    pub series: Vec<(String, Vec<Option<f64>>)>,
    pub references: Vec<(String, Vec<Option<f64>>)>,
}

fn colour(i: usize) -> RGBColor {
    let [r, g, b] = series_colour(i);
    RGBColor(r, g, b)
}

/// Reference levels in black and greys, told apart by their legend.
fn reference_colour(i: usize) -> RGBColor {
    let v = (i * 90).min(160) as u8;
    RGBColor(v, v, v)
}

fn failed<E: std::fmt::Debug>(what: &str) -> impl FnOnce(E) -> ChartError + '_ {
    move |e| ChartError { chart: what.to_string(), reason: format!("{e:?}") }
}

enum Key {
    Line(RGBColor),
    Dash(RGBColor),
    Square(RGBColor),
    Diamond(RGBColor),
}

/// Draws the legend entries top-down into `area` (the column right of the plot).
fn legend(area: &DrawingArea<SVGBackend<'_>, Shift>, entries: &[(String, Key)]) -> Result<(), ChartError> {
    let style = TextStyle::from((FONT, 18).into_font()).color(&BLACK);
    for (i, (name, key)) in entries.iter().enumerate() {
        let y = 40 + i as i32 * 22;
        let drawn = match *key {
            Key::Line(c) => area.draw(&PathElement::new(vec![(8, y), (32, y)], c.stroke_width(3))),
            Key::Dash(c) => area
                .draw(&PathElement::new(vec![(8, y), (32, y)], c.stroke_width(3)))
                .and_then(|_| area.draw(&Rectangle::new([(18, y - 2), (22, y + 2)], WHITE.filled()))),
            Key::Square(c) => area.draw(&Rectangle::new([(14, y - 6), (26, y + 6)], c.filled())),
            Key::Diamond(c) => {
                area.draw(&Polygon::new(vec![(20, y - 7), (27, y), (20, y + 7), (13, y)], c.filled())).and_then(|_| {
                    area.draw(&PathElement::new(vec![(20, y - 7), (27, y), (20, y + 7), (13, y), (20, y - 7)], BLACK))
                })
            }
        };
        drawn.map_err(failed("legend"))?;
        // Long names are cut so they stay inside the column; the full name is in the tables.
        let label: String =
            if name.chars().count() > 24 { name.chars().take(23).chain(['…']).collect() } else { name.clone() };
        area.draw(&Text::new(label, (38, y - 8), style.clone())).map_err(failed("legend"))?;
    }
    Ok(())
}

/// A titled chart on `plot` over the ranges `(x, y)`, its mesh drawn with the axis titles
/// `(x_desc, y_desc)`: the frame [`pr_chart`] and [`line_chart`] share.
fn xy_chart<'a, 'b>(
    plot: &'a DrawingArea<SVGBackend<'b>, Shift>,
    title: &str,
    (x, y): (Range<f64>, Range<f64>),
    (x_desc, y_desc): (&str, &str),
) -> Result<ChartContext<'a, SVGBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>, ChartError> {
    let mut chart = ChartBuilder::on(plot)
        .caption(title, (FONT, 24))
        .margin(12)
        .x_label_area_size(44)
        .y_label_area_size(56)
        .build_cartesian_2d(x, y)
        .map_err(failed(title))?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .label_style((FONT, 18))
        .axis_desc_style((FONT, 19))
        .light_line_style(WHITE)
        .draw()
        .map_err(failed(title))?;
    Ok(chart)
}

/// Precision against recall: one line per score map, one diamond per mask (its operating
/// point), each named in the legend. Mask `i` takes series colour `i`, as in [`bar_chart`], so
/// a binarizer keeps its colour across charts; the curves take the colours after them.
pub fn pr_chart(title: &str, curves: &[Line], markers: &[Marker]) -> Result<String, ChartError> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (640 + LEGEND_W, 460)).into_drawing_area();
        root.fill(&WHITE).map_err(failed(title))?;
        let (plot, side) = root.split_horizontally(640);
        let mut chart = xy_chart(&plot, title, (0f64..1f64, 0f64..1.02f64), ("recall", "precision"))?;
        let mut entries = Vec::new();
        for (i, line) in curves.iter().enumerate() {
            let pts = line.points.iter().map(|&(x, y)| (x.clamp(0.0, 1.0), y.clamp(0.0, 1.0)));
            let c = colour(markers.len() + i);
            chart.draw_series(LineSeries::new(pts, c.stroke_width(2))).map_err(failed(title))?;
            entries.push((format!("{} (score map)", line.name), Key::Line(c)));
        }
        for (i, m) in markers.iter().enumerate() {
            let c = colour(i);
            let (x, y) = (m.at.0.clamp(0.0, 1.0), m.at.1.clamp(0.0, 1.0));
            let diamond = |(x, y): (i32, i32)| vec![(x, y - 8), (x + 8, y), (x, y + 8), (x - 8, y), (x, y - 8)];
            let (px, py) = chart.backend_coord(&(x, y));
            root.draw(&Polygon::new(diamond((px, py)), c.filled())).map_err(failed(title))?;
            root.draw(&PathElement::new(diamond((px, py)), BLACK.stroke_width(1))).map_err(failed(title))?;
            entries.push((format!("{} (mask)", m.name), Key::Diamond(c)));
        }
        legend(&side, &entries)?;
        root.present().map_err(failed(title))?;
    }
    Ok(svg)
}

/// Grouped bars with named series, category names under each group, and reference ticks.
pub fn bar_chart(bars: &Bars) -> Result<String, ChartError> {
    let title = bars.title.as_str();
    let n_series = bars.series.len().max(1);
    let group_w = (n_series as u32 * 18 + 24).max(70);
    let plot_w = (90 + group_w * bars.groups.len() as u32).clamp(640, 1600);
    let top =
        bars.series.iter().chain(&bars.references).flat_map(|(_, v)| v.iter().flatten()).fold(0.0f64, |a, &b| a.max(b));
    let y_max = if top <= 0.0 {
        1.0
    } else if top <= 1.0 {
        (top * 1.1).min(1.0).max(top)
    } else {
        top * 1.1
    };
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (plot_w + LEGEND_W, 460)).into_drawing_area();
        root.fill(&WHITE).map_err(failed(title))?;
        let (plot, side) = root.split_horizontally(plot_w);
        let n = bars.groups.len().max(1) as f64;
        let mut chart = ChartBuilder::on(&plot)
            .caption(title, (FONT, 24))
            .margin(12)
            .x_label_area_size(54)
            .y_label_area_size(64)
            .build_cartesian_2d(0f64..n, 0f64..y_max)
            .map_err(failed(title))?;
        let blank = |_: &f64| String::new();
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(0)
            .x_label_formatter(&blank)
            .x_desc("category")
            .y_desc(bars.y_label.as_str())
            .label_style((FONT, 18))
            .axis_desc_style((FONT, 19))
            .light_line_style(WHITE)
            .draw()
            .map_err(failed(title))?;
        let slot = 0.8 / n_series as f64;
        for (s, (_, values)) in bars.series.iter().enumerate() {
            let rects = values.iter().enumerate().filter_map(|(g, v)| {
                let x0 = g as f64 + 0.1 + s as f64 * slot;
                v.map(|v| Rectangle::new([(x0, 0.0), (x0 + slot * 0.9, v.max(0.0))], colour(s).filled()))
            });
            chart.draw_series(rects).map_err(failed(title))?;
        }
        for (r, (_, values)) in bars.references.iter().enumerate() {
            for (g, v) in values.iter().enumerate() {
                if let Some(v) = v {
                    let pts = [(g as f64 + 0.04, *v), (g as f64 + 0.96, *v)];
                    chart
                        .draw_series(DashedLineSeries::new(pts, 7, 4, reference_colour(r).stroke_width(3)))
                        .map_err(failed(title))?;
                }
            }
        }
        let style = TextStyle::from((FONT, 18).into_font()).color(&BLACK).pos(plotters::style::text_anchor::Pos::new(
            plotters::style::text_anchor::HPos::Center,
            plotters::style::text_anchor::VPos::Top,
        ));
        for (g, name) in bars.groups.iter().enumerate() {
            let (x, y) = chart.backend_coord(&(g as f64 + 0.5, 0.0));
            // Alternate rows so that neighbouring long names do not overlap.
            let dy = if bars.groups.len() > 6 && g % 2 == 1 { 20 } else { 4 };
            root.draw(&Text::new(name.clone(), (x, y + dy), style.clone())).map_err(failed(title))?;
        }
        let mut entries: Vec<(String, Key)> =
            bars.series.iter().enumerate().map(|(i, (name, _))| (name.clone(), Key::Square(colour(i)))).collect();
        entries.extend(
            bars.references.iter().enumerate().map(|(i, (name, _))| (name.clone(), Key::Dash(reference_colour(i)))),
        );
        legend(&side, &entries)?;
        root.present().map_err(failed(title))?;
    }
    Ok(svg)
}

/// Lines over a numeric x axis (e.g. a figure against a swept param), one per series.
pub fn line_chart(title: &str, x_label: &str, y_label: &str, lines: &[Line]) -> Result<String, ChartError> {
    let xs = lines.iter().flat_map(|l| l.points.iter().map(|p| p.0));
    let (x0, x1) = xs.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), x| (lo.min(x), hi.max(x)));
    let (x0, x1) = if x0.is_finite() && x1 > x0 { (x0, x1) } else { (x0.min(0.0), x0.max(0.0) + 1.0) };
    let ys = lines.iter().flat_map(|l| l.points.iter().map(|p| p.1));
    let y1 = ys.fold(0.0f64, f64::max);
    let y1 = if y1 > 1.0 { y1 * 1.1 } else { 1.0 };
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (640 + LEGEND_W, 420)).into_drawing_area();
        root.fill(&WHITE).map_err(failed(title))?;
        let (plot, side) = root.split_horizontally(640);
        let mut chart = xy_chart(&plot, title, (x0..x1, 0f64..y1), (x_label, y_label))?;
        let mut entries = Vec::new();
        for (i, line) in lines.iter().enumerate() {
            let c = colour(i);
            chart
                .draw_series(LineSeries::new(line.points.iter().copied(), c.stroke_width(2)))
                .map_err(failed(title))?;
            chart.draw_series(line.points.iter().map(|&p| Circle::new(p, 4, c.filled()))).map_err(failed(title))?;
            entries.push((line.name.clone(), Key::Line(c)));
        }
        legend(&side, &entries)?;
        root.present().map_err(failed(title))?;
    }
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// plotters writes each text as `<text ...>\nTEXT\n</text>`.
    fn has_text(svg: &str, text: &str) -> bool {
        svg.contains(&format!(">\n{text}\n</text>"))
    }

    #[test]
    fn pr_chart_names_every_series_and_keeps_text_as_text() {
        let curve: Vec<(f64, f64)> = (0..=100).map(|i| (i as f64 / 100.0, 1.0 - i as f64 / 200.0)).collect();
        let svg = pr_chart(
            "bottle",
            &[Line { name: "scorer".into(), points: curve }],
            &[Marker { name: "thr".into(), at: (0.5, 0.5) }, Marker { name: "ttt".into(), at: (0.2, 0.9) }],
        )
        .unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..60]);
        for text in ["scorer (score map)", "thr (mask)", "ttt (mask)", "recall", "precision", "bottle"] {
            assert!(has_text(&svg, text), "missing {text}");
        }
        // The curve is one polyline of 101 points in the first series colour.
        // Masks take the first colours (as in the bar charts), the curve the next one.
        assert!(svg.contains("stroke=\"#2CA02C\""), "curve in series colour 2");
        assert!(svg.contains("fill=\"#1F77B4\""), "first mask in series colour 0");
        assert_eq!(svg.matches("<polygon").count(), 4, "one diamond per mask on the plot and in the legend");
    }

    #[test]
    fn bar_chart_labels_groups_and_the_reference() {
        let bars = Bars {
            title: "F1".into(),
            y_label: "pixel F1".into(),
            groups: vec!["bottle".into(), "cable".into(), "mean".into()],
            series: vec![
                ("thr".into(), vec![Some(0.2), Some(0.4), Some(0.3)]),
                ("ttt".into(), vec![Some(0.5), None, Some(0.5)]),
            ],
            references: vec![("oracle F1-max: scorer".into(), vec![Some(0.6), Some(0.7), Some(0.65)])],
        };
        let svg = bar_chart(&bars).unwrap();
        for text in ["bottle", "cable", "mean", "thr", "ttt", "oracle F1-max: scorer", "pixel F1"] {
            assert!(has_text(&svg, text), "missing {text}");
        }
        // 5 bars (one value is missing) + 2 legend squares + the white background rectangles.
        let filled = svg.matches("<rect").count();
        assert!(filled >= 7, "{filled}");
    }

    #[test]
    fn line_chart_handles_one_x_value() {
        let svg =
            line_chart("F1 vs k", "k", "F1", &[Line { name: "bottle".into(), points: vec![(3.0, 0.4)] }]).unwrap();
        assert!(has_text(&svg, "bottle") && has_text(&svg, "k"));
    }
}
