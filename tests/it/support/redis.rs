//! Real `redis-server` processes for fleet tests, each on a free loopback
//! port with its own directory, stopped (SIGKILL) when dropped. `.ci/run`
//! installs redis-server from Debian.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rustix::process::Signal;

use super::free_port;

/// One redis-server.
pub(crate) struct RedisServer {
    pub addr: SocketAddr,
    dir: PathBuf,
    child: Option<Child>,
    extra: Vec<String>,
}

impl RedisServer {
    /// A server with an append-only file fsynced on every write (what the
    /// README recommends for the fleet).
    pub(crate) fn start() -> Self {
        Self::start_with(&[])
    }

    pub(crate) fn start_with(extra: &[&str]) -> Self {
        let addr = free_port();
        let dir = std::env::temp_dir().join(format!(
            "sendgate-redis-{}-{}",
            std::process::id(),
            addr.port()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut server = RedisServer {
            addr,
            dir,
            child: None,
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        server.launch();
        server
    }

    fn launch(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.addr.port().to_string()])
            .args([
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--protected-mode",
                "no",
            ])
            .args(["--appendonly", "yes", "--appendfsync", "always"])
            .arg("--dir")
            .arg(&self.dir)
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("redis-server (apt-get install redis-server)");
        self.child = Some(child);
        wait_for_ping(self.addr);
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://{}/0", self.addr)
    }

    /// SIGKILL: no chance to write anything it had not already written.
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGSTOP: connections stay open and nothing answers (a hung or
    /// partitioned server), until [`resume`](Self::resume).
    pub(crate) fn pause(&self) {
        self.signal(Signal::STOP);
    }

    pub(crate) fn resume(&self) {
        self.signal(Signal::CONT);
    }

    fn signal(&self, signal: Signal) {
        super::signal(self.child.as_ref().expect("running").id(), signal);
    }

    /// Starts again on the same port and directory (its AOF).
    pub(crate) fn restart(&mut self) {
        self.kill();
        self.launch();
    }

    /// Runs redis-cli against this server and returns its output.
    pub(crate) fn cli(&self, args: &[&str]) -> String {
        let output = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.addr.port().to_string()])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn wait_for_ping(addr: SocketAddr) {
    let started = Instant::now();
    loop {
        let pong = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &addr.port().to_string(), "ping"])
            .output()
            .map(|out| out.stdout.starts_with(b"PONG"))
            .unwrap_or(false);
        if pong {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "redis-server did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A three-node Redis Cluster (masters only) on loopback.
pub(crate) struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    pub(crate) fn start() -> Self {
        // The cluster bus port is a free port of its own: by default it is
        // the node's port + 10000, which nothing reserved (another test may
        // hold it) and which redis-server refuses above 55535.
        let nodes: Vec<RedisServer> = (0..3)
            .map(|_| {
                let bus = free_port().port().to_string();
                RedisServer::start_with(&["--cluster-enabled", "yes", "--cluster-port", &bus])
            })
            .collect();
        let addrs: Vec<String> = nodes.iter().map(|n| n.addr.to_string()).collect();
        let status = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "redis-cli --cluster create failed");
        let cluster = RedisCluster { nodes };
        cluster.wait_ok();
        cluster
    }

    fn wait_ok(&self) {
        let started = Instant::now();
        while !self
            .nodes
            .iter()
            .all(|node| node.cli(&["cluster", "info"]).contains("cluster_state:ok"))
        {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "cluster not ok"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A URL naming one node; sendgate learns the rest (`fleet.cluster`).
    pub(crate) fn url(&self) -> String {
        format!("redis://{}", self.nodes[0].addr)
    }
}

/// What a fleet test runs against: one server or a cluster, so that the
/// same test proves both.
pub(crate) enum Redis {
    Single(RedisServer),
    Cluster(RedisCluster),
}

impl Redis {
    pub(crate) fn start(cluster: bool) -> Self {
        match cluster {
            true => Redis::Cluster(RedisCluster::start()),
            false => Redis::Single(RedisServer::start()),
        }
    }

    pub(crate) fn url(&self) -> String {
        match self {
            Redis::Single(server) => server.url(),
            Redis::Cluster(cluster) => cluster.url(),
        }
    }

    /// redis-cli against the server, or a cluster node following moves.
    pub(crate) fn cli(&self, args: &[&str]) -> String {
        match self {
            Redis::Single(server) => server.cli(args),
            Redis::Cluster(cluster) => cluster.nodes[0].cli(&[&["-c"], args].concat()),
        }
    }

    pub(crate) fn is_cluster(&self) -> bool {
        matches!(self, Redis::Cluster(_))
    }

    /// SIGKILL of every node.
    pub(crate) fn kill(&mut self) {
        match self {
            Redis::Single(server) => server.kill(),
            Redis::Cluster(cluster) => cluster.nodes.iter_mut().for_each(RedisServer::kill),
        }
    }

    /// Every node again, from its AOF (and, in a cluster, its nodes.conf).
    pub(crate) fn restart(&mut self) {
        match self {
            Redis::Single(server) => server.restart(),
            Redis::Cluster(cluster) => {
                cluster.nodes.iter_mut().for_each(RedisServer::restart);
                cluster.wait_ok();
            }
        }
    }
}

/// Runs a scenario (an `async fn(Redis)`) as two tests: against one Redis
/// and against a three-node cluster.
macro_rules! on_both {
    ($scenario:ident: $single:ident, $cluster:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $single() {
            $scenario($crate::support::redis::Redis::start(false)).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $cluster() {
            $scenario($crate::support::redis::Redis::start(true)).await;
        }
    };
}
pub(crate) use on_both;
