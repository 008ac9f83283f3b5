//! The `--plot` SVGs, each drawn from its report alone: `fibpool bench`'s
//! measured speedup against workers for each workload, the ideal line, and
//! each workload's Amdahl curve from its serial fraction; `fibpool
//! startup`'s waterfall; `fibpool stress`'s round trips by percentile and
//! throughput, per transport.

use std::path::Path;

use plotters::prelude::*;

use crate::pool::Phases;
use crate::report::{BenchReport, BenchWorkload, Percentile, StartupReport, StressReport, bytes};
use crate::stats::amdahl_speedup;

const COLOURS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
    RGBColor(23, 190, 207),
];

/// Writes the plot to `path`.
pub fn speedup_svg(report: &BenchReport, path: &Path) -> Result<(), String> {
    draw(report, path).map_err(|e| e.to_string())
}

fn draw(report: &BenchReport, path: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let max_workers = report.workers.iter().copied().max().unwrap_or(1).max(2) as f64;
    let max_speedup = report
        .workloads
        .iter()
        .flat_map(|w| {
            w.results
                .iter()
                .flat_map(|r| [r.speedup, r.ceiling_speedup])
        })
        .filter(|s| s.is_finite())
        .fold(max_workers, f64::max);
    let root = SVGBackend::new(path, (900, 600)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!(
                "fibpool bench: speedup against workers (median of {} run{})",
                report.repeat,
                if report.repeat == 1 { "" } else { "s" }
            ),
            ("sans-serif", 20),
        )
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(55)
        .build_cartesian_2d(0.8f64..max_workers + 0.2, 0f64..max_speedup * 1.1)?;
    chart
        .configure_mesh()
        .x_desc("worker processes")
        .y_desc("speedup over one process, no pool")
        .x_labels(max_workers as usize + 1)
        // Worker counts are whole: label only whole ticks.
        .x_label_formatter(&|x| {
            if x.fract() == 0.0 {
                format!("{x:.0}")
            } else {
                String::new()
            }
        })
        .draw()?;

    chart
        .draw_series(LineSeries::new(
            [(1.0, 1.0), (max_workers, max_workers)],
            BLACK.mix(0.4).stroke_width(1),
        ))?
        .label("ideal")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], BLACK.mix(0.4)));

    let several_methods = report
        .workloads
        .iter()
        .any(|w| w.start_method != report.workloads[0].start_method);
    for (i, workload) in report.workloads.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let name = if several_methods {
            format!("{} ({})", workload.name, workload.start_method)
        } else {
            workload.name.clone()
        };
        let workload = &BenchWorkload {
            name,
            ..workload.clone()
        };
        let points: Vec<(f64, f64)> = workload
            .results
            .iter()
            .map(|r| (r.workers as f64, r.speedup))
            .collect();
        chart
            .draw_series(LineSeries::new(points.clone(), colour.stroke_width(2)))?
            .label(format!("{} measured", workload.name))
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], colour.stroke_width(2)));
        chart.draw_series(points.iter().map(|&p| Circle::new(p, 4, colour.filled())))?;
        let ceiling: Vec<(f64, f64)> = workload
            .results
            .iter()
            .map(|r| (r.workers as f64, r.ceiling_speedup))
            .filter(|&(_, s)| s.is_finite())
            .collect();
        let faint = colour.mix(0.5);
        chart
            .draw_series(LineSeries::new(ceiling.clone(), faint.stroke_width(1)))?
            .label(format!("{} machine ceiling", workload.name))
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], faint));
        chart.draw_series(
            ceiling
                .iter()
                .map(|&p| TriangleMarker::new(p, 5, faint.filled())),
        )?;
        if let Some(serial) = workload.serial_fraction {
            let curve = (0..=60).map(|k| {
                let p = 1.0 + (max_workers - 1.0) * k as f64 / 60.0;
                (p, amdahl_speedup(serial, p))
            });
            chart
                .draw_series(DashedLineSeries::new(curve, 6, 4, colour.stroke_width(1)))?
                .label(format!(
                    "{} Amdahl, serial fraction {serial:.3}",
                    workload.name
                ))
                .legend(move |(x, y)| {
                    PathElement::new([(x, y), (x + 8, y), (x + 12, y), (x + 20, y)], colour)
                });
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.5))
        .label_font(("sans-serif", 13))
        .draw()?;
    root.present()?;
    Ok(())
}

