//! A fleet through real binaries and a real redis-server: replicas share
//! what they learn, an erasure or an import on one reaches all within a
//! second, nothing acknowledged is lost to a replica's or Redis' death, and
//! sends keep flowing while Redis is away.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::support::redis::{Redis, on_both};
use crate::support::{
    Answer, FakeUpstream, Served, admin_call, free_port, message_webhook, post_json, serve_sandbox,
};
use http::{Method, StatusCode};
use sendgate::sandbox::PHONE_NUMBER_ID;
use sendgate::webhook::sign;

const SECRET: &str = "fleet-secret";
const ADMIN_TOKEN: &str = "fleet-admin";

/// One sendgate process in the fleet, with its admin listener.
struct Replica {
    served: Served,
    admin: SocketAddr,
}

async fn replica(redis_url: &str, cluster: bool, downstream: &FakeUpstream) -> Replica {
    let admin = free_port();
    let (admin_listen, forward_to) = (admin.to_string(), format!("{}/hook", downstream.url()));
    let env = [
        ("SENDGATE_FLEET__REDIS_URL", redis_url),
        (
            "SENDGATE_FLEET__CLUSTER",
            if cluster { "true" } else { "false" },
        ),
        ("SENDGATE_ADMIN__LISTEN", admin_listen.as_str()),
        ("SENDGATE_ADMIN_TOKEN", ADMIN_TOKEN),
        ("SENDGATE_WEBHOOK__PATH", "/webhook"),
        ("SENDGATE_WEBHOOK__FORWARD_TO", forward_to.as_str()),
        ("SENDGATE_APP_SECRET", SECRET),
        ("SENDGATE_VERIFY_TOKEN", "unused"),
    ];
    let served = serve_sandbox(&[], &env, None).await;
    Replica { served, admin }
}

async fn fleet_of_three(redis_url: &str, cluster: bool) -> (FakeUpstream, Vec<Replica>) {
    let downstream = FakeUpstream::start().await;
    let mut replicas = Vec::new();
    for _ in 0..3 {
        replicas.push(replica(redis_url, cluster, &downstream).await);
    }
    // Each replica's invalidation subscriber is up once /readyz says so.
    for replica in &replicas {
        wait_until(Duration::from_secs(10), || async {
            let (status, body) =
                admin_call(replica.admin, Method::GET, "/readyz", Some(ADMIN_TOKEN), "").await;
            status == StatusCode::OK && body["redis"] == "up"
        })
        .await;
    }
    (downstream, replicas)
}

fn bsuid(i: u64) -> String {
    format!("US.8{i:019}")
}

fn phone(i: u64) -> String {
    format!("1650556{i:04}")
}

/// A message webhook from person `i` (phone shared), as Meta sends it.
fn webhook(i: u64) -> Vec<u8> {
    message_webhook(&bsuid(i), &phone(i), &format!("wamid.F{i}"))
}

async fn metrics(replica: &Replica) -> String {
    let authorization = format!("Bearer {ADMIN_TOKEN}");
    let headers = [("authorization", authorization.as_str())];
    let answer = crate::support::call(replica.admin, "GET", "/metrics", &headers, b"").await;
    String::from_utf8_lossy(&answer.body).into_owned()
}

async fn teach(replica: &Replica, i: u64) -> StatusCode {
    let body = webhook(i);
    let signature = sign(SECRET, &body);
    post_json(replica.served.addr, "/webhook", body, Some(&signature))
        .await
        .status
}

/// A campaign template to person `i` by BSUID alone: resolved when the
/// fleet knows their phone, blocked when it does not.
async fn campaign_to(replica: &Replica, i: u64) -> Answer {
    let body = format!(
        r#"{{"messaging_product":"whatsapp","recipient":"{}","type":"template","template":{{"name":"spring_sale","language":{{"code":"en_US"}}}}}}"#,
        bsuid(i)
    );
    post_json(
        replica.served.addr,
        &format!("/v21.0/{PHONE_NUMBER_ID}/marketing_messages"),
        body.into_bytes(),
        None,
    )
    .await
}

async fn phone_send(replica: &Replica, i: u64) -> Answer {
    let body = format!(
        r#"{{"messaging_product":"whatsapp","to":"{}","type":"text","text":{{"body":"hi"}}}}"#,
        phone(i)
    );
    post_json(
        replica.served.addr,
        &format!("/v21.0/{PHONE_NUMBER_ID}/messages"),
        body.into_bytes(),
        None,
    )
    .await
}

