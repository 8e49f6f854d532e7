//! Limits shared by a fleet, through real binaries and real redis-servers:
//! three replicas together send what one number may, Meta's back-off
//! answered through one replica holds on the others, the same on a Redis
//! Cluster, and a Redis outage leaves each replica limiting on its own at
//! its share until Redis is back.
//!
//! The number limit is 20/s ("coexistence", the one throughput an env
//! variable can spell) with a burst of 20, in reject mode; each burst runs
//! from several client tasks at once, round-robin over the replicas.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::support::redis::{Redis, on_both};
use crate::support::{ADMIN_TOKEN, FakeUpstream, Served, call, free_port, json, serve};
use http::StatusCode;
use sendgate::sandbox::PHONE_NUMBER_ID;

/// What Meta answers a number over its throughput (as HTTP 400).
const META_130429: &str =
    r#"{"error":{"message":"(#130429) Rate limit hit","type":"OAuthException","code":130429}}"#;

/// Starts one replica in front of `upstream`, sharing `redis_url`.
async fn replica(redis_url: &str, upstream: &FakeUpstream, env: &[(&str, &str)]) -> Served {
    let url = upstream.url();
    let mut all = vec![
        ("SENDGATE_FLEET__REDIS_URL", redis_url),
        ("SENDGATE_LIMITS__NUMBER__THROUGHPUT", "coexistence"),
        ("SENDGATE_LIMITS__NUMBER__MODE", "reject"),
        // One Redis call per send: the number's (each send has its own
        // recipient anyway).
        ("SENDGATE_LIMITS__PAIR__MODE", "off"),
        ("SENDGATE_ADMIN_TOKEN", ADMIN_TOKEN),
        ("RUST_LOG", "warn"),
    ];
    all.extend_from_slice(env);
    serve(&["--upstream", &url], &all, None, false).await
}

async fn replicas(redis_url: &str, upstream: &FakeUpstream, env: &[(&str, &str)]) -> Vec<Served> {
    let mut started = Vec::new();
    for _ in 0..3 {
        started.push(replica(redis_url, upstream, env).await);
    }
    started
}

fn text_to(phone: &str) -> Vec<u8> {
    format!(
        r#"{{"messaging_product":"whatsapp","to":"{phone}","type":"text","text":{{"body":"hi"}}}}"#
    )
    .into_bytes()
}

/// One send for `number` through the proxy at `addr`.
async fn send(addr: SocketAddr, number: &str, phone: &str) -> (StatusCode, serde_json::Value) {
    let path = format!("/v21.0/{number}/messages");
    let headers = [
        ("content-type", "application/json"),
        ("authorization", "Bearer test-token"),
    ];
    let answer = call(addr, "POST", &path, &headers, &text_to(phone)).await;
    let body = serde_json::from_slice(&answer.body).unwrap_or_default();
    (answer.status, body)
}

/// What a burst came to, as the clients saw it.
#[derive(Debug)]
struct Burst {
    ok: usize,
    limited: usize,
    elapsed: Duration,
    /// The slowest single answer.
    slowest: Duration,
}

/// `total` sends for the sandbox number, round-robin over `addrs`, from 10
/// client tasks at once; every answer must be a 200 or a 429 (code 130429).
async fn burst(addrs: &[SocketAddr], total: usize) -> Burst {
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..10 {
        let addrs = addrs.to_vec();
        tasks.spawn(async move {
            let mut answers = Vec::new();
            for i in (task..total).step_by(10) {
                let sent = Instant::now();
                let phone = format!("1631555{i:04}");
                let (status, body) = send(addrs[i % addrs.len()], PHONE_NUMBER_ID, &phone).await;
                answers.push((status, body, sent.elapsed()));
            }
            answers
        });
    }
    let mut burst = Burst {
        ok: 0,
        limited: 0,
        elapsed: Duration::ZERO,
        slowest: Duration::ZERO,
    };
    while let Some(answers) = tasks.join_next().await {
        for (status, body, took) in answers.unwrap() {
            match status {
                StatusCode::OK => burst.ok += 1,
                StatusCode::TOO_MANY_REQUESTS => {
                    assert_eq!(body["error"]["code"], 130429, "{body}");
                    burst.limited += 1;
                }
                other => panic!("a send answered {other}: {body}"),
            }
            burst.slowest = burst.slowest.max(took);
        }
    }
    burst.elapsed = started.elapsed();
    burst
}

