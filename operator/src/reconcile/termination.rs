//! How a workload pod stops without refusing the clients a Service still routes to it.
//!
//! When a pod is deleted, the EndpointSlice controller marks it terminating at once, but
//! kube-proxy on every node takes a moment to stop sending new connections to it; meanwhile
//! kubelet runs the preStop hook and only then sends SIGTERM. So the ingest gets:
//!
//! 1. a native `preStop.sleep` (the image has no shell for `exec: sleep`) of
//!    [`PRE_STOP_SLEEP_SECONDS`], during which the process serves as usual while the Service
//!    catches up. It needs no support from the binary, so it also protects a `spec.image` older
//!    than `--shutdown-delay`;
//! 2. then, on SIGTERM, `--shutdown-delay` [`INGEST_SHUTDOWN_DELAY_SECONDS`]: `/readyz` answers
//!    503 and every answer carries `Connection: close`, so kept-alive clients (whose connections
//!    kube-proxy never moves) reconnect to another pod before the listener closes;
//! 3. then the drain, within `--shutdown-timeout` (the binaries' default, [`DRAIN_SECONDS`]).
//!
//! `terminationGracePeriodSeconds` counts from the deletion, preStop included, and covers all
//! three. The consumer serves no Service (only its admin port), so it needs no delay; it drains
//! within the same grace period.

use k8s_openapi::api::core::v1::{Lifecycle, LifecycleHandler, SleepAction};

/// Endpoint propagation (EndpointSlice controller, then kube-proxy on every node) takes about a
/// second in a quiet cluster and several under API-server load.
pub const PRE_STOP_SLEEP_SECONDS: i64 = 5;

/// Enough for clients that send every second or two to make one more request and reconnect
/// elsewhere; the preStop sleep already covered endpoint propagation.
pub const INGEST_SHUTDOWN_DELAY_SECONDS: i64 = 2;

/// The `--shutdown-timeout` default of both binaries, which the operator does not change.
const DRAIN_SECONDS: i64 = 30;

/// After the drain: the admin listener's last second, the exit, kubelet's own latency.
const EXIT_MARGIN_SECONDS: i64 = 8;

/// From the deletion to SIGKILL.
pub const TERMINATION_GRACE_PERIOD_SECONDS: i64 =
    PRE_STOP_SLEEP_SECONDS + INGEST_SHUTDOWN_DELAY_SECONDS + DRAIN_SECONDS + EXIT_MARGIN_SECONDS;

/// The ingest container's lifecycle: sleep before SIGTERM.
pub fn ingest_lifecycle() -> Lifecycle {
    Lifecycle {
        pre_stop: Some(LifecycleHandler {
            sleep: Some(SleepAction {
                seconds: PRE_STOP_SLEEP_SECONDS,
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}