/// Writes `fibpool startup --plot`: a waterfall per start method and pool
/// size, each worker of its median round a row, each phase a bar from the
/// pool's start, and the floor (a minimal program's spawn to first byte,
/// the median) marked.
pub fn startup_waterfall_svg(reports: &[StartupReport], path: &Path) -> Result<(), String> {
    draw_waterfall(reports, path).map_err(|e| e.to_string())
}

/// A phase bar: its name, colour, and where it runs on a worker's row.
type Segment = (&'static str, RGBColor, fn(&Phases) -> Option<(f64, f64)>);

const SEGMENTS: [Segment; 5] = [
    ("exec: spawn to main", RGBColor(31, 119, 180), |p| {
        Some((0.0, p.exec_seconds?))
    }),
    ("init: main to ready message", RGBColor(44, 160, 44), |p| {
        let exec = p.exec_seconds?;
        Some((exec, exec + p.init_seconds?))
    }),
    ("handshake decoded", RGBColor(255, 127, 14), |p| {
        let sent = p.exec_seconds? + p.init_seconds?;
        Some((sent.min(p.ready_seconds?), p.ready_seconds?))
    }),
    ("first task", RGBColor(148, 103, 189), |p| {
        let ready = p.ready_seconds?;
        Some((ready, ready + p.first_task_seconds?))
    }),
    ("spawn call", RGBColor(40, 40, 40), |p| {
        Some((0.0, p.spawn_seconds))
    }),
];

fn draw_waterfall(
    reports: &[StartupReport],
    path: &Path,
) -> Result<(), Box<dyn std::error::Error>> {
    // Rows top to bottom: each report's workers, a gap between reports.
    let mut rows: Vec<(String, Phases)> = Vec::new();
    let mut gaps = Vec::new();
    // Each report's floor, over its rows.
    let mut floors: Vec<(f64, usize, usize)> = Vec::new();
    for r in reports {
        if !rows.is_empty() {
            gaps.push(rows.len());
        }
        let first = rows.len();
        for (i, p) in r.median_round.iter().enumerate() {
            rows.push((format!("{} w{} #{i}", r.start_method, r.workers), *p));
        }
        if let Some(floor) = r.baseline {
            floors.push((floor.median_seconds, first, rows.len()));
        }
    }
    let end = rows
        .iter()
        .map(|(_, p)| {
            p.started_seconds + p.ready_seconds.unwrap_or(0.0) + p.first_task_seconds.unwrap_or(0.0)
        })
        .fold(1e-6, f64::max);
    let floor = floors.iter().map(|f| f.0).fold(0.0, f64::max);
    // Room on the right for the legend.
    let end_us = end.max(floor) * 1e6 * 1.45;
    let height = 160 + 34 * (rows.len() + gaps.len()) as u32;
    let root = SVGBackend::new(path, (1000, height)).into_drawing_area();
    root.fill(&WHITE)?;
    let slots = (rows.len() + gaps.len()) as f64;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "fibpool startup: each worker's start from the pool's (median round per method)",
            ("sans-serif", 18),
        )
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(10)
        .build_cartesian_2d(0f64..end_us, slots..0f64)?;
    // A row's place, counting the gaps between reports.
    let place = |row: usize| (row + gaps.iter().filter(|&&g| g <= row).count()) as f64;
    let labels: Vec<(f64, String)> = rows
        .iter()
        .enumerate()
        .map(|(i, (name, _))| (place(i), name.clone()))
        .collect();
    chart
        .configure_mesh()
        .x_desc("µs from the pool's start")
        .disable_y_mesh()
        .y_labels(0)
        .draw()?;
    for (y, name) in &labels {
        chart.draw_series(std::iter::once(Text::new(
            name.clone(),
            (0.0, *y),
            ("sans-serif", 12).into_font().color(&BLACK),
        )))?;
    }
    for (k, (name, colour, span)) in SEGMENTS.iter().enumerate() {
        let thin = k == SEGMENTS.len() - 1;
        let bars: Vec<_> = rows
            .iter()
            .enumerate()
            .filter_map(|(i, (_, p))| {
                let (from, to) = span(p)?;
                let y = place(i);
                // The row's name above, the phases below, the spawn call
                // a thin bar over them.
                let (top, bottom) = if thin {
                    (y + 0.45, y + 0.6)
                } else {
                    (y + 0.5, y + 0.95)
                };
                let x = |t: f64| (p.started_seconds + t) * 1e6;
                Some(Rectangle::new(
                    [(x(from), top), (x(to), bottom)],
                    colour.filled(),
                ))
            })
            .collect();
        let colour = *colour;
        chart
            .draw_series(bars)?
            .label(*name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], colour.filled()));
    }
    for (k, &(floor, first, last)) in floors.iter().enumerate() {
        let x = floor * 1e6;
        let (top, bottom) = (place(first), place(last.max(first + 1) - 1) + 1.0);
        let line = chart.draw_series(DashedLineSeries::new(
            [(x, top), (x, bottom)],
            6,
            4,
            RED.stroke_width(2),
        ))?;
        if k == 0 {
            line.label("floor: as many minimal programs' spawn to first byte (median)")
                .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], RED.stroke_width(2)));
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.5))
        .label_font(("sans-serif", 12))
        .draw()?;
    root.present()?;
    Ok(())
}

