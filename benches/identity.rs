//! The identity cache at scale: memory per mapping and lookups per second on
//! one core, at 1 million and 10 million mappings, beside the general-purpose
//! cache it replaced (moka with String keys and values).
//!
//! Each figure comes from a fresh child process (this binary run again with
//! `IDENTITY_BENCH_CASE` set), so that memory freed by one case cannot hide
//! what the next one allocates.
//!
//! Run with `cargo bench --bench identity`.

use std::hint::black_box;
use std::process::Command;
use std::time::{Duration, Instant};

use moka::sync::Cache;
use sendgate::identity::PhoneCache;

/// Distinct BSUIDs looked up in the timing loop (cycled).
#[path = "common/rss.rs"]
mod rss;
use rss::rss_bytes;

const PROBES: usize = 1 << 20;

fn bsuid(i: u64) -> String {
    format!(
        "US.{:020}",
        13_491_208_655_302_741_918u64.wrapping_add(i.wrapping_mul(7_919))
    )
}

/// The scope of a business number without a portfolio, in the parts the
/// send path asks the cache with.
const SCOPE: [&str; 2] = ["number:", "106540352242922"];

fn phone(i: u64) -> String {
    format!("1{:010}", i % 10_000_000_000)
}

/// Fills a cache with `n` mappings, then times lookups of present keys on
/// this one thread. Prints one result line.
fn run_case(kind: &str, n: u64) {
    let before = rss_bytes();
    let (lookups_per_sec, after) = match kind {
        "phone_cache" => {
            let cache = PhoneCache::new(2 * n, Duration::from_secs(30 * 86_400));
            for i in 0..n {
                cache.insert(&SCOPE, &bsuid(i), &phone(i));
            }
            let after = rss_bytes();
            (
                time_lookups(n, |key| cache.get(&SCOPE, key).flatten()),
                after,
            )
        }
        _ => {
            let cache: Cache<String, String> = Cache::builder()
                .max_capacity(2 * n)
                .time_to_idle(Duration::from_secs(30 * 86_400))
                .build();
            for i in 0..n {
                cache.insert(format!("default\0{}", bsuid(i)), phone(i));
            }
            cache.run_pending_tasks();
            let after = rss_bytes();
            (
                time_lookups(n, |key| {
                    let mut composite = String::with_capacity(8 + key.len());
                    composite.push_str("default\0");
                    composite.push_str(key);
                    cache.get(&composite)
                }),
                after,
            )
        }
    };
    let per_mapping = after.saturating_sub(before) as f64 / n as f64;
    println!(
        "{kind:>13} {n:>10} mappings: {per_mapping:6.1} bytes/mapping, {:5.2} M lookups/s on one thread ({:.0} ns each)",
        lookups_per_sec / 1e6,
        1e9 / lookups_per_sec
    );
}

/// Lookups per second over the probe keys, for about two seconds.
fn time_lookups(n: u64, lookup: impl Fn(&str) -> Option<String>) -> f64 {
    let probes: Vec<String> = (0..PROBES as u64).map(|i| bsuid(i % n)).collect();
    let started = Instant::now();
    let mut done = 0u64;
    let mut hits = 0u64;
    // Every probe is present: the figure is for hits, the send path's case.
    while started.elapsed() < Duration::from_secs(2) {
        for key in probes.iter().take(100_000) {
            hits += u64::from(black_box(lookup(black_box(key))).is_some());
        }
        done += 100_000;
    }
    assert_eq!(hits, done, "every probe hits");
    done as f64 / started.elapsed().as_secs_f64()
}

fn main() {
    if let Ok(case) = std::env::var("IDENTITY_BENCH_CASE") {
        let (kind, n) = case.split_once(':').expect("KIND:N");
        run_case(kind, n.parse().expect("a count"));
        return;
    }
    // `cargo bench` passes --bench; any other arguments are ignored.
    let exe = std::env::current_exe().expect("own path");
    for case in [
        "phone_cache:1000000",
        "phone_cache:10000000",
        "moka_strings:1000000",
    ] {
        let status = Command::new(&exe)
            .env("IDENTITY_BENCH_CASE", case)
            .status()
            .expect("child runs");
        assert!(status.success(), "{case} failed");
    }
}
