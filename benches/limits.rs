//! The cost of the rate limits on the send path, and their memory.
//!
//! - `limits/admit/*`: one `Limits::admit` per send with every limit on
//!   (number, pair, client), for a warm key and for a new key each time,
//!   beside a naive limiter (one `Mutex<HashMap>` of token buckets).
//! - After the timings, two memory figures printed to stdout: resident
//!   memory per live pair key at 1 million keys, and a soak of 3 million
//!   distinct recipients in rounds, with idle state dropped between rounds
//!   as the proxy's housekeeping does, showing that memory stays flat.
//!
//! Run with `cargo bench --bench limits`.

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group};
use sendgate::Config;
use sendgate::limits::{Admission, ClientBucket, Limits};

#[path = "common/rss.rs"]
mod rss;
use rss::rss_bytes;

const NUMBER: &str = "106540352242922";
/// One sender's token, as its fingerprint keys the client limit.
const CRM: ClientBucket<'static> = ClientBucket {
    key: 0x3f9a_1c2b_4d5e_6f70,
    share: None,
};

/// Every limit on, with quotas so large that no key runs out during the
/// run, so that every measured send takes the admitted path.
fn all_limits() -> Limits {
    let text = r#"
        [limits.number]
        throughput = 4000000000
        [limits.pair]
        period_ms = 1
        burst = 4000000000
        [limits.client]
        mode = "reject"
        per_second = 4000000000
        burst = 4000000000
    "#;
    Limits::new(&Config::from_sources(text, std::iter::empty()).expect("bench config"))
}

/// The naive alternative: token buckets in one locked map per limit.
struct NaiveLimits {
    buckets: [Mutex<HashMap<String, (f64, Instant)>>; 3],
}

impl NaiveLimits {
    fn admit(&self, keys: [&str; 3]) -> bool {
        let now = Instant::now();
        keys.iter().zip(&self.buckets).all(|(key, buckets)| {
            let mut buckets = buckets.lock().expect("bench lock");
            let (tokens, last) = buckets.entry((*key).to_owned()).or_insert((4e9, now));
            *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * 4e9).min(4e9);
            *last = now;
            if *tokens >= 1.0 {
                *tokens -= 1.0;
                true
            } else {
                false
            }
        })
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime")
}

fn bench_admit(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("limits/admit");
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));

    let limits = all_limits();
    group.bench_function("ours/warm_key", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let started = Instant::now();
                for _ in 0..iters {
                    let admission =
                        limits.admit(NUMBER, Some("US.13491208655302741918"), CRM, false);
                    assert!(matches!(
                        black_box(admission.await),
                        Admission::Admitted { .. }
                    ));
                }
                started.elapsed()
            })
        })
    });

    let limits = all_limits();
    let mut next = 0u64;
    group.bench_function("ours/new_key", |b| {
        b.iter_custom(|iters| {
            let people: Vec<String> = (0..iters).map(|i| format!("US.{}", next + i)).collect();
            next += iters;
            rt.block_on(async {
                let started = Instant::now();
                for person in &people {
                    black_box(limits.admit(NUMBER, Some(person), CRM, false).await);
                }
                started.elapsed()
            })
        })
    });

    let naive = NaiveLimits {
        buckets: Default::default(),
    };
    group.bench_function("naive_mutex_map/warm_key", |b| {
        b.iter(|| {
            let pair = format!("{NUMBER}\0US.13491208655302741918");
            assert!(naive.admit([black_box("crm"), &pair, NUMBER]));
        })
    });
    group.finish();
}

fn memory_figures() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("runtime");
    rt.block_on(async {
        const KEYS: u64 = 1_000_000;
        let limits = all_limits();
        let before = rss_bytes();
        for i in 0..KEYS {
            limits.admit(NUMBER, Some(&format!("US.{i}")), CRM, false).await;
        }
        let after = rss_bytes();
        let pair_keys = limits.keys()[1].1;
        println!(
            "memory: {pair_keys} live pair keys, RSS +{:.1} MiB, {:.0} bytes per key",
            (after - before) as f64 / (1 << 20) as f64,
            (after - before) as f64 / pair_keys as f64
        );

        // Soak: 3 million distinct recipients in rounds of 500,000 with the
        // default pair limit; between rounds time passes and housekeeping
        // drops idle state, as in the proxy.
        let limits = Limits::new(&Config::from_sources("[limits.number]\nmode = \"off\"", std::iter::empty()).expect("config"));
        let mut person = 0u64;
        for round in 1..=6 {
            for _ in 0..500_000 {
                person += 1;
                limits.admit(NUMBER, Some(&format!("US.{person}")), CRM, false).await;
            }
            let live_before = limits.keys()[1].1;
            tokio::time::advance(Duration::from_secs(300)).await;
            limits.retain_recent();
            println!(
                "soak round {round}: {person} recipients so far, {live_before} live keys before housekeeping, {} after, RSS {:.1} MiB",
                limits.keys()[1].1,
                rss_bytes() as f64 / (1 << 20) as f64
            );
        }
    });
}

criterion_group!(benches, bench_admit);

fn main() {
    // Memory first, in a fresh process: after the timings, freed memory
    // would be reused and hide what new keys cost.
    memory_figures();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
