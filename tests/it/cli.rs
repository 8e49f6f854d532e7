//! The binary as an operator and a newcomer use it: `check-config`, and the
//! README's `serve --sandbox` walkthrough (issue acceptance), over real sockets.

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::{Answer, free_port, serve_sandbox, signal};
use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rustix::process::Signal;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_sendgate");
const BSUID: &str = "US.13491208655302741918";

/// A config file of its own per text, in a directory of this test run.
fn config_file(text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("sendgate-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!(
        "{:x}.toml",
        text.len() * 31 + text.bytes().map(usize::from).sum::<usize>()
    ));
    std::fs::write(&path, text).unwrap();
    path
}

fn check_config(text: &str) -> std::process::Output {
    check_config_with(text, &[], &[])
}

/// `check-config` on `text` with `set` in its environment and `unset` out of it.
fn check_config_with(text: &str, set: &[(&str, &str)], unset: &[&str]) -> std::process::Output {
    let mut command = Command::new(BIN);
    command
        .args(["check-config", "--config"])
        .arg(config_file(text));
    for name in unset {
        command.env_remove(name);
    }
    command.envs(set.iter().copied());
    command.output().unwrap()
}

/// Trying the sandbox leaves the store a plain `serve` keeps alone: what
/// it is taught stays in memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sandbox_keeps_its_pairs_out_of_the_default_store() {
    let dir = std::env::temp_dir().join(format!("sendgate-sandbox-store-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (listen, admin) = (free_port(), free_port());
    let mut child = Command::new(BIN)
        .args(["serve", "--sandbox", "--listen", &listen.to_string()])
        .current_dir(&dir)
        .env_remove("SENDGATE_CONFIG")
        .env_remove("SENDGATE_STORE__PATH")
        .env("SENDGATE_ADMIN__LISTEN", admin.to_string())
        .env("SENDGATE_ADMIN_TOKEN", "try")
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while tokio::net::TcpStream::connect(admin).await.is_err() {
        assert!(started.elapsed() < Duration::from_secs(20), "no admin API");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let line = format!(r#"{{"bsuid":"{BSUID}","phone":"16315551234","number":"106540352242922"}}"#);
    let headers = [("authorization", "Bearer try")];
    let imported = crate::support::call(
        admin,
        "POST",
        "/admin/identities",
        &headers,
        line.as_bytes(),
    )
    .await;
    assert_eq!(imported.status, 200, "{:?}", imported.body);
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        !dir.join("sendgate-identities.redb").exists(),
        "the sandbox wrote into the default store"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// "started" means started: a serve that fails at start (here a webhook
/// relay without its secrets) never says it.
#[test]
fn a_serve_that_cannot_start_never_says_it_started() {
    let mut serve = Command::new(BIN);
    serve
        .args(["serve", "--listen", "127.0.0.1:0"])
        .current_dir(std::env::temp_dir())
        .env_remove("SENDGATE_CONFIG")
        .env_remove("SENDGATE_APP_SECRET")
        .env_remove("SENDGATE_VERIFY_TOKEN")
        .env("SENDGATE_STORE__PATH", "")
        .env("SENDGATE_ADMIN__LISTEN", "")
        .env("SENDGATE_WEBHOOK__PATH", "/webhook")
        .env("SENDGATE_WEBHOOK__FORWARD_TO", "http://127.0.0.1:9/hook")
        .env("RUST_LOG", "info");
    let output = exits_within(serve, Duration::from_secs(20));
    assert!(!output.status.success(), "{output:?}");
    let said = String::from_utf8_lossy(&output.stdout) + String::from_utf8_lossy(&output.stderr);
    assert!(said.contains("SENDGATE_APP_SECRET"), "{said}");
    assert!(!said.contains("sendgate started"), "{said}");
}

/// Every command that takes `--config` says what it is in its help.
#[test]
fn every_config_option_has_help_text() {
    for command in [
        "serve",
        "check-config",
        "import",
        "move-scope",
        "migrate-store",
        "audit",
    ] {
        let output = Command::new(BIN)
            .args([command, "--help"])
            .output()
            .unwrap();
        let help = String::from_utf8_lossy(&output.stdout);
        let lines: Vec<&str> = help.lines().collect();
        let at = lines
            .iter()
            .position(|line| line.trim_start().starts_with("--config"))
            .unwrap_or_else(|| panic!("{command}: no --config in\n{help}"));
        // Beside the option, or under it when clap wraps a long help.
        let text = lines[at..lines.len().min(at + 2)].join(" ");
        assert!(text.contains("Config file"), "{command}: {text:?}");
    }
}

#[test]
fn check_config_accepts_the_shipped_file() {
    let output = Command::new(BIN)
        .args([
            "check-config",
            "--config",
            concat!(env!("CARGO_MANIFEST_DIR"), "/config/sendgate.toml"),
        ])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
}

#[test]
fn check_config_names_the_bad_key_in_one_line() {
    let output = check_config("[policy]\nmode = \"enforcing\"\n");
    assert!(!output.status.success());
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("policy.mode"), "{stderr}");

    let output = check_config("[cache]\nidentity_capacity = 0\n");
    assert!(!output.status.success());
    assert!(
        String::from_utf8(output.stderr)
            .unwrap()
            .contains("cache.identity_capacity")
    );
}

/// What `serve` would refuse at start, `check-config` refuses too: here a
/// webhook relay without its secrets, and a CA file that holds no
/// certificate.
#[test]
fn check_config_runs_the_checks_serve_runs_before_it_starts() {
    let webhook = "[webhook]\npath = \"/webhook\"\nforward_to = \"http://127.0.0.1:9/hook\"\n";
    let secrets = ["SENDGATE_APP_SECRET", "SENDGATE_VERIFY_TOKEN"];
    let output = check_config_with(webhook, &[], &secrets);
    assert!(!output.status.success(), "{output:?}");
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("SENDGATE_APP_SECRET"), "{stderr}");

    let set = [
        ("SENDGATE_APP_SECRET", "app-secret-7f3a"),
        ("SENDGATE_VERIFY_TOKEN", "verify-token-7f3a"),
    ];
    let output = check_config_with(webhook, &set, &[]);
    assert!(output.status.success(), "{output:?}");
    let said =
        String::from_utf8(output.stdout).unwrap() + &String::from_utf8(output.stderr).unwrap();
    assert!(!said.contains("7f3a"), "a secret printed: {said}");

    let not_pem = config_file("this is not a certificate\n");
    let text = format!("upstream_ca_file = {:?}\n", not_pem.to_str().unwrap());
    let output = check_config(&text);
    assert!(!output.status.success(), "{output:?}");
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("upstream_ca_file"), "{stderr}");

    // The listener's certificate and key are read as serve reads them.
    let path = not_pem.to_str().unwrap();
    let text = format!("[tls]\ncert = {path:?}\nkey = {path:?}\n");
    let output = check_config(&text);
    assert!(!output.status.success(), "{output:?}");
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("tls.cert"), "{stderr}");
}

