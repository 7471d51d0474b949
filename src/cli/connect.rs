//! gRPC connections of the CLI's client commands: bearer token, a connect timeout.

use std::time::Duration;

use anyhow::Context;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::transport::Channel;

/// Adds `authorization: Bearer <token>` to every call.
#[derive(Clone)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

pub fn bearer(token: Option<&str>) -> anyhow::Result<Bearer> {
    token
        .map(|t| {
            format!("Bearer {t}")
                .parse()
                .context("--token: not a valid header value")
        })
        .transpose()
        .map(Bearer)
}

pub async fn channel(addr: &str) -> anyhow::Result<Channel> {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .with_context(|| format!("--server {addr}"))?
        .connect_timeout(Duration::from_secs(3))
        .timeout(Duration::from_secs(30))
        .connect()
        .await
        .with_context(|| format!("connecting to {addr}"))
}

/// Human name of a failure class, for error lines.
pub fn code_name(code: tonic::Code) -> &'static str {
    match code {
        tonic::Code::FailedPrecondition => "refused",
        tonic::Code::Unavailable => "unavailable",
        tonic::Code::InvalidArgument => "invalid argument",
        tonic::Code::AlreadyExists => "already exists",
        tonic::Code::NotFound => "not found",
        tonic::Code::DeadlineExceeded => "outcome unknown",
        tonic::Code::Unauthenticated => "unauthenticated (give --token or LINKREG_TOKEN)",
        tonic::Code::PermissionDenied => "permission denied",
        _ => "error",
    }
}
