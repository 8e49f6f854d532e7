//! Listeners: accept connections, serve HTTP/1.1 and HTTP/2 on them, and
//! shut down gracefully.
//!
//! A connection starts on sendgate's own HTTP/1.1 loop (`http1`), which
//! takes the plain requests and hands everything else (HTTP/2, chunked or
//! large bodies, upgrades, malformed requests) to hyper.
//!
//! The proxy serves its connections on worker threads that each run their
//! own single-threaded runtime ([`serve_on_workers`]): a connection, its
//! requests and the upstream connections they use (the upstream pool is per
//! thread) stay on one thread, so a request never wakes another thread. The
//! admin API and the sandbox use [`serve`] on the caller's runtime.
//!
//! Workers can be pinned each to its own CPU ([`Workers::pin_cpus`]), as
//! nginx's `worker_cpu_affinity` does, on a host that is the proxy's alone.
//! Left to the scheduler, which moves threads that sleep and wake as often
//! as these do, a busy machine sometimes settles into a placement where a
//! core idles while its worker waits for events that threads on the other
//! core are to produce: in the load benchmark whole runs went that way, at
//! a lower rate and a higher CPU cost a request, and no pinned run did.
//! Beside other busy processes a pinned worker cannot move away from them,
//! so it is not the default. BENCHMARKS.md ("Design choices") has the figures.

use std::future::{Future, poll_fn};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{mpsc, oneshot};

use crate::config::Config;
use crate::graph_error::GraphError;
use crate::tls::Terminator;
use registry::{Cap, Registry};

mod affinity;
mod fd_limit;
mod http1;
mod registry;
mod shared;

#[cfg(any(test, fuzzing))]
pub(crate) use http1::check_request_head;

pub use fd_limit::{Raised, default_max_connections, raise_to_hard as raise_fd_limit};
pub use registry::Timeouts;
pub use shared::Handler;

use shared::Shared;

/// How long in-flight requests may run after the listener closes, unless
/// told otherwise (`[shutdown] drain_timeout_ms`).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause after a failed accept (e.g. out of file descriptors) so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);
/// How long a refused connection is kept to read what its client sent.
const REFUSAL_LINGER: Duration = Duration::from_secs(1);

/// How client connections are limited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    pub timeouts: Timeouts,
    /// Most client connections open at once, across worker threads. At the
    /// cap the longest-idle one is closed for a new one; with none idle the
    /// new one is refused (503).
    pub max_connections: usize,
    /// How long in-flight requests may run once accepting has stopped.
    pub drain_timeout: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            timeouts: Timeouts::default(),
            max_connections: default_max_connections(),
            drain_timeout: DRAIN_TIMEOUT,
        }
    }
}

impl From<&Config> for ConnectionLimits {
    /// The limits `[connections]` and `[shutdown]` set; a `max` of 0 leaves
    /// the cap to the descriptor limit.
    fn from(config: &Config) -> Self {
        let connections = &config.connections;
        ConnectionLimits {
            timeouts: Timeouts {
                header: Duration::from_millis(connections.header_timeout_ms),
                keepalive: Duration::from_millis(connections.keepalive_timeout_ms),
            },
            max_connections: match connections.max {
                0 => default_max_connections(),
                max => max,
            },
            drain_timeout: config.shutdown.drain_timeout(),
        }
    }
}

/// Which TLS a listener speaks, if any: the handshake of each new
/// connection is made with the certificate in force when it arrives.
#[derive(Clone)]
pub enum Tls {
    Plain,
    /// The proxy's side of a terminator (asks for client certificates when
    /// configured to).
    Proxy(Arc<Terminator>),
    /// The admin side (never asks for one).
    Admin(Arc<Terminator>),
}

impl Tls {
    fn acceptor(&self) -> Option<tokio_rustls::TlsAcceptor> {
        match self {
            Tls::Plain => None,
            Tls::Proxy(terminator) => Some(terminator.proxy_acceptor()),
            Tls::Admin(terminator) => Some(terminator.admin_acceptor()),
        }
    }
}

