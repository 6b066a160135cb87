//! The operator's own settings, parsed once from flags (with environment fallbacks) and handed
//! down: the pure build step reads [`WorkloadDefaults`], the controller the rest.

use std::net::SocketAddr;
use std::time::Duration;

use metricstream_service::LogFormat;

/// What every workload gets unless its MetricStream says otherwise.
#[derive(Clone, Debug, PartialEq, clap::Args)]
pub struct WorkloadDefaults {
    /// Image of the ingest and consumer workloads (holds both binaries); `spec.image` overrides.
    #[arg(
        long,
        env = "METRICSTREAM_WORKLOAD_IMAGE",
        default_value = "ghcr.io/metricstream/metricstream:0.1.0"
    )]
    pub workload_image: String,

    /// CPU request of each workload container.
    #[arg(
        long,
        env = "METRICSTREAM_WORKLOAD_CPU_REQUEST",
        default_value = "100m"
    )]
    pub workload_cpu_request: String,

    /// Memory request of each workload container.
    #[arg(
        long,
        env = "METRICSTREAM_WORKLOAD_MEMORY_REQUEST",
        default_value = "128Mi"
    )]
    pub workload_memory_request: String,

    /// CPU limit of each workload container.
    #[arg(long, env = "METRICSTREAM_WORKLOAD_CPU_LIMIT", default_value = "1")]
    pub workload_cpu_limit: String,

    /// Memory limit of each workload container.
    #[arg(
        long,
        env = "METRICSTREAM_WORKLOAD_MEMORY_LIMIT",
        default_value = "512Mi"
    )]
    pub workload_memory_limit: String,
}

impl Default for WorkloadDefaults {
    fn default() -> Self {
        Self {
            workload_image: "ghcr.io/metricstream/metricstream:0.1.0".into(),
            workload_cpu_request: "100m".into(),
            workload_memory_request: "128Mi".into(),
            workload_cpu_limit: "1".into(),
            workload_memory_limit: "512Mi".into(),
        }
    }
}

/// `metricstream-operator run`.
#[derive(Clone, Debug, clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub workload: WorkloadDefaults,

    /// Watch only this namespace (single-namespace mode); every namespace when absent.
    #[arg(long, env = "METRICSTREAM_WATCH_NAMESPACE")]
    pub namespace: Option<String>,

    /// Address of the admin listener: /healthz, /readyz and Prometheus /metrics.
    #[arg(
        long,
        env = "METRICSTREAM_ADMIN_LISTEN",
        default_value = "0.0.0.0:9090"
    )]
    pub admin_listen: SocketAddr,

    /// Log format.
    #[arg(long, env = "METRICSTREAM_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Run the controller only while holding a coordination.k8s.io Lease, so several replicas
    /// can run and one works at a time.
    #[arg(long, env = "METRICSTREAM_LEADER_ELECTION", default_value_t = false)]
    pub leader_election: bool,

    /// Name of the leader-election Lease.
    #[arg(
        long,
        env = "METRICSTREAM_LEASE_NAME",
        default_value = "metricstream-operator"
    )]
    pub lease_name: String,

    /// Namespace of the leader-election Lease (the operator's own namespace in a cluster).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    pub lease_namespace: String,

    /// This replica's identity in the Lease; the host (pod) name by default.
    #[arg(long, env = "HOSTNAME")]
    pub identity: Option<String>,

    /// Seconds a Lease stays valid without renewal.
    #[arg(long, env = "METRICSTREAM_LEASE_DURATION", default_value_t = 15,
          value_parser = clap::value_parser!(u64).range(3..=600))]
    pub lease_duration_seconds: u64,

    /// Seconds between periodic re-reconciles of an unchanged MetricStream (drift repair).
    #[arg(long, env = "METRICSTREAM_RESYNC_SECONDS", default_value_t = 300,
          value_parser = clap::value_parser!(u64).range(10..=86_400))]
    pub resync_seconds: u64,
}

impl RunArgs {
    pub fn resync(&self) -> Duration {
        Duration::from_secs(self.resync_seconds)
    }
}