/// A TOML syntax error says where: the file, the line and the column.
#[test]
fn a_syntax_error_names_the_file_line_and_column() {
    let text = "[policy]\nmode = \"report\"\nprefer_phone = yes\n";
    let output = check_config(text);
    assert!(!output.status.success(), "{output:?}");
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    let at = format!("{}:3:16: ", config_file(text).display());
    assert!(stderr.contains(&at), "{at:?} not in {stderr}");
}

/// A value of the wrong kind says which values are allowed, whatever it
/// was instead (a word, a number).
#[test]
fn a_bad_value_says_the_allowed_values() {
    for (text, allowed) in [
        (
            "[policy]\nmode = \"enforcing\"\n",
            "\"enforce\" or \"report\"",
        ),
        ("[policy]\nmode = 3\n", "\"enforce\" or \"report\""),
        ("[log]\nformat = true\n", "\"text\" or \"json\""),
        (
            "[limits.pair]\nmode = \"on\"\n",
            "\"off\", \"reject\" or \"shape\"",
        ),
    ] {
        let output = check_config(text);
        assert!(!output.status.success(), "{text}: {output:?}");
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert!(
            stderr.contains(allowed),
            "{text}: {allowed} not in {stderr}"
        );
    }
}

/// A misspelt override is refused, by check-config and serve alike, with
/// the setting it was probably meant for.
#[test]
fn a_misspelt_environment_variable_stops_check_config_and_serve() {
    let said =
        "config error: SENDGATE_POLICY__MDOE: not a setting; did you mean SENDGATE_POLICY__MODE?";
    let output = check_config_with("", &[("SENDGATE_POLICY__MDOE", "report")], &[]);
    assert!(!output.status.success(), "{output:?}");
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(stderr.trim_end(), format!("sendgate: {said}"));

    let mut serve = Command::new(BIN);
    serve
        .args(["serve", "--listen", "127.0.0.1:0"])
        .current_dir(std::env::temp_dir())
        .env_remove("SENDGATE_CONFIG")
        .env("SENDGATE_STORE__PATH", "")
        .env("SENDGATE_ADMIN__LISTEN", "")
        .env("SENDGATE_POLICY__MDOE", "report");
    let output = exits_within(serve, Duration::from_secs(20));
    assert!(!output.status.success(), "{output:?}");
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains(said), "{stderr}");
}

