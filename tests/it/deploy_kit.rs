//! The deploy kit (`deploy/`, `.dockerignore`) as each target would run it.
//!
//! There is no container runtime, Kubernetes or systemd in CI, so each test
//! reads its target's files and derives what that target would run: the
//! command line, the environment, the config file, the working directory,
//! the user and what is writable. It then runs the built binary exactly so,
//! as a non-root user, in a temporary root where everything is read-only but
//! the target's state directory, and checks that it starts, is ready, keeps
//! its store where the state survives, and stops on SIGTERM.
//!
//! What the tests change, and why (as little as they can):
//! - Absolute paths the kit names (`/etc/sendgate/…`, `/var/lib/sendgate`,
//!   `/usr/local/bin/sendgate`) are moved under the temporary root, in the
//!   command line, the environment and the config text alike: a test cannot
//!   write to `/etc`, and tests run side by side.
//! - The kit's fixed ports (8080, 9090) become free loopback ports, and
//!   `0.0.0.0` becomes `127.0.0.1`: tests run side by side, on loopback only.
//! - Secrets (`secretKeyRef`, the systemd `EnvironmentFile`) get test values.
//! - The fleet's Redis Service (`sendgate-redis:6379`) becomes a local
//!   redis-server on a free port (`support::redis`).
//!
//! The other tests here read the files and check what a run cannot show
//! (probes, annotations, security contexts, grace periods, pinned tags).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rustix::process::Signal;
use sendgate::Config;
use yaml_rust2::{Yaml, YamlLoader};

use crate::support::redis::RedisServer;
use crate::support::{free_port, unique_temp_path};

const REPO: &str = env!("CARGO_MANIFEST_DIR");

fn read(relative: &str) -> String {
    std::fs::read_to_string(Path::new(REPO).join(relative))
        .unwrap_or_else(|err| panic!("{relative}: {err}"))
}

// ---------------------------------------------------------------- Dockerfile

/// One instruction of a Dockerfile, continuation lines joined.
struct Instruction {
    name: String,
    rest: String,
}

/// The Dockerfile's stages, each a list of instructions.
fn dockerfile_stages(text: &str) -> Vec<Vec<Instruction>> {
    let mut logical = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        // Docker drops comment lines, also inside a continued instruction.
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(part) => {
                current.push_str(part);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                logical.push(std::mem::take(&mut current));
            }
        }
    }
    let mut stages: Vec<Vec<Instruction>> = Vec::new();
    for line in logical {
        let (name, rest) = line.split_once(char::is_whitespace).unwrap_or((&line, ""));
        let name = name.to_ascii_uppercase();
        if name == "FROM" {
            stages.push(Vec::new());
        }
        stages.last_mut().expect("a FROM first").push(Instruction {
            name,
            rest: rest.trim().to_owned(),
        });
    }
    stages
}

/// What the image runs and how, from its last stage.
struct Image {
    entrypoint: Vec<String>,
    cmd: Vec<String>,
    env: Vec<(String, String)>,
    /// USER as numbers, or the name it gives.
    user: Result<(u32, u32), String>,
    workdir: String,
    volumes: Vec<String>,
    exposed: Vec<u16>,
    healthcheck: Vec<String>,
    /// `COPY` from the build context: (source in the repository, destination).
    copied: Vec<(String, String)>,
    /// `COPY --from=…` destinations: what the build stage made (the binary).
    built: Vec<String>,
}

fn exec_form(what: &str, rest: &str) -> Vec<String> {
    serde_json::from_str(rest)
        .unwrap_or_else(|_| panic!("{what} in exec form (a JSON array), got {rest:?}"))
}

fn image() -> Image {
    let stages = dockerfile_stages(&read("deploy/Dockerfile"));
    let runtime = stages.last().expect("a stage");
    let mut image = Image {
        entrypoint: Vec::new(),
        cmd: Vec::new(),
        env: Vec::new(),
        user: Ok((0, 0)),
        workdir: "/".to_owned(),
        volumes: Vec::new(),
        exposed: Vec::new(),
        healthcheck: Vec::new(),
        copied: Vec::new(),
        built: Vec::new(),
    };
    for Instruction { name, rest } in runtime {
        match name.as_str() {
            "ENTRYPOINT" => image.entrypoint = exec_form("ENTRYPOINT", rest),
            "CMD" => image.cmd = exec_form("CMD", rest),
            "ENV" => image.env.extend(env_pairs(rest)),
            "USER" => {
                let (uid, gid) = rest.split_once(':').unwrap_or((rest, rest));
                image.user = match (uid.parse(), gid.parse()) {
                    (Ok(uid), Ok(gid)) => Ok((uid, gid)),
                    _ => Err(rest.clone()),
                };
            }
            "WORKDIR" => image.workdir = rest.clone(),
            "VOLUME" => match rest.starts_with('[') {
                true => image.volumes.extend(exec_form("VOLUME", rest)),
                false => image
                    .volumes
                    .extend(rest.split_whitespace().map(str::to_owned)),
            },
            "EXPOSE" => image.exposed.extend(
                rest.split_whitespace()
                    .map(|port| port.trim_end_matches("/tcp").parse::<u16>().unwrap()),
            ),
            "HEALTHCHECK" => {
                let (_, command) = rest.split_once("CMD ").expect("HEALTHCHECK … CMD […]");
                image.healthcheck = exec_form("HEALTHCHECK CMD", command.trim());
            }
            "COPY" => {
                let words: Vec<&str> = rest.split_whitespace().collect();
                let (flags, paths): (Vec<&str>, Vec<&str>) =
                    words.iter().partition(|word| word.starts_with("--"));
                let destination = paths.last().unwrap().to_string();
                match flags.iter().any(|flag| flag.starts_with("--from=")) {
                    true => image.built.push(destination),
                    false => image.copied.extend(
                        paths[..paths.len() - 1]
                            .iter()
                            .map(|source| (source.to_string(), destination.clone())),
                    ),
                }
            }
            _ => {}
        }
    }
    image
}

impl Image {
    /// Whom the image runs as. A user name stands for a uid in the image's
    /// /etc/passwd, which the test cannot see: nobody (65534) stands for it.
    fn run_as(&self) -> (u32, u32) {
        self.user.clone().unwrap_or((65534, 65534))
    }
}

/// `ENV A=1 B="two words"` (and the old `ENV A value`).
fn env_pairs(rest: &str) -> Vec<(String, String)> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quoted = false;
    for c in rest.chars() {
        match c {
            '"' => quoted = !quoted,
            c if c.is_whitespace() && !quoted => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
            }
            c => word.push(c),
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    if !words[0].contains('=') {
        return vec![(words[0].clone(), words[1..].join(" "))];
    }
    words
        .iter()
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap();
            (name.to_owned(), value.to_owned())
        })
        .collect()
}

// ------------------------------------------------------------- systemd unit

/// The `[Service]` section: each key with its values in order.
fn unit_service() -> BTreeMap<String, Vec<String>> {
    let mut service: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut section = String::new();
    for line in read("deploy/sendgate.service").lines() {
        let line = line.trim();
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        if line.starts_with('[') {
            section = line.to_owned();
            continue;
        }
        if section == "[Service]"
            && let Some((key, value)) = line.split_once('=')
        {
            service
                .entry(key.trim().to_owned())
                .or_default()
                .push(value.trim().to_owned());
        }
    }
    service
}

