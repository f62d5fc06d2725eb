//! `timerwatch daemon` options.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;

use crate::trace_args::TraceArgs;

#[derive(Args, Debug)]
pub struct DaemonArgs {
    #[command(flatten)]
    pub trace: TraceArgs,
    /// Address to serve /metrics, /healthz and /report on.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9808")]
    pub listen: SocketAddr,
    /// Answer /metrics and /report only with `Authorization: Bearer <the file's first line>`
    /// (Prometheus: `authorization: { credentials_file: … }`); /healthz stays open.
    #[arg(long, value_name = "FILE")]
    pub auth_token_file: Option<PathBuf>,
    /// Seconds between reports: how fresh /metrics and /report are (growth verdicts are
    /// sampled every second regardless).
    #[arg(short = 'i', long, value_name = "SECS", default_value_t = 5.0)]
    pub interval: f64,
    /// Export only processes of pods in this namespace (repeatable); processes outside
    /// Kubernetes pods are then left out.
    #[arg(long = "namespace", value_name = "NS")]
    pub namespaces: Vec<String>,
    /// Export only processes of this pod, by name (repeatable).
    #[arg(long = "pod", value_name = "NAME")]
    pub pods: Vec<String>,
    /// The kubelet's log root: pod and container names come from its `pods/` and
    /// `containers/` directories.
    #[arg(long, value_name = "DIR", default_value = "/var/log")]
    pub kubelet_logs: PathBuf,
    /// Callsites per process with their own series; the others fold into caller="other".
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub max_callsites_per_process: usize,
    /// Processes with their own series, those with the most live timers first; the others fold
    /// into pid="other".
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub max_processes: usize,
}
