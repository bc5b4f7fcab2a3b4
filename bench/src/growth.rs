//! How cost grows with data: `metadata_stamps` is bulk-loaded (SQL, not the
//! API) to each size in turn, and at each size, once the load has settled,
//! Stamp and GetStamp are loaded at concurrency 16, the first and a deep
//! ListStamps page are timed, and the reducer's Rebuild of the namespace; the
//! mesh's peak resident set is read after each size. The harness draws the
//! curves as an SVG.

use std::{sync::Arc, time::Duration};

use base64::Engine as _;
use omninode_integration_tests::{Backend, TestDatabase};
use omninode_proto::{
    reducer::v1::{RebuildRequest, reducer_service_client::ReducerServiceClient},
    stamping::v1::{GetStampRequest, ListStampsRequest, StampRequest, stamping_service_client::StampingServiceClient},
};
use sea_orm::{ConnectionTrait, DatabaseConnection, Statement};

use crate::{
    load::{self, Call, Measurement, Timing},
    process,
    scenarios::{Bench, channel},
};

const NAMESPACE: &str = "bench.growth";
/// Rows inserted per statement.
const CHUNK: u64 = 100_000;

/// The figures at one table size.
#[derive(Debug, Clone)]
pub struct GrowthPoint {
    pub database: &'static str,
    pub rows: u64,
    pub stamp: Measurement,
    pub get: Measurement,
    pub list_first: Measurement,
    pub list_deep: Measurement,
    pub rebuild: Duration,
    /// The mesh's peak resident set so far (VmHWM), in MiB, if it could be read.
    pub peak_rss_mib: Option<f64>,
}

/// The id and hash of bulk row `i`: ids sort like the API's (time-ordered
/// UUID text), hashes are 64 hex characters.
fn bulk_id(i: u64) -> String {
    format!("00000000-0000-7000-8000-{i:012x}")
}

fn bulk_hash(i: u64) -> String {
    format!("{i:064x}")
}

/// Runs the scenario on `backend` at each of `sizes` (ascending).
pub async fn growth(
    bench: &Arc<Bench>,
    backend: Backend,
    label: &'static str,
    sizes: &[u64],
) -> anyhow::Result<Vec<GrowthPoint>> {
    let database = TestDatabase::new(backend).await;
    let (mesh_process, mesh) = process::start_mesh(database.env(), None).await?;
    let db = sea_orm::Database::connect(database.url()).await?;
    let stamping = StampingServiceClient::new(channel(mesh.stamping).await?);
    let mut reducer = ReducerServiceClient::new(channel(mesh.reducer).await?);
    // One row through the API: the bulk rows copy its stored stamp and timestamps.
    let template = stamping
        .clone()
        .stamp(StampRequest { namespace: NAMESPACE.into(), content: "template\n".into(), ..Default::default() })
        .await?
        .into_inner()
        .stamp
        .expect("a record")
        .stamp_id;
    let timing = Timing { warmup: bench.timing.warmup, measure: bench.timing.measure };
    let mut points = Vec::new();
    let mut loaded = 0;
    for &rows in sizes {
        eprintln!("  {label}: loading metadata_stamps to {rows} rows");
        while loaded < rows {
            let next = (loaded + CHUNK).min(rows);
            bulk_insert(&db, &template, loaded, next - 1).await?;
            loaded = next;
        }
        settle(&db, backend).await?;
        eprintln!("  {label}: measuring at {rows} rows");
        let stamp = measure(bench, timing, 16, stamp_call(&stamping, bench)).await;
        let get = measure(bench, timing, 16, get_call(&stamping, rows)).await;
        let list_first = measure(bench, timing, 1, list_call(&stamping, String::new())).await;
        let deep = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("after:{}", bulk_id(rows / 2)));
        let list_deep = measure(bench, timing, 1, list_call(&stamping, deep)).await;
        let started = std::time::Instant::now();
        reducer.rebuild(RebuildRequest { namespace: NAMESPACE.into() }).await?;
        let rebuild = started.elapsed();
        let peak_rss_mib = mesh_process.peak_rss_mib();
        points.push(GrowthPoint { database: label, rows, stamp, get, list_first, list_deep, rebuild, peak_rss_mib });
    }
    mesh_process.stop().await;
    Ok(points)
}

