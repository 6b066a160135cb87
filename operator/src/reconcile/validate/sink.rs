//! The consumer's sink (`spec.consumer.sink`) → a [`SinkPlan`], or an [`InvalidSink`] naming
//! what is wrong. The CRD's CEL rules refuse the same combinations at admission; this repeats
//! them for an older installed CRD.

use crate::crd::{RemoteWriteProtocol, SecretKeyRef, SinkSpec, SinkType};

/// Default key of the Secret holding a bearer token.
pub const DEFAULT_TOKEN_KEY: &str = "token";
/// Default key of the Secret holding a basic-auth password.
pub const DEFAULT_PASSWORD_KEY: &str = "password";
/// Default key of the Secret holding the store's CA.
pub const DEFAULT_CA_KEY: &str = "ca.crt";

/// Where the consumers write.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum SinkPlan {
    /// JSON Lines files on the sink's volume.
    #[default]
    File,
    /// Boxed: it is large, and most streams use the file sink.
    RemoteWrite(Box<RemoteWritePlan>),
}

/// A time-series store over Prometheus remote write.
#[derive(Clone, Debug, PartialEq)]
pub struct RemoteWritePlan {
    pub url: String,
    /// The Secret (name, key) holding a bearer token.
    pub bearer_token: Option<(String, String)>,
    /// Basic auth: the username and the Secret (name, key) holding the password.
    pub basic_auth: Option<(String, (String, String))>,
    /// The Secret (name, key) holding the PEM CA the store's certificate must chain to (else
    /// the system's CAs).
    pub ca: Option<(String, String)>,
    pub max_samples_per_request: i32,
    pub concurrency: i32,
    pub protocol: RemoteWriteProtocol,
    pub timeout_seconds: i32,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InvalidSink {
    #[error(
        "spec.consumer.sink.remoteWrite is required when spec.consumer.sink.type is remoteWrite"
    )]
    MissingRemoteWrite,
    #[error(
        "spec.consumer.sink.remoteWrite may only be set when spec.consumer.sink.type is remoteWrite"
    )]
    RemoteWriteWithoutType,
    #[error(
        "spec.consumer.sink.remoteWrite.url {0:?} is not an http:// or https:// URL with a host (e.g. http://victoriametrics:8428/api/v1/write)"
    )]
    BadUrl(String),
    #[error(
        "spec.consumer.sink.remoteWrite.bearerTokenSecretRef and basicAuth are exclusive: a request carries one Authorization header"
    )]
    ExclusiveAuthentication,
    #[error("{field} is {value}; it must be in {min}..={max}")]
    OutOfRange {
        field: &'static str,
        value: i32,
        min: i32,
        max: i32,
    },
    #[error("{field} {value:?} is empty or not a valid name")]
    BadReference { field: &'static str, value: String },
    #[error(
        "spec.consumer.sink.remoteWrite.tls is set but the url is not https://: the CA would go unused and the credentials in clear"
    )]
    TlsWithoutHttps,
}

