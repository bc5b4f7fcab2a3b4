//! `omninode-bench`: starts the mesh (`omninode up`) and an echo server in
//! child processes on loopback, loads them at concurrency 1, 16 and 64, and
//! prints Markdown tables with ratios against baselines measured in the same
//! run, then the targets (listed in docs/BENCHMARKS.md) and whether this run met them.
//!
//! The same executable is the `omninode` command line when its first argument
//! is one of its commands (`up`, …), and the echo server with `echo-server ADDR`:
//! that is how the processes under test are started.

mod echo;
mod growth;
mod load;
mod pinning;
mod process;
mod report;
mod scenarios;

use std::{process::ExitCode, sync::Arc, time::Duration};

use clap::Parser;
use omninode_integration_tests::{Backend, TestDatabase, kafka::Broker};

use crate::{
    load::Timing,
    report::{Report, Section, Verdict, show},
    scenarios::{Bench, rows},
};

#[derive(Parser)]
#[command(name = "omninode-bench", about = "Benchmarks of the OmniNode Bridge mesh on loopback")]
struct Args {
    /// Seconds measured per point (after a warm-up of a sixth of it).
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Events sent through the broker for the reducer figure.
    #[arg(long, default_value_t = 100_000)]
    reducer_events: u64,
    /// A quick run that only shows every scenario completes (CI).
    #[arg(long)]
    smoke: bool,
    /// Run only these scenarios (comma-separated): hash, stamp, workflow, gateway, profile, tracing, growth, scale, reducer.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Databases for the mesh scenarios (comma-separated): sqlite, postgres.
    #[arg(long, value_delimiter = ',', default_value = "sqlite,postgres")]
    databases: Vec<String>,
    /// Also write the report to this file.
    #[arg(long)]
    output: Option<std::path::PathBuf>,
    /// Table sizes of the growth scenario (rows of metadata_stamps, ascending).
    #[arg(long, value_delimiter = ',', default_value = "10000,100000,1000000")]
    growth_sizes: Vec<u64>,
    /// Write the growth scenario's chart (SVG) here.
    #[arg(long)]
    chart: Option<std::path::PathBuf>,
    /// Leave the load generator and the servers free to share every CPU
    /// (by default they are pinned apart with `taskset`).
    #[arg(long)]
    no_pin: bool,
}