/// One curve of the stress plot: a transport (or Python's mechanism), a
/// pattern and a size.
struct Curve<'a> {
    name: String,
    pattern: &'a str,
    size: usize,
    percentiles: &'a [Percentile],
    bytes_per_second: f64,
}

/// Writes `fibpool stress --plot`: one panel per payload size with the
/// round trip at each percentile (HDR style: the x axis is 1/(1-p) on a log
/// scale, p50 to p99.99; the y axis log-scaled), a curve per transport, of
/// pingpong where it was measured (else stream); and a panel of each
/// transport's stream throughput (else pingpong's) against size.
pub fn stress_svg(report: &StressReport, path: &Path) -> Result<(), String> {
    draw_stress(report, path).map_err(|e| e.to_string())
}

fn draw_stress(report: &StressReport, path: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let mut curves: Vec<Curve> = report
        .results
        .iter()
        .map(|r| Curve {
            name: r.transport.to_owned(),
            pattern: r.pattern,
            size: r.size_bytes,
            percentiles: &r.rtt_percentiles,
            bytes_per_second: r.throughput_bytes_per_second,
        })
        .collect();
    if let Some(python) = &report.python {
        curves.extend(python.rows.iter().map(|r| Curve {
            name: format!("Python {}", r.mechanism),
            pattern: &r.pattern,
            size: r.size_bytes,
            percentiles: &r.rtt_percentiles,
            bytes_per_second: r.throughput_bytes_per_second,
        }));
    }
    let pick = |first: &str, then: &str| {
        if curves.iter().any(|c| c.pattern == first) {
            first.to_owned()
        } else {
            then.to_owned()
        }
    };
    let (latency, flow) = (pick("pingpong", "stream"), pick("stream", "pingpong"));
    let mut names: Vec<String> = Vec::new();
    let mut sizes: Vec<usize> = Vec::new();
    for c in &curves {
        if !names.contains(&c.name) {
            names.push(c.name.clone());
        }
        if !sizes.contains(&c.size) {
            sizes.push(c.size);
        }
    }
    sizes.sort_unstable();
    let colour = |name: &str| {
        let i = names.iter().position(|n| n == name).unwrap_or(0);
        COLOURS[i % COLOURS.len()]
    };
    let panels = sizes.len() + 1;
    let columns = panels.min(3);
    let rows = panels.div_ceil(columns);
    let root =
        SVGBackend::new(path, (420 * columns as u32, 340 * rows as u32 + 40)).into_drawing_area();
    root.fill(&WHITE)?;
    let (title, body) = root.split_vertically(40);
    title.titled(
        &format!("fibpool stress: round trips by percentile ({latency}) and throughput ({flow})"),
        ("sans-serif", 20),
    )?;
    let areas = body.split_evenly((rows, columns));
    // 1/(1-p), as log10: p50 is 0.3, p99.99 is 4.
    let x_of = |p: f64| (1.0 / (1.0 - p / 100.0)).log10();
    for (area, &size) in areas.iter().zip(&sizes) {
        let shown: Vec<&Curve> = curves
            .iter()
            .filter(|c| c.size == size && c.pattern == latency && !c.percentiles.is_empty())
            .collect();
        let seconds = shown
            .iter()
            .flat_map(|c| c.percentiles.iter().map(|p| p.seconds))
            .filter(|s| s.is_finite() && *s > 0.0);
        let (low, high) = seconds.fold((f64::INFINITY, 0f64), |(lo, hi), s| (lo.min(s), hi.max(s)));
        let (low, high) = if high > 0.0 {
            (low * 0.8 * 1e6, high * 1.25 * 1e6)
        } else {
            (1.0, 10.0)
        };
        let mut chart = ChartBuilder::on(area)
            .caption(format!("{latency}, {}", payload(size)), ("sans-serif", 15))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(55)
            .build_cartesian_2d(0f64..4.2, (low..high).log_scale())?;
        chart
            .configure_mesh()
            .x_desc("percentile, from p50")
            .y_desc("round trip")
            .light_line_style(WHITE)
            .y_labels(8)
            .y_label_formatter(&|us| crate::report::seconds(us * 1e-6))
            .x_labels(5)
            // The whole nines: p90, p99, p99.9, p99.99.
            .x_label_formatter(&|x| {
                let n = x.round();
                match ["", "p90", "p99", "p99.9", "p99.99"].get(n as usize) {
                    Some(label) if (x - n).abs() < 1e-6 && n >= 0.0 => (*label).to_owned(),
                    _ => String::new(),
                }
            })
            .draw()?;
        for c in shown {
            let points: Vec<(f64, f64)> = c
                .percentiles
                .iter()
                .filter(|p| p.seconds > 0.0)
                .map(|p| (x_of(p.percentile), p.seconds * 1e6))
                .collect();
            let line = colour(&c.name);
            chart
                .draw_series(LineSeries::new(points.clone(), line.stroke_width(2)))?
                .label(c.name.clone())
                .legend(move |(x, y)| {
                    PathElement::new([(x, y), (x + 16, y)], line.stroke_width(2))
                });
            chart.draw_series(points.into_iter().map(|p| Circle::new(p, 2, line.filled())))?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.5))
            .label_font(("sans-serif", 11))
            .draw()?;
    }
    let area = &areas[sizes.len()];
    let rates = curves
        .iter()
        .filter(|c| c.pattern == flow)
        .map(|c| c.bytes_per_second / 1e6)
        .filter(|r| r.is_finite() && *r > 0.0);
    let (low, high) = rates.fold((f64::INFINITY, 0f64), |(lo, hi), r| (lo.min(r), hi.max(r)));
    let (low, high) = if high > 0.0 {
        (low * 0.5, high * 2.0)
    } else {
        (0.1, 1.0)
    };
    let at = |size: usize| sizes.iter().position(|&s| s == size).unwrap_or(0) as f64;
    let mut chart = ChartBuilder::on(area)
        .caption(format!("{flow} throughput"), ("sans-serif", 15))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(55)
        .build_cartesian_2d(-0.3f64..sizes.len() as f64 - 0.7, (low..high).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("payload")
        .y_desc("MB/s")
        .light_line_style(WHITE)
        .y_labels(8)
        .y_label_formatter(&|r| format!("{r}"))
        .x_labels(sizes.len().max(2))
        .x_label_formatter(&|x| {
            let i = x.round();
            match sizes.get(i as usize) {
                Some(&size) if (x - i).abs() < 1e-6 && i >= 0.0 => payload(size),
                _ => String::new(),
            }
        })
        .draw()?;
    for name in &names {
        let points: Vec<(f64, f64)> = curves
            .iter()
            .filter(|c| &c.name == name && c.pattern == flow && c.bytes_per_second > 0.0)
            .map(|c| (at(c.size), c.bytes_per_second / 1e6))
            .collect();
        let line = colour(name);
        chart
            .draw_series(LineSeries::new(points.clone(), line.stroke_width(2)))?
            .label(name.clone())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], line.stroke_width(2)));
        chart.draw_series(points.into_iter().map(|p| Circle::new(p, 3, line.filled())))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.5))
        .label_font(("sans-serif", 11))
        .draw()?;
    root.present()?;
    Ok(())
}

/// A payload size for a caption: "8 B", "1 KiB", "16 MiB".
fn payload(size: usize) -> String {
    match bytes(size) {
        b if b.ends_with(['K', 'M', 'G']) => {
            format!("{} {}iB", &b[..b.len() - 1], &b[b.len() - 1..])
        }
        b => format!("{b} B"),
    }
}