/// A unit's command line: its special prefixes (`-`, `@`, `+`, …) dropped,
/// split on white space (the kit quotes nothing).
fn unit_command(line: &str) -> Vec<String> {
    line.trim_start_matches(['-', '@', ':', '+', '!'])
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

// --------------------------------------------------------------- Kubernetes

fn manifest(name: &str) -> Vec<Yaml> {
    let path = format!("deploy/kubernetes/{name}");
    YamlLoader::load_from_str(&read(&path)).unwrap_or_else(|err| panic!("{path}: {err}"))
}

fn find<'a>(docs: &'a [Yaml], kind: &str, name: &str) -> Option<&'a Yaml> {
    docs.iter().find(|doc| {
        doc["kind"].as_str() == Some(kind) && doc["metadata"]["name"].as_str() == Some(name)
    })
}

fn object<'a>(docs: &'a [Yaml], kind: &str, name: &str) -> &'a Yaml {
    find(docs, kind, name).unwrap_or_else(|| panic!("no {kind} {name}"))
}

fn list(yaml: &Yaml) -> &[Yaml] {
    yaml.as_vec().map(Vec::as_slice).unwrap_or(&[])
}

fn strings(yaml: &Yaml) -> Vec<String> {
    list(yaml)
        .iter()
        .map(|item| item.as_str().expect("a string").to_owned())
        .collect()
}

/// A number written as a number or a string (annotations are strings).
fn number(yaml: &Yaml) -> Option<i64> {
    yaml.as_i64()
        .or_else(|| yaml.as_str().and_then(|text| text.parse().ok()))
}

/// The sendgate container of a Deployment and its pod spec.
fn sendgate_pod(docs: &[Yaml]) -> (&Yaml, &Yaml) {
    let pod = &object(docs, "Deployment", "sendgate")["spec"]["template"]["spec"];
    let container = list(&pod["containers"])
        .iter()
        .find(|container| container["name"].as_str() == Some("sendgate"))
        .expect("a container named sendgate");
    (pod, container)
}

/// The container's `env`: secrets get test values, and `$(NAME)` refers to
/// an earlier variable, as the kubelet expands it.
fn pod_env(container: &Yaml) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = Vec::new();
    for var in list(&container["env"]) {
        let name = var["name"].as_str().unwrap().to_owned();
        let value = match var["value"].as_str() {
            Some(value) => value.to_owned(),
            None if !var["valueFrom"]["secretKeyRef"].is_badvalue() => {
                format!(
                    "test-{}",
                    var["valueFrom"]["secretKeyRef"]["key"].as_str().unwrap()
                )
            }
            // The downward API's pod IP: loopback here.
            None if var["valueFrom"]["fieldRef"]["fieldPath"].as_str() == Some("status.podIP") => {
                "127.0.0.1".to_owned()
            }
            None => panic!("env {name}: no value the test knows how to give"),
        };
        let mut expanded = value.clone();
        for (earlier, earlier_value) in &env {
            expanded = expanded.replace(&format!("$({earlier})"), earlier_value);
        }
        env.push((name, expanded));
    }
    env
}

// -------------------------------------------------------- running the binary

/// A temporary root standing for the target's file system: what the kit
/// names by absolute path is placed under it, read-only for the service's
/// user but for the directories the target makes writable.
struct Root {
    dir: PathBuf,
    /// Kit paths placed here, longest first: what [`Root::map`] rewrites.
    placed: Vec<String>,
    writable: Vec<PathBuf>,
}

impl Root {
    fn new(name: &str) -> Self {
        let dir = unique_temp_path("kit", name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        Root {
            dir,
            placed: Vec::new(),
            writable: Vec::new(),
        }
    }

    fn path(&self, kit_path: &str) -> PathBuf {
        assert!(kit_path.starts_with('/'), "{kit_path:?} is not absolute");
        self.dir.join(kit_path.trim_start_matches('/'))
    }

    fn note(&mut self, kit_path: &str) {
        if kit_path.trim_end_matches('/').is_empty() {
            return; // the root itself: nothing to rewrite
        }
        self.placed.push(kit_path.trim_end_matches('/').to_owned());
        self.placed
            .sort_by_key(|path| std::cmp::Reverse(path.len()));
    }

    /// A directory of the read-only file system (e.g. a working directory
    /// that is not a volume).
    fn dir(&mut self, kit_path: &str) -> PathBuf {
        let path = self.path(kit_path);
        std::fs::create_dir_all(&path).unwrap();
        self.note(kit_path);
        path
    }

    /// A directory the service may write: owned by `owner` (uid, gid) with
    /// `mode`; owner `None` leaves it to the test's own user.
    fn writable_dir(&mut self, kit_path: &str, owner: Option<(u32, u32)>, mode: u32) -> PathBuf {
        let path = self.dir(kit_path);
        if let Some((uid, gid)) = owner.filter(|_| is_root()) {
            std::os::unix::fs::chown(&path, Some(uid), Some(gid)).unwrap();
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        self.writable.push(path.clone());
        path
    }

    fn file(&mut self, kit_path: &str, contents: &str) -> PathBuf {
        let path = self.path(kit_path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, contents).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        self.note(kit_path);
        path
    }

    /// The test's sendgate at `kit_path` (a hard link, else a copy): the
    /// binary in target/ may sit where the service's user cannot reach it.
    fn binary(&mut self, kit_path: &str) -> PathBuf {
        let path = self.path(kit_path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let built = env!("CARGO_BIN_EXE_sendgate");
        if std::fs::hard_link(built, &path).is_err() {
            std::fs::copy(built, &path).unwrap();
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        self.note(kit_path);
        path
    }

    /// `text` with every kit path placed here moved under the root.
    fn map(&self, text: &str) -> String {
        let mut out = String::new();
        let mut rest = text;
        'scan: while let Some(c) = rest.chars().next() {
            let starts_word = out
                .chars()
                .last()
                .is_none_or(|before| " \"'=:[,".contains(before));
            if starts_word {
                for kit_path in &self.placed {
                    if let Some(after) = rest.strip_prefix(kit_path.as_str())
                        && after
                            .chars()
                            .next()
                            .is_none_or(|next| " \"'/:,]".contains(next))
                    {
                        out.push_str(&self.path(kit_path).to_string_lossy());
                        rest = after;
                        continue 'scan;
                    }
                }
            }
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
        out
    }

    /// Everything but the writable directories becomes read-only (0555 and
    /// owned by root when the test is root), as a read-only root file system.
    fn seal(&self) {
        fn walk(dir: &Path, writable: &[PathBuf]) {
            if writable.iter().any(|w| w == dir) {
                return;
            }
            for entry in std::fs::read_dir(dir).unwrap() {
                let entry = entry.unwrap();
                if entry.file_type().unwrap().is_dir() {
                    walk(&entry.path(), writable);
                }
            }
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o555)).unwrap();
        }
        walk(&self.dir, &self.writable);
    }
}

impl Drop for Root {
    fn drop(&mut self) {
        fn unseal(dir: &Path) {
            let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755));
            if let Ok(entries) = std::fs::read_dir(dir) {
                for entry in entries.flatten() {
                    if entry.file_type().is_ok_and(|kind| kind.is_dir()) {
                        unseal(&entry.path());
                    }
                }
            }
        }
        unseal(&self.dir);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| out.stdout.trim_ascii() == b"0")
}