/// The most a 20/s number with a burst of 20 may send in `elapsed` (5%
/// slack on the rate, a second at least).
fn fleet_allows(elapsed: Duration) -> usize {
    (20.0 + 20.0 * 1.05 * elapsed.as_secs_f64().max(1.0)) as usize
}

/// Waits until every replica limits through Redis: each sends a few times
/// for a number of its own, until that number's key shows in Redis (the
/// connection is made in the background, a cluster's topology read first).
/// Each `round` uses numbers of its own, so that a key left by an earlier
/// round (restored from the AOF) proves nothing.
async fn wait_until_shared(replicas: &[SocketAddr], round: usize, exists: impl Fn(&str) -> bool) {
    let started = Instant::now();
    for (i, addr) in replicas.iter().enumerate() {
        let number = format!("9000000000000{round}{i}");
        let key = format!("sg:lim:{{n:{number}}}");
        loop {
            // Five sends put the key 250 ms into the future: time to look.
            for n in 0..5 {
                send(*addr, &number, &format!("1650555{n:04}")).await;
            }
            if exists(&key) {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "replica {i} never limited through redis"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn exists_in(redis: &Redis, key: &str) -> bool {
    redis.cli(&["EXISTS", key]) == "1"
}

/// The replicas' settings for `redis`: a cluster is named so.
fn on(redis: &Redis) -> Vec<(&'static str, &'static str)> {
    match redis.is_cluster() {
        true => vec![("SENDGATE_FLEET__CLUSTER", "true")],
        false => Vec::new(),
    }
}

fn addrs(replicas: &[Served]) -> Vec<SocketAddr> {
    replicas.iter().map(|served| served.addr).collect()
}

on_both!(three_replicas_send_no_more_than_one_number_may:
    three_replicas_on_one_redis_send_no_more_than_one_number_may,
    three_replicas_on_a_redis_cluster_send_no_more_than_one_number_may);
on_both!(a_130429_through_one_replica_stops_the_number_on_another:
    metas_130429_through_one_replica_stops_the_number_on_another_on_one_redis,
    metas_130429_through_one_replica_stops_the_number_on_another_on_a_cluster);
on_both!(an_outage_limits_each_replica_at_its_share_until_redis_is_back:
    a_redis_outage_limits_each_replica_at_its_share_until_redis_is_back,
    a_cluster_outage_limits_each_replica_at_its_share_until_it_is_back);

async fn three_replicas_send_no_more_than_one_number_may(redis: Redis) {
    let upstream = FakeUpstream::start().await;
    let replicas = replicas(&redis.url(), &upstream, &on(&redis)).await;
    let addrs = addrs(&replicas);
    wait_until_shared(&addrs, 0, |key| exists_in(&redis, key)).await;
    let before = upstream.seen().len();

    let burst = burst(&addrs, 300).await;
    assert_eq!(burst.ok + burst.limited, 300);
    // Each replica on its own would let its own 20 go at once: 60 or more.
    assert!(
        (20..=fleet_allows(burst.elapsed)).contains(&burst.ok),
        "{burst:?}"
    );
    assert!(burst.elapsed < Duration::from_secs(5), "{burst:?}");
    assert_eq!(
        upstream.seen().len() - before,
        burst.ok,
        "only admitted sends reach Meta"
    );
}

async fn a_130429_through_one_replica_stops_the_number_on_another(redis: Redis) {
    let upstream_a = FakeUpstream::with(|_| json(StatusCode::BAD_REQUEST, META_130429)).await;
    let upstream_b = FakeUpstream::start().await;
    let a = replica(&redis.url(), &upstream_a, &on(&redis)).await;
    let admin = free_port();
    let admin_listen = admin.to_string();
    let mut env = on(&redis);
    env.push(("SENDGATE_ADMIN__LISTEN", &admin_listen));
    let b = replica(&redis.url(), &upstream_b, &env).await;

    let (status, body) = send(a.addr, PHONE_NUMBER_ID, "16315551234").await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "Meta's answer passes through"
    );
    assert_eq!(body["error"]["code"], 130429);

    let path = format!("/v21.0/{PHONE_NUMBER_ID}/messages");
    let headers = [
        ("content-type", "application/json"),
        ("authorization", "Bearer test-token"),
    ];
    let paused = call(b.addr, "POST", &path, &headers, &text_to("16315550000")).await;
    assert_eq!(paused.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(paused.graph_error_code(), 130429);
    assert_eq!(paused.decision(), "limited: number");
    let retry_after: u64 = paused.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((55..=60).contains(&retry_after), "{retry_after}");
    assert!(upstream_b.seen().is_empty(), "B never sent for the number");

    // B's admin API shows the fleet's back-off, though B itself never
    // heard Meta say anything.
    let authorization = format!("Bearer {ADMIN_TOKEN}");
    let limits = call(
        admin,
        "GET",
        "/admin/limits",
        &[("authorization", &authorization)],
        b"",
    )
    .await;
    assert_eq!(limits.status, StatusCode::OK);
    let numbers = limits.json()["live"]["numbers"].clone();
    let number = numbers
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["number"] == PHONE_NUMBER_ID)
        .unwrap_or_else(|| panic!("{numbers}"));
    assert!(number["backoff_secs"].as_f64().unwrap() > 50.0, "{number}");
}

async fn an_outage_limits_each_replica_at_its_share_until_redis_is_back(mut redis: Redis) {
    let upstream = FakeUpstream::start().await;
    // Two replicas expected: on its own each keeps to 10/s with a burst of 10.
    let mut env = on(&redis);
    env.extend([
        ("SENDGATE_FLEET__EXPECTED_REPLICAS", "2"),
        ("SENDGATE_FLEET__TIMEOUT_MS", "200"),
    ]);
    let replicas = replicas(&redis.url(), &upstream, &env).await;
    let addrs = addrs(&replicas);
    wait_until_shared(&addrs, 0, |key| exists_in(&redis, key)).await;
    let shared = burst(&addrs, 90).await;
    assert!(shared.ok <= fleet_allows(shared.elapsed), "{shared:?}");

    redis.kill();
    // A refusal Redis gave just before holds until its unit is due (GCRA
    // frees none sooner); past it, the replicas are on their own.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // Every send is still answered, none waits past the Redis deadline
    // (200 ms) by much, and one replica sends its share: a burst of 10,
    // then 10/s.
    let alone = burst(&addrs[..1], 60).await;
    assert_eq!(alone.ok + alone.limited, 60);
    assert!(alone.slowest < Duration::from_millis(1000), "{alone:?}");
    let share = (10.0 + 10.0 * 1.05 * alone.elapsed.as_secs_f64()) as usize + 1;
    assert!((10..=share).contains(&alone.ok), "{alone:?}");
    let all = burst(&addrs, 60).await;
    assert!(all.slowest < Duration::from_millis(1000), "{all:?}");

    // Back (the keys it had have expired): shared limiting resumes by itself.
    redis.restart();
    wait_until_shared(&addrs, 1, |key| exists_in(&redis, key)).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let resumed = burst(&addrs[..1], 30).await;
    assert!(
        resumed.ok >= 15,
        "one replica has the fleet's burst of 20 again, not its share of 10: {resumed:?}"
    );
    assert!(resumed.ok <= fleet_allows(resumed.elapsed), "{resumed:?}");
}