async fn measure(bench: &Bench, timing: Timing, concurrency: usize, call: Call) -> Measurement {
    load::run(call, concurrency, timing, &bench.sequence).await
}

fn stamp_call(client: &StampingServiceClient<tonic::transport::Channel>, bench: &Arc<Bench>) -> Call {
    let (client, bench) = (client.clone(), bench.clone());
    Arc::new(move |n| {
        let mut client = client.clone();
        let request = StampRequest {
            namespace: NAMESPACE.into(),
            content: format!("growth {}", bench.source(n)),
            ..Default::default()
        };
        Box::pin(async move { client.stamp(request).await.map(drop).map_err(|s| s.to_string()) })
    })
}

fn get_call(client: &StampingServiceClient<tonic::transport::Channel>, rows: u64) -> Call {
    let client = client.clone();
    Arc::new(move |n| {
        let mut client = client.clone();
        // Spread over the whole table (a multiplicative hash of the call number).
        let i = n.wrapping_mul(0x9E37_79B9_7F4A_7C15) % rows;
        let request = GetStampRequest { namespace: NAMESPACE.into(), file_hash: bulk_hash(i) };
        Box::pin(async move { client.get_stamp(request).await.map(drop).map_err(|s| s.to_string()) })
    })
}

fn list_call(client: &StampingServiceClient<tonic::transport::Channel>, page_token: String) -> Call {
    let client = client.clone();
    Arc::new(move |_| {
        let mut client = client.clone();
        let request = ListStampsRequest { namespace: NAMESPACE.into(), page_size: 100, page_token: page_token.clone() };
        Box::pin(async move {
            let page = client.list_stamps(request).await.map_err(|s| s.to_string())?.into_inner();
            if page.stamps.len() == 100 { Ok(()) } else { Err(format!("a page of {}", page.stamps.len())) }
        })
    })
}

/// Lets a bulk load settle before its size is measured, as a table is
/// between loads in a deployment, so that the figures measure the table's
/// size rather than the load's aftermath: PostgreSQL vacuums and analyses
/// the table (setting the hint bits and visibility map the first reads of
/// fresh rows would otherwise write) and checkpoints; SQLite copies its WAL
/// back into the file; then the kernel writes back every dirty page.
async fn settle(db: &DatabaseConnection, backend: Backend) -> anyhow::Result<()> {
    match backend {
        Backend::Postgres => {
            db.execute_unprepared("VACUUM (ANALYZE) metadata_stamps").await?;
            // A role that may not checkpoint (neither superuser nor
            // pg_checkpoint) measures without: the figures say so.
            if let Err(err) = db.execute_unprepared("CHECKPOINT").await {
                eprintln!("  no CHECKPOINT before measuring ({err})");
            }
        }
        Backend::Sqlite => {
            db.execute_unprepared("PRAGMA wal_checkpoint(TRUNCATE)").await?;
        }
    }
    let synced = tokio::process::Command::new("sync").status().await?;
    anyhow::ensure!(synced.success(), "`sync` failed: {synced}");
    Ok(())
}

/// Inserts bulk rows `first..=last` copying the template row's stamp and timestamps.
async fn bulk_insert(db: &DatabaseConnection, template: &str, first: u64, last: u64) -> anyhow::Result<()> {
    let backend = db.get_database_backend();
    let sql = match backend {
        sea_orm::DbBackend::Postgres => format!(
            "INSERT INTO metadata_stamps (id, namespace, file_hash, file_path, file_size, content_type, stamp_data, \
             protocol_version, version, op_id, metadata_version, created_at, updated_at) \
             SELECT '00000000-0000-7000-8000-' || lpad(to_hex(i), 12, '0'), t.namespace, lpad(to_hex(i), 64, '0'), \
             'bulk/' || i || '.py', 100, 'text/x-python', t.stamp_data, t.protocol_version, t.version, NULL, \
             t.metadata_version, t.created_at, t.updated_at \
             FROM generate_series({first}::bigint, {last}::bigint) AS i, \
             (SELECT * FROM metadata_stamps WHERE id = '{template}') AS t"
        ),
        _ => format!(
            "WITH RECURSIVE seq(i) AS (SELECT {first} UNION ALL SELECT i + 1 FROM seq WHERE i < {last}) \
             INSERT INTO metadata_stamps (id, namespace, file_hash, file_path, file_size, content_type, stamp_data, \
             protocol_version, version, op_id, metadata_version, created_at, updated_at) \
             SELECT printf('00000000-0000-7000-8000-%012x', i), t.namespace, printf('%064x', i), \
             'bulk/' || i || '.py', 100, 'text/x-python', t.stamp_data, t.protocol_version, t.version, NULL, \
             t.metadata_version, t.created_at, t.updated_at \
             FROM seq, (SELECT * FROM metadata_stamps WHERE id = '{template}') AS t"
        ),
    };
    db.execute_raw(Statement::from_string(backend, sql)).await?;
    Ok(())
}