async fn wait_until<F, Fut>(limit: Duration, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while !check().await {
        assert!(started.elapsed() < limit, "not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    started.elapsed()
}

const RESOLVED: &str = "resolved: bsuid->phone";
const BLOCKED: &str = "blocked: campaign_needs_phone";

/// The first acceptance point, against one Redis or a cluster.
async fn replicas_share_what_they_learn(redis: Redis) {
    let (_downstream, replicas) = fleet_of_three(&redis.url(), redis.is_cluster()).await;
    let [a, b, c] = &replicas[..] else {
        unreachable!()
    };
    // B asks first, so its cache holds "no phone" for the person.
    assert_eq!(campaign_to(b, 1).await.decision(), BLOCKED);
    assert_eq!(teach(a, 1).await, StatusCode::OK);
    // B's cached "no phone" goes when A's invalidation reaches it, which
    // the design bounds at one second (a loaded machine may take a moment).
    wait_until(Duration::from_secs(1), || async {
        campaign_to(b, 1).await.decision() == RESOLVED
    })
    .await;
    let answer = campaign_to(b, 1).await;
    assert_eq!(answer.decision(), RESOLVED, "taught to A, resolved by B");
    assert_eq!(answer.json()["contacts"][0]["wa_id"], phone(1));
    assert_eq!(campaign_to(a, 1).await.decision(), RESOLVED);

    // Erasure on C: A and B (both with the phone cached) stop within 1 s.
    let (status, erased) = admin_call(
        c.admin,
        Method::DELETE,
        &format!("/admin/identities/{}", bsuid(1)),
        Some(ADMIN_TOKEN),
        "",
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{erased}");
    assert_eq!(erased["erased"], 1);
    for replica in [a, b] {
        let took = wait_until(Duration::from_secs(1), || async {
            campaign_to(replica, 1).await.decision() == BLOCKED
        })
        .await;
        assert!(took < Duration::from_secs(1));
    }

    // An import through C is visible on A.
    let line = format!(
        "{{\"bsuid\":\"{}\",\"phone\":\"{}\",\"number\":\"{PHONE_NUMBER_ID}\"}}\n",
        bsuid(2),
        phone(2)
    );
    assert_eq!(campaign_to(a, 2).await.decision(), BLOCKED);
    let (status, summary) = admin_call(
        c.admin,
        Method::POST,
        "/admin/identities",
        Some(ADMIN_TOKEN),
        &line,
    )
    .await;
    assert_eq!(
        (status, summary["imported"].as_u64()),
        (StatusCode::OK, Some(1))
    );
    wait_until(Duration::from_secs(1), || async {
        campaign_to(a, 2).await.decision() == RESOLVED
    })
    .await;
    let (status, found) = admin_call(
        a.admin,
        Method::GET,
        &format!("/admin/identities/{}", phone(2)),
        Some(ADMIN_TOKEN),
        "",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(found["records"][0]["bsuid"], bsuid(2));
    assert_eq!(found["records"][0]["source"], "admin");
}

on_both!(replicas_share_what_they_learn:
    replicas_share_identities_through_one_redis,
    replicas_share_identities_through_a_redis_cluster);
on_both!(nothing_acknowledged_is_lost:
    nothing_acknowledged_is_lost_to_sigkill_or_a_redis_restart,
    nothing_acknowledged_is_lost_in_a_cluster);
on_both!(sends_flow_while_redis_is_away:
    sends_flow_while_redis_is_away_and_the_fleet_recovers_by_itself,
    sends_flow_while_the_cluster_is_away_and_the_fleet_recovers);

async fn nothing_acknowledged_is_lost(mut redis: Redis) {
    let downstream = FakeUpstream::start().await;
    let mut first = replica(&redis.url(), redis.is_cluster(), &downstream).await;
    const PEOPLE: u64 = 20;
    for i in 0..PEOPLE {
        assert_eq!(teach(&first, 100 + i).await, StatusCode::OK, "person {i}");
    }
    // The replica that acknowledged dies without a chance to flush, and
    // Redis too (SIGKILL both): what was acknowledged is in the AOF.
    first.served.child.kill().unwrap();
    first.served.child.wait().unwrap();
    redis.restart();
    let second = replica(&redis.url(), redis.is_cluster(), &downstream).await;
    for i in 0..PEOPLE {
        let answer = campaign_to(&second, 100 + i).await;
        assert_eq!(answer.decision(), RESOLVED, "person {i}");
        assert_eq!(answer.json()["contacts"][0]["wa_id"], phone(100 + i));
    }
}

async fn sends_flow_while_redis_is_away(mut redis: Redis) {
    let downstream = FakeUpstream::start().await;
    let a = replica(&redis.url(), redis.is_cluster(), &downstream).await;
    assert_eq!(teach(&a, 300).await, StatusCode::OK);
    assert_eq!(campaign_to(&a, 300).await.decision(), RESOLVED);

    redis.kill();
    // Phone sends keep succeeding, each within the timeouts.
    for i in 0..20 {
        let started = Instant::now();
        let answer = phone_send(&a, i).await;
        assert_eq!(answer.status, StatusCode::OK, "phone send {i}");
        assert!(started.elapsed() < Duration::from_secs(2), "send {i} hung");
    }
    // The cached pair still answers; an unknown BSUID is "unknown".
    assert_eq!(campaign_to(&a, 300).await.decision(), RESOLVED);
    assert_eq!(campaign_to(&a, 301).await.decision(), BLOCKED);
    // A webhook that cannot be recorded gets a 503, so Meta retries.
    assert_eq!(teach(&a, 301).await, StatusCode::SERVICE_UNAVAILABLE);
    let (status, ready) = admin_call(a.admin, Method::GET, "/readyz", Some(ADMIN_TOKEN), "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ready["status"], "degraded: redis", "{ready}");
    assert!(metrics(&a).await.contains("sendgate_fleet_redis_up 0"));

    redis.restart();
    wait_until(Duration::from_secs(10), || async {
        teach(&a, 301).await == StatusCode::OK
    })
    .await;
    let (_, ready) = admin_call(a.admin, Method::GET, "/readyz", Some(ADMIN_TOKEN), "").await;
    assert_eq!(ready["status"], "ready", "{ready}");
    assert!(metrics(&a).await.contains("sendgate_fleet_redis_up 1"));
    assert_eq!(campaign_to(&a, 301).await.decision(), RESOLVED);
}

/// A Redis that stops answering without closing its connections (a hung
/// server, a partition) costs sends at most one probe's wait now and then,
/// not a timeout each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_redis_does_not_slow_every_send() {
    let redis = Redis::start(false);
    let downstream = FakeUpstream::start().await;
    let a = replica(&redis.url(), false, &downstream).await;
    assert_eq!(campaign_to(&a, 400).await.decision(), BLOCKED);
    let Redis::Single(server) = &redis else {
        unreachable!()
    };
    server.pause();
    let mut slow = 0;
    for i in 0..40 {
        // A BSUID never asked before: the lookup must go to Redis.
        let started = Instant::now();
        let answer = campaign_to(&a, 401 + i).await;
        let took = started.elapsed();
        assert_eq!(answer.decision(), BLOCKED, "unknown while Redis is silent");
        assert!(took < Duration::from_secs(2), "send {i} took {took:?}");
        if took > Duration::from_millis(100) {
            slow += 1;
        }
    }
    assert!(slow <= 10, "{slow} of 40 sends waited for the silent Redis");
    server.resume();
    // Back within a probe interval (1 s) or so.
    wait_until(Duration::from_secs(5), || async {
        teach(&a, 400).await == StatusCode::OK
    })
    .await;
    assert_eq!(campaign_to(&a, 400).await.decision(), RESOLVED);
}

/// Runs the sendgate binary as an operator would, from `dir`.
fn operator(dir: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_sendgate"))
        .args(args)
        .current_dir(dir)
        .env_remove("SENDGATE_CONFIG")
        .env_remove("RUST_LOG")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), text)
}

/// A single machine's store moves into the fleet, counted; then the
/// operator imports and audits against Redis while the fleet serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_migrates_a_store_and_imports_while_the_fleet_serves() {
    let redis = Redis::start(false);
    let url = redis.url();
    let dir = std::env::temp_dir().join(format!("sendgate-fleet-ops-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let store = dir.join("identities.redb");
    let store = store.to_str().unwrap();
    let rows = |people: std::ops::Range<u64>| {
        people
            .map(|i| format!("{},{},{PHONE_NUMBER_ID}\n", bsuid(i), phone(i)))
            .collect::<String>()
    };
    std::fs::write(
        dir.join("old.csv"),
        "bsuid,phone,number\n".to_owned() + &rows(500..503),
    )
    .unwrap();
    std::fs::write(
        dir.join("new.csv"),
        "bsuid,phone,number\n".to_owned() + &rows(600..602),
    )
    .unwrap();

    let single = [("SENDGATE_STORE__PATH", store)];
    let (ok, said) = operator(&dir, &["import", "old.csv", "--create"], &single);
    assert!(ok, "{said}");
    let both = [
        ("SENDGATE_STORE__PATH", store),
        ("SENDGATE_FLEET__REDIS_URL", url.as_str()),
    ];
    let (ok, said) = operator(
        &dir,
        &["migrate-store", "--from", "redb", "--to", "redis"],
        &both,
    );
    assert!(ok, "{said}");
    assert!(said.contains("migrated 3 records"), "{said}");
    assert!(said.contains("3 new"), "{said}");

    let downstream = FakeUpstream::start().await;
    let a = replica(&url, false, &downstream).await;
    for i in 500..503 {
        assert_eq!(
            campaign_to(&a, i).await.decision(),
            RESOLVED,
            "migrated {i}"
        );
    }
    let (_, found) = admin_call(
        a.admin,
        Method::GET,
        &format!("/admin/identities/{}", bsuid(500)),
        Some(ADMIN_TOKEN),
        "",
    )
    .await;
    assert_eq!(found["records"][0]["source"], "import", "provenance kept");

    // Import while A serves (its cache already says "no phone" for 600).
    assert_eq!(campaign_to(&a, 600).await.decision(), BLOCKED);
    let fleet = [("SENDGATE_FLEET__REDIS_URL", url.as_str())];
    let (ok, said) = operator(&dir, &["import", "new.csv"], &fleet);
    assert!(ok, "{said}");
    wait_until(Duration::from_secs(1), || async {
        campaign_to(&a, 600).await.decision() == RESOLVED
    })
    .await;
    std::fs::write(
        dir.join("list.txt"),
        format!("{}\n{}\n", bsuid(601), bsuid(999)),
    )
    .unwrap();
    let (ok, said) = operator(
        &dir,
        &["audit", "list.txt", "--number", PHONE_NUMBER_ID],
        &fleet,
    );
    assert!(ok, "{said}");
    assert!(said.contains(&phone(601)), "the audit read Redis: {said}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `rediss://` with a private CA (`fleet.ca_file`): the fleet works over TLS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_talks_to_redis_over_tls() {
    let dir = std::env::temp_dir().join(format!("sendgate-fleet-tls-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let ca = crate::support::Ca::new();
    let (leaf, leaf_key) = ca.issue(&["localhost"]);
    let file = |name: &str, text: String| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_owned()
    };
    let (ca_file, cert, key) = (
        file("ca.pem", ca.pem),
        file("redis.pem", leaf),
        file("redis.key", leaf_key),
    );
    let tls_port = free_port().port().to_string();
    let _redis = crate::support::redis::RedisServer::start_with(&[
        "--tls-port",
        &tls_port,
        "--tls-cert-file",
        &cert,
        "--tls-key-file",
        &key,
        "--tls-ca-cert-file",
        &ca_file,
        "--tls-auth-clients",
        "no",
    ]);
    let url = format!("rediss://localhost:{tls_port}/0");
    let downstream = FakeUpstream::start().await;
    let admin = free_port();
    let (admin_listen, forward_to) = (admin.to_string(), format!("{}/hook", downstream.url()));
    let env = [
        ("SENDGATE_FLEET__REDIS_URL", url.as_str()),
        ("SENDGATE_FLEET__CA_FILE", ca_file.as_str()),
        ("SENDGATE_ADMIN__LISTEN", admin_listen.as_str()),
        ("SENDGATE_ADMIN_TOKEN", ADMIN_TOKEN),
        ("SENDGATE_WEBHOOK__PATH", "/webhook"),
        ("SENDGATE_WEBHOOK__FORWARD_TO", forward_to.as_str()),
        ("SENDGATE_APP_SECRET", SECRET),
        ("SENDGATE_VERIFY_TOKEN", "unused"),
    ];
    let a = Replica {
        served: serve_sandbox(&[], &env, None).await,
        admin,
    };
    assert_eq!(teach(&a, 700).await, StatusCode::OK);
    assert_eq!(campaign_to(&a, 700).await.decision(), RESOLVED);
    let (_, ready) = admin_call(a.admin, Method::GET, "/readyz", Some(ADMIN_TOKEN), "").await;
    assert_eq!(ready["redis"], "up", "{ready}");
    let _ = std::fs::remove_dir_all(&dir);
}
