//! The floor under any hyper-based proxy, for the load benchmark: a proxy
//! that does nothing but forward, built like sendgate (one single-threaded
//! runtime per thread, upstream HTTP/1.1 connections pooled per thread) but
//! with no inspection, no limits, no metrics, no timeouts and no TLS.
//! `benches/load/run.sh` measures it as the `hyper-floor` scenario, so that
//! the gap between sendgate and nginx can be split into what hyper itself
//! costs and what sendgate adds.
//!
//! Usage: hyper_floor LISTEN_ADDR UPSTREAM_ADDR [THREADS]

use std::cell::RefCell;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::rc::Rc;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, combinators::BoxBody};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpSocket, TcpStream};

type Body = BoxBody<Bytes, hyper::Error>;
type Pool = Rc<RefCell<Vec<SendRequest<Body>>>>;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: hyper_floor LISTEN_ADDR UPSTREAM_ADDR [THREADS]";
    let listen: SocketAddr = args.get(1).and_then(|a| a.parse().ok()).expect(usage);
    let upstream: SocketAddr = args.get(2).and_then(|a| a.parse().ok()).expect(usage);
    let threads: usize = args.get(3).map_or(2, |t| t.parse().expect(usage));
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                tokio::task::LocalSet::new().block_on(&runtime, serve(listen, upstream));
            })
        })
        .collect();
    for worker in workers {
        let _ = worker.join();
    }
}

/// One thread: its own listening socket (SO_REUSEPORT) and upstream pool.
async fn serve(listen: SocketAddr, upstream: SocketAddr) {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.set_reuseport(true).expect("SO_REUSEPORT");
    socket.bind(listen).expect("bind");
    let listener = socket.listen(4096).expect("listen");
    let pool = Pool::default();
    while let Ok((stream, _)) = listener.accept().await {
        let _ = stream.set_nodelay(true);
        let pool = pool.clone();
        let service = service_fn(move |request| forward(pool.clone(), upstream, request));
        tokio::task::spawn_local(async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn forward(
    pool: Pool,
    upstream: SocketAddr,
    mut request: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let pooled = {
        let mut idle = pool.borrow_mut();
        while idle.last().is_some_and(SendRequest::is_closed) {
            idle.pop();
        }
        let ready = idle.iter().rposition(SendRequest::is_ready);
        ready.map(|at| idle.swap_remove(at))
    };
    let mut sender = match pooled {
        Some(sender) => sender,
        None => match connect(upstream).await {
            Some(sender) => sender,
            None => return Ok(bad_gateway()),
        },
    };
    request.headers_mut().remove(http::header::CONNECTION);
    let response = sender.send_request(request.map(BodyExt::boxed)).await;
    // Back in the pool at once; a checkout skips it until it is ready again.
    pool.borrow_mut().push(sender);
    Ok(response.map_or_else(|_| bad_gateway(), |response| response.map(BodyExt::boxed)))
}

async fn connect(upstream: SocketAddr) -> Option<SendRequest<Body>> {
    let stream = TcpStream::connect(upstream).await.ok()?;
    let _ = stream.set_nodelay(true);
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .ok()?;
    tokio::task::spawn_local(connection);
    Some(sender)
}

fn bad_gateway() -> Response<Body> {
    let mut response = Response::new(Empty::new().map_err(|never| match never {}).boxed());
    *response.status_mut() = StatusCode::BAD_GATEWAY;
    response
}