fn main() -> ExitCode {
    let mut argv = std::env::args().skip(1);
    match argv.next().as_deref() {
        Some("echo-server") => {
            let addr = argv.next().and_then(|a| a.parse().ok()).expect("echo-server ADDR");
            let runtime = tokio::runtime::Runtime::new().expect("a runtime");
            return match runtime.block_on(echo::serve(addr)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => {
                    eprintln!("echo server: {err:#}");
                    ExitCode::FAILURE
                }
            };
        }
        Some("up" | "serve" | "migrate") => return omninode::cli::main(),
        _ => {}
    }
    let args = Args::parse();
    // Before the runtime starts its threads: they inherit the main thread's CPUs.
    let pinned = match args.no_pin {
        true => Err("`--no-pin`".to_owned()),
        false => pinning::Pinning::apply().map(pinning::Pinning::describe),
    };
    let pinning =
        pinned.unwrap_or_else(|why| format!("Not pinned ({why}): the load generator and the servers share every CPU."));
    eprintln!("{pinning}");
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    match runtime.block_on(run(args, pinning)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args, pinning: String) -> anyhow::Result<()> {
    let (seconds, reducer_events) = if args.smoke { (0.2, 500) } else { (args.seconds, args.reducer_events) };
    let measure = Duration::from_secs_f64(seconds);
    let bench = Arc::new(Bench::new(Timing { warmup: measure / 6, measure }));
    let mut report = Report::default();
    report.notes.push(pinning);
    let wanted = |scenario: &str| args.only.is_empty() || args.only.iter().any(|s| s == scenario);

    let echo = if wanted("stamp") {
        eprintln!("echo server");
        let (echo_process, echo_addr) = process::start_echo().await?;
        let echo = scenarios::echo(&bench, echo_addr).await?;
        echo_process.stop().await;
        echo
    } else {
        Vec::new()
    };

    let mut stamp_section = Section {
        title: "Stamp with persistence vs the tonic echo ceiling (100-byte payloads)".into(),
        ratio_means: "calls/s over the echo server's at the same concurrency".into(),
        rows: rows("tonic echo", echo.clone(), None, None),
    };
    let mut workflow_section = Section {
        title: "RunWorkflow end to end vs Stamp alone".into(),
        ratio_means: "RunWorkflow calls/s over Stamp calls/s on the same database".into(),
        rows: Vec::new(),
    };
    let mut gateway_section = Section {
        title: "REST gateway vs direct gRPC".into(),
        ratio_means: "REST calls/s over gRPC calls/s for the same call (1 − ratio = gateway overhead)".into(),
        rows: Vec::new(),
    };

    let mesh_scenarios = ["hash", "stamp", "workflow", "gateway"];
    let mut peaks: Vec<(&str, f64)> = Vec::new();
    let mut first_mesh = true;
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let (label, name) = match backend {
            Backend::Sqlite => ("SQLite", "sqlite"),
            Backend::Postgres => ("PostgreSQL", "postgres"),
        };
        if !args.databases.iter().any(|d| d == name) || !mesh_scenarios.iter().any(|s| wanted(s)) {
            continue;
        }
        eprintln!("mesh on {label}");
        let database = TestDatabase::new(backend).await;
        let (mesh_process, mesh) = process::start_mesh(database.env(), None).await?;
        let namespace = format!("bench.{}", label.to_lowercase());

        // Hashing does not touch the database: measured once, on the first mesh.
        if wanted("hash") && first_mesh {
            scenarios::hash(&bench, mesh, &mut report).await?;
        }
        if wanted("gateway") && first_mesh {
            let (direct, through) = scenarios::gateway_hash(&bench, mesh).await?;
            gateway_section.rows.extend(rows("REST Hash 1 KiB", through, None, Some(&direct)));
            gateway_section.rows.extend(rows("gRPC Hash 1 KiB", direct, None, None));
        }
        let stamp = if wanted("stamp") || wanted("workflow") {
            mesh.settle().await;
            scenarios::stamp(&bench, mesh, &namespace).await?
        } else {
            Vec::new()
        };
        stamp_section.rows.extend(rows(&format!("Stamp, {label}"), stamp.clone(), None, Some(&echo)));
        if wanted("workflow") {
            mesh.settle().await;
            let workflow = scenarios::run_workflow(&bench, mesh, &namespace).await?;
            workflow_section.rows.extend(rows(&format!("RunWorkflow, {label}"), workflow, None, Some(&stamp)));
        }
        if wanted("gateway") {
            mesh.settle().await;
            let (direct, through) = scenarios::gateway_stamp(&bench, mesh, &namespace).await?;
            gateway_section.rows.extend(rows(&format!("REST Stamp, {label}"), through, None, Some(&direct)));
            gateway_section.rows.extend(rows(&format!("gRPC Stamp, {label}"), direct, None, None));
        }
        let peak = mesh_process.peak_rss_mib();
        mesh_process.stop().await;
        first_mesh = false;

        if let Some(mib) = peak {
            report.notes.push(format!(
                "Peak RSS of `omninode up` on {label} after every load above (up to concurrency 64): {mib:.1} MiB"
            ));
            peaks.push((label, mib));
        }
    }
    for section in [stamp_section, workflow_section, gateway_section] {
        if section.rows.len() > section.rows.iter().filter(|r| r.operation == "tonic echo").count() {
            report.sections.push(section);
        }
    }

    if wanted("profile") {
        for (backend, label, name) in
            [(Backend::Sqlite, "SQLite", "sqlite"), (Backend::Postgres, "PostgreSQL", "postgres")]
        {
            if args.databases.iter().any(|d| d == name) {
                let calls = if args.smoke { 20 } else { 300 };
                report.notes.extend(profile_run_workflow(backend, label, calls).await?);
            }
        }
    }

    if wanted("tracing") && args.databases.iter().any(|d| d == "sqlite") {
        report.sections.push(tracing_overhead(&bench).await?);
    }

    if wanted("growth") {
        let sizes = if args.smoke { vec![1_000, 2_000] } else { args.growth_sizes.clone() };
        let mut points = Vec::new();
        for (backend, label, name) in
            [(Backend::Sqlite, "SQLite", "sqlite"), (Backend::Postgres, "PostgreSQL", "postgres")]
        {
            if args.databases.iter().any(|d| d == name) {
                eprintln!("growth on {label}");
                points.extend(growth::growth(&bench, backend, label, &sizes).await?);
            }
        }
        report.blocks.push(format!(
            "### How cost grows with the table (Stamp and GetStamp at concurrency 16)\n\n{}",
            growth::table(&points)
        ));
        for database in ["SQLite", "PostgreSQL"] {
            let mine: Vec<&growth::GrowthPoint> = points.iter().filter(|p| p.database == database).collect();
            if let (Some(first), Some(last)) = (mine.first(), mine.last()) {
                for (name, a, b) in [
                    ("Stamp", first.stamp.per_second(), last.stamp.per_second()),
                    ("GetStamp", first.get.per_second(), last.get.per_second()),
                ] {
                    let kept = b / a.max(f64::EPSILON);
                    report.verdicts.push(Verdict {
                        target: format!("{name} on {database} at {} rows within 20% of {} rows", last.rows, first.rows),
                        measured: format!("{:.0}% ({b:.0} of {a:.0} calls/s)", kept * 100.0),
                        met: kept >= 0.8,
                    });
                }
            }
        }
        if let Some(path) = &args.chart {
            std::fs::write(path, growth::svg(&points))?;
        }
    }

    if wanted("scale") && args.databases.iter().any(|d| d == "postgres") {
        report.sections.push(scale_out(&bench).await?);
    }

    let mut reducer_rate = None;
    if wanted("reducer") {
        eprintln!("reducer through the broker");
        let mut broker = Broker::start().await;
        let database = TestDatabase::new(Backend::Sqlite).await;
        let (mesh_process, mesh) = process::start_mesh(database.env(), Some(&broker.bootstrap())).await?;
        let reduced = scenarios::reducer(&bench, mesh, &broker.bootstrap(), reducer_events).await?;
        mesh_process.stop().await;
        broker.stop().await;
        report.notes.push(format!(
            "Reducer (SQLite, Kafka-protocol broker): {} StampCreated events sent in {}, all aggregated {} after the first send: {:.0} events/s",
            reduced.events,
            show(reduced.produced_in),
            show(reduced.aggregated_in),
            reduced.per_second()
        ));
        reducer_rate = Some(reduced.per_second());
    }

    let growth_verdicts = std::mem::take(&mut report.verdicts);
    verdicts(&mut report, reducer_rate, &peaks);
    report.verdicts.extend(growth_verdicts);
    let text = report.to_markdown();
    println!("{text}");
    if let Some(path) = args.output {
        std::fs::write(&path, &text)?;
    }
    Ok(())
}

