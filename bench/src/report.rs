//! The results: one Markdown table per comparison, then the targets.

use std::{fmt::Write as _, time::Duration};

use crate::load::Measurement;

/// One measured point.
#[derive(Debug, Clone)]
pub struct Row {
    pub operation: String,
    pub concurrency: usize,
    pub measurement: Measurement,
    /// Payload bytes per call, for a bytes/s column.
    pub bytes_per_call: Option<u64>,
    /// This point's throughput over its baseline's, at the same concurrency.
    pub ratio: Option<f64>,
}

/// A table of rows under a heading, with a note on what the ratio means.
#[derive(Debug, Clone, Default)]
pub struct Section {
    pub title: String,
    pub ratio_means: String,
    pub rows: Vec<Row>,
}

/// A performance target (docs/BENCHMARKS.md) and whether this run met it.
#[derive(Debug, Clone)]
pub struct Verdict {
    pub target: String,
    pub measured: String,
    pub met: bool,
}

/// Everything a run printed.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub sections: Vec<Section>,
    pub verdicts: Vec<Verdict>,
    pub notes: Vec<String>,
    /// Markdown blocks of their own (a title and a table), after the sections.
    pub blocks: Vec<String>,
}

impl Report {
    /// The throughput of `operation` at `concurrency` in any section.
    pub fn find(&self, operation: &str, concurrency: usize) -> Option<&Measurement> {
        self.sections
            .iter()
            .flat_map(|s| &s.rows)
            .find(|r| r.operation == operation && r.concurrency == concurrency)
            .map(|r| &r.measurement)
    }

    pub fn to_markdown(&self) -> String {
        let mut out = String::new();
        for section in &self.sections {
            let _ = writeln!(out, "### {}\n", section.title);
            if !section.ratio_means.is_empty() {
                let _ = writeln!(out, "Ratio: {}.\n", section.ratio_means);
            }
            out.push_str("| operation | concurrency | calls/s | MB/s | p50 | p99 | errors | ratio |\n");
            out.push_str("|---|---:|---:|---:|---:|---:|---:|---:|\n");
            for row in &section.rows {
                let m = &row.measurement;
                let mbps = row
                    .bytes_per_call
                    .map(|b| format!("{:.1}", m.per_second() * b as f64 / 1e6))
                    .unwrap_or_else(|| "–".into());
                let ratio = row.ratio.map(|r| format!("{r:.2}")).unwrap_or_else(|| "–".into());
                let _ = writeln!(
                    out,
                    "| {} | {} | {:.0} | {} | {} | {} | {} | {} |",
                    row.operation,
                    row.concurrency,
                    m.per_second(),
                    mbps,
                    show(m.p50),
                    show(m.p99),
                    m.errors,
                    ratio
                );
            }
            for row in section.rows.iter().filter(|r| r.measurement.errors > 0) {
                let _ = writeln!(
                    out,
                    "\n{} at concurrency {}: first error: {}",
                    row.operation,
                    row.concurrency,
                    row.measurement.first_error.as_deref().unwrap_or("?")
                );
            }
            out.push('\n');
        }
        for block in &self.blocks {
            out.push_str(block);
            out.push('\n');
        }
        if !self.verdicts.is_empty() {
            out.push_str("### Targets\n\n| target | measured | met |\n|---|---|---|\n");
            for v in &self.verdicts {
                let _ = writeln!(out, "| {} | {} | {} |", v.target, v.measured, if v.met { "yes" } else { "**no**" });
            }
            out.push('\n');
        }
        for note in &self.notes {
            let _ = writeln!(out, "- {note}");
        }
        out
    }
}

/// A latency in the unit that keeps it readable.
pub fn show(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us < 1000.0 { format!("{us:.0} µs") } else { format!("{:.2} ms", us / 1000.0) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latencies_read_in_microseconds_or_milliseconds() {
        assert_eq!(show(Duration::from_micros(42)), "42 µs");
        assert_eq!(show(Duration::from_micros(1500)), "1.50 ms");
    }

    #[test]
    fn a_table_shows_throughput_bytes_and_ratio() {
        let measurement =
            Measurement::from_latencies(vec![Duration::from_micros(10); 1000], 0, None, Duration::from_secs(1));
        let report = Report {
            sections: vec![Section {
                title: "Hash".into(),
                ratio_means: "RPC over raw".into(),
                rows: vec![Row {
                    operation: "hash-rpc".into(),
                    concurrency: 16,
                    measurement,
                    bytes_per_call: Some(1_000_000),
                    ratio: Some(0.5),
                }],
            }],
            verdicts: vec![Verdict { target: "x".into(), measured: "y".into(), met: false }],
            notes: vec![],
            blocks: vec!["### Growth\n\n| a |\n".into()],
        };
        let text = report.to_markdown();
        assert!(text.contains("| hash-rpc | 16 | 1000 | 1000.0 | 10 µs | 10 µs | 0 | 0.50 |"), "{text}");
        assert!(text.contains("| x | y | **no** |"), "{text}");
        assert!(text.find("### Growth") < text.find("### Targets"), "blocks come before the targets: {text}");
        assert!(report.find("hash-rpc", 16).is_some());
        assert!(report.find("hash-rpc", 64).is_none());
    }
}