/// Every line of a stream, parsed as a JSON object.
fn json_lines(stream: &[u8]) -> Vec<serde_json::Map<String, Value>> {
    String::from_utf8_lossy(stream)
        .lines()
        .map(|line| match serde_json::from_str(line) {
            Ok(Value::Object(object)) => object,
            _ => panic!("not a JSON log line: {line:?}"),
        })
        .collect()
}

/// With JSON logs, a fatal error is one JSON log line like the others
/// (timestamp, level, message, target), whether the config said so in the
/// file or the environment, and even when the config itself is what failed.
#[test]
fn a_fatal_error_is_a_json_log_line_when_the_logs_are_json() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = taken.local_addr().unwrap().to_string();
    let json_file =
        config_file("[log]\nformat = \"json\"\n[store]\npath = \"\"\n[admin]\nlisten = \"\"\n");
    let broken = config_file("[log]\nformat = \"json\"\nlisten = \n");
    // (arguments, environment, what the error says)
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);
    let cases: [Case<'_>; 3] = [
        // The port is taken: the config loaded, the start failed.
        (
            &[
                "serve",
                "--listen",
                &taken,
                "--config",
                json_file.to_str().unwrap(),
            ],
            &[],
            "cannot listen on",
        ),
        // A webhook without its secrets, JSON asked for by the environment.
        (
            &["serve", "--listen", "127.0.0.1:0"],
            &[
                ("SENDGATE_LOG__FORMAT", "json"),
                ("SENDGATE_STORE__PATH", ""),
                ("SENDGATE_ADMIN__LISTEN", ""),
                ("SENDGATE_WEBHOOK__PATH", "/webhook"),
                ("SENDGATE_WEBHOOK__FORWARD_TO", "http://127.0.0.1:9/hook"),
            ],
            "SENDGATE_APP_SECRET",
        ),
        // The file does not parse: the environment still says JSON.
        (
            &["check-config", "--config", broken.to_str().unwrap()],
            &[("SENDGATE_LOG__FORMAT", "json")],
            ":3:10: ",
        ),
    ];
    for (args, env, said) in cases {
        let mut command = Command::new(BIN);
        command
            .args(args)
            .current_dir(std::env::temp_dir())
            .env_remove("SENDGATE_CONFIG")
            .env_remove("SENDGATE_APP_SECRET")
            .env_remove("SENDGATE_VERIFY_TOKEN")
            .env_remove("RUST_LOG")
            .envs(env.iter().copied());
        let output = exits_within(command, Duration::from_secs(20));
        assert!(!output.status.success(), "{args:?}: {output:?}");
        json_lines(&output.stdout);
        let lines = json_lines(&output.stderr);
        assert_eq!(lines.len(), 1, "{args:?}: one line: {output:?}");
        let line = &lines[0];
        assert_eq!(line["level"], "ERROR", "{line:?}");
        assert!(
            line["message"].as_str().unwrap().contains(said),
            "{said:?}: {line:?}"
        );
        assert!(
            line["timestamp"].as_str().unwrap().ends_with('Z'),
            "{line:?}"
        );
        assert!(
            line["target"].as_str().unwrap().starts_with("sendgate"),
            "{line:?}"
        );
    }
    // Text logs: the plain line, as before.
    let output = check_config("[log]\nformat = \"text\"\nlisten = \n");
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.starts_with("sendgate: config error: "), "{stderr}");
}