/// RunWorkflow on PostgreSQL through 1 and then 3 orchestrator processes
/// (`serve orchestrator`), each calling one stamping process; the load is
/// spread round robin over the instances.
async fn scale_out(bench: &Arc<Bench>) -> anyhow::Result<Section> {
    let mut section = Section {
        title: "RunWorkflow on PostgreSQL: 1 vs 3 orchestrator instances".into(),
        ratio_means: "calls/s over the single instance's at the same concurrency".into(),
        rows: Vec::new(),
    };
    let mut single = None;
    for instances in [1, 3] {
        eprintln!("{instances} orchestrator instance(s) on PostgreSQL");
        let database = TestDatabase::new(Backend::Postgres).await;
        let (stamping, stamping_addr) = process::start_service("stamping", "STAMPING_PORT", &database.env()).await?;
        let mut env = database.env();
        env.push(("STAMPING_SERVICE_URL".to_owned(), format!("http://{stamping_addr}")));
        let mut processes = Vec::new();
        let mut addrs = Vec::new();
        for _ in 0..instances {
            let (process, addr) = process::start_service("orchestrator", "ORCHESTRATOR_PORT", &env).await?;
            processes.push(process);
            addrs.push(addr);
        }
        let points = scenarios::run_workflow_across(bench, &addrs, "bench.scale").await?;
        let label = format!("RunWorkflow, PostgreSQL, {instances} orchestrator(s)");
        section.rows.extend(rows(&label, points.clone(), None, single.as_deref()));
        single.get_or_insert(points);
        for process in processes {
            process.stop().await;
        }
        stamping.stop().await;
    }
    Ok(section)
}

