//! Nothing sendgate acknowledged learning is lost to `kill -9`: a real
//! `sendgate serve` process learns pairs from signed webhooks, is killed with
//! SIGKILL right after the last acknowledgement, and a new process on the
//! same store file resolves every one of them.

use std::net::SocketAddr;
use std::path::Path;

use crate::support::{Answer, FakeUpstream, Served, message_webhook, post_json, serve_sandbox};
use sendgate::sandbox::PHONE_NUMBER_ID;
use sendgate::webhook::sign;

const SECRET: &str = "durability-secret";
/// Pairs learned before the kill.
const PEOPLE: u64 = 40;

fn bsuid(i: u64) -> String {
    format!("US.9{i:019}")
}

fn phone(i: u64) -> String {
    format!("1650555{i:04}")
}

fn webhook(i: u64) -> Vec<u8> {
    message_webhook(&bsuid(i), &phone(i), &format!("wamid.D{i}"))
}

async fn serve(store: &Path, downstream: &FakeUpstream) -> Served {
    let forward_to = format!("{}/hook", downstream.url());
    let env = [
        ("SENDGATE_STORE__PATH", store.to_str().unwrap()),
        ("SENDGATE_ADMIN__LISTEN", ""),
        ("SENDGATE_WEBHOOK__PATH", "/webhook"),
        ("SENDGATE_WEBHOOK__FORWARD_TO", forward_to.as_str()),
        ("SENDGATE_APP_SECRET", SECRET),
        ("SENDGATE_VERIFY_TOKEN", "unused"),
    ];
    serve_sandbox(&[], &env, None).await
}

async fn campaign_to(addr: SocketAddr, i: u64) -> Answer {
    let body = format!(
        r#"{{"messaging_product":"whatsapp","recipient":"{}","type":"template","template":{{"name":"spring_sale","language":{{"code":"en_US"}}}}}}"#,
        bsuid(i)
    );
    post_json(
        addr,
        &format!("/v21.0/{PHONE_NUMBER_ID}/marketing_messages"),
        body.into_bytes(),
        None,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn learned_pairs_survive_sigkill() {
    let dir = std::env::temp_dir().join(format!("sendgate-durability-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = dir.join("identities.redb");
    let downstream = FakeUpstream::start().await;

    let mut first = serve(&store, &downstream).await;
    let addr = first.addr;
    assert_eq!(
        campaign_to(addr, 0).await.decision(),
        "blocked: campaign_needs_phone"
    );
    for i in 0..PEOPLE {
        let body = webhook(i);
        let signature = sign(SECRET, &body);
        let answer = post_json(addr, "/webhook", body, Some(&signature)).await;
        assert_eq!(answer.status, 200, "webhook {i} acknowledged");
    }
    // SIGKILL right after the last acknowledgement: no shutdown, no flush.
    first.child.kill().unwrap();
    first.child.wait().unwrap();
    assert_eq!(downstream.seen().len() as u64, PEOPLE);

    let second = serve(&store, &downstream).await;
    let addr = second.addr;
    for i in 0..PEOPLE {
        let answer = campaign_to(addr, i).await;
        assert_eq!(answer.decision(), "resolved: bsuid->phone", "person {i}");
        assert_eq!(answer.status, 200);
        assert_eq!(answer.json()["contacts"][0]["wa_id"], phone(i));
    }
    assert_eq!(
        campaign_to(addr, PEOPLE).await.decision(),
        "blocked: campaign_needs_phone"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
