//! gRPC connections of the CLI's client commands: bearer token, a connect timeout.

use std::time::Duration;

use anyhow::Context;
use std::path::PathBuf;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;

use clap::Args;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

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

/// TLS towards the server: its CA, and a client certificate where the server asks for one.
#[derive(Debug, Clone, Args)]
pub struct TlsArgs {
    /// Speak TLS and trust server certificates signed by this CA (PEM).
    #[arg(long, global = true, env = "LINKREG_TLS_CA", value_name = "FILE")]
    tls_ca: Option<PathBuf>,
    /// Client certificate (PEM), for servers that require one.
    #[arg(
        long,
        global = true,
        env = "LINKREG_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    tls_cert: Option<PathBuf>,
    #[arg(
        long,
        global = true,
        env = "LINKREG_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    tls_key: Option<PathBuf>,
}

impl TlsArgs {
    pub fn config(&self) -> anyhow::Result<Option<ClientTlsConfig>> {
        let Some(ca) = &self.tls_ca else {
            return Ok(None);
        };
        let read =
            |p: &PathBuf| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
        let mut config = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read(ca)?));
        if let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) {
            config = config.identity(Identity::from_pem(read(cert)?, read(key)?));
        }
        Ok(Some(config))
    }
}

/// How long an ordinary call may take before an answer starts.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

pub async fn channel(addr: &str, tls: Option<&ClientTlsConfig>) -> anyhow::Result<Channel> {
    channel_waiting(addr, tls, CALL_TIMEOUT).await
}

/// A channel whose calls may each take up to `timeout` before an answer starts.
pub async fn channel_waiting(
    addr: &str,
    tls: Option<&ClientTlsConfig>,
    timeout: Duration,
) -> anyhow::Result<Channel> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut endpoint = tonic::transport::Endpoint::from_shared(format!("{scheme}://{addr}"))
        .with_context(|| format!("--server {addr}"))?;
    if let Some(tls) = tls {
        endpoint = endpoint
            .tls_config(tls.clone())
            .context("TLS configuration")?;
    }
    endpoint
        .connect_timeout(Duration::from_secs(3))
        .timeout(timeout)
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