/// Where one RunWorkflow's time goes: `calls` sequential RunWorkflow calls on
/// `backend` with every span exported to a local receiver, and the median
/// duration of each kind of span across the calls (the profile the
/// breakdown in docs/BENCHMARKS.md comes from).
async fn profile_run_workflow(backend: Backend, label: &str, calls: u64) -> anyhow::Result<Vec<String>> {
    use omninode_proto::orchestrator::v1::{
        RunWorkflowRequest, WorkflowInput, orchestrator_service_client::OrchestratorServiceClient,
    };
    eprintln!("RunWorkflow profile on {label}");
    let receiver = omninode_integration_tests::otlp::OtlpDouble::start().await;
    let database = TestDatabase::new(backend).await;
    let mut env = database.env();
    env.push(("OTEL_EXPORTER_OTLP_ENDPOINT".to_owned(), format!("http://{}", receiver.grpc)));
    env.push(("OTEL_EXPORTER_OTLP_PROTOCOL".to_owned(), "grpc".to_owned()));
    let (mesh_process, mesh) = process::start_mesh(env, None).await?;
    let mut client = OrchestratorServiceClient::new(scenarios::channel(mesh.orchestrator).await?);
    let mut latencies = Vec::new();
    for n in 0..calls {
        let request = RunWorkflowRequest {
            namespace: "bench.profile".into(),
            input: Some(WorkflowInput { content: format!("print({n})\n"), ..Default::default() }),
            ..Default::default()
        };
        let started = std::time::Instant::now();
        client.run_workflow(request).await?;
        latencies.push(started.elapsed());
    }
    tokio::time::sleep(Duration::from_secs(6)).await;
    mesh_process.stop().await;
    let spans = receiver.spans();
    let median = |mut values: Vec<Duration>| {
        values.sort();
        values.get(values.len() / 2).copied().unwrap_or_default()
    };
    let mut by_name: std::collections::BTreeMap<String, Vec<Duration>> = std::collections::BTreeMap::new();
    for span in &spans {
        // One row per kind of span (workflow and topic names folded).
        let name = if span.name.starts_with("publish ") {
            "publish (outbox relay)".to_owned()
        } else if span.name.starts_with("workflow ") {
            "workflow run".to_owned()
        } else {
            span.name.clone()
        };
        by_name.entry(name).or_default().push(span.duration);
    }
    let mut lines = vec![format!(
        "RunWorkflow profile, {label}, {calls} sequential calls with every span exported: client-side median {} \
         (tracing on); median span durations: {}",
        show(median(latencies)),
        by_name
            .into_iter()
            .map(|(name, durations)| format!("{name} {} (×{})", show(median(durations.clone())), durations.len()))
            .collect::<Vec<_>>()
            .join("; ")
    )];
    lines.push(format!("RunWorkflow profile, {label}: {} spans received", spans.len()));
    Ok(lines)
}

/// Measurements by concurrency.
type Points = Vec<(usize, load::Measurement)>;

