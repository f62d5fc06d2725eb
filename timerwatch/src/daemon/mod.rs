//! `timerwatch daemon`: trace every process continuously and export what the reports say as
//! Prometheus metrics, with container and pod labels, on `/metrics`, the last report on
//! `/report`, and liveness on `/healthz`. Deployment and the label sources: deploy/README.md.
//!
//! The tracing loop (`session::Tracer`) runs on the current-thread runtime and the HTTP server
//! on a thread of its own, so a slow report never delays a scrape: each report goes through the
//! `pipeline` into a `snapshot` that the handlers read.

mod args;
pub mod cgroup;
mod connections;
pub mod fold;
pub mod kubelet;
pub mod latency;
pub mod metadata;
pub mod metrics;
mod pipeline;
pub mod preflight;
mod server;
pub mod snapshot;
pub mod verdict_log;

use std::time::Duration;

use anyhow::Result;
use tokio::net::TcpListener;

pub use args::DaemonArgs;

use crate::{failure::Failure, session::Tracer, trace_args::GoMode};
use fold::{Fold, Limits};
use metadata::{Metadata, PodFilter};
use pipeline::Pipeline;
use snapshot::Shared;

fn validate(args: &DaemonArgs) -> Result<Duration> {
    if args.trace.json {
        return Err(Failure::bad_input("`daemon` serves JSON at /report: drop --json").into());
    }
    if !(args.interval.is_finite() && args.interval >= 0.1 && args.interval <= 3600.0) {
        return Err(Failure::bad_input(format!(
            "--interval must be between 0.1 and 3600 seconds, got {}",
            args.interval
        ))
        .into());
    }
    if args.max_processes == 0 || args.max_callsites_per_process == 0 {
        return Err(Failure::bad_input(
            "--max-processes and --max-callsites-per-process must be at least 1",
        )
        .into());
    }
    Ok(Duration::from_secs_f64(args.interval))
}

/// The token's first line, trimmed; an empty or unreadable file is an error, not an open port.
fn read_token(path: &std::path::Path) -> Result<Vec<u8>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Failure::bad_input(format!(
            "cannot read --auth-token-file {}: {e}",
            path.display()
        ))
    })?;
    let token = text.lines().next().unwrap_or("").trim();
    if token.is_empty() {
        return Err(Failure::bad_input(format!(
            "--auth-token-file {} is empty: refusing to serve without a token",
            path.display()
        ))
        .into());
    }
    Ok(token.as_bytes().to_vec())
}

/// The HTTP endpoints on a thread and runtime of their own: a report that takes long (a backlog
/// of events after a burst, walks of many Go processes) must not make a scrape wait for it.
/// They read only the shared snapshot, whose lock each report holds for a moment.
fn serve_apart(
    listener: TcpListener,
    shared: Shared,
    interval: Duration,
    token: Option<Vec<u8>>,
) -> Result<()> {
    let listener = listener.into_std()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("timerwatch-http".into())
        .spawn(move || {
            runtime.block_on(async move {
                match TcpListener::from_std(listener) {
                    Ok(l) => server::serve(l, shared, interval, token).await,
                    Err(e) => eprintln!("timerwatch: error: cannot serve HTTP: {e}"),
                }
            })
        })?;
    Ok(())
}

pub async fn run(args: DaemonArgs) -> Result<()> {
    let interval = validate(&args)?;
    let token = args
        .auth_token_file
        .as_deref()
        .map(read_token)
        .transpose()?;
    preflight::check()?;
    // Before attaching: a taken port is the user's to fix, and should cost no BPF load.
    let listener = TcpListener::bind(args.listen)
        .await
        .map_err(|e| Failure::bad_input(format!("cannot listen on {}: {e}", args.listen)))?;
    let addr = listener.local_addr()?;
    let mut trace = args.trace.clone();
    if trace.go_mode == GoMode::Auto {
        // A node agent traces every Go process of the node: probes on all of them would
        // cost each a trap per timer operation.
        trace.go_mode = GoMode::Census;
    }
    let mut tracer = Tracer::start(&trace)?;
    let shared = Shared::default();
    serve_apart(listener, shared.clone(), interval, token)?;

    let metadata = Metadata::new(std::path::Path::new("/proc"), &args.kubelet_logs);
    if !metadata.kubelet().available() {
        eprintln!(
            "timerwatch: note: no kubelet pod logs under {}: pod, namespace and container labels stay empty",
            metadata.kubelet().root().display()
        );
    }
    for tp in tracer.missing_tracepoints() {
        eprintln!("timerwatch: note: this kernel has no {tp}; timers it would show are not seen");
    }
    // Scripts and tests wait for this line.
    eprintln!("timerwatch: attached, serving http://{addr}/metrics, /report and /healthz");

    let mut pipeline = Pipeline {
        metadata,
        filter: PodFilter {
            namespaces: args.namespaces.clone(),
            pods: args.pods.clone(),
        },
        fold: Fold::new(Limits {
            processes: args.max_processes,
            callsites_per_process: args.max_callsites_per_process,
        }),
        verdicts: verdict_log::VerdictLog::default(),
        shared,
    };
    tracer
        .run(None, Some(interval), |report| {
            pipeline.tick(report);
            true
        })
        .await?;
    Ok(())
}