/// The plan for `sink`; `is_secret_name` checks a Secret name.
pub fn sink_plan(
    sink: &SinkSpec,
    is_secret_name: impl Fn(&str) -> bool,
) -> Result<SinkPlan, InvalidSink> {
    let remote_write = match (sink.type_, &sink.remote_write) {
        (SinkType::File, None) => return Ok(SinkPlan::File),
        (SinkType::File, Some(_)) => return Err(InvalidSink::RemoteWriteWithoutType),
        (SinkType::RemoteWrite, None) => return Err(InvalidSink::MissingRemoteWrite),
        (SinkType::RemoteWrite, Some(remote_write)) => remote_write,
    };
    let url = remote_write.url.trim();
    if !is_http_url(url) {
        return Err(InvalidSink::BadUrl(remote_write.url.clone()));
    }
    if remote_write.bearer_token_secret_ref.is_some() && remote_write.basic_auth.is_some() {
        return Err(InvalidSink::ExclusiveAuthentication);
    }
    if remote_write.tls.is_some() && !url.starts_with("https://") {
        return Err(InvalidSink::TlsWithoutHttps);
    }
    let in_range = |field, value, min, max| {
        if (min..=max).contains(&value) {
            Ok(value)
        } else {
            Err(InvalidSink::OutOfRange {
                field,
                value,
                min,
                max,
            })
        }
    };
    let secret = |field, reference: Option<&SecretKeyRef>, default_key: &str| match reference {
        None => Ok(None),
        Some(reference) if !is_secret_name(&reference.name) => Err(InvalidSink::BadReference {
            field,
            value: reference.name.clone(),
        }),
        Some(reference) => Ok(Some((
            reference.name.clone(),
            reference
                .key
                .clone()
                .unwrap_or_else(|| default_key.to_owned()),
        ))),
    };
    let bearer_token = secret(
        "spec.consumer.sink.remoteWrite.bearerTokenSecretRef.name",
        remote_write.bearer_token_secret_ref.as_ref(),
        DEFAULT_TOKEN_KEY,
    )?;
    let basic_auth = match &remote_write.basic_auth {
        None => None,
        Some(basic) => secret(
            "spec.consumer.sink.remoteWrite.basicAuth.passwordSecretRef.name",
            Some(&basic.password_secret_ref),
            DEFAULT_PASSWORD_KEY,
        )?
        .map(|password| (basic.username.clone(), password)),
    };
    let ca = secret(
        "spec.consumer.sink.remoteWrite.tls.caSecretRef.name",
        remote_write
            .tls
            .as_ref()
            .and_then(|tls| tls.ca_secret_ref.as_ref()),
        DEFAULT_CA_KEY,
    )?;
    Ok(SinkPlan::RemoteWrite(Box::new(RemoteWritePlan {
        url: url.to_owned(),
        bearer_token,
        basic_auth,
        ca,
        // The consumer's own limits (--sink-max-samples-per-request, --sink-timeout-ms).
        max_samples_per_request: in_range(
            "spec.consumer.sink.remoteWrite.maxSamplesPerRequest",
            remote_write.max_samples_per_request,
            1,
            1_000_000,
        )?,
        protocol: remote_write.protocol,
        concurrency: in_range(
            "spec.consumer.sink.remoteWrite.concurrency",
            remote_write.concurrency,
            1,
            64,
        )?,
        timeout_seconds: in_range(
            "spec.consumer.sink.remoteWrite.timeoutSeconds",
            remote_write.timeout_seconds,
            1,
            600,
        )?,
    })))
}