/// How a target runs a command: as whom, where, with which environment.
struct Runner {
    uid: u32,
    gid: u32,
    /// Supplementary groups (a pod's fsGroup).
    groups: Vec<u32>,
    workdir: PathBuf,
    env: Vec<(String, String)>,
}

impl Runner {
    /// `argv` as the target's user (through setpriv when the test is root;
    /// as the test's own user otherwise), with only `env`.
    fn command(&self, argv: &[String]) -> Command {
        let mut command = match is_root() {
            true => {
                let mut setpriv = Command::new("setpriv");
                setpriv.arg(format!("--reuid={}", self.uid));
                setpriv.arg(format!("--regid={}", self.gid));
                match self.groups.is_empty() {
                    true => setpriv.arg("--clear-groups"),
                    false => setpriv.arg(format!(
                        "--groups={}",
                        self.groups
                            .iter()
                            .map(u32::to_string)
                            .collect::<Vec<_>>()
                            .join(",")
                    )),
                };
                setpriv.arg("--").args(argv);
                setpriv
            }
            false => {
                let mut command = Command::new(&argv[0]);
                command.args(&argv[1..]);
                command
            }
        };
        command
            .current_dir(&self.workdir)
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            // Only for finding setpriv, bash, kill: sendgate reads no PATH.
            .env("PATH", "/usr/local/bin:/usr/bin:/bin");
        command
    }

    /// Runs `argv` to its end (bounded to 20 s) and returns its status and output.
    fn run(&self, argv: &[String]) -> (bool, String) {
        let mut child = self
            .command(argv)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|err| panic!("{argv:?}: {err}"));
        let started = Instant::now();
        while child.try_wait().unwrap().is_none() {
            if started.elapsed() > Duration::from_secs(20) {
                let _ = child.kill();
                panic!("{argv:?} did not finish within 20 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let output = child.wait_with_output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        (output.status.success(), text)
    }

    fn spawn(&self, argv: &[String], log: &Path) -> Running {
        let file = std::fs::File::create(log).unwrap();
        let child = self
            .command(argv)
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|err| panic!("{argv:?}: {err}"));
        Running {
            child,
            log: log.to_owned(),
        }
    }
}

/// A started service, killed on drop.
struct Running {
    child: Child,
    log: PathBuf,
}

impl Running {
    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn signal(&self, signal: Signal) {
        crate::support::signal(self.child.id(), signal);
    }

    /// Waits until `GET /readyz` on `admin` answers 200 ready (20 s at most).
    fn wait_ready(&mut self, admin: SocketAddr) {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("sendgate exited ({status}) at start:\n{}", self.logs());
            }
            if let Some((200, body)) = get(admin, "/readyz") {
                let json: serde_json::Value = serde_json::from_str(&body).unwrap();
                assert_eq!(json, serde_json::json!({"status": "ready"}));
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "not ready within 20 s:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits for the exit (bounded) and requires a clean one.
    fn wait_exit(&mut self, within: Duration) {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "exit {status}:\n{}", self.logs());
                return;
            }
            assert!(
                started.elapsed() < within,
                "still running {within:?} after SIGTERM:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// `GET path` over HTTP/1.0 (the peer closes after answering), 2 s at most.
fn get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nhost: {addr}\r\n\r\n").as_bytes())
        .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_owned()))
}

/// The kit's listener ports, each to a free loopback port.
struct Ports(BTreeMap<u16, SocketAddr>);

impl Ports {
    fn new(kit_ports: impl IntoIterator<Item = u16>) -> Self {
        Ports(
            kit_ports
                .into_iter()
                .map(|port| (port, free_port()))
                .collect(),
        )
    }

    /// `text` with `0.0.0.0:P` (and `127.0.0.1:P`, `/dev/tcp/127.0.0.1/P`)
    /// moved to P's free loopback port.
    fn map(&self, text: &str) -> String {
        let mut text = text.to_owned();
        for (port, free) in &self.0 {
            for host in ["0.0.0.0", "127.0.0.1", "[::]"] {
                text = text.replace(&format!("{host}:{port}"), &free.to_string());
            }
            text = text.replace(
                &format!("/dev/tcp/127.0.0.1/{port}"),
                &format!("/dev/tcp/127.0.0.1/{}", free.port()),
            );
        }
        text
    }

    fn get(&self, kit_port: u16) -> SocketAddr {
        self.0[&kit_port]
    }

    fn map_env(&self, env: Vec<(String, String)>) -> Vec<(String, String)> {
        env.into_iter()
            .map(|(name, value)| (name, self.map(&value)))
            .collect()
    }

    /// Maps a file in place (the kit's config, already under the root).
    fn rewrite(&self, path: &Path) {
        let text = std::fs::read_to_string(path).unwrap();
        std::fs::write(path, self.map(&text)).unwrap();
    }
}

/// The ports to move: those the target declares (EXPOSE, containerPort),
/// and those its config listens on (so that a listener the target forgot to
/// declare still runs here, and the checks on the files report it).
fn moved_ports(
    declared: impl IntoIterator<Item = u16>,
    argv: &[String],
    env: &[(String, String)],
) -> Ports {
    let config = effective_config(argv, env);
    let mut ports: Vec<u16> = declared.into_iter().collect();
    ports.push(config.listen.port());
    ports.extend(
        config
            .admin
            .listen
            .parse::<SocketAddr>()
            .map(|admin| admin.port()),
    );
    ports.sort_unstable();
    ports.dedup();
    Ports::new(ports)
}

/// The config a run would load: its file (when the command line names one)
/// and its environment, through sendgate's own loader.
fn effective_config(argv: &[String], env: &[(String, String)]) -> Config {
    let text = argv
        .iter()
        .position(|arg| arg == "--config")
        .map(|at| std::fs::read_to_string(&argv[at + 1]).expect("the config file is in place"))
        .unwrap_or_default();
    Config::from_sources(&text, env.iter().cloned()).expect("the kit's config is valid")
}

fn port_of(address: &str) -> u16 {
    address.rsplit(':').next().unwrap().parse().unwrap()
}

/// After the substitutions: both listeners on the free loopback ports.
fn listeners(config: &Config, ports: &Ports) -> SocketAddr {
    assert!(
        ports.0.values().any(|free| *free == config.listen),
        "the proxy listens on {}, not on a port the test moved",
        config.listen
    );
    let admin: SocketAddr = config.admin.listen.parse().expect("an admin listener");
    assert!(
        ports.0.values().any(|free| *free == admin),
        "the admin listener is on {admin}, not on a port the test moved (the kit sets it \
         neither in its environment nor in its config file)"
    );
    admin
}

/// The store file sendgate created, resolved as it resolves it (relative to
/// the working directory).
fn store_file(config: &Config, kit_workdir: &str, root: &Root) -> PathBuf {
    assert!(
        !config.store.path.is_empty(),
        "a single machine keeps its store on disk"
    );
    let path = Path::new(&config.store.path);
    match path.is_absolute() {
        true => path.to_owned(),
        false => root.path(kit_workdir).join(path),
    }
}

