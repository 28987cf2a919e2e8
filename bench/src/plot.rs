//! The `--plot` chart: a PNG of Quern beside the peers, a panel of
//! throughput (tasks/s) and one of latency (p50, ms), both on a log scale
//! since the systems differ by orders of magnitude. Each group of bars is
//! one Quern figure and every peer figure that [`peers::merge`] compared it
//! with, so the chart shows exactly the ratios of the table.
//!
//! Text is drawn by plotters' `ab_glyph` backend from a TrueType file read
//! at run time, so building the harness needs no system font library; the
//! chart is drawn into a pixel buffer and encoded by the `png` crate, which
//! builds in a tenth of the time of the `image` crate that plotters' own
//! PNG encoder would bring.

use crate::peers::counterpart;
use crate::{Result, Row};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::register_font;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use std::io::BufWriter;
use std::path::Path;

/// The font used when none is given: DejaVu Sans, as Debian's
/// `fonts-dejavu-core` installs it.
pub const DEFAULT_FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

/// The chart's size in pixels.
const SIZE: (u32, u32) = (1280, 720);
/// Quern's colour.
const QUERN: RGBColor = RGBColor(214, 39, 40);
/// The peers' colours, in the order they come (then again from the start).
const PEERS: [RGBColor; 10] = [
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(31, 119, 180),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(23, 190, 207),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(227, 119, 194),
    RGBColor(31, 31, 112),
];
/// Room above the tallest bar for its label and the legend, as a factor.
const HEADROOM: f64 = 8.0;
/// Share of a group's width that its bars fill.
const FILL: f64 = 0.84;

/// One Quern figure and the peers' figures compared with it.
#[derive(Debug, PartialEq)]
struct Group {
    label: String,
    /// (system, value), Quern's first.
    bars: Vec<(String, f64)>,
}

/// What one panel shows.
struct Panel<'a> {
    caption: &'a str,
    groups: &'a [Group],
    value: fn(f64) -> String,
}

/// Writes the chart of `rows` (merged by [`crate::peers::merge`]) to `path`
/// as a PNG titled `title`, drawing text with the TrueType font `font`.
pub fn write(rows: &[Row], path: &Path, font: &Path, title: &str) -> Result<()> {
    let (throughput, latency) = groups(rows);
    if throughput.is_empty() && latency.is_empty() {
        return Err("--plot: no peers' figures to compare with (add --with-peers or --peers FILE)".into());
    }
    load_font(font)?;
    let mut rgb = vec![0; 3 * SIZE.0 as usize * SIZE.1 as usize];
    draw(&mut rgb, title, &throughput, &latency)?;
    encode_png(path, &rgb)
}

/// Draws the chart into `rgb`, 8-bit RGB pixels of [`SIZE`], row by row.
fn draw(rgb: &mut [u8], title: &str, throughput: &[Group], latency: &[Group]) -> Result<()> {
    let systems = systems(throughput.iter().chain(latency));
    let root = BitMapBackend::with_buffer(rgb, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(title, ("sans-serif", 20))?;
    // Each panel as wide as its groups need, the latency panel at least a third.
    let share = (throughput.len() as f64 / (throughput.len() + latency.len().max(1)) as f64).min(0.67);
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let split = (f64::from(SIZE.0) * share) as u32;
    let (left, right) = root.split_horizontally(split);
    let tp = Panel { caption: "throughput, tasks/s (higher is better)", groups: throughput, value: compact };
    let lat = Panel { caption: "latency p50, ms (lower is better)", groups: latency, value: millis };
    draw_panel(&left, &tp, &systems, true)?;
    draw_panel(&right, &lat, &systems, throughput.is_empty())?;
    root.present()?;
    Ok(())
}

/// Writes `rgb` (see [`draw`]) to `path` as a PNG.
fn encode_png(path: &Path, rgb: &[u8]) -> Result<()> {
    let file = std::fs::File::create(path).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    let mut encoder = png::Encoder::new(BufWriter::new(file), SIZE.0, SIZE.1);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    encoder.set_compression(png::Compression::Best);
    let mut writer = encoder.write_header()?;
    writer.write_image_data(rgb)?;
    writer.finish()?;
    Ok(())
}

/// Registers the font as plotters' `sans-serif`.
fn load_font(path: &Path) -> Result<()> {
    let bytes = std::fs::read(path).map_err(|e| {
        format!("--plot: cannot read the font {} ({e}); install fonts-dejavu-core or pass --plot-font", path.display())
    })?;
    // plotters keeps a registered font for the rest of the process.
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    register_font("sans-serif", FontStyle::Normal, bytes)
        .map_err(|_| format!("--plot: {} is not a TrueType or OpenType font", path.display()))?;
    Ok(())
}

/// The throughput groups and the latency groups of `rows`: one per Quern
/// row that some peer's row was compared with, in the order of the rows.
fn groups(rows: &[Row]) -> (Vec<Group>, Vec<Group>) {
    let quern: Vec<Row> = rows.iter().filter(|r| r.system == "quern").cloned().collect();
    let (mut throughput, mut latency) = (Vec::new(), Vec::new());
    for peer in rows.iter().filter(|r| r.system != "quern" && r.quern_ratio.is_some()) {
        let Some(q) = counterpart(&quern, peer) else { continue };
        let pg = if q.store.as_deref() == Some("postgres") { " (pg)" } else { "" };
        let (list, label, value) = match (q.tasks_per_s, peer.tasks_per_s) {
            (Some(qv), Some(pv)) => (&mut throughput, format!("{}{pg}", q.scenario), (qv, pv)),
            _ => match (q.p50_us, peer.p50_us) {
                (Some(qv), Some(pv)) => {
                    (&mut latency, format!("{} {}{pg}", q.scenario, q.variant), (qv / 1e3, pv / 1e3))
                }
                _ => continue,
            },
        };
        let at = match list.iter().position(|g: &Group| g.label == label) {
            Some(at) => at,
            None => {
                list.push(Group { label, bars: vec![("quern".to_owned(), value.0)] });
                list.len() - 1
            }
        };
        list[at].bars.push((peer.system.clone(), value.1));
    }
    (throughput, latency)
}

/// Every system of `groups`, in the order they first appear (Quern first).
fn systems<'a>(groups: impl Iterator<Item = &'a Group>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for (system, _) in groups.flat_map(|g| &g.bars) {
        if !out.contains(system) {
            out.push(system.clone());
        }
    }
    out
}

