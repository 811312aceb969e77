//! Request ids in the logs: a tower layer in front of a gRPC server that
//! runs each call carrying a request id header inside a `request` span
//! (`request{id=… method=/flotilla.Objects/Create}`), so that every log
//! line the call causes on this process names it, and echoes the id in the
//! response headers. The id is also the call's task-local
//! [`current_request_id`], so that a master forwarding the call to another
//! (a follower's write to the leader) passes it on, and the other master's
//! lines name it too.
//!
//! Calls without the header (etcd's clients) get no span: they cost
//! nothing more.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::future::Either;
use http::{HeaderValue, Request, Response};
use tracing::Instrument;

tokio::task_local! {
    static REQUEST_ID: String;
}

/// The request id of the call this task is serving, if it carries one.
pub fn current_request_id() -> Option<String> {
    REQUEST_ID.try_with(Clone::clone).ok()
}

/// The metadata entry a request id travels in (`flotilla-client` sets it
/// on every call, the same on each retry of a write).
pub const HEADER: &str = "flotilla-request-id";

/// The longest id taken from a client; longer ones are cut (a log line must
/// not grow with what a client sends).
const MAX_ID: usize = 64;

/// The layer, reading the id from the header `header`.
#[derive(Clone, Copy)]
pub struct RequestIdLayer(pub &'static str);

impl<S> tower_layer::Layer<S> for RequestIdLayer {
    type Service = RequestIdService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RequestIdService {
            inner,
            header: self.0,
        }
    }
}

#[derive(Clone)]
pub struct RequestIdService<S> {
    inner: S,
    header: &'static str,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B, RB> tower_service::Service<Request<B>> for RequestIdService<S>
where
    S: tower_service::Service<Request<B>, Response = Response<RB>>,
    S::Future: Send + 'static,
    S::Error: 'static,
    RB: 'static,
{
    type Response = Response<RB>;
    type Error = S::Error;
    type Future = Either<S::Future, BoxFuture<Result<Response<RB>, S::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let id = req
            .headers()
            .get(self.header)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty())
            .map(|v| {
                v.chars()
                    .filter(|c| c.is_ascii_graphic())
                    .take(MAX_ID)
                    .collect::<String>()
            });
        let Some(id) = id else {
            return Either::Left(self.inner.call(req));
        };
        let span = tracing::info_span!("request", id = %id, method = %req.uri().path());
        // Both for the work done in `call` and for the future it returns.
        let fut = {
            let _entered = span.enter();
            let inner = &mut self.inner;
            REQUEST_ID.sync_scope(id.clone(), || inner.call(req))
        };
        let header = self.header;
        let echo = HeaderValue::from_str(&id).ok();
        Either::Right(Box::pin(
            async move {
                let mut resp = REQUEST_ID.scope(id, fut).await?;
                if let Some(v) = echo {
                    resp.headers_mut().insert(header, v);
                }
                Ok(resp)
            }
            .instrument(span),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;
    use tower_service::Service;

    /// A service that answers with the task's request id in its body.
    #[derive(Clone)]
    struct Echo;

    impl Service<Request<()>> for Echo {
        type Response = Response<Option<String>>;
        type Error = Infallible;
        type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;
        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }
        fn call(&mut self, _: Request<()>) -> Self::Future {
            // Read when polled, as a tonic handler runs.
            Box::pin(async { Ok(Response::new(current_request_id())) })
        }
    }

    fn call(req: Request<()>) -> Response<Option<String>> {
        let mut svc = tower_layer::Layer::layer(&RequestIdLayer("x-id"), Echo);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        rt.block_on(async move { svc.call(req).await.expect("infallible") })
    }

    #[test]
    fn a_call_with_an_id_runs_with_it_and_echoes_it() {
        let req = Request::builder()
            .uri("/flotilla.Objects/Get")
            .header("x-id", "abc123")
            .body(())
            .expect("request");
        let resp = call(req);
        assert_eq!(resp.body().as_deref(), Some("abc123"));
        assert_eq!(
            resp.headers().get("x-id").map(|v| v.as_bytes()),
            Some(&b"abc123"[..])
        );
    }

    #[test]
    fn a_call_without_an_id_has_none_and_a_long_one_is_cut() {
        let resp = call(Request::builder().uri("/x").body(()).expect("request"));
        assert_eq!(resp.body(), &None);
        let long = "a".repeat(500);
        let resp = call(
            Request::builder()
                .uri("/x")
                .header("x-id", long.as_str())
                .body(())
                .expect("request"),
        );
        assert_eq!(resp.body().as_ref().map(String::len), Some(MAX_ID));
    }
}