/// Stamp and RunWorkflow on SQLite with tracing off (no endpoint: no span is
/// made) and on (every span exported over OTLP/gRPC to a local receiver that
/// counts them), so the cost of tracing shows both ways.
async fn tracing_overhead(bench: &Arc<Bench>) -> anyhow::Result<Section> {
    let mut section = Section {
        title: "Tracing: every span exported (OTLP/gRPC, local receiver) vs tracing off, SQLite".into(),
        ratio_means: "calls/s with tracing over calls/s without (1 − ratio = overhead)".into(),
        rows: Vec::new(),
    };
    let receiver = omninode_integration_tests::otlp::OtlpDouble::start_with(false).await;
    // Stamp and RunWorkflow points with tracing off: the baselines of the traced run.
    let mut off: Option<(Points, Points)> = None;
    for traced in [false, true] {
        let label = if traced { "on" } else { "off" };
        eprintln!("tracing {label}");
        let database = TestDatabase::new(Backend::Sqlite).await;
        let mut env = database.env();
        if traced {
            env.push(("OTEL_EXPORTER_OTLP_ENDPOINT".to_owned(), format!("http://{}", receiver.grpc)));
            env.push(("OTEL_EXPORTER_OTLP_PROTOCOL".to_owned(), "grpc".to_owned()));
        }
        let (mesh_process, mesh) = process::start_mesh(env, None).await?;
        let stamp = scenarios::stamp(bench, mesh, "bench.tracing").await?;
        let workflow = scenarios::run_workflow(bench, mesh, "bench.tracing").await?;
        mesh_process.stop().await;
        let baseline = off.as_ref();
        section.rows.extend(rows(
            &format!("Stamp, tracing {label}"),
            stamp.clone(),
            None,
            baseline.map(|b| b.0.as_slice()),
        ));
        section.rows.extend(rows(
            &format!("RunWorkflow, tracing {label}"),
            workflow.clone(),
            None,
            baseline.map(|b| b.1.as_slice()),
        ));
        off.get_or_insert((stamp, workflow));
    }
    eprintln!("tracing: the receiver counted {} spans", receiver.counted());
    Ok(section)
}