/// The Markdown table of the points.
pub fn table(points: &[GrowthPoint]) -> String {
    let mut text = String::from(
        "| database | rows | Stamp calls/s (c16) | GetStamp calls/s (c16) | ListStamps first page p50 | deep page p50 | Rebuild | mesh peak RSS |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for p in points {
        let peak = p.peak_rss_mib.map_or_else(|| "–".to_owned(), |mib| format!("{mib:.1} MiB"));
        text.push_str(&format!(
            "| {} | {} | {:.0} | {:.0} | {} | {} | {} | {} |\n",
            p.database,
            p.rows,
            p.stamp.per_second(),
            p.get.per_second(),
            crate::report::show(p.list_first.p50),
            crate::report::show(p.list_deep.p50),
            crate::report::show(p.rebuild),
            peak,
        ));
    }
    text
}

/// Two charts side by side: throughput relative to the smallest size, and
/// latencies (log scale), against the table size (log scale).
pub fn svg(points: &[GrowthPoint]) -> String {
    let (width, height, pad) = (460.0, 300.0, 50.0);
    let mut sizes: Vec<f64> = points.iter().map(|p| p.rows as f64).collect();
    sizes.sort_by(f64::total_cmp);
    sizes.dedup();
    let (min_x, max_x) = (
        sizes.iter().copied().fold(f64::MAX, f64::min).log10(),
        sizes.iter().copied().fold(f64::MIN, f64::max).log10().max(1.0),
    );
    let x = |rows: f64| pad + (rows.log10() - min_x) / (max_x - min_x).max(0.001) * (width - 2.0 * pad);
    let databases: Vec<&str> = {
        let mut d: Vec<&str> = points.iter().map(|p| p.database).collect();
        d.dedup();
        d
    };
    let colors =
        ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];
    // Room under the panels for the longer legend (three lines per database).
    let legend_height = 12.0 * 3.0 * databases.len() as f64 + 15.0;
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{}\" font-family=\"sans-serif\" font-size=\"11\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n",
        2.0 * width,
        height + legend_height
    );
    // Panel 1: Stamp and GetStamp calls/s over their value at the smallest size (linear 0..1.5).
    let y1 = |ratio: f64| height - pad - ratio.clamp(0.0, 1.5) / 1.5 * (height - 2.0 * pad);
    out.push_str(&axes(0.0, "calls/s vs the smallest table (1.0 = unchanged)", width, height, pad));
    for (r, label) in [(0.5, "0.5"), (0.8, "0.8"), (1.0, "1.0"), (1.2, "1.2")] {
        out.push_str(&format!(
            "<line x1=\"{pad}\" x2=\"{}\" y1=\"{y}\" y2=\"{y}\" stroke=\"#ddd\"/><text x=\"{}\" y=\"{}\">{label}</text>\n",
            width - pad,
            pad - 30.0,
            y1(r) + 4.0,
            y = y1(r)
        ));
    }
    let mut color = 0;
    let mut legend = Vec::new();
    for database in &databases {
        let mine: Vec<&GrowthPoint> = points.iter().filter(|p| p.database == *database).collect();
        for (name, value) in [
            ("Stamp", (|p: &GrowthPoint| p.stamp.per_second()) as fn(&GrowthPoint) -> f64),
            ("GetStamp", |p: &GrowthPoint| p.get.per_second()),
        ] {
            let base = mine.first().map(|p| value(p)).unwrap_or(1.0).max(f64::EPSILON);
            let line: Vec<String> =
                mine.iter().map(|p| format!("{:.1},{:.1}", x(p.rows as f64), y1(value(p) / base))).collect();
            out.push_str(&polyline(&line, colors[color % colors.len()]));
            legend.push((format!("{name}, {database}"), colors[color % colors.len()], 0.0));
            color += 1;
        }
    }
    // Panel 2: latencies in ms, log scale from 0.1 ms to 10 s.
    let y2 = |d: Duration| {
        let ms = (d.as_secs_f64() * 1000.0).clamp(0.1, 10_000.0);
        height - pad - (ms.log10() + 1.0) / 5.0 * (height - 2.0 * pad)
    };
    out.push_str(&axes(width, "latency (ms, log): ListStamps p50, Rebuild", width, height, pad));
    for (ms, label) in [(0.1, "0.1"), (1.0, "1"), (10.0, "10"), (100.0, "100"), (1000.0, "1000"), (10_000.0, "10000")] {
        let y = y2(Duration::from_secs_f64(ms / 1000.0));
        out.push_str(&format!(
            "<line x1=\"{}\" x2=\"{}\" y1=\"{y}\" y2=\"{y}\" stroke=\"#ddd\"/><text x=\"{}\" y=\"{}\">{label}</text>\n",
            width + pad,
            2.0 * width - pad,
            width + pad - 40.0,
            y + 4.0
        ));
    }
    for database in &databases {
        let mine: Vec<&GrowthPoint> = points.iter().filter(|p| p.database == *database).collect();
        for (name, value) in [
            ("ListStamps first page", (|p: &GrowthPoint| p.list_first.p50) as fn(&GrowthPoint) -> Duration),
            ("ListStamps deep page", |p: &GrowthPoint| p.list_deep.p50),
            ("Rebuild", |p: &GrowthPoint| p.rebuild),
        ] {
            let line: Vec<String> =
                mine.iter().map(|p| format!("{:.1},{:.1}", width + x(p.rows as f64), y2(value(p)))).collect();
            out.push_str(&polyline(&line, colors[color % colors.len()]));
            legend.push((format!("{name}, {database}"), colors[color % colors.len()], width));
            color += 1;
        }
    }
    // Size ticks under both panels.
    for rows in &sizes {
        for offset in [0.0, width] {
            out.push_str(&format!(
                "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n",
                offset + x(*rows),
                height - pad + 15.0,
                human(*rows as u64)
            ));
        }
    }
    let mut rows_per_panel = [0.0, 0.0];
    for (label, color, offset) in legend {
        let panel = usize::from(offset > 0.0);
        let y = height + 5.0 + rows_per_panel[panel] * 12.0;
        rows_per_panel[panel] += 1.0;
        out.push_str(&format!(
            "<rect x=\"{}\" y=\"{}\" width=\"10\" height=\"3\" fill=\"{color}\"/><text x=\"{}\" y=\"{}\">{label}</text>\n",
            offset + pad,
            y - 4.0,
            offset + pad + 14.0,
            y
        ));
    }
    out.push_str("</svg>\n");
    out
}

fn axes(offset: f64, title: &str, width: f64, height: f64, pad: f64) -> String {
    format!(
        "<text x=\"{}\" y=\"20\" font-weight=\"bold\">{title}</text>\n\
         <line x1=\"{l}\" x2=\"{r}\" y1=\"{b}\" y2=\"{b}\" stroke=\"black\"/>\n\
         <line x1=\"{l}\" x2=\"{l}\" y1=\"{pad}\" y2=\"{b}\" stroke=\"black\"/>\n\
         <text x=\"{}\" y=\"{}\" text-anchor=\"middle\">rows in metadata_stamps (log)</text>\n",
        offset + pad,
        offset + width / 2.0,
        height - pad + 30.0,
        l = offset + pad,
        r = offset + width - pad,
        b = height - pad,
    )
}

fn polyline(points: &[String], color: &str) -> String {
    format!("<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" points=\"{}\"/>\n", points.join(" "))
}

fn human(n: u64) -> String {
    match n {
        n if n >= 1_000_000 => format!("{}M", n / 1_000_000),
        n if n >= 1_000 => format!("{}k", n / 1_000),
        n => n.to_string(),
    }
}