// ------------------------------------------------------------------ the runs

#[test]
fn the_image_starts_as_its_user_with_only_its_volume_writable() {
    let image = image();
    let mut root = Root::new("docker");
    // The build stage's product is the binary the ENTRYPOINT names.
    assert_eq!(
        image.built,
        [image.entrypoint[0].clone()],
        "COPY --from=build"
    );
    root.binary(&image.entrypoint[0]);
    for volume in &image.volumes {
        // Owned by USER in the image, as a fresh named volume copies it.
        root.writable_dir(volume, Some(image.run_as()), 0o750);
    }
    if !image.volumes.contains(&image.workdir) {
        root.dir(&image.workdir);
    }
    for (source, destination) in &image.copied {
        root.note(destination);
        let text = read(source);
        root.file(destination, &text);
    }
    // The copied files' text is mapped once everything is placed.
    for (_, destination) in &image.copied {
        let path = root.path(destination);
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, root.map(&text)).unwrap();
    }
    root.seal();

    let argv: Vec<String> = image
        .entrypoint
        .iter()
        .chain(&image.cmd)
        .map(|arg| root.map(arg))
        .collect();
    let env: Vec<(String, String)> = image
        .env
        .iter()
        .map(|(name, value)| (name.clone(), root.map(value)))
        .collect();
    let ports = moved_ports(image.exposed.iter().copied(), &argv, &env);
    for (_, destination) in &image.copied {
        ports.rewrite(&root.path(destination));
    }
    let env = ports.map_env(env);
    let config = effective_config(&argv, &env);
    let admin = listeners(&config, &ports);
    let (uid, gid) = image.run_as();
    let runner = Runner {
        uid,
        gid,
        groups: Vec::new(),
        workdir: root.path(&image.workdir),
        env,
    };
    let mut running = runner.spawn(&argv, &unique_temp_path("kit-log", "docker"));
    running.wait_ready(admin);

    // The HEALTHCHECK command, as Docker runs it in the container.
    let healthcheck: Vec<String> = image.healthcheck.iter().map(|a| ports.map(a)).collect();
    let (healthy, output) = runner.run(&healthcheck);
    assert!(healthy, "HEALTHCHECK {healthcheck:?} failed: {output}");

    let store = store_file(&config, &image.workdir, &root);
    assert!(store.is_file(), "no store at {}", store.display());
    assert!(
        image
            .volumes
            .iter()
            .any(|volume| store.starts_with(root.path(volume))),
        "the store {} is not on a VOLUME",
        store.display()
    );

    running.signal(Signal::TERM);
    running.wait_exit(Duration::from_millis(
        config.shutdown.delay_ms + config.shutdown.drain_timeout_ms + 10_000,
    ));
}