/// `http://` or `https://`, a host, no whitespace: what the CRD's CEL rule admits.
fn is_http_url(url: &str) -> bool {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"));
    rest.is_some_and(|rest| {
        !rest.starts_with(['/', '?', '#']) && !rest.is_empty() && !url.contains(char::is_whitespace)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{BasicAuthSpec, RemoteWriteSpec, RemoteWriteTlsSpec, SecretKeyRef};

    fn remote_write(url: &str) -> RemoteWriteSpec {
        RemoteWriteSpec {
            url: url.into(),
            bearer_token_secret_ref: None,
            basic_auth: None,
            tls: None,
            max_samples_per_request: 5000,
            concurrency: 4,
            protocol: Default::default(),
            timeout_seconds: 30,
        }
    }

    fn sink(type_: SinkType, remote_write: Option<RemoteWriteSpec>) -> SinkSpec {
        SinkSpec {
            type_,
            remote_write,
            rate_limit: None,
        }
    }

    fn plan(sink: &SinkSpec) -> Result<SinkPlan, InvalidSink> {
        sink_plan(sink, |name| !name.is_empty() && !name.contains(' '))
    }

    fn secret(name: &str, key: Option<&str>) -> SecretKeyRef {
        SecretKeyRef {
            name: name.into(),
            key: key.map(Into::into),
        }
    }

    #[test]
    fn the_default_sink_is_the_file_sink() {
        assert_eq!(plan(&SinkSpec::default()), Ok(SinkPlan::File));
    }

    #[test]
    fn a_remote_write_sink_keeps_its_settings_and_defaults_the_token_key() {
        let mut spec = remote_write("http://vm.monitoring:8428/api/v1/write");
        spec.bearer_token_secret_ref = Some(secret("vm-token", None));
        spec.max_samples_per_request = 100;
        spec.timeout_seconds = 5;
        assert_eq!(
            plan(&sink(SinkType::RemoteWrite, Some(spec))),
            Ok(SinkPlan::RemoteWrite(Box::new(RemoteWritePlan {
                url: "http://vm.monitoring:8428/api/v1/write".into(),
                bearer_token: Some(("vm-token".into(), "token".into())),
                basic_auth: None,
                ca: None,
                max_samples_per_request: 100,
                concurrency: 4,
                protocol: Default::default(),
                timeout_seconds: 5,
            })))
        );
    }

    #[test]
    fn wrong_combinations_are_named() {
        let with_both = RemoteWriteSpec {
            bearer_token_secret_ref: Some(secret("t", None)),
            basic_auth: Some(BasicAuthSpec {
                username: "u".into(),
                password_secret_ref: secret("p", None),
            }),
            ..remote_write("http://vm:8428/api/v1/write")
        };
        let cases = [
            (
                sink(SinkType::File, Some(remote_write("http://vm"))),
                InvalidSink::RemoteWriteWithoutType,
            ),
            (
                sink(SinkType::RemoteWrite, None),
                InvalidSink::MissingRemoteWrite,
            ),
            (
                sink(SinkType::RemoteWrite, Some(with_both)),
                InvalidSink::ExclusiveAuthentication,
            ),
            (
                sink(
                    SinkType::RemoteWrite,
                    Some(RemoteWriteSpec {
                        timeout_seconds: 0,
                        ..remote_write("http://vm")
                    }),
                ),
                InvalidSink::OutOfRange {
                    field: "spec.consumer.sink.remoteWrite.timeoutSeconds",
                    value: 0,
                    min: 1,
                    max: 600,
                },
            ),
            (
                sink(
                    SinkType::RemoteWrite,
                    Some(RemoteWriteSpec {
                        bearer_token_secret_ref: Some(secret("a b", None)),
                        ..remote_write("http://vm")
                    }),
                ),
                InvalidSink::BadReference {
                    field: "spec.consumer.sink.remoteWrite.bearerTokenSecretRef.name",
                    value: "a b".into(),
                },
            ),
        ];
        for (spec, expected) in cases {
            assert_eq!(plan(&spec), Err(expected), "{spec:?}");
        }
    }

    #[test]
    fn only_http_urls_with_a_host_are_taken() {
        for bad in [
            "vm:8428/api/v1/write",
            "ftp://vm/write",
            "http://",
            "http:///api/v1/write",
            "http://vm /write",
            "",
        ] {
            assert_eq!(
                plan(&sink(SinkType::RemoteWrite, Some(remote_write(bad)))),
                Err(InvalidSink::BadUrl(bad.into())),
                "{bad:?}"
            );
        }
        assert!(
            plan(&sink(
                SinkType::RemoteWrite,
                Some(remote_write("http://10.0.0.1"))
            ))
            .is_ok()
        );
    }

    #[test]
    fn basic_auth_and_a_ca_over_https_default_their_keys() {
        let spec = RemoteWriteSpec {
            basic_auth: Some(BasicAuthSpec {
                username: "writer".into(),
                password_secret_ref: secret("vm-auth", None),
            }),
            tls: Some(RemoteWriteTlsSpec {
                ca_secret_ref: Some(secret("vm-ca", None)),
            }),
            ..remote_write("https://vm:8428/api/v1/write")
        };
        let Ok(SinkPlan::RemoteWrite(plan)) = plan(&sink(SinkType::RemoteWrite, Some(spec))) else {
            panic!("refused");
        };
        assert_eq!(
            plan.basic_auth,
            Some(("writer".into(), ("vm-auth".into(), "password".into())))
        );
        assert_eq!(plan.ca, Some(("vm-ca".into(), "ca.crt".into())));
    }

    #[test]
    fn tls_settings_need_an_https_url() {
        let spec = RemoteWriteSpec {
            tls: Some(RemoteWriteTlsSpec {
                ca_secret_ref: Some(secret("ca", None)),
            }),
            ..remote_write("http://vm")
        };
        let refused = plan(&sink(SinkType::RemoteWrite, Some(spec)));
        assert_eq!(refused, Err(InvalidSink::TlsWithoutHttps));
    }
}
