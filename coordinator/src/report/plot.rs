//! The `--plot` SVG of `fibpool bench`: measured speedup against workers for
//! each workload, the ideal line, and each workload's Amdahl curve from its
//! serial fraction. Drawn from the report alone.

use std::path::Path;

use plotters::prelude::*;

use crate::pool::Phases;
use crate::report::{BenchReport, BenchWorkload, StartupReport};
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
