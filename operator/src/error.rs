//! The reconciler's errors. Each has a short label for the failure metric and becomes a
//! Warning Event on the MetricStream.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The object does not deserialize into a MetricStream (e.g. written against another CRD
    /// version). Waits for a change; never stops the controller.
    #[error("MetricStream {name} cannot be read: {error}")]
    InvalidObject { name: String, error: String },

    #[error("{action}: {source}")]
    Kube {
        action: String,
        #[source]
        source: kube::Error,
    },

    #[error("topic {topic}: {message}")]
    Topic { topic: String, message: String },

    #[error("the object has no {0}")]
    MissingMetadata(&'static str),
}

impl Error {
    /// The `reason` label of `metricstream_operator_reconcile_failures_total`.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::InvalidObject { .. } => "invalid_object",
            Error::Kube { source, .. } => match source {
                kube::Error::Api(status) if status.is_conflict() => "conflict",
                kube::Error::Api(status) if status.is_forbidden() => "forbidden",
                kube::Error::Api(_) => "api_error",
                _ => "api_unreachable",
            },
            Error::Topic { .. } => "topic",
            Error::MissingMetadata(_) => "missing_metadata",
        }
    }

    /// The Event reason.
    pub fn event_reason(&self) -> &'static str {
        match self {
            Error::InvalidObject { .. } => "InvalidObject",
            Error::Kube { .. } => "ApplyFailed",
            Error::Topic { .. } => "TopicFailed",
            Error::MissingMetadata(_) => "InvalidObject",
        }
    }
}

/// Attaches what was being done to a Kubernetes API error.
pub trait KubeResultExt<T> {
    fn doing(self, action: impl FnOnce() -> String) -> Result<T, Error>;
}

impl<T> KubeResultExt<T> for Result<T, kube::Error> {
    fn doing(self, action: impl FnOnce() -> String) -> Result<T, Error> {
        self.map_err(|source| Error::Kube {
            action: action(),
            source,
        })
    }
}

/// True when the API said 404.
pub fn is_not_found(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.is_not_found())
}
