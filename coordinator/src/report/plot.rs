//! The `--plot` SVG of `fibpool bench`: measured speedup against workers for
//! each workload, the ideal line, and each workload's Amdahl curve from its
//! serial fraction. Drawn from the report alone.

use std::path::Path;

use plotters::prelude::*;

use crate::report::BenchReport;
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

    for (i, workload) in report.workloads.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
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