/// Runs a manifest's sendgate container as the kubelet would start it from
/// deploy/Dockerfile's image, and returns the root (for checks on what it
/// wrote) after it stopped.
fn run_pod(manifest_name: &str, redis: Option<&RedisServer>) -> (Root, Config) {
    let docs = manifest(manifest_name);
    let image = image();
    let (pod, container) = sendgate_pod(&docs);
    let mut root = Root::new(manifest_name.trim_end_matches(".yaml"));

    // command/args over the image's ENTRYPOINT/CMD, as Kubernetes does.
    let command = match container["command"].is_badvalue() {
        true => image.entrypoint.clone(),
        false => strings(&container["command"]),
    };
    let args = match (
        container["command"].is_badvalue(),
        container["args"].is_badvalue(),
    ) {
        (_, false) => strings(&container["args"]),
        (true, true) => image.cmd.clone(),
        (false, true) => Vec::new(),
    };
    let context = |key: &str| {
        let own = &container["securityContext"][key];
        match own.is_badvalue() {
            true => pod["securityContext"][key].clone(),
            false => own.clone(),
        }
    };
    let uid = context("runAsUser")
        .as_i64()
        .map_or(image.run_as().0, |id| id as u32);
    let gid = context("runAsGroup")
        .as_i64()
        .map_or(image.run_as().1, |id| id as u32);
    let fs_group = pod["securityContext"]["fsGroup"]
        .as_i64()
        .map(|id| id as u32);
    let workdir = container["workingDir"]
        .as_str()
        .map_or(image.workdir.clone(), str::to_owned);

    root.binary(&command[0]);
    // Volumes: a ConfigMap's keys become files, a claim or an emptyDir a
    // writable directory (root:fsGroup, group-writable and setgid, as the
    // kubelet prepares it).
    let mut config_files = Vec::new();
    for mount in list(&container["volumeMounts"]) {
        let mount_path = mount["mountPath"].as_str().unwrap();
        let volume = list(&pod["volumes"])
            .iter()
            .find(|volume| volume["name"] == mount["name"])
            .expect("the mount's volume");
        if let Some(name) = volume["configMap"]["name"].as_str() {
            let map = object(&docs, "ConfigMap", name);
            root.dir(mount_path);
            for (key, text) in map["data"].as_hash().expect("data") {
                let kit_path = format!("{mount_path}/{}", key.as_str().unwrap());
                config_files.push((kit_path, text.as_str().unwrap().to_owned()));
            }
        } else {
            root.writable_dir(mount_path, fs_group.map(|group| (0, group)), 0o2775);
        }
    }
    if !root.placed.contains(&workdir) {
        // Not a volume: part of the read-only root file system.
        root.dir(&workdir);
    }
    for (kit_path, text) in &config_files {
        let mapped = root.map(text);
        root.file(kit_path, &mapped);
    }
    // Read-only but the volumes (readOnlyRootFilesystem, checked in
    // kubernetes_*_manifest; without it the image's directories still belong
    // to root).
    root.seal();

    // The image's ENV, then the container's env over it.
    let mut env: BTreeMap<String, String> = image.env.iter().cloned().collect();
    env.extend(pod_env(container));
    if let Some(redis) = redis {
        // The Redis Service's name and port, as the pod would resolve it.
        let service = object(&docs, "Service", "sendgate-redis");
        let port = list(&service["spec"]["ports"])[0]["port"].as_i64().unwrap();
        let from = format!("sendgate-redis:{port}");
        for value in env.values_mut() {
            *value = value.replace(&from, &redis.addr.to_string());
        }
    }
    let env: Vec<(String, String)> = env
        .into_iter()
        .map(|(name, value)| (name, root.map(&value)))
        .collect();
    let argv: Vec<String> = command.iter().chain(&args).map(|a| root.map(a)).collect();
    let ports = moved_ports(
        list(&container["ports"])
            .iter()
            .map(|port| port["containerPort"].as_i64().unwrap() as u16),
        &argv,
        &env,
    );
    for (kit_path, _) in &config_files {
        ports.rewrite(&root.path(kit_path));
    }
    let env = ports.map_env(env);
    let config = effective_config(&argv, &env);
    let admin = listeners(&config, &ports);

    let runner = Runner {
        uid,
        gid,
        groups: fs_group.into_iter().collect(),
        workdir: root.path(&workdir),
        env,
    };
    let mut running = runner.spawn(&argv, &unique_temp_path("kit-log", manifest_name));
    running.wait_ready(admin);

    // What Prometheus would scrape, from the annotations, with no token.
    let annotations =
        &object(&docs, "Deployment", "sendgate")["spec"]["template"]["metadata"]["annotations"];
    let scrape_port = number(&annotations["prometheus.io/port"]).expect("prometheus.io/port");
    let scrape_path = annotations["prometheus.io/path"]
        .as_str()
        .unwrap_or("/metrics");
    let scraped = get(ports.get(scrape_port as u16), scrape_path);
    assert!(
        matches!(&scraped, Some((200, body)) if body.contains("# EOF")),
        "scraping {scrape_path} on {scrape_port} without a token: {scraped:?}"
    );

    let signalled = Instant::now();
    running.signal(Signal::TERM);
    if config.shutdown.delay_ms >= 1000 {
        // Readiness fails while sendgate keeps answering for the delay.
        let delay = Duration::from_millis(config.shutdown.delay_ms);
        loop {
            let (status, body) = get(admin, "/readyz").expect("still answering");
            if status == 503 && body.contains("draining") {
                break;
            }
            assert_eq!(status, 200, "{body}");
            assert!(signalled.elapsed() < delay / 2, "readiness still ready");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    running.wait_exit(Duration::from_millis(
        config.shutdown.delay_ms + config.shutdown.drain_timeout_ms + 10_000,
    ));
    (root, config)
}

#[test]
fn the_single_replica_pod_starts_with_its_store_on_the_claim() {
    let (root, config) = run_pod("single.yaml", None);
    let docs = manifest("single.yaml");
    let (pod, container) = sendgate_pod(&docs);
    let claims: Vec<&str> = list(&container["volumeMounts"])
        .iter()
        .filter(|mount| {
            list(&pod["volumes"]).iter().any(|volume| {
                volume["name"] == mount["name"] && !volume["persistentVolumeClaim"].is_badvalue()
            })
        })
        .map(|mount| mount["mountPath"].as_str().unwrap())
        .collect();
    let store = store_file(&config, "/", &root);
    assert!(store.is_file(), "no store at {}", store.display());
    assert!(
        claims
            .iter()
            .any(|claim| store.starts_with(root.path(claim))),
        "the store {} is on none of the claims {claims:?}",
        store.display()
    );
}

#[test]
fn the_fleet_pod_starts_against_redis_and_writes_nothing() {
    let redis = RedisServer::start();
    let (root, config) = run_pod("fleet.yaml", Some(&redis));
    assert!(config.fleet.enabled());
    // Sealed read-only but for writable volumes, of which the fleet has none.
    assert!(root.writable.is_empty(), "{:?}", root.writable);
}

#[test]
fn the_systemd_unit_checks_starts_reloads_and_stops() {
    let unit = unit_service();
    let one = |key: &str| -> &str {
        match unit.get(key).map(Vec::as_slice) {
            Some([value]) => value,
            other => panic!("{key}: expected one value, got {other:?}"),
        }
    };
    let start = unit_command(one("ExecStart"));
    let pre: Vec<Vec<String>> = unit
        .get("ExecStartPre")
        .into_iter()
        .flatten()
        .map(|l| unit_command(l))
        .collect();
    let reload: Vec<Vec<String>> = unit
        .get("ExecReload")
        .into_iter()
        .flatten()
        .map(|l| unit_command(l))
        .collect();
    // Without StateDirectory nothing is writable (ProtectSystem=strict);
    // without WorkingDirectory a system service runs in /.
    let state = unit
        .get("StateDirectory")
        .map(|names| format!("/var/lib/{}", names[0]));
    let workdir = unit
        .get("WorkingDirectory")
        .map_or("/", |dirs| dirs[0].as_str())
        .trim_start_matches('-')
        .to_owned();

    let mut root = Root::new("systemd");
    // A DynamicUser's uid comes from 61184-65519.
    let user = (61184, 61184);
    root.binary(&start[0]);
    if let Some(state) = &state {
        root.writable_dir(state, Some(user), 0o750);
    }
    if state.as_ref() != Some(&workdir) {
        root.dir(&workdir);
    }
    // The config as the unit's header installs it: config/sendgate.toml at
    // the path --config names.
    let config_at = start
        .iter()
        .position(|arg| arg == "--config")
        .map(|at| start[at + 1].clone())
        .expect("ExecStart names its config");
    root.note(&config_at);
    let kit_config = read("config/sendgate.toml");
    // The secrets file (read by systemd, as root, before the user switch).
    let mut env: Vec<(String, String)> = unit
        .get("Environment")
        .into_iter()
        .flatten()
        .filter_map(|pair| {
            pair.trim_matches('"')
                .split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
        })
        .collect();
    if let Some(file) = unit.get("EnvironmentFile") {
        let path = file[0].trim_start_matches('-');
        let secrets =
            "SENDGATE_ADMIN_TOKEN=test-admin-token\nSENDGATE_APP_SECRET=test-app-secret\n";
        root.file(path, secrets);
        env.extend(secrets.lines().map(|line| {
            let (k, v) = line.split_once('=').unwrap();
            (k.to_owned(), v.to_owned())
        }));
    }
    // Ports: those the installed config listens on.
    let installed = Config::from_sources(&kit_config, env.iter().cloned()).unwrap();
    let ports = Ports::new([installed.listen.port(), port_of(&installed.admin.listen)]);
    root.file(&config_at, &ports.map(&root.map(&kit_config)));
    root.seal();

    let map_all = |argv: &[String]| -> Vec<String> { argv.iter().map(|a| root.map(a)).collect() };
    let env: Vec<(String, String)> = env
        .into_iter()
        .map(|(k, v)| (k, ports.map(&root.map(&v))))
        .collect();
    let runner = Runner {
        uid: user.0,
        gid: user.1,
        groups: Vec::new(),
        workdir: root.path(&workdir),
        env,
    };
    assert!(!pre.is_empty(), "ExecStartPre");
    for command in &pre {
        let (ok, output) = runner.run(&map_all(command));
        assert!(ok, "ExecStartPre {command:?}: {output}");
    }
    let argv = map_all(&start);
    let config = effective_config(&argv, &runner.env);
    let admin = listeners(&config, &ports);
    let mut running = runner.spawn(&argv, &unique_temp_path("kit-log", "systemd"));
    running.wait_ready(admin);
    let store = store_file(&config, &workdir, &root);
    assert!(store.is_file(), "no store at {}", store.display());
    assert!(
        state.is_some_and(|state| store.starts_with(root.path(&state))),
        "the store {} is not in StateDirectory",
        store.display()
    );

    // systemctl reload: each ExecReload line, $MAINPID the service's pid.
    assert!(!reload.is_empty(), "ExecReload");
    let pid = running.child.id().to_string();
    for command in &reload {
        let command: Vec<String> = map_all(command)
            .iter()
            .map(|a| a.replace("$MAINPID", &pid))
            .collect();
        let (ok, output) = runner.run(&command);
        assert!(ok, "ExecReload {command:?}: {output}");
    }
    // The reload happened: sendgate says so (a SIGHUP it ignored would not).
    let reloaded = Instant::now();
    while !running.logs().contains("configuration reloaded") {
        assert!(
            running.child.try_wait().unwrap().is_none(),
            "reload ended it:\n{}",
            running.logs()
        );
        assert!(
            reloaded.elapsed() < Duration::from_secs(10),
            "no reload logged within 10 s:\n{}",
            running.logs()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    running.wait_ready(admin);

    assert_eq!(
        unit.get("KillSignal").map(|v| v[0].as_str()),
        Some("SIGTERM")
    );
    running.signal(Signal::TERM);
    let timeout: u64 = one("TimeoutStopSec")
        .parse()
        .expect("TimeoutStopSec in seconds");
    running.wait_exit(Duration::from_secs(timeout));
}

// ------------------------------------------------------- what runs can't show

/// Collects every failed check, so one run against a broken kit lists all.
#[derive(Default)]
struct Problems(Vec<String>);

impl Problems {
    fn check(&mut self, ok: bool, what: impl Into<String>) {
        if !ok {
            self.0.push(what.into());
        }
    }

    fn assert_none(self, of: &str) {
        assert!(self.0.is_empty(), "{of}:\n- {}", self.0.join("\n- "));
    }
}

/// A tag that names a version (`1.95.0-slim-bookworm`, `12.12-slim`), or a
/// digest: not `latest`, not a moving name like `bookworm-slim` or `1-slim`.
fn pinned(image: &str) -> bool {
    if image.contains("@sha256:") {
        return true;
    }
    let name = image.rsplit('/').next().unwrap();
    match name.split_once(':') {
        Some((_, tag)) => {
            let version = tag.split('-').next().unwrap();
            tag != "latest"
                && version.contains('.')
                && version.split('.').all(|part| part.parse::<u32>().is_ok())
        }
        None => false,
    }
}

#[test]
fn dockerfile_runs_as_a_numeric_user_with_a_volume_probes_and_pinned_bases() {
    let text = read("deploy/Dockerfile");
    let mut problems = Problems::default();
    let stages = dockerfile_stages(&text);
    let runtime = stages.last().unwrap();
    let has = |name: &str| runtime.iter().any(|i| i.name == name);
    for name in ["USER", "WORKDIR", "VOLUME", "HEALTHCHECK", "EXPOSE"] {
        problems.check(has(name), format!("no {name} in the runtime stage"));
    }
    for from in stages.iter().map(|stage| &stage[0].rest) {
        let base = from.split_whitespace().next().unwrap();
        problems.check(
            pinned(base),
            format!("FROM {base}: not pinned to a version"),
        );
    }
    problems.assert_none("deploy/Dockerfile");

    let image = image();
    let mut problems = Problems::default();
    let user = match &image.user {
        Ok(ids) => *ids,
        Err(name) => {
            problems.check(
                false,
                format!("USER {name}: not numeric, so the kubelet cannot tell it is not root"),
            );
            image.run_as()
        }
    };
    problems.check(user.0 != 0, "USER is root");
    problems.check(image.workdir != "/", "WORKDIR is /");
    // The volume is created owned by the user before VOLUME declares it.
    for volume in &image.volumes {
        problems.check(
            runtime.iter().any(|i| {
                i.name == "RUN"
                    && i.rest.contains(volume.as_str())
                    && (i.rest.contains(&format!("-o {}", user.0))
                        || i.rest.contains(&format!("chown {}", user.0)))
            }),
            format!("{volume} is not created owned by uid {}", user.0),
        );
    }
    // Both listeners exposed, on every interface.
    let config_text = image
        .copied
        .iter()
        .find(|(_, destination)| image.cmd.contains(destination))
        .map(|(source, _)| read(source))
        .expect("CMD names a config the image copies");
    let config = Config::from_sources(&config_text, image.env.iter().cloned()).unwrap();
    let admin: SocketAddr = config.admin.listen.parse().expect("an admin listener");
    for (what, address) in [("proxy", config.listen), ("admin", admin)] {
        problems.check(
            image.exposed.contains(&address.port()),
            format!("{what} port {} not EXPOSEd", address.port()),
        );
        problems.check(
            address.ip().is_unspecified(),
            format!("{what} listens on {address}: unreachable from outside the container"),
        );
    }
    problems.check(
        image.healthcheck.join(" ").contains("/readyz"),
        "HEALTHCHECK does not ask /readyz",
    );
    problems.assert_none("deploy/Dockerfile");
}

#[test]
fn dockerignore_keeps_build_output_and_history_out_of_the_context() {
    let text = read(".dockerignore");
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    for excluded in ["target", ".git"] {
        assert!(
            lines
                .iter()
                .any(|line| line.trim_matches('/') == excluded || *line == format!("{excluded}/")),
            ".dockerignore does not exclude {excluded}"
        );
    }
}

/// The checks both Kubernetes variants share; returns the effective config.
fn check_pod(docs: &[Yaml], problems: &mut Problems) -> Config {
    let (pod, container) = sendgate_pod(docs);
    let deployment = object(docs, "Deployment", "sendgate");
    let version = read("Cargo.toml")
        .lines()
        .find_map(|line| line.strip_prefix("version = "))
        .map(|version| version.trim_matches('"').to_owned())
        .unwrap();
    let image = container["image"].as_str().unwrap_or("");
    problems.check(
        image == format!("sendgate:{version}"),
        format!("image {image:?}: not sendgate:{version} (Cargo.toml's version)"),
    );

    // The config: the ConfigMap's file, the image's ENV, the container's env.
    let args = strings(&container["args"]);
    let config_path = args
        .iter()
        .position(|arg| arg == "--config")
        .map(|at| args[at + 1].clone())
        .expect("--config in args");
    let mut config_text = None;
    for mount in list(&container["volumeMounts"]) {
        let volume = list(&pod["volumes"])
            .iter()
            .find(|volume| volume["name"] == mount["name"])
            .expect("the mount's volume");
        if let Some(name) = volume["configMap"]["name"].as_str() {
            let mount_path = mount["mountPath"].as_str().unwrap();
            for (key, text) in object(docs, "ConfigMap", name)["data"].as_hash().unwrap() {
                if format!("{mount_path}/{}", key.as_str().unwrap()) == config_path {
                    config_text = Some(text.as_str().unwrap().to_owned());
                }
            }
        }
    }
    let config_text = config_text.expect("--config names a file of a mounted ConfigMap");
    let mut env: BTreeMap<String, String> = self::image().env.into_iter().collect();
    env.extend(pod_env(container));
    let config = Config::from_sources(&config_text, env).expect("valid config");

    // Probes on the admin listener, by number or by the port's name.
    let admin_port = port_of(&config.admin.listen) as i64;
    let ports = list(&container["ports"]);
    let port_number = |port: &Yaml| -> Option<i64> {
        port.as_i64().or_else(|| {
            ports
                .iter()
                .find(|p| p["name"] == *port)
                .and_then(|p| p["containerPort"].as_i64())
        })
    };
    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
        let get = &container[probe]["httpGet"];
        problems.check(
            get["path"].as_str() == Some(path) && port_number(&get["port"]) == Some(admin_port),
            format!("{probe}: not httpGet {path} on the admin port {admin_port}"),
        );
    }
    problems.check(
        ports
            .iter()
            .any(|p| p["containerPort"].as_i64() == Some(admin_port)),
        format!("the admin/metrics port {admin_port} is not a container port"),
    );
    problems.check(
        ports
            .iter()
            .any(|p| p["containerPort"].as_i64() == Some(config.listen.port() as i64)),
        "the proxy port is not a container port",
    );
    let admin_env = list(&container["env"])
        .iter()
        .find(|var| var["name"].as_str() == Some("SENDGATE_ADMIN__LISTEN"))
        .and_then(|var| var["value"].as_str())
        .unwrap_or("");
    problems.check(
        config
            .admin
            .listen
            .parse::<SocketAddr>()
            .is_ok_and(|admin| admin.ip().is_unspecified())
            || admin_env.starts_with("$(POD_IP):"),
        format!(
            "the admin listener {:?} is not on the pod IP: the kubelet and Prometheus cannot reach it",
            config.admin.listen
        ),
    );
    problems.check(
        config.listen.ip().is_unspecified(),
        format!(
            "the proxy listens on {}: unreachable from the Service",
            config.listen
        ),
    );

    // Secrets from a Secret, never a literal value.
    let example = Path::new(REPO).join("deploy/kubernetes/secret.example.yaml");
    problems.check(
        example.is_file(),
        "no deploy/kubernetes/secret.example.yaml",
    );
    let secret = match example.is_file() {
        true => object(
            &manifest("secret.example.yaml"),
            "Secret",
            "sendgate-secrets",
        )
        .clone(),
        false => Yaml::BadValue,
    };
    for name in ["SENDGATE_ADMIN_TOKEN", "SENDGATE_APP_SECRET"] {
        let var = list(&container["env"])
            .iter()
            .find(|var| var["name"].as_str() == Some(name));
        let reference = var.map(|var| &var["valueFrom"]["secretKeyRef"]);
        let key = reference.and_then(|r| r["key"].as_str());
        problems.check(
            key.is_some_and(|key| !secret["stringData"][key].is_badvalue())
                && reference.and_then(|r| r["name"].as_str()) == Some("sendgate-secrets"),
            format!("{name}: no secretKeyRef to a key of secret.example.yaml"),
        );
    }
    for var in list(&container["env"]) {
        let name = var["name"].as_str().unwrap_or("");
        let secret_name = ["TOKEN", "SECRET", "KEY"]
            .iter()
            .any(|word| name.ends_with(word));
        problems.check(
            !secret_name || var["value"].is_badvalue(),
            format!("{name}: a secret written in the manifest"),
        );
    }

    // Metrics: annotations that name the admin port, served without a token.
    let annotations = &deployment["spec"]["template"]["metadata"]["annotations"];
    problems.check(
        annotations["prometheus.io/scrape"].as_str() == Some("true"),
        "prometheus.io/scrape is not \"true\"",
    );
    problems.check(
        number(&annotations["prometheus.io/port"]) == Some(admin_port),
        format!("prometheus.io/port is not the admin port {admin_port}"),
    );
    problems.check(
        annotations["prometheus.io/path"].as_str() == Some("/metrics"),
        "prometheus.io/path is not /metrics",
    );
    problems.check(
        config.admin.public_metrics,
        "[admin] public_metrics is not true",
    );

    // Shutdown: preStop, a delay longer than readiness takes to fail, and a
    // grace period that covers preStop, the delay and the drain.
    let pre_stop = &container["lifecycle"]["preStop"];
    let pre_stop_ms = match (
        &pre_stop["sleep"]["seconds"],
        strings(&pre_stop["exec"]["command"]),
    ) {
        (seconds, _) if !seconds.is_badvalue() => seconds.as_i64().unwrap() * 1000,
        (_, command) if command.first().is_some_and(|c| c == "sleep") => {
            command[1].parse::<i64>().unwrap() * 1000
        }
        _ => {
            problems.check(false, "no preStop pause");
            0
        }
    };
    let readiness = &container["readinessProbe"];
    let unready_ms = readiness["periodSeconds"].as_i64().unwrap_or(10)
        * readiness["failureThreshold"].as_i64().unwrap_or(3)
        * 1000;
    problems.check(
        config.shutdown.delay_ms as i64 > unready_ms,
        format!(
            "[shutdown] delay_ms {} is not above the readiness probe's {unready_ms} ms to fail",
            config.shutdown.delay_ms
        ),
    );
    let grace_ms = pod["terminationGracePeriodSeconds"].as_i64().unwrap_or(30) * 1000;
    let needed = pre_stop_ms + (config.shutdown.delay_ms + config.shutdown.drain_timeout_ms) as i64;
    problems.check(
        grace_ms >= needed,
        format!(
            "terminationGracePeriodSeconds {grace_ms} ms < preStop + delay + drain {needed} ms"
        ),
    );

    // Security: a numeric non-root user, nothing written outside volumes.
    let context = |key: &str| {
        let own = &container["securityContext"][key];
        match own.is_badvalue() {
            true => pod["securityContext"][key].clone(),
            false => own.clone(),
        }
    };
    problems.check(
        context("runAsNonRoot").as_bool() == Some(true),
        "runAsNonRoot",
    );
    for key in ["runAsUser", "runAsGroup"] {
        problems.check(
            context(key).as_i64().is_some_and(|id| id > 0),
            format!("{key}: not a numeric non-root id"),
        );
    }
    problems.check(
        pod["securityContext"]["fsGroup"]
            .as_i64()
            .is_some_and(|id| id > 0),
        "fsGroup: not set",
    );
    problems.check(
        context("readOnlyRootFilesystem").as_bool() == Some(true),
        "readOnlyRootFilesystem",
    );
    problems.check(
        context("allowPrivilegeEscalation").as_bool() == Some(false),
        "allowPrivilegeEscalation",
    );
    problems.check(
        strings(&context("capabilities")["drop"]).contains(&"ALL".to_owned()),
        "capabilities: drop ALL",
    );

    // A Service for the proxy port.
    let service = object(docs, "Service", "sendgate");
    let selects = service["spec"]["selector"]
        .as_hash()
        .is_some_and(|selector| {
            selector.iter().all(|(key, value)| {
                deployment["spec"]["template"]["metadata"]["labels"][key.as_str().unwrap()]
                    == *value
            })
        });
    problems.check(selects, "the Service does not select the pods");
    problems.check(
        list(&service["spec"]["ports"])
            .iter()
            .any(|port| port_number(&port["targetPort"]) == Some(config.listen.port() as i64)),
        "the Service does not target the proxy port",
    );
    config
}

#[test]
fn kubernetes_single_replica_manifest() {
    let docs = manifest("single.yaml");
    let mut problems = Problems::default();
    let config = check_pod(&docs, &mut problems);
    let deployment = object(&docs, "Deployment", "sendgate");
    let (pod, container) = sendgate_pod(&docs);
    problems.check(
        deployment["spec"]["replicas"].as_i64() == Some(1),
        "replicas: not 1 (redb has one writer)",
    );
    problems.check(
        deployment["spec"]["strategy"]["type"].as_str() == Some("Recreate"),
        "strategy: not Recreate (two pods would open one store)",
    );
    // The store on a mounted claim that the manifest defines.
    let on_claim = list(&container["volumeMounts"]).iter().any(|mount| {
        let mount_path = mount["mountPath"].as_str().unwrap();
        let claim = list(&pod["volumes"])
            .iter()
            .find(|volume| volume["name"] == mount["name"])
            .and_then(|volume| volume["persistentVolumeClaim"]["claimName"].as_str());
        claim.is_some_and(|claim| {
            docs.iter().any(|doc| {
                doc["kind"].as_str() == Some("PersistentVolumeClaim")
                    && doc["metadata"]["name"].as_str() == Some(claim)
            })
        }) && config.store.path.starts_with(&format!("{mount_path}/"))
    });
    problems.check(
        on_claim,
        format!(
            "store.path {:?} is not an absolute path on a mounted PersistentVolumeClaim",
            config.store.path
        ),
    );
    problems.check(!config.fleet.enabled(), "a single replica with a fleet URL");
    problems.assert_none("deploy/kubernetes/single.yaml");
}

#[test]
fn kubernetes_fleet_manifest() {
    let docs = manifest("fleet.yaml");
    let mut problems = Problems::default();
    let config = check_pod(&docs, &mut problems);
    let deployment = object(&docs, "Deployment", "sendgate");
    let (pod, container) = sendgate_pod(&docs);
    let replicas = deployment["spec"]["replicas"].as_i64().unwrap_or(1);
    problems.check(replicas >= 2, "a fleet of fewer than 2 replicas");
    problems.check(
        config.fleet.expected_replicas as i64 == replicas,
        format!(
            "fleet.expected_replicas {} is not the Deployment's {replicas} replicas",
            config.fleet.expected_replicas
        ),
    );
    // Nothing written: no store path, no writable volume.
    problems.check(config.store.path.is_empty(), "store.path set in a fleet");
    let writable_volumes = list(&pod["volumes"])
        .iter()
        .filter(|volume| volume["configMap"].is_badvalue())
        .count();
    problems.check(
        writable_volumes == 0,
        "a fleet replica with a writable volume",
    );
    problems.check(
        list(&container["env"]).iter().any(|var| {
            var["name"].as_str() == Some("SENDGATE_FINGERPRINT_KEY")
                && var["valueFrom"]["secretKeyRef"]["optional"].as_bool() != Some(true)
        }),
        "SENDGATE_FINGERPRINT_KEY: not required from the Secret (one key fleet-wide)",
    );

    // Redis: the URL names its Service; AOF fsynced always, on a claim.
    let missing = Yaml::BadValue;
    let service = find(&docs, "Service", "sendgate-redis");
    problems.check(service.is_some(), "no Service sendgate-redis");
    let port = list(&service.unwrap_or(&missing)["spec"]["ports"])
        .first()
        .and_then(|port| port["port"].as_i64())
        .unwrap_or(0);
    problems.check(
        config
            .fleet
            .redis_url
            .starts_with(&format!("redis://sendgate-redis:{port}")),
        format!(
            "fleet.redis_url {:?} does not name the Redis Service",
            config.fleet.redis_url
        ),
    );
    let redis = find(&docs, "StatefulSet", "sendgate-redis");
    problems.check(redis.is_some(), "no StatefulSet sendgate-redis");
    let redis = redis.unwrap_or(&missing);
    let redis_pod = &redis["spec"]["template"]["spec"];
    let redis_container = list(&redis_pod["containers"]).first().unwrap_or(&missing);
    let command = [
        strings(&redis_container["command"]),
        strings(&redis_container["args"]),
    ]
    .concat();
    let option = |name: &str| {
        command
            .iter()
            .position(|arg| arg == name)
            .and_then(|at| command.get(at + 1))
            .map(String::as_str)
    };
    problems.check(
        option("--appendonly") == Some("yes"),
        "Redis without --appendonly yes",
    );
    problems.check(
        option("--appendfsync") == Some("always"),
        "Redis without --appendfsync always",
    );
    // noeviction applies only under a maxmemory: without one Redis grows
    // until the container's limit kills it.
    problems.check(
        option("--maxmemory-policy") == Some("noeviction") && option("--maxmemory").is_some(),
        "Redis without --maxmemory and --maxmemory-policy noeviction",
    );
    let data_dir = option("--dir").unwrap_or("/data");
    problems.check(
        list(&redis_container["volumeMounts"]).iter().any(|mount| {
            mount["mountPath"].as_str() == Some(data_dir)
                && list(&redis["spec"]["volumeClaimTemplates"])
                    .iter()
                    .any(|claim| claim["metadata"]["name"] == mount["name"])
        }),
        format!("Redis' {data_dir} is not on a claim of its own"),
    );
    let redis_image = redis_container["image"].as_str().unwrap_or("");
    problems.check(
        pinned(redis_image),
        format!("Redis image {redis_image:?} not pinned"),
    );
    problems.assert_none("deploy/kubernetes/fleet.yaml");
}

#[test]
fn systemd_unit_has_state_reload_and_a_config_check() {
    let unit = unit_service();
    let mut problems = Problems::default();
    let get = |key: &str| unit.get(key).cloned().unwrap_or_default();
    problems.check(get("StateDirectory").len() == 1, "no StateDirectory");
    let state = format!(
        "/var/lib/{}",
        get("StateDirectory").first().map_or("", String::as_str)
    );
    let workdir = get("WorkingDirectory");
    let start = get("ExecStart")
        .first()
        .map(|line| unit_command(line))
        .unwrap_or_default();
    let config_arg = |argv: &[String]| {
        argv.iter()
            .position(|arg| arg == "--config")
            .and_then(|at| argv.get(at + 1).cloned())
    };
    let installed =
        Config::from_sources(&read("config/sendgate.toml"), std::iter::empty()).unwrap();
    // The store lands in the state directory: a relative path from
    // WorkingDirectory, or an absolute one given in Environment=.
    let store_in_state = workdir
        .first()
        .is_some_and(|dir| dir.trim_start_matches('-') == state)
        || get("Environment")
            .iter()
            .any(|pair| pair.contains(&format!("SENDGATE_STORE__PATH={state}/")));
    problems.check(
        store_in_state,
        format!("the store ({}) is not in {state}", installed.store.path),
    );
    problems.check(
        get("ExecReload")
            .iter()
            .any(|line| line.contains("kill -HUP $MAINPID")),
        "no ExecReload sending SIGHUP",
    );
    problems.check(
        get("ExecStartPre").iter().any(|line| {
            let argv = unit_command(line);
            argv.get(1).map(String::as_str) == Some("check-config")
                && argv.first() == start.first()
                && config_arg(&argv) == config_arg(&start)
        }),
        "no ExecStartPre running check-config on ExecStart's config",
    );
    problems.check(
        get("DynamicUser").first().map(String::as_str) == Some("yes"),
        "DynamicUser=yes dropped",
    );
    problems.check(
        get("ProtectSystem").first().map(String::as_str) == Some("strict"),
        "ProtectSystem=strict dropped",
    );
    let timeout_ms = get("TimeoutStopSec")
        .first()
        .and_then(|value| value.parse::<u64>().ok())
        .unwrap_or(90)
        * 1000;
    problems.check(
        timeout_ms > installed.shutdown.delay_ms + installed.shutdown.drain_timeout_ms,
        "TimeoutStopSec does not cover [shutdown] delay_ms + drain_timeout_ms",
    );
    problems.assert_none("deploy/sendgate.service");
}
