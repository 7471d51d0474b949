//! A tower layer on the client gRPC server that measures every call by its request path: no
//! handler records anything itself.
//!
//! A call's status is where gRPC puts it: in the response headers when the handler failed
//! before answering ("trailers-only"), otherwise in the trailers after the last message. The
//! call is recorded when that status is seen, so its duration includes encoding the answer; a
//! response dropped before its trailers (the client went away) counts as CANCELLED.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::Bytes;
use axum::http::{HeaderMap, Request, Response};
use http_body::{Body, Frame, SizeHint};
use tonic::Code;
use tonic_types::StatusExt;
use tower_layer::Layer;
use tower_service::Service;

use super::metrics::{Metrics, Rpc};

#[derive(Debug, Clone)]
pub struct GrpcLayer {
    metrics: Arc<Metrics>,
}

impl GrpcLayer {
    pub fn new(metrics: Arc<Metrics>) -> GrpcLayer {
        GrpcLayer { metrics }
    }
}

impl<S> Layer<S> for GrpcLayer {
    type Service = GrpcMetricsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcMetricsService {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct GrpcMetricsService<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for GrpcMetricsService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = Response<ObservedBody<ResBody>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let call = self.metrics.rpc(request.uri().path()).map(|rpc| Call {
            rpc,
            metrics: self.metrics.clone(),
            started: Instant::now(),
        });
        let future = self.inner.call(request);
        Box::pin(async move {
            let response = future.await?;
            Ok(observe(response, call))
        })
    }
}

/// One measured call, until its status is known.
struct Call {
    rpc: Arc<Rpc>,
    metrics: Arc<Metrics>,
    started: Instant,
}

impl Call {
    fn finish(self, code: Code, reason: Option<String>) {
        self.metrics
            .grpc_finished(&self.rpc, code, reason, self.started.elapsed());
    }
}

/// The status a header map (headers of a trailers-only response, or trailers) carries.
fn status_of(headers: &HeaderMap) -> Option<(Code, Option<String>)> {
    let code = Code::from_bytes(headers.get("grpc-status")?.as_bytes());
    if code == Code::Ok {
        return Some((code, None));
    }
    let reason = tonic::Status::from_header_map(headers)
        .and_then(|s| s.get_details_error_info())
        .map(|info| info.reason);
    Some((code, reason))
}

fn observe<B>(response: Response<B>, call: Option<Call>) -> Response<ObservedBody<B>> {
    let pending = match call {
        Some(call) => match status_of(response.headers()) {
            Some((code, reason)) => {
                call.finish(code, reason);
                None
            }
            None => Some(call),
        },
        None => None,
    };
    response.map(|inner| ObservedBody { inner, pending })
}

/// A response body that records its call when the trailers pass.
pub struct ObservedBody<B> {
    inner: B,
    pending: Option<Call>,
}

impl<B> ObservedBody<B> {
    fn finish(&mut self, code: Code, reason: Option<String>) {
        if let Some(call) = self.pending.take() {
            call.finish(code, reason);
        }
    }
}

impl<B> Drop for ObservedBody<B> {
    fn drop(&mut self) {
        self.finish(Code::Cancelled, None);
    }
}

impl<B> Body for ObservedBody<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref() {
                    let (code, reason) = status_of(trailers).unwrap_or((Code::Unknown, None));
                    this.finish(code, reason);
                }
            }
            Poll::Ready(Some(Err(_))) => this.finish(Code::Internal, None),
            // Ended without trailers, hence without a status: a client sees UNKNOWN.
            Poll::Ready(None) => this.finish(Code::Unknown, None),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use tonic_types::ErrorDetails;

    use super::*;

    #[test]
    fn the_status_is_read_with_its_reason() {
        let mut details = ErrorDetails::new();
        details.set_error_info("LINK_EXISTS", "linkreg", HashMap::new());
        let status = tonic::Status::with_error_details(Code::AlreadyExists, "exists", details);
        let mut headers = HeaderMap::new();
        status.add_header(&mut headers).unwrap();
        assert_eq!(
            status_of(&headers),
            Some((Code::AlreadyExists, Some("LINK_EXISTS".to_string())))
        );
        let mut ok = HeaderMap::new();
        ok.insert("grpc-status", "0".parse().unwrap());
        assert_eq!(status_of(&ok), Some((Code::Ok, None)));
        assert_eq!(status_of(&HeaderMap::new()), None);
    }
}
