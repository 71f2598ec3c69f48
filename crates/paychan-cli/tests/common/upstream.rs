//! A real HTTP service for the gateway to stand in front of, on its own runtime: it counts the
//! requests that reach it, by path.
//!
//! - `/api/...`: a small JSON body naming the path and the count;
//! - `/free/...`: the same, for routes priced at nothing;
//! - `/stream/big`: [`BIG`] bytes of [`big_byte`], streamed 64 KiB at a time, with its length;
//! - `/stream/unsized`: the same without a length (chunked).

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

/// The length of `/stream/big`: 10 MiB.
pub const BIG: usize = 10 * 1024 * 1024;

/// The byte at `offset` of `/stream/big`.
pub fn big_byte(offset: usize) -> u8 {
    (offset % 251) as u8
}

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// The running service.
pub struct Upstream {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    counts: Arc<Mutex<HashMap<String, u64>>>,
    _runtime: tokio::runtime::Runtime,
}

impl Upstream {
    /// Starts it on a free loopback port.
    pub fn start() -> Upstream {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime");
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind the upstream");
        let url = format!("http://{}", listener.local_addr().expect("its address"));
        let counts: Arc<Mutex<HashMap<String, u64>>> = Arc::default();
        let served = Arc::clone(&counts);
        runtime.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let counts = Arc::clone(&served);
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        let counts = Arc::clone(&counts);
                        async move { Ok::<_, Infallible>(serve(req, &counts).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Upstream { url, counts, _runtime: runtime }
    }

    /// How many requests for paths starting with `prefix` reached it.
    pub fn count(&self, prefix: &str) -> u64 {
        let counts = self.counts.lock().unwrap();
        counts.iter().filter(|(p, _)| p.starts_with(prefix)).map(|(_, n)| n).sum()
    }
}

async fn serve(req: Request<Incoming>, counts: &Mutex<HashMap<String, u64>>) -> Response<Body> {
    let path = req.uri().path().to_owned();
    let body = req.into_body().collect().await.map(|b| b.to_bytes().len()).unwrap_or(0);
    let n = {
        let mut counts = counts.lock().unwrap();
        let n = counts.entry(path.clone()).or_insert(0);
        *n += 1;
        *n
    };
    if let Some(kind) = path.strip_prefix("/stream/") {
        let sized = kind == "big";
        let chunks = (0..BIG).step_by(64 * 1024).map(|start| {
            let end = (start + 64 * 1024).min(BIG);
            let data: Vec<u8> = (start..end).map(big_byte).collect();
            Ok::<_, Infallible>(Frame::data(Bytes::from(data)))
        });
        let stream = futures_util::stream::iter(chunks);
        let mut response = Response::new(StreamBody::new(stream).boxed());
        if sized {
            response.headers_mut().insert("content-length", BIG.into());
        }
        return response;
    }
    let json = format!("{{\"path\":\"{path}\",\"count\":{n},\"body_bytes\":{body}}}");
    Response::new(Full::new(Bytes::from(json)).boxed())
}