fn color(systems: &[String], system: &str) -> RGBColor {
    match systems.iter().position(|s| s == system) {
        Some(0) | None => QUERN,
        Some(i) => PEERS[(i - 1) % PEERS.len()],
    }
}

fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    panel: &Panel<'_>,
    systems: &[String],
    legend: bool,
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let values = panel.groups.iter().flat_map(|g| g.bars.iter().map(|b| b.1));
    let lo = values.clone().fold(f64::INFINITY, f64::min);
    let hi = values.fold(0.0, f64::max);
    // An empty panel (no latency compared, say) draws nothing: its axis
    // from infinity to 0 would never finish finding its ticks.
    if !(lo > 0.0 && lo.is_finite() && hi > 0.0 && hi.is_finite()) {
        return Ok(());
    }
    // Group i is centred on x = i, so that asking for as many x labels as
    // there are groups puts one label under each.
    #[allow(clippy::cast_precision_loss)]
    let n = panel.groups.len() as f64;
    let labels = |x: &f64| {
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let i = x.round() as usize;
        match panel.groups.get(i) {
            Some(g) if (x - x.round()).abs() < 1e-6 => g.label.clone(),
            _ => String::new(),
        }
    };
    let mut chart = ChartBuilder::on(area)
        .caption(panel.caption, ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(-0.5..n - 0.5, (lo / 2.0..hi * HEADROOM).log_scale())?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(panel.groups.len())
        .x_label_formatter(&labels)
        .y_label_formatter(&|v| (panel.value)(*v))
        .label_style(("sans-serif", 14))
        .draw()?;
    let floor = lo / 2.0;
    for system in systems {
        let colour = color(systems, system);
        let bars: Vec<(f64, f64, f64)> = panel
            .groups
            .iter()
            .enumerate()
            .filter_map(|(i, g)| {
                let slot = g.bars.iter().position(|(s, _)| s == system)?;
                #[allow(clippy::cast_precision_loss)]
                let (i, slot, k) = (i as f64, slot as f64, g.bars.len() as f64);
                let width = FILL / k;
                let x0 = i - FILL / 2.0 + slot * width;
                Some((x0, x0 + width * 0.9, g.bars[slot as usize].1))
            })
            .collect();
        if bars.is_empty() {
            continue;
        }
        let series = chart
            .draw_series(bars.iter().map(|&(x0, x1, v)| Rectangle::new([(x0, floor), (x1, v)], colour.filled())))?;
        if legend {
            series
                .label(system.as_str())
                .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 14, y + 6)], colour.filled()));
        }
        let style = TextStyle::from(("sans-serif", 12)).pos(Pos::new(HPos::Center, VPos::Bottom));
        chart.draw_series(
            bars.iter()
                .map(|&(x0, x1, v)| Text::new((panel.value)(v), (f64::midpoint(x0, x1), v * 1.08), style.clone())),
        )?;
    }
    if legend {
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .label_font(("sans-serif", 14))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()?;
    }
    Ok(())
}

