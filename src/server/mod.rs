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
//! so it is not the default. BENCHMARKS.md (twelfth pass) has the figures.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};

use crate::upstream::{BoxError, ClientBodyError, ProxyBody};

mod affinity;
mod http1;

/// How long a client may take to send a request head (slowloris guard).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a client may take nothing of its response before its
/// connection is closed (nginx's `send_timeout` default).
const CLIENT_WRITE_STALL: Duration = Duration::from_secs(60);
/// How long in-flight requests may run after shutdown begins.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause after a failed accept (e.g. out of file descriptors) so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Something that answers requests: the proxy, the sandbox, the admin API.
pub trait Handler: Send + Sync + 'static {
    /// Borrows the handler: a connection holds it for its lifetime, so a
    /// request costs no reference count shared by every worker thread.
    fn call(
        &self,
        request: Request<ProxyBody>,
    ) -> impl Future<Output = Response<ProxyBody>> + Send + '_;
}

/// Serves `handler` on `listener` until `shutdown` completes, then lets
/// in-flight requests finish (up to a bound) before returning. Connections
/// run on the caller's runtime.
pub async fn serve<H: Handler>(
    listener: TcpListener,
    handler: Arc<H>,
    shutdown: impl Future<Output = ()>,
) {
    let connections = Connections::new(handler);
    accept_until(&listener, shutdown, |stream| connections.spawn(stream)).await;
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
    let mut queues = Vec::with_capacity(threads);
    let mut finished = Vec::with_capacity(threads);
    for index in 0..threads {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (queue, incoming) = mpsc::unbounded_channel::<std::net::TcpStream>();
        let (done, finished_one) = oneshot::channel::<()>();
        let handler = handler.clone();
        let cpu = affinity::cpu_for(index, &allowed);
        std::thread::Builder::new()
            .name(format!("sendgate-worker-{index}"))
            .spawn(move || {
                if let Some(cpu) = cpu
                    && let Err(err) = affinity::pin_current_thread(cpu)
                {
                    tracing::warn!(error = %err, worker = index, cpu, "cannot pin the worker to its CPU");
                }
                runtime.block_on(work(incoming, handler));
                let _ = done.send(());
            })?;
        queues.push(queue);
        finished.push(finished_one);
    }
    let mut next = 0;
    accept_until(&listener, shutdown, |stream| {
        // A stream moves between runtimes as a std socket; it stays
        // non-blocking, and the worker registers it with its own reactor.
        match stream.into_std() {
            Ok(stream) => {
                let _ = queues[next].send(stream);
                next = (next + 1) % queues.len();
            }
            Err(err) => tracing::warn!(error = %err, "cannot hand a connection to a worker"),
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
    handler: Arc<H>,
) {
    let connections = Connections::new(handler);
    while let Some(stream) = incoming.recv().await {
        match TcpStream::from_std(stream) {
            Ok(stream) => connections.spawn(stream),
            Err(err) => tracing::warn!(error = %err, "worker cannot take a connection"),
        }
    }
    connections.drain().await;
}

/// Accepts connections and passes each to `take` until `shutdown` completes.
async fn accept_until(
    listener: &TcpListener,
    shutdown: impl Future<Output = ()>,
    mut take: impl FnMut(TcpStream),
) {
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    let _ = stream.set_nodelay(true);
                    take(stream);
                }
                Err(err) => {
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
            () = &mut shutdown => return,
        }
    }
}

/// The connections served on one runtime, and the signal that stops them.
struct Connections<H> {
    shared: Arc<Shared<H>>,
    /// Set to `true` when shutdown begins; every connection holds a
    /// receiver, so the sender also sees when the last one has ended.
    stop: watch::Sender<bool>,
}

/// What every connection of a runtime uses.
struct Shared<H> {
    handler: Arc<H>,
    /// Serves the connections (and requests) that `http1` hands over.
    hyper: auto::Builder<TokioExecutor>,
}

impl<H: Handler> Connections<H> {
    fn new(handler: Arc<H>) -> Self {
        let mut hyper = auto::Builder::new(TokioExecutor::new());
        hyper
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT);
        Connections {
            shared: Arc::new(Shared { handler, hyper }),
            stop: watch::Sender::new(false),
        }
    }

    /// Serves one connection on a task of the current runtime.
    fn spawn(&self, stream: TcpStream) {
        tokio::spawn(http1::serve(
            stream,
            self.shared.clone(),
            self.stop.subscribe(),
        ));
    }

    /// Asks every connection to finish its in-flight requests and close,
    /// waiting at most the drain timeout.
    async fn drain(self) {
        self.stop.send_replace(true);
        if tokio::time::timeout(DRAIN_TIMEOUT, self.stop.closed())
            .await
            .is_err()
        {
            tracing::warn!("shutdown: connections still open after the drain timeout");
        }
    }
}

impl<H: Handler> Shared<H> {
    /// Serves the rest of a connection with hyper (HTTP/2, upgrades and
    /// whatever `http1` leaves to it), `io` starting with the bytes already
    /// read from it. Stops gracefully when `stop` says so.
    async fn serve_with_hyper<I>(&self, io: I, mut stop: watch::Receiver<bool>)
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let handler = self.handler.clone();
        let service = service_fn(move |request: Request<Incoming>| {
            let handler = handler.clone();
            // A failure of the client's body is the client's, whoever
            // reads it (the send path, or the upstream client streaming it).
            let request = request.map(|body| {
                body.map_err(|err| BoxError::from(ClientBodyError(err.into())))
                    .boxed()
            });
            async move { Ok::<_, Infallible>(handler.call(request).await) }
        });
        let connection = self.hyper.serve_connection(TokioIo::new(io), service);
        tokio::pin!(connection);
        // `None`: shutdown has begun (before or during the connection).
        let ended = if *stop.borrow_and_update() {
            None
        } else {
            tokio::select! {
                ended = connection.as_mut() => Some(ended),
                _ = stop.changed() => None,
            }
        };
        let ended = match ended {
            Some(ended) => ended,
            None => {
                connection.as_mut().graceful_shutdown();
                connection.await
            }
        };
        if let Err(err) = ended {
            tracing::debug!(error = %err, "connection ended with an error");
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::upstream::full_body;

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
}