/// Runs `command` to its end, killing it (and failing) if it is still
/// running after `limit`: a serve that should have refused to start.
fn exits_within(mut command: Command, limit: Duration) -> std::process::Output {
    let mut child = command
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > limit {
            let _ = child.kill();
            let output = child.wait_with_output().unwrap();
            panic!("still running after {limit:?}: {output:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

async fn call(addr: SocketAddr, method: &str, path: &str, body: &str) -> Answer {
    let client = Client::builder(TokioExecutor::new()).build_http();
    let request = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"))
        .header("content-type", "application/json")
        .header("authorization", "Bearer sandbox-token")
        .body(Full::new(Bytes::copy_from_slice(body.as_bytes())))
        .unwrap();
    let response = client.request(request).await.unwrap();
    let (parts, body) = response.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

async fn send(addr: SocketAddr, body: &str) -> Answer {
    let path = format!("/v21.0/{}/messages", sendgate::sandbox::PHONE_NUMBER_ID);
    call(addr, "POST", &path, body).await
}

/// The sends the sandbox received, read through the proxy like the README does.
async fn received_sends(addr: SocketAddr) -> Vec<Value> {
    let answer = call(addr, "GET", "/_sandbox/received", "").await;
    let all: Vec<Value> = serde_json::from_slice(&answer.body).unwrap();
    all.into_iter()
        .filter(|r| r["path"].as_str().unwrap().ends_with("/messages"))
        .collect()
}

fn template(name: &str) -> String {
    format!(
        r#"{{"messaging_product":"whatsapp","recipient":"{BSUID}","type":"template","template":{{"name":"{name}","language":{{"code":"en_US"}}}}}}"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandbox_walkthrough_meets_the_acceptance_points() {
    // Run from an empty directory: the embedded defaults apply.
    let admin = free_port();
    let admin_listen = admin.to_string();
    let env = [
        ("SENDGATE_STORE__PATH", ""),
        ("SENDGATE_ADMIN__LISTEN", admin_listen.as_str()),
        ("SENDGATE_ADMIN_TOKEN", "walkthrough"),
    ];
    let served = serve_sandbox(&[], &env, Some(admin)).await;
    let addr = served.addr;

    // A BSUID placed in `to` reaches the upstream in `recipient` and is delivered.
    let text = format!(
        r#"{{"messaging_product":"whatsapp","to":"{BSUID}","type":"text","text":{{"body":"hi"}}}}"#
    );
    let answer = send(addr, &text).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.decision(), "rewritten: to->recipient");
    let sends = received_sends(addr).await;
    assert_eq!(sends.len(), 1);
    assert_eq!(sends[0]["body"], text.replace("\"to\"", "\"recipient\""));
    assert_eq!(sends[0]["outcome"], "delivered");

    // A username gets a 400 with an integer code, and nothing reaches the upstream.
    let answer = send(
        addr,
        r#"{"messaging_product":"whatsapp","to":"@pablo.m","type":"text","text":{"body":"hi"}}"#,
    )
    .await;
    assert_eq!(answer.status, 400);
    assert_eq!(answer.graph_error_code(), 100);
    assert!(
        answer.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Usernames cannot be message targets")
    );
    assert_eq!(received_sends(addr).await.len(), 1);

    // A formatted phone reaches the upstream byte-identical.
    let phone = r#"{"messaging_product":"whatsapp","to":"+1 (631) 555-1234","type":"text","text":{"body":"hi"}}"#;
    assert_eq!(send(addr, phone).await.decision(), "forwarded");
    assert_eq!(received_sends(addr).await[1]["body"], phone);

    // Authentication and marketing templates to a BSUID alone are blocked...
    for name in ["otp_login", "spring_sale"] {
        let answer = send(addr, &template(name)).await;
        assert_eq!(answer.status, 400, "{name}");
        assert_eq!(answer.graph_error_code(), 131062, "{name}");
    }
    assert_eq!(received_sends(addr).await.len(), 2);

    // A send naming both teaches nothing: Meta delivers to `to` whatever
    // `recipient` says, so its 200 proves nothing about the pair.
    let both = format!(
        r#"{{"messaging_product":"whatsapp","to":"16315551234","recipient":"{BSUID}","type":"text","text":{{"body":"hi"}}}}"#
    );
    assert_eq!(send(addr, &both).await.status, 200);
    assert_eq!(send(addr, &template("otp_login")).await.status, 400);
    assert_eq!(received_sends(addr).await.len(), 3);

    // ...and go through, to the phone, once a trusted source (here the
    // operator, through the admin API) gives that BSUID a phone.
    let pair = format!(
        r#"{{"bsuid":"{BSUID}","phone":"16315551234","number":"{}"}}"#,
        sendgate::sandbox::PHONE_NUMBER_ID
    );
    let client = Client::builder(TokioExecutor::new()).build_http();
    let import = Request::post(format!("http://{admin}/admin/identities"))
        .header("authorization", "Bearer walkthrough")
        .body(Full::new(Bytes::from(pair)))
        .unwrap();
    let imported = client.request(import).await.unwrap();
    let summary = imported.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(
        serde_json::from_slice::<Value>(&summary).unwrap()["imported"],
        1
    );
    for name in ["otp_login", "spring_sale"] {
        let answer = send(addr, &template(name)).await;
        assert_eq!(answer.status, 200, "{name}: {:?}", answer.body);
        assert_eq!(answer.decision(), "resolved: bsuid->phone");
        assert_eq!(answer.json()["contacts"][0]["wa_id"], "16315551234");
    }
    let sends = received_sends(addr).await;
    assert_eq!(sends.len(), 5);
    assert_eq!(
        sends[3]["body"]
            .as_str()
            .unwrap()
            .matches("16315551234")
            .count(),
        1
    );
    assert!(
        sends.iter().all(|s| s["outcome"] == "delivered"),
        "{sends:#?}"
    );
}

/// GET on the admin listener with the test token.
async fn admin_get(addr: SocketAddr, path: &str) -> Value {
    let client = Client::builder(TokioExecutor::new()).build_http();
    let request = Request::get(format!("http://{addr}{path}"))
        .header("authorization", "Bearer cli-admin-token")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = client.request(request).await.unwrap();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&body).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_config_file_and_refuses_a_broken_one() {
    let dir = std::env::temp_dir().join(format!("sendgate-sighup-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("sendgate.toml");
    let admin = free_port();
    let head = format!("[admin]\nlisten = \"{admin}\"\n[store]\npath = \"\"\n");
    std::fs::write(
        &path,
        format!("{head}[limits.number]\nthroughput = \"high\"\n"),
    )
    .unwrap();
    let config = path.to_str().unwrap();
    let admin_listen = admin.to_string();
    let env = [
        ("SENDGATE_ADMIN_TOKEN", "cli-admin-token"),
        ("SENDGATE_ADMIN__LISTEN", admin_listen.as_str()),
    ];
    let mut served = serve_sandbox(&["--config", config], &env, Some(admin)).await;
    let throughput = |limits: &Value| limits["limits"]["number"]["throughput"].clone();
    assert_eq!(throughput(&admin_get(admin, "/admin/limits").await), "high");

    let hangup = |pid: u32| signal(pid, Signal::HUP);
    std::fs::write(&path, format!("{head}[limits.number]\nthroughput = 1\n")).unwrap();
    hangup(served.child.id());
    let started = Instant::now();
    while throughput(&admin_get(admin, "/admin/limits").await) != 1 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "SIGHUP did not reload"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // A broken file: refused, the process keeps serving with the old config.
    std::fs::write(
        &path,
        format!("{head}[limits.number]\nthroughput = \"warp\"\n"),
    )
    .unwrap();
    hangup(served.child.id());
    let started = Instant::now();
    loop {
        let metrics = {
            let client = Client::builder(TokioExecutor::new()).build_http();
            let request = Request::get(format!("http://{admin}/metrics"))
                .header("authorization", "Bearer cli-admin-token")
                .body(Full::new(Bytes::new()))
                .unwrap();
            let body = client
                .request(request)
                .await
                .unwrap()
                .into_body()
                .collect()
                .await
                .unwrap();
            String::from_utf8(body.to_bytes().to_vec()).unwrap()
        };
        if metrics.contains("sendgate_config_reloads_total{outcome=\"failure\"} 1") {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the refused reload was not counted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(served.child.try_wait().unwrap().is_none(), "still running");
    assert_eq!(throughput(&admin_get(admin, "/admin/limits").await), 1);
    let text =
        r#"{"messaging_product":"whatsapp","to":"16315551234","type":"text","text":{"body":"hi"}}"#;
    assert_eq!(send(served.addr, text).await.status, 200);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The serve wiring in-process, as `main` calls it: the sandbox as the
/// upstream, a send rewritten on its way, and a clean stop when the
/// shutdown future completes (no binary, no signal).
#[tokio::test]
async fn serve_wiring_runs_in_process_and_stops_on_its_shutdown_future() {
    use sendgate::cli::serve::{ServeArgs, serve_until};
    use sendgate::config::Config;

    let addr = free_port();
    let mut config = Config::from_sources("[store]\npath = \"\"\n", std::iter::empty()).unwrap();
    config.log.level = "error".into();
    // Side by side with other tests: no default admin port.
    config.admin.listen = String::new();
    let args = ServeArgs {
        listen: Some(addr.to_string()),
        sandbox: true,
        ..ServeArgs::default()
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(serve_until(args, config, async move {
        let _ = stopped.await;
    }));
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        assert!(Instant::now() < deadline, "serve did not start listening");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let body = format!(
        r#"{{"messaging_product":"whatsapp","to":"{BSUID}","type":"text","text":{{"body":"hi"}}}}"#
    );
    let answer = send(addr, &body).await;
    assert_eq!(
        answer.status,
        200,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    assert_eq!(answer.decision(), "rewritten: to->recipient");
    let received = received_sends(addr).await;
    assert_eq!(
        received.last().unwrap()["body"],
        body.replace("\"to\"", "\"recipient\"")
    );

    stop.send(()).unwrap();
    let result = tokio::time::timeout(Duration::from_secs(10), served)
        .await
        .expect("serve stops once its shutdown future completes")
        .unwrap();
    assert!(result.is_ok(), "{result:?}");
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}