/// The performance targets (docs/BENCHMARKS.md) against this run's figures.
/// `peaks`: each database's peak RSS of `omninode up`, in MiB.
fn verdicts(report: &mut Report, reducer_per_second: Option<f64>, peaks: &[(&str, f64)]) {
    let rate = |op: &str, c: usize| report.find(op, c).map(|m| m.per_second());
    let mut verdicts = Vec::new();
    if let (Some(rpc), Some(raw)) = (rate("Hash RPC 1 MiB", 1), rate("BLAKE3 in process 1 MiB", 1)) {
        let share = rpc / raw.max(f64::EPSILON);
        verdicts.push(Verdict {
            target: "Hash RPC at 1 MiB ≥ 50% of in-process BLAKE3 at concurrency 1".into(),
            measured: format!("{:.0}% ({rpc:.0} of {raw:.0} calls/s)", share * 100.0),
            met: share >= 0.50,
        });
    }
    for label in ["SQLite", "PostgreSQL"] {
        for (c, least) in [(64, 0.30), (1, 0.50)] {
            if let (Some(echo), Some(stamp)) = (rate("tonic echo", c), rate(&format!("Stamp, {label}"), c)) {
                let share = stamp / echo.max(f64::EPSILON);
                verdicts.push(Verdict {
                    target: format!(
                        "Stamp with persistence on {label} ≥ {:.0}% of the echo ceiling at concurrency {c}",
                        least * 100.0
                    ),
                    measured: format!("{:.0}% ({stamp:.0} of {echo:.0} calls/s)", share * 100.0),
                    met: share >= least,
                });
            }
        }
        if let Some(workflow) = report.find(&format!("RunWorkflow, {label}"), 1) {
            verdicts.push(Verdict {
                target: format!("RunWorkflow p50 < 2 ms on {label} (concurrency 1)"),
                measured: show(workflow.p50),
                met: workflow.p50 < Duration::from_millis(2),
            });
        }
        if let Some(per_second) = rate(&format!("RunWorkflow, {label}"), 64) {
            verdicts.push(Verdict {
                target: format!("RunWorkflow ≥ 1000 workflows/s on {label} (concurrency 64)"),
                measured: format!("{per_second:.0} workflows/s"),
                met: per_second >= 1000.0,
            });
        }
        if let Some((_, mib)) = peaks.iter().find(|(l, _)| *l == label) {
            verdicts.push(Verdict {
                target: format!("peak RSS of `omninode up` on {label} < 100 MiB"),
                measured: format!("{mib:.1} MiB"),
                met: *mib < 100.0,
            });
        }
    }
    for (rest, grpc) in [
        ("REST Hash 1 KiB", "gRPC Hash 1 KiB"),
        ("REST Stamp, SQLite", "gRPC Stamp, SQLite"),
        ("REST Stamp, PostgreSQL", "gRPC Stamp, PostgreSQL"),
    ] {
        for c in scenarios::CONCURRENCY {
            if let (Some(through), Some(direct)) = (rate(rest, c), rate(grpc, c)) {
                let overhead = 1.0 - through / direct.max(f64::EPSILON);
                verdicts.push(Verdict {
                    target: format!("gateway overhead < 25%: {rest} vs {grpc}, concurrency {c}"),
                    measured: format!("{:.0}%", overhead * 100.0),
                    met: overhead < 0.25,
                });
            }
        }
    }
    if let Some(per_second) = reducer_per_second {
        verdicts.push(Verdict {
            target: "reducer ≥ 50k events/s".into(),
            measured: format!("{per_second:.0} events/s"),
            met: per_second >= 50_000.0,
        });
    }
    report.verdicts = verdicts;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{load::Measurement, report::Row};

    /// A row of `calls` calls in one second, each taking `micros`.
    fn row(operation: &str, concurrency: usize, calls: usize, micros: u64) -> Row {
        let latencies = vec![Duration::from_micros(micros); calls];
        let measurement = Measurement::from_latencies(latencies, 0, None, Duration::from_secs(1));
        Row { operation: operation.into(), concurrency, measurement, bytes_per_call: None, ratio: None }
    }

    fn verdict<'a>(report: &'a Report, target: &str) -> &'a Verdict {
        report.verdicts.iter().find(|v| v.target == target).unwrap_or_else(|| panic!("no verdict {target}"))
    }

    #[test]
    fn every_target_of_the_run_is_judged_from_its_own_figures() {
        let mut report = Report::default();
        report.sections.push(Section {
            title: "all".into(),
            ratio_means: String::new(),
            rows: vec![
                row("Hash RPC 1 MiB", 1, 600, 1500),
                row("BLAKE3 in process 1 MiB", 1, 1000, 900),
                row("tonic echo", 1, 1000, 100),
                row("tonic echo", 64, 10_000, 900),
                row("Stamp, SQLite", 1, 400, 300),
                row("Stamp, SQLite", 64, 3500, 9000),
                row("RunWorkflow, SQLite", 1, 500, 1900),
                row("RunWorkflow, SQLite", 64, 900, 60_000),
                row("gRPC Stamp, SQLite", 1, 1000, 300),
                row("REST Stamp, SQLite", 1, 800, 400),
                row("gRPC Stamp, SQLite", 16, 1000, 3000),
                row("REST Stamp, SQLite", 16, 700, 4000),
            ],
        });
        verdicts(&mut report, None, &[("SQLite", 99.0)]);

        let hash = verdict(&report, "Hash RPC at 1 MiB ≥ 50% of in-process BLAKE3 at concurrency 1");
        assert!(hash.met, "600 of 1000 calls/s: {}", hash.measured);
        let c1 = verdict(&report, "Stamp with persistence on SQLite ≥ 50% of the echo ceiling at concurrency 1");
        assert!(!c1.met && c1.measured.starts_with("40%"), "{}", c1.measured);
        let c64 = verdict(&report, "Stamp with persistence on SQLite ≥ 30% of the echo ceiling at concurrency 64");
        assert!(c64.met && c64.measured.starts_with("35%"), "{}", c64.measured);
        assert!(verdict(&report, "RunWorkflow p50 < 2 ms on SQLite (concurrency 1)").met);
        let throughput = verdict(&report, "RunWorkflow ≥ 1000 workflows/s on SQLite (concurrency 64)");
        assert!(!throughput.met, "{}", throughput.measured);
        assert!(verdict(&report, "peak RSS of `omninode up` on SQLite < 100 MiB").met);
        // The gateway is judged against the gRPC points measured beside it, not the Stamp scenario's.
        let gateway = |c| {
            verdict(
                &report,
                &format!("gateway overhead < 25%: REST Stamp, SQLite vs gRPC Stamp, SQLite, concurrency {c}"),
            )
        };
        assert!(gateway(1).met && gateway(1).measured == "20%", "{}", gateway(1).measured);
        assert!(!gateway(16).met && gateway(16).measured == "30%", "{}", gateway(16).measured);
        assert!(
            report.verdicts.iter().all(|v| !v.target.contains("PostgreSQL")),
            "a database not measured is not judged"
        );
    }
}