/// Binds a listener with room for `backlog` connections waiting to be
/// accepted (the kernel caps it at `net.core.somaxconn`): a campaign tool
/// opening thousands of connections at once otherwise overflows the queue
/// and its clients wait out SYN retries.
pub fn bind(address: SocketAddr, backlog: u32) -> io::Result<TcpListener> {
    let socket = match address {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    // As std's bind does: a restart need not wait out TIME_WAIT.
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(backlog)
}

/// Serves `handler` on `listener` until `shutdown` completes, then lets
/// in-flight requests finish (up to a bound) before returning. Connections
/// run on the caller's runtime, with the default limits.
pub async fn serve<H: Handler>(
    listener: TcpListener,
    handler: Arc<H>,
    shutdown: impl Future<Output = ()>,
) {
    serve_with(
        listener,
        handler,
        ConnectionLimits::default(),
        Tls::Plain,
        shutdown,
    )
    .await;
}

/// [`serve`] with `limits`, speaking `tls`.
pub async fn serve_with<H: Handler>(
    listener: TcpListener,
    handler: Arc<H>,
    limits: ConnectionLimits,
    tls: Tls,
    shutdown: impl Future<Output = ()>,
) {
    let cap = Arc::new(Cap::new(limits.max_connections));
    let connections = Connections::new(handler, limits, tls, cap.clone());
    connections.shared.registry.spawn_sweeper();
    let registries = [connections.shared.registry.clone()];
    let admitted = Admitted {
        cap: &cap,
        registries: &registries,
    };
    accept_until(&listener, shutdown, admitted, |stream| {
        connections.spawn(stream)
    })
    .await;
    drop(listener);
    connections.drain().await;
}

/// How the proxy's worker threads run.
#[derive(Debug, Clone, Copy)]
pub struct Workers {
    /// How many; 0 for one per CPU core.
    pub threads: usize,
    /// Pin worker `i` to the `i`-th CPU this process may use, in turn
    /// when there are more workers than CPUs (see the module documentation).
    pub pin_cpus: bool,
}

/// Serves `handler` on `listener` with worker threads, each with its own
/// single-threaded runtime. Connections are accepted on the caller's
/// runtime and dealt to the workers in turn. When `shutdown` completes,
/// accepting stops and every worker lets its in-flight requests finish (up
/// to a bound) before this returns.
pub async fn serve_on_workers<H: Handler>(
    listener: TcpListener,
    handler: Arc<H>,
    workers: Workers,
    limits: ConnectionLimits,
    tls: Tls,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let threads = match workers.threads {
        0 => std::thread::available_parallelism().map_or(1, usize::from),
        n => n,
    };
    let allowed = match workers.pin_cpus {
        true => affinity::allowed_cpus().unwrap_or_else(|err| {
            tracing::warn!(error = %err, "cannot read which CPUs sendgate may use; workers are not pinned");
            Vec::new()
        }),
        false => Vec::new(),
    };
    let cap = Arc::new(Cap::new(limits.max_connections));
    let mut queues = Vec::with_capacity(threads);
    let mut registries = Vec::with_capacity(threads);
    let mut finished = Vec::with_capacity(threads);
    for index in 0..threads {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (queue, incoming) = mpsc::unbounded_channel::<std::net::TcpStream>();
        let (done, finished_one) = oneshot::channel::<()>();
        let connections = Connections::new(handler.clone(), limits, tls.clone(), cap.clone());
        registries.push(connections.shared.registry.clone());
        let cpu = affinity::cpu_for(index, &allowed);
        std::thread::Builder::new()
            .name(format!("sendgate-worker-{index}"))
            .spawn(move || {
                if let Some(cpu) = cpu
                    && let Err(err) = affinity::pin_current_thread(cpu)
                {
                    tracing::warn!(error = %err, worker = index, cpu, "cannot pin the worker to its CPU");
                }
                runtime.block_on(work(incoming, connections));
                let _ = done.send(());
            })?;
        queues.push(queue);
        finished.push(finished_one);
    }
    let admitted = Admitted {
        cap: &cap,
        registries: &registries,
    };
    let mut next = 0;
    accept_until(&listener, shutdown, admitted, |stream| {
        // A stream moves between runtimes as a std socket; it stays
        // non-blocking, and the worker registers it with its own reactor.
        match stream.into_std() {
            Ok(stream) => {
                if queues[next].send(stream).is_err() {
                    // That worker has stopped: its slot is free again.
                    cap.release();
                    tracing::warn!(worker = next, "a worker has stopped; connection dropped");
                }
                next = (next + 1) % queues.len();
            }
            Err(err) => {
                cap.release();
                tracing::warn!(error = %err, "cannot hand a connection to a worker");
            }
        }
    })
    .await;
    drop(listener);
    // Closing the queues tells the workers to drain and stop.
    drop(queues);
    for finished_one in finished {
        let _ = finished_one.await;
    }
    Ok(())
}

/// One worker: serves the connections it is handed until its queue closes,
/// then drains them.
async fn work<H: Handler>(
    mut incoming: mpsc::UnboundedReceiver<std::net::TcpStream>,
    connections: Connections<H>,
) {
    connections.shared.registry.spawn_sweeper();
    while let Some(stream) = incoming.recv().await {
        match TcpStream::from_std(stream) {
            Ok(stream) => connections.spawn(stream),
            Err(err) => {
                connections.shared.registry.release_unregistered();
                tracing::warn!(error = %err, "worker cannot take a connection");
            }
        }
    }
    connections.drain().await;
}

/// The connection cap as the accept loop applies it.
struct Admitted<'a> {
    cap: &'a Cap,
    /// Where idle connections can be found to make room.
    registries: &'a [Arc<Registry>],
}