/// `247016.0` → `247k`, `4756.0` → `4.8k`, `1000.0` → `1k`, `585.0` → `585`.
fn compact(v: f64) -> String {
    let (x, unit) = match v {
        v if v >= 1e6 => (v / 1e6, "M"),
        v if v >= 1e3 => (v / 1e3, "k"),
        v => (v, ""),
    };
    let digits = usize::from(x < 10.0);
    let s = format!("{x:.digits$}");
    format!("{}{unit}", s.strip_suffix(".0").unwrap_or(&s))
}

/// Milliseconds: `0.971` → `0.97`, `19.1` → `19`.
fn millis(v: f64) -> String {
    match v {
        v if v >= 10.0 => format!("{v:.0}"),
        v if v >= 1.0 => format!("{v:.1}"),
        v => format!("{v:.2}"),
    }
}

#[cfg(test)]
mod tests {
    use super::{Group, compact, groups, millis, systems};
    use crate::Row;
    use crate::peers::merge;

    fn peer(system: &str, mut row: Row) -> Row {
        row.system = system.into();
        row
    }

    fn latency(p50_us: f64) -> Row {
        let mut r = Row::new("latency", "submit→result");
        r.p50_us = Some(p50_us);
        r
    }

    #[test]
    fn groups_follow_the_ratios() {
        let quern =
            vec![Row::throughput("e2e", "batch", 60_000, 1.0), Row::new("idle", "after start"), latency(1_000.0)];
        let rows = merge(
            quern,
            vec![
                peer("celery", Row::throughput("e2e", "2 worker processes", 600, 1.0)),
                peer("bullmq", Row::throughput("e2e", "2 worker processes", 6_000, 1.0)),
                peer("bullmq", latency(2_400.0)),
            ],
        );
        let (tp, lat) = groups(&rows);
        let bars = |v: &[(&str, f64)]| v.iter().map(|(s, x)| ((*s).to_owned(), *x)).collect::<Vec<_>>();
        assert_eq!(
            tp,
            [Group { label: "e2e".into(), bars: bars(&[("quern", 60_000.0), ("celery", 600.0), ("bullmq", 6_000.0)]) }]
        );
        assert_eq!(
            lat,
            [Group { label: "latency submit→result".into(), bars: bars(&[("quern", 1.0), ("bullmq", 2.4)]) }]
        );
        assert_eq!(systems(tp.iter().chain(&lat)), ["quern", "celery", "bullmq"]);
    }

    #[test]
    fn writes_a_png() {
        let font = std::path::Path::new(super::DEFAULT_FONT);
        assert!(font.is_file(), "{} is missing: apt-get install fonts-dejavu-core", font.display());
        let rows = merge(
            vec![Row::throughput("e2e", "batch", 60_000, 1.0), latency(1_000.0)],
            vec![peer("bullmq", Row::throughput("e2e", "2", 6_000, 1.0)), peer("bullmq", latency(2_400.0))],
        );
        let dir = tempfile::tempdir().expect("a temp dir");
        let path = dir.path().join("chart.png");
        super::write(&rows, &path, font, "test").expect("a chart");
        let png = std::fs::read(&path).expect("the chart");
        assert!(png.starts_with(b"\x89PNG"), "not a PNG");
        assert!(super::write(&rows[..1], &path, font, "test").is_err(), "no peers, no chart");
    }

    #[test]
    fn throughput_alone_is_drawn() {
        let font = std::path::Path::new(super::DEFAULT_FONT);
        let rows = merge(
            vec![Row::throughput("submit-single", "1 conn", 4_000, 1.0)],
            vec![peer("bullmq", Row::throughput("submit-single", "1 conn", 4_500, 1.0))],
        );
        let dir = tempfile::tempdir().expect("a temp dir");
        let path = dir.path().join("chart.png");
        super::write(&rows, &path, font, "test").expect("a chart");
    }

    #[test]
    fn values_read_short() {
        assert_eq!(compact(247_016.0), "247k");
        assert_eq!(compact(4_756.0), "4.8k");
        assert_eq!(compact(585.0), "585");
        assert_eq!(compact(1_000.0), "1k");
        assert_eq!(compact(2_500_000.0), "2.5M");
        assert_eq!(millis(0.971), "0.97");
        assert_eq!(millis(19.1), "19");
    }
}