impl Admitted<'_> {
    /// Counts a connection just accepted. At the cap, makes room by
    /// closing the connection idle the longest (nginx reuses its
    /// keep-alive connections the same way); false if none is idle, and
    /// the connection is uncounted again.
    fn admit(&self) -> bool {
        if self.cap.admit() {
            return true;
        }
        let longest = self
            .registries
            .iter()
            .filter_map(|registry| Some((registry.longest_idle()?, registry)))
            .max_by_key(|(idle_for, _)| *idle_for);
        if longest.is_some_and(|(_, registry)| registry.evict_oldest_idle()) {
            return true;
        }
        // Connections told to close (evicted a moment ago, their tasks not
        // yet run) give their room back soon: a newcomer may take it now
        // rather than be refused while the cap is only slow to catch up.
        let closing: usize = self
            .registries
            .iter()
            .map(|registry| registry.closing())
            .sum();
        if self.cap.open() <= self.cap.max() + closing {
            return true;
        }
        self.cap.release();
        false
    }
}

/// What a client gets when every connection is busy: a Graph-shaped 503
/// that SDKs take as transient, then the connection closes.
fn refusal() -> Vec<u8> {
    let error = GraphError::too_many_connections();
    let body = error.body("connection-cap");
    let mut response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    response.extend_from_slice(&body);
    response
}

/// Answers a connection over the cap and closes it. The answer fits an
/// empty socket buffer, so it is written without waiting; the client's
/// request is then read and dropped for a moment, so that closing does not
/// reset the connection before the answer is read.
fn refuse(stream: TcpStream) {
    thread_local! {
        static REFUSAL: Vec<u8> = refusal();
    }
    let _ = REFUSAL.with(|refusal| stream.try_write(refusal));
    tokio::spawn(async move {
        let mut stream = stream;
        let _ = tokio::time::timeout(REFUSAL_LINGER, async {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let _ = stream.shutdown().await;
            let mut sink = [0; 1024];
            while let Ok(1..) = stream.read(&mut sink).await {}
        })
        .await;
    });
}

/// Accepts connections and passes each to `take` until `shutdown`
/// completes. Each time the listener is ready, it takes every connection
/// waiting in the queue before waiting again.
async fn accept_until(
    listener: &TcpListener,
    shutdown: impl Future<Output = ()>,
    admitted: Admitted<'_>,
    mut take: impl FnMut(TcpStream),
) {
    tokio::pin!(shutdown);
    let mut accept_one = |stream: TcpStream| {
        if !admitted.admit() {
            tracing::warn!(
                open = admitted.cap.open(),
                "connection refused: every connection is busy (max_connections)"
            );
            refuse(stream);
            return;
        }
        let _ = stream.set_nodelay(true);
        take(stream);
    };
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    accept_one(stream);
                    // The rest of the queue, without going back to select.
                    while let Poll::Ready(Ok((stream, _peer))) =
                        poll_fn(|cx| Poll::Ready(listener.poll_accept(cx))).await
                    {
                        accept_one(stream);
                    }
                }
                // A client gone before it was accepted: nothing to wait for.
                Err(err) if err.kind() == io::ErrorKind::ConnectionAborted => {}
                Err(err) => {
                    tracing::warn!(error = %err, "accept failed");
                    // Out of descriptors: an idle connection makes room.
                    if out_of_descriptors(&err) && admitted.cap.open() > 0 {
                        let _ = admitted.registries.iter().any(|registry| registry.evict_oldest_idle());
                    }
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
            () = &mut shutdown => return,
        }
    }
}

/// Whether an accept failed for want of a file descriptor (EMFILE for the
/// process, ENFILE for the system: 24 and 23 on Linux and the BSDs alike).
fn out_of_descriptors(err: &io::Error) -> bool {
    matches!(err.raw_os_error(), Some(23 | 24))
}

/// The connections served on one runtime.
struct Connections<H> {
    shared: Arc<Shared<H>>,
    tls: Tls,
    drain_timeout: Duration,
}

impl<H: Handler> Connections<H> {
    fn new(handler: Arc<H>, limits: ConnectionLimits, tls: Tls, cap: Arc<Cap>) -> Self {
        let timeouts = limits.timeouts;
        let mut hyper = auto::Builder::new(TokioExecutor::new());
        hyper
            .http1()
            .timer(TokioTimer::new())
            // hyper's clock for a head starts when it waits for one, idle
            // time included, so it gets the longer of the two limits: the
            // registry closes an idle connection at the keep-alive timeout.
            .header_read_timeout(timeouts.header.max(timeouts.keepalive))
            // A client that shuts its side after its last request still
            // gets every answer: pipelined requests the loop handed over
            // are in hyper's buffer when it may already read the end.
            .half_close(true);
        let registry = Registry::new(timeouts, cap);
        Connections {
            shared: Arc::new(Shared {
                handler,
                hyper,
                registry,
            }),
            tls,
            drain_timeout: limits.drain_timeout,
        }
    }

    /// Serves one connection on a task of the current runtime. A TLS
    /// connection is served by hyper after the handshake: sendgate's own
    /// loop reads the socket's readiness, which TLS records hide.
    fn spawn(&self, stream: TcpStream) {
        let entry = self.shared.registry.register();
        match self.tls.acceptor() {
            None => {
                tokio::spawn(http1::serve(stream, self.shared.clone(), entry));
            }
            Some(acceptor) => {
                tokio::spawn(http1::serve_tls(
                    acceptor,
                    stream,
                    self.shared.clone(),
                    entry,
                ));
            }
        }
    }

    /// Asks every connection to finish its in-flight requests and close,
    /// waiting at most the drain timeout.
    async fn drain(self) {
        if !self.shared.registry.close_all(self.drain_timeout).await {
            tracing::warn!("shutdown: connections still open after the drain timeout");
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use http::{Request, Response};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::body::{ProxyBody, full_body};

    /// Answers with the CPUs that the thread running it may use.
    struct AllowedCpus;

    impl Handler for AllowedCpus {
        fn call(
            &self,
            _request: Request<ProxyBody>,
        ) -> impl Future<Output = Response<ProxyBody>> + Send + '_ {
            let cpus = affinity::allowed_cpus().expect("the thread's CPUs");
            std::future::ready(Response::new(full_body(format!("{cpus:?}"))))
        }
    }

    /// What each worker of a server run with `workers` answers, in order.
    async fn cpus_of_each(workers: Workers) -> Vec<String> {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(serve_on_workers(
            listener,
            Arc::new(AllowedCpus),
            workers,
            ConnectionLimits::default(),
            Tls::Plain,
            async {
                let _ = stopped.await;
            },
        ));
        let mut answers = Vec::new();
        // Connections are dealt in turn: the i-th goes to worker i.
        for _ in 0..workers.threads {
            let mut client = TcpStream::connect(address).await.unwrap();
            client
                .write_all(b"GET / HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n")
                .await
                .unwrap();
            let mut response = String::new();
            client.read_to_string(&mut response).await.unwrap();
            let (_, body) = response.split_once("\r\n\r\n").expect("a response");
            answers.push(body.to_owned());
        }
        stop.send(()).unwrap();
        server.await.unwrap().unwrap();
        answers
    }

    #[tokio::test]
    async fn each_worker_runs_on_its_own_cpu_until_they_run_out() {
        let allowed = affinity::allowed_cpus().unwrap();
        // One worker more than CPUs, at most four: on a machine with up to
        // three CPUs the last worker shares the first one's.
        let threads = allowed.len().min(3) + 1;
        let answers = cpus_of_each(Workers {
            threads,
            pin_cpus: true,
        })
        .await;
        let expected: Vec<String> = (0..threads)
            .map(|index| format!("{:?}", [allowed[index % allowed.len()]]))
            .collect();
        assert_eq!(answers, expected);
    }

    #[tokio::test]
    async fn unpinned_workers_may_run_on_any_cpu() {
        let allowed = affinity::allowed_cpus().unwrap();
        let answers = cpus_of_each(Workers {
            threads: 2,
            pin_cpus: false,
        })
        .await;
        assert_eq!(answers, vec![format!("{allowed:?}"); 2]);
    }

    /// `serve` (the admin API's and the sandbox's listener) applies the
    /// timeouts too: a client that never sends a byte is closed.
    #[tokio::test]
    async fn a_silent_client_of_the_single_runtime_server_is_closed() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let limits = ConnectionLimits {
            timeouts: Timeouts {
                header: Duration::from_millis(200),
                keepalive: Duration::from_millis(200),
            },
            max_connections: 16,
            drain_timeout: DRAIN_TIMEOUT,
        };
        tokio::spawn(serve_with(
            listener,
            Arc::new(AllowedCpus),
            limits,
            Tls::Plain,
            std::future::pending(),
        ));
        let mut client = TcpStream::connect(address).await.unwrap();
        let mut byte = [0; 1];
        let read = tokio::time::timeout(Duration::from_secs(5), client.read(&mut byte)).await;
        assert!(
            matches!(read, Ok(Ok(0)) | Ok(Err(_))),
            "the connection is closed, not left open: {read:?}"
        );
    }
}
