//! Rate limits (docs/design.md §5): per business number, per recipient pair, per
//! client, each a keyed GCRA limiter from governor.
//!
//! - **Number**: Meta's throughput per business phone number (80/s standard,
//!   1,000/s high, 20/s for numbers shared with the Business app). Over it
//!   Meta answers 130429; sendgate refuses first with the same code.
//! - **Pair**: one business number → one person, 1 per 6 s with bursts of 45.
//!   The key is the *person*: a BSUID when one is known for them, so the same
//!   person addressed by phone and by BSUID shares one bucket. Over it: 131056.
//! - **Client**: each sender gets its own share, keyed by its token's
//!   fingerprint (`client`), whatever `x-sendgate-client` it sends.
//!
//! Each limit rejects (429 with `Retry-After`) or shapes (waits up to a bound,
//! then rejects). Meta's own 130429/131056 answers put the number or the pair
//! on a back-off. Time comes from tokio's clock, so tests pause and advance it.
//!
//! In fleet mode ([`Limits::with_fleet`]) the limits and back-offs live in
//! Redis, shared by every replica (`fleet::limits`: one call per limit that
//! is on). The local limiters then hold this replica's share of each quota
//! (divided by `fleet.expected_replicas`) and decide only while Redis does
//! not answer, with the back-offs this replica learned.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher, RandomState};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use dashmap::DashMap;
use governor::clock::Clock;
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::{Quota, RateLimiter};
use serde::Serialize;
use tokio::time::Instant;

use crate::config::{Config, LimitMode, Throughput};
use crate::fleet::Redis;
use crate::fleet::limits::{
    LEASE_FOR, MAX_EXPONENT, STRIKES_OUTLIVE_BACKOFF, SharedKey, SharedLimiter, SharedQuota,
    TaggedKey, Verdict,
};
use crate::prehashed::PreHashed;

/// governor's clock, read from tokio's so that `tokio::time::pause` and
/// `advance` drive the limiters in tests.
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioClock;

impl Clock for TokioClock {
    type Instant = std::time::Instant;

    fn now(&self) -> std::time::Instant {
        Instant::now().into_std()
    }
}

/// Limiters are keyed by a 64-bit hash of the key's parts rather than by the
/// strings themselves: a check then allocates nothing, and a live key costs
/// a few dozen bytes. The hasher is seeded at random per process, so nobody
/// can aim a collision; an accidental one merely shares a bucket.
type Keyed =
    RateLimiter<u64, DashMapStateStore<u64, PreHashed>, TokioClock, StateInformationMiddleware>;

/// Hashes the parts of a key, each followed by a separator so that
/// ("ab", "c") and ("a", "bc") differ.
#[derive(Clone, Default)]
struct KeyHasher(RandomState);

impl KeyHasher {
    fn key(&self, parts: &[&str]) -> u64 {
        let mut hasher = self.0.build_hasher();
        for part in parts {
            part.hash(&mut hasher);
        }
        hasher.finish()
    }
}

/// Which limit spoke.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LimitKind {
    Number,
    Pair,
    Client,
}

impl LimitKind {
    pub fn as_str(self) -> &'static str {
        match self {
            LimitKind::Number => "number",
            LimitKind::Pair => "pair",
            LimitKind::Client => "client",
        }
    }

    /// The Graph error code a refusal carries: Meta's own for number and pair
    /// limits, the generic application rate limit (4) for a client's share.
    pub fn code(self) -> u32 {
        match self {
            LimitKind::Number => 130429,
            LimitKind::Pair => 131056,
            LimitKind::Client => 4,
        }
    }
}

/// A send refused by a limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    pub limit: LimitKind,
    /// When trying again can succeed.
    pub retry_after: Duration,
}

/// The result of asking the limits for one send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Go ahead, after having waited this long (shape mode).
    Admitted {
        waited: Duration,
    },
    /// Report mode: the send goes ahead, but this limit would have refused it.
    WouldLimit(LimitKind),
    Refused(Refusal),
}

/// One limit: its settings and a limiter per distinct quota.
struct Limit {
    kind: LimitKind,
    mode: LimitMode,
    max_wait: Duration,
    default: Bucket,
    /// Keys with a quota of their own (a number's tier, a client's share).
    overrides: HashMap<String, Bucket>,
}

/// One quota of a limit: the local limiter that holds it, and in fleet
/// mode the quota the whole fleet shares in Redis.
struct Bucket {
    /// The local limiter's quota: the configured one on a single machine,
    /// this replica's share of it in a fleet (the fallback while Redis
    /// does not answer).
    quota: Quota,
    limiter: Arc<Keyed>,
    /// The configured quota, which Redis enforces for the fleet.
    shared: SharedQuota,
    /// How many units of `shared` one Redis call asks for in a fleet.
    lease: u32,
}

/// What one limit is configured to do.
struct Settings {
    mode: LimitMode,
    max_wait_ms: u64,
    quota: Quota,
}

/// A quota of `n` per second with the given burst (`n` when absent). Zero is
/// refused by config validation; it maps to 1 rather than panicking.
fn per_second(n: u32, burst: Option<u32>) -> Quota {
    let rate = NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN);
    let burst = burst.and_then(NonZeroU32::new).unwrap_or(rate);
    Quota::per_second(rate).allow_burst(burst)
}

fn throughput_quota(throughput: Throughput) -> Quota {
    per_second(throughput.per_second(), None)
}

/// One replica's share of a fleet's quota: the rate and the burst divided
/// by the replicas expected, so that together they stay within it. The
/// period is multiplied, which divides the rate exactly (80/s over 3 is
/// 26.7/s, not 26); the burst is at least 1.
fn share_of(quota: Quota, replicas: u32) -> Quota {
    if replicas <= 1 {
        return quota;
    }
    let burst = NonZeroU32::new(quota.burst_size().get() / replicas).unwrap_or(NonZeroU32::MIN);
    Quota::with_period(quota.replenish_interval().saturating_mul(replicas))
        .unwrap_or(quota)
        .allow_burst(burst)
}

impl Bucket {
    /// The bucket of `quota` (the configured one), reusing `old`'s limiter
    /// when its quota did not change, so that it keeps its state across a
    /// reload.
    fn new(quota: Quota, replicas: u32, old: Option<&Bucket>) -> Self {
        let shared = SharedQuota::new(quota.replenish_interval(), quota.burst_size().get());
        let quota = share_of(quota, replicas);
        let limiter = match old {
            Some(old) if old.quota == quota => old.limiter.clone(),
            _ => Arc::new(
                RateLimiter::dashmap_with_clock_and_hasher(quota, TokioClock, PreHashed)
                    .with_middleware(),
            ),
        };
        Bucket {
            quota,
            limiter,
            shared,
            lease: shared.lease(replicas),
        }
    }
}

impl Limit {
    /// `replicas` divides every quota for the local limiters (1 on a single
    /// machine).
    fn new(
        kind: LimitKind,
        settings: Settings,
        overrides: HashMap<String, Quota>,
        replicas: u32,
        old: Option<&Limit>,
    ) -> Self {
        let default = Bucket::new(settings.quota, replicas, old.map(|old| &old.default));
        let overrides = overrides
            .into_iter()
            .map(|(key, quota)| {
                let previous = old.and_then(|old| old.overrides.get(&key));
                let bucket = Bucket::new(quota, replicas, previous);
                (key, bucket)
            })
            .collect();
        Limit {
            kind,
            mode: settings.mode,
            max_wait: Duration::from_millis(settings.max_wait_ms),
            default,
            overrides,
        }
    }

    fn bucket(&self, scope: &str) -> &Bucket {
        if self.overrides.is_empty() {
            &self.default
        } else {
            self.overrides.get(scope).unwrap_or(&self.default)
        }
    }

    /// Takes one unit for `key`, or says how long until one is available.
    fn check(&self, scope: &str, key: u64) -> Result<u32, Duration> {
        match self.bucket(scope).limiter.check_key(&key) {
            Ok(snapshot) => Ok(snapshot.remaining_burst_capacity()),
            Err(not_until) => Err(not_until.wait_time_from(TokioClock.now())),
        }
    }

    fn keys(&self) -> usize {
        self.default.limiter.len()
            + self
                .overrides
                .values()
                .map(|bucket| bucket.limiter.len())
                .sum::<usize>()
    }

    fn retain_recent(&self) {
        self.default.limiter.retain_recent();
        for bucket in self.overrides.values() {
            bucket.limiter.retain_recent();
        }
    }
}

/// A back-off imposed by Meta's own rate-limit answers.
#[derive(Debug, Clone, Copy)]
struct Backoff {
    until: Instant,
    /// Consecutive 131056 answers for a pair (the n of Meta's 4^n seconds).
    strikes: u32,
}

/// Back-offs outlive a config reload, so they are shared. They exist only
/// after Meta refused something, so the maps are nearly always empty, and
/// expired ones are dropped by housekeeping.
#[derive(Clone, Default)]
struct Backoffs {
    numbers: Arc<DashMap<u64, Backoff>>,
    pairs: Arc<DashMap<u64, Backoff>>,
    /// False only when both maps are empty, so that the common case skips
    /// them without touching their locks. A back-off inserted while
    /// housekeeping clears this can go unseen until the next housekeeping.
    any: Arc<AtomicBool>,
}

/// Live state per business number, for `GET /admin/limits`.
#[derive(Debug, Clone, Serialize)]
pub struct NumberState {
    pub number: String,
    /// Sends the number could make right now without waiting (as of its last send).
    pub budget: u32,
    /// Seconds left of a back-off Meta imposed, if any.
    pub backoff_secs: Option<f64>,
}

/// The client-limit bucket of one send: the token it came with, and the
/// configured client whose share applies (`None`: the default share).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ClientBucket<'a> {
    /// The sender's token fingerprint as a number (0 for no token).
    pub key: u64,
    pub share: Option<&'a str>,
}

/// All limits in force.
pub struct Limits {
    number: Limit,
    pair: Limit,
    client: Limit,
    number_backoff: Duration,
    pair_backoff_max_exponent: u32,
    backoffs: Backoffs,
    /// Remaining burst per number at its last send.
    budgets: Arc<DashMap<String, u32>>,
    hasher: KeyHasher,
    /// Fleet mode: the limits as every replica shares them in Redis. The
    /// local limiters above then hold this replica's share of each quota,
    /// and answer only while Redis does not.
    fleet: Option<Fleet>,
}

/// What fleet mode adds to the limits.
struct Fleet {
    /// Kept across reloads, with its connection.
    shared: Arc<SharedLimiter>,
    /// Units Redis granted ahead, per (limit, scope, key): a fast quota
    /// costs a Redis call per lease, not per send (`fleet::limits`).
    leases: Arc<DashMap<LeaseKey, Lease>>,
    /// Pairs that may carry strikes in Redis.
    struck: Arc<Struck>,
    /// Configured numbers, which `/admin/limits` shows before any send.
    configured: Vec<String>,
}

/// Units taken from Redis ahead of the sends that will spend them.
#[derive(Debug, Clone, Copy)]
struct Lease {
    left: u32,
    /// Unspent units lapse then (`fleet::limits::LEASE_FOR`).
    until: Instant,
    /// A call for more is on its way (one at a time).
    refreshing: bool,
    /// Redis said no unit is free before then: sends until then are
    /// refused here without asking (GCRA frees none sooner).
    refused_until: Instant,
}

impl Lease {
    fn new(now: Instant) -> Self {
        Lease {
            left: 0,
            until: now,
            refreshing: false,
            refused_until: now,
        }
    }

    /// Adds what Redis granted: to what is left if it has not lapsed.
    fn add(&mut self, granted: u32, now: Instant) {
        if self.until <= now {
            self.left = 0;
        }
        self.left = self.left.saturating_add(granted);
        self.until = now + LEASE_FOR;
    }
}

impl Fleet {
    /// Asks Redis for the next lease of a key in the background; what it
    /// grants joins the lease. A failure leaves the lease to lapse, and the
    /// next send asks (and meets the health gate) itself.
    fn refresh(&self, lease_key: LeaseKey, key: TaggedKey, quota: SharedQuota, wanted: u32) {
        let (shared, leases) = (self.shared.clone(), self.leases.clone());
        tokio::spawn(async move {
            let verdict = shared.check_tagged(&key, quota, wanted).await;
            if let Some(mut lease) = leases.get_mut(&lease_key) {
                lease.refreshing = false;
                if let Ok(Verdict::Admitted { granted, .. }) = verdict {
                    lease.add(granted, Instant::now());
                }
            }
        });
    }
}

/// A lease's key: the limit, a hash of the quota's scope, the key's hash.
type LeaseKey = (LimitKind, u64, u64);

/// Pairs (by local key) that this replica saw with strikes in Redis, and
/// when: a success clears Redis' strikes only for them, so that an ordinary
/// successful send costs no Redis call. A pair missing here (the set full,
/// another replica's strike this one never saw) keeps its strikes until
/// they expire in Redis.
#[derive(Default)]
struct Struck {
    pairs: DashMap<u64, Instant>,
    /// False while `pairs` is empty: a success then skips its locks.
    any: AtomicBool,
}

/// How long a pair backs off after its `strikes`-th 131056: 4^strikes
/// seconds, the exponent capped by config (`max_exponent`) and by
/// [`MAX_EXPONENT`].
fn pair_backoff(strikes: u32, max_exponent: u32) -> Duration {
    let exponent = strikes.min(max_exponent).min(MAX_EXPONENT);
    Duration::from_secs(4u64.saturating_pow(exponent))
}

/// Most pairs [`Struck`] remembers.
const STRUCK_CAPACITY: usize = 10_000;

impl Struck {
    fn mark(&self, pair: u64) {
        if self.pairs.len() < STRUCK_CAPACITY || self.pairs.contains_key(&pair) {
            self.pairs.insert(pair, Instant::now());
            self.any.store(true, Ordering::Relaxed);
        }
    }

    /// True when the pair was marked (and is no longer).
    fn take(&self, pair: u64) -> bool {
        self.any.load(Ordering::Relaxed) && self.pairs.remove(&pair).is_some()
    }

    /// Forgets pairs whose strikes have surely expired in Redis.
    fn retain_recent(&self, max_exponent: u32) {
        let longest = pair_backoff(max_exponent, max_exponent) + STRIKES_OUTLIVE_BACKOFF;
        let now = Instant::now();
        self.pairs
            .retain(|_, marked| now.saturating_duration_since(*marked) < longest);
        self.any.store(!self.pairs.is_empty(), Ordering::Relaxed);
    }
}

/// Most numbers whose budget is shown; numbers beyond it are not tracked.
const BUDGETS_CAPACITY: usize = 10_000;

/// How many numbers `/admin/limits` asks Redis about at once.
const PEEKS_IN_FLIGHT: usize = 32;

impl Limits {
    /// The limits of one process on its own.
    pub fn new(config: &Config) -> Self {
        Self::build(config, None, None)
    }

    /// Fleet mode: the limits every replica shares through `redis`, with
    /// local limiters at the fleet's quota divided by
    /// `fleet.expected_replicas` for when Redis does not answer.
    pub fn with_fleet(config: &Config, redis: Redis) -> Self {
        Self::build(config, None, Some(Arc::new(SharedLimiter::new(redis))))
    }

    /// The limits of a new config, keeping the state of every limiter whose
    /// quota did not change, every back-off in force and, in fleet mode,
    /// the Redis connection (`fleet.*` changes need a restart).
    pub fn reconfigured(&self, config: &Config) -> Self {
        let shared = self.fleet.as_ref().map(|fleet| fleet.shared.clone());
        Self::build(config, Some(self), shared)
    }

    fn build(config: &Config, old: Option<&Limits>, shared: Option<Arc<SharedLimiter>>) -> Self {
        let limits = &config.limits;
        let number_overrides = config
            .numbers
            .iter()
            .filter_map(|(id, number)| Some((id.clone(), throughput_quota(number.throughput?))))
            .collect();
        let client_overrides = config
            .clients
            .iter()
            .filter(|(_, client)| client.per_second.is_some() || client.burst.is_some())
            .map(|(name, client)| {
                let rate = client.per_second.unwrap_or(limits.client.per_second);
                // A client given only a rate may burst one second of it.
                let burst = client
                    .burst
                    .or(client.per_second)
                    .unwrap_or(limits.client.burst);
                (name.clone(), per_second(rate, Some(burst)))
            })
            .collect();
        let number = Settings {
            mode: limits.number.mode,
            max_wait_ms: limits.number.max_wait_ms,
            quota: throughput_quota(limits.number.throughput),
        };
        let pair_period = Duration::from_millis(limits.pair.period_ms.max(1));
        let pair = Settings {
            mode: limits.pair.mode,
            max_wait_ms: limits.pair.max_wait_ms,
            quota: Quota::with_period(pair_period)
                .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
                .allow_burst(NonZeroU32::new(limits.pair.burst).unwrap_or(NonZeroU32::MIN)),
        };
        let client = Settings {
            mode: limits.client.mode,
            max_wait_ms: limits.client.max_wait_ms,
            quota: per_second(limits.client.per_second, Some(limits.client.burst)),
        };
        let backoffs = old.map(|old| old.backoffs.clone()).unwrap_or_default();
        // The local limiters are a fallback in a fleet: each replica's
        // share. A lease, too, is at most a share of a burst.
        let replicas = match shared {
            Some(_) => config.fleet.expected_replicas.max(1),
            None => 1,
        };
        let fleet = shared.map(|shared| Fleet {
            shared,
            leases: Arc::default(),
            struck: old
                .and_then(|old| old.fleet.as_ref())
                .map(|fleet| fleet.struck.clone())
                .unwrap_or_default(),
            configured: config.numbers.keys().cloned().collect(),
        });
        Limits {
            number: Limit::new(
                LimitKind::Number,
                number,
                number_overrides,
                replicas,
                old.map(|o| &o.number),
            ),
            pair: Limit::new(
                LimitKind::Pair,
                pair,
                HashMap::new(),
                replicas,
                old.map(|o| &o.pair),
            ),
            client: Limit::new(
                LimitKind::Client,
                client,
                client_overrides,
                replicas,
                old.map(|o| &o.client),
            ),
            number_backoff: Duration::from_secs(limits.number.backoff_secs),
            pair_backoff_max_exponent: limits.pair.backoff_max_exponent,
            backoffs,
            budgets: old.map(|o| o.budgets.clone()).unwrap_or_default(),
            // Reused limiters hold keys hashed with the old seed.
            hasher: old.map(|o| o.hasher.clone()).unwrap_or_default(),
            fleet,
        }
    }

    /// Asks every limit for one send: the client's share first, then the
    /// pair, then the number, so that a number's unit (the scarcest, shared
    /// by every sender) is taken only when the send can go.
    pub async fn admit(
        &self,
        number: &str,
        person: Option<&str>,
        client: ClientBucket<'_>,
        report: bool,
    ) -> Admission {
        let mut waited = Duration::ZERO;
        for limit in [&self.client, &self.pair, &self.number] {
            if limit.mode == LimitMode::Off {
                // Before the key: a limit that is off costs no hashing.
                continue;
            }
            let (scope, key, shared) = match limit.kind {
                LimitKind::Client => {
                    let share = client.share.unwrap_or("");
                    let token = client.key;
                    (share, token, SharedKey::Client { share, token })
                }
                LimitKind::Pair => match person {
                    Some(person) => (
                        number,
                        self.pair_key(number, person),
                        SharedKey::Pair { number, person },
                    ),
                    None => continue,
                },
                LimitKind::Number => (
                    number,
                    self.hasher.key(&[number]),
                    SharedKey::Number(number),
                ),
            };
            match self.pass(limit, scope, key, shared, report).await {
                Ok(wait) => waited += wait,
                Err(refusal) if report => return Admission::WouldLimit(refusal.limit),
                Err(refusal) => return Admission::Refused(refusal),
            }
        }
        Admission::Admitted { waited }
    }

    /// One limit that is not off: in Redis in fleet mode, else (or while
    /// Redis does not answer) a local back-off first, then the local
    /// limiter; in shape mode, wait (bounded by `max_wait`) for the unit
    /// instead of refusing. Returns how long it waited. The clock is read
    /// only when a unit is not free.
    async fn pass(
        &self,
        limit: &Limit,
        scope: &str,
        key: u64,
        shared: SharedKey<'_>,
        report: bool,
    ) -> Result<Duration, Refusal> {
        let patience = if limit.mode == LimitMode::Shape {
            limit.max_wait
        } else {
            Duration::ZERO
        };
        let mut waited = Duration::ZERO;
        // Each round either succeeds or sleeps until a unit is due; a handful
        // of rounds covers contention, and `patience` bounds them anyway.
        for _ in 0..16 {
            let answer = match &self.fleet {
                // Boxed: a single machine's sends keep a small future.
                Some(fleet) => {
                    Box::pin(self.attempt_shared(fleet, limit, scope, key, shared)).await
                }
                None => None,
            };
            // One place for the local check, so that it stays inlined into
            // a single machine's path (~10% of an admit in benches/limits.rs).
            let answer = match answer {
                Some(answer) => answer,
                None => match self.backoff_left(limit.kind, key) {
                    Some(left) => Err(left),
                    None => limit.check(scope, key),
                },
            };
            if limit.kind == LimitKind::Number {
                // A number refused is one seen, with nothing left now.
                self.record_budget(scope, *answer.as_ref().unwrap_or(&0));
            }
            let wait = match answer {
                Ok(_) => return Ok(waited),
                Err(wait) => wait,
            };
            if report || waited + wait > patience {
                return Err(Refusal {
                    limit: limit.kind,
                    retry_after: wait,
                });
            }
            tokio::time::sleep(wait).await;
            waited += wait;
        }
        Err(Refusal {
            limit: limit.kind,
            retry_after: limit.max_wait,
        })
    }

    /// Takes one unit in Redis; `None` when Redis does not answer (the
    /// caller then asks the local limiter). Back-offs and strikes Redis
    /// reports are remembered here too, so that they still apply if Redis
    /// goes away.
    async fn attempt_shared(
        &self,
        fleet: &Fleet,
        limit: &Limit,
        scope: &str,
        key: u64,
        shared: SharedKey<'_>,
    ) -> Option<Result<u32, Duration>> {
        let bucket = limit.bucket(scope);
        let (quota, wanted) = (bucket.shared, bucket.lease);
        let lease_key = (limit.kind, self.hasher.key(&[scope]), key);
        if let Some(mut lease) = fleet.leases.get_mut(&lease_key) {
            let now = Instant::now();
            if now < lease.refused_until {
                return Some(Err(lease.refused_until - now));
            }
            if wanted > 1 && lease.left > 0 && now < lease.until {
                // A back-off Meta imposed outranks units already leased.
                if let Some(left) = self.backoff_left(limit.kind, key) {
                    return Some(Err(left));
                }
                lease.left -= 1;
                let left = lease.left;
                // Half spent: fetch the next lease while this one lasts, so
                // that a steady stream of sends never waits for Redis.
                if left <= wanted / 2 && !lease.refreshing {
                    lease.refreshing = true;
                    drop(lease);
                    fleet.refresh(lease_key, shared.tagged(), quota, wanted);
                }
                return Some(Ok(left));
            }
        }
        let verdict = fleet.shared.check(shared, quota, wanted).await.ok()?;
        Some(match verdict {
            Verdict::Admitted {
                remaining,
                strikes,
                granted,
            } => {
                if strikes > 0 && limit.kind == LimitKind::Pair {
                    fleet.struck.mark(key);
                }
                if granted > 1 {
                    let now = Instant::now();
                    fleet
                        .leases
                        .entry(lease_key)
                        .or_insert_with(|| Lease::new(now))
                        .add(granted - 1, now);
                }
                Ok(remaining)
            }
            Verdict::Limited { retry_after } => {
                let now = Instant::now();
                let mut lease = fleet
                    .leases
                    .entry(lease_key)
                    .or_insert_with(|| Lease::new(now));
                // A leasing quota asks again once half a lease is free, not
                // for every unit that trickles back at saturation.
                let gather = quota.interval() * (wanted / 2).saturating_sub(1);
                lease.refused_until = now + retry_after + gather;
                Err(retry_after + gather)
            }
            Verdict::BackingOff { left, strikes } => {
                if strikes > 0 && limit.kind == LimitKind::Pair {
                    fleet.struck.mark(key);
                }
                self.learn_backoff(limit.kind, key, left, strikes);
                Err(left)
            }
        })
    }

    fn pair_key(&self, number: &str, person: &str) -> u64 {
        self.hasher.key(&[number, person])
    }

    /// Updates a number's budget in place; a new number allocates once.
    fn record_budget(&self, number: &str, budget: u32) {
        if let Some(mut slot) = self.budgets.get_mut(number) {
            *slot = budget;
        } else if self.budgets.len() < BUDGETS_CAPACITY {
            self.budgets.insert(number.to_owned(), budget);
        }
    }

    fn backoff_left(&self, kind: LimitKind, key: u64) -> Option<Duration> {
        let backoffs = match kind {
            LimitKind::Number => &self.backoffs.numbers,
            LimitKind::Pair => &self.backoffs.pairs,
            LimitKind::Client => return None,
        };
        if !self.backoffs.any.load(Ordering::Relaxed) {
            return None;
        }
        let left = backoffs
            .get(&key)?
            .until
            .checked_duration_since(Instant::now())?;
        (!left.is_zero()).then_some(left)
    }

    /// Puts a number or pair on a local back-off of `wait`.
    fn learn_backoff(&self, kind: LimitKind, key: u64, wait: Duration, strikes: u32) {
        let backoffs = match kind {
            LimitKind::Number => &self.backoffs.numbers,
            LimitKind::Pair => &self.backoffs.pairs,
            LimitKind::Client => return,
        };
        let Some(until) = Instant::now().checked_add(wait) else {
            return;
        };
        backoffs.insert(key, Backoff { until, strikes });
        self.backoffs.any.store(true, Ordering::Relaxed);
    }

    /// What Meta answered a send: 130429 pauses the number, 131056 the pair
    /// for 4^n seconds (n growing with each consecutive answer), and a
    /// success clears the pair's count. In fleet mode each pause is written
    /// to Redis too (one call, awaited, so that no replica sends for the
    /// number once this send's answer is out); a success costs a call only
    /// for a pair this replica saw with strikes.
    pub async fn feedback(
        &self,
        number: &str,
        person: Option<&str>,
        meta_code: Option<u32>,
        success: bool,
    ) {
        // Only the two backoff answers read the clock: every successful
        // send comes through here.
        match meta_code {
            Some(130429) => {
                let key = self.hasher.key(&[number]);
                self.learn_backoff(LimitKind::Number, key, self.number_backoff, 1);
                if let Some(fleet) = &self.fleet {
                    let pause = fleet.shared.pause_number(number, self.number_backoff);
                    // Redis unreachable: the local back-off above still holds.
                    let _ = Box::pin(pause).await;
                }
            }
            Some(131056) => {
                let Some(person) = person else { return };
                let key = self.pair_key(number, person);
                let shared = match &self.fleet {
                    Some(fleet) => {
                        let max = self.pair_backoff_max_exponent;
                        let strike = fleet.shared.strike_pair(number, person, max);
                        let struck = Box::pin(strike).await.ok();
                        fleet.struck.mark(key);
                        struck
                    }
                    None => None,
                };
                let (strikes, wait) = shared.unwrap_or_else(|| {
                    let strikes = self.backoffs.pairs.get(&key).map_or(0, |b| b.strikes) + 1;
                    (
                        strikes,
                        pair_backoff(strikes, self.pair_backoff_max_exponent),
                    )
                });
                self.learn_backoff(LimitKind::Pair, key, wait, strikes);
            }
            _ if success => {
                let Some(person) = person else { return };
                if self.backoffs.any.load(Ordering::Relaxed) {
                    self.backoffs.pairs.remove(&self.pair_key(number, person));
                }
                if let Some(fleet) = &self.fleet
                    && fleet.struck.take(self.pair_key(number, person))
                {
                    let _ = Box::pin(fleet.shared.clear_strikes(number, person)).await;
                }
            }
            _ => {}
        }
    }

    /// Drops limiter state of keys idle long enough to be indistinguishable
    /// from fresh ones; run periodically so memory stays bounded. (Redis'
    /// keys expire by themselves.)
    pub fn retain_recent(&self) {
        for limit in [&self.number, &self.pair, &self.client] {
            limit.retain_recent();
        }
        let now = Instant::now();
        self.backoffs
            .numbers
            .retain(|_, backoff| backoff.until > now);
        self.backoffs.pairs.retain(|_, backoff| backoff.until > now);
        let any = !self.backoffs.numbers.is_empty() || !self.backoffs.pairs.is_empty();
        self.backoffs.any.store(any, Ordering::Relaxed);
        if let Some(fleet) = &self.fleet {
            let now = Instant::now();
            fleet
                .leases
                .retain(|_, lease| lease.until > now || lease.refused_until > now);
            fleet.struck.retain_recent(self.pair_backoff_max_exponent);
        }
    }

    /// Live keys per limit, for metrics (in fleet mode, the local
    /// fallback's).
    pub fn keys(&self) -> [(LimitKind, usize); 3] {
        [
            (LimitKind::Number, self.number.keys()),
            (LimitKind::Pair, self.pair.keys()),
            (LimitKind::Client, self.client.keys()),
        ]
    }

    /// Per-number live state for the admin API. In fleet mode, the
    /// fleet-wide state as Redis holds it, for every configured number and
    /// every number this replica has sent for; this replica's own view
    /// while Redis does not answer.
    pub async fn numbers(&self) -> Vec<NumberState> {
        if let Some(fleet) = &self.fleet
            && let Some(numbers) = self.numbers_shared(fleet).await
        {
            return numbers;
        }
        self.numbers_local()
    }

    fn numbers_local(&self) -> Vec<NumberState> {
        let now = Instant::now();
        let mut numbers: Vec<NumberState> = self
            .budgets
            .iter()
            .map(|entry| NumberState {
                number: entry.key().clone(),
                budget: *entry.value(),
                backoff_secs: self
                    .backoffs
                    .numbers
                    .get(&self.hasher.key(&[entry.key()]))
                    .and_then(|b| b.until.checked_duration_since(now))
                    .map(|left| left.as_secs_f64()),
            })
            .collect();
        numbers.sort_by(|a, b| a.number.cmp(&b.number));
        numbers
    }

    /// The numbers' state in Redis, a few calls at a time; `None` when a
    /// call fails.
    async fn numbers_shared(&self, fleet: &Fleet) -> Option<Vec<NumberState>> {
        let mut wanted: Vec<String> = fleet.configured.clone();
        wanted.extend(self.budgets.iter().map(|entry| entry.key().clone()));
        wanted.sort();
        wanted.dedup();
        let mut numbers = Vec::with_capacity(wanted.len());
        for chunk in wanted.chunks(PEEKS_IN_FLIGHT) {
            let mut peeks = tokio::task::JoinSet::new();
            for number in chunk {
                let shared = fleet.shared.clone();
                let quota = self.number.bucket(number).shared;
                let number = number.clone();
                peeks.spawn(async move {
                    let peeked = shared.peek_number(&number, quota).await;
                    peeked.map(|peeked| NumberState {
                        number,
                        budget: peeked.remaining,
                        backoff_secs: peeked.backoff.map(|left| left.as_secs_f64()),
                    })
                });
            }
            while let Some(peeked) = peeks.join_next().await {
                numbers.push(peeked.ok()?.ok()?);
            }
        }
        numbers.sort_by(|a, b| a.number.cmp(&b.number));
        Some(numbers)
    }

    /// Pairs currently backing off after Meta's 131056 (in fleet mode, those
    /// this replica heard of).
    pub fn pairs_backing_off(&self) -> usize {
        let now = Instant::now();
        self.backoffs
            .pairs
            .iter()
            .filter(|entry| entry.value().until > now)
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(text: &str) -> Limits {
        Limits::new(&Config::from_sources(text, std::iter::empty()).unwrap())
    }

    const NUMBER: &str = "106540352242922";

    fn refused(admission: Admission) -> Refusal {
        match admission {
            Admission::Refused(refusal) => refusal,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    fn admitted(admission: Admission) -> Duration {
        match admission {
            Admission::Admitted { waited } => waited,
            other => panic!("expected admission, got {other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn number_refuses_the_send_over_its_rate_and_passes_once_time_advances() {
        let limits = build("[limits.number]\nthroughput = 5\n");
        for _ in 0..5 {
            admitted(
                limits
                    .admit(NUMBER, None, ClientBucket::default(), false)
                    .await,
            );
        }
        let refusal = refused(
            limits
                .admit(NUMBER, None, ClientBucket::default(), false)
                .await,
        );
        assert_eq!(refusal.limit, LimitKind::Number);
        assert_eq!(refusal.limit.code(), 130429);
        assert_eq!(refusal.retry_after, Duration::from_millis(200));
        tokio::time::advance(Duration::from_millis(200)).await;
        admitted(
            limits
                .admit(NUMBER, None, ClientBucket::default(), false)
                .await,
        );
        // Another number has its own budget.
        admitted(
            limits
                .admit("999", None, ClientBucket::default(), false)
                .await,
        );
    }

    #[tokio::test(start_paused = true)]
    async fn shape_mode_waits_instead_of_refusing() {
        let limits =
            build("[limits.number]\nthroughput = 5\nmode = \"shape\"\nmax_wait_ms = 1000\n");
        for _ in 0..5 {
            assert_eq!(
                admitted(
                    limits
                        .admit(NUMBER, None, ClientBucket::default(), false)
                        .await
                ),
                Duration::ZERO
            );
        }
        assert_eq!(
            admitted(
                limits
                    .admit(NUMBER, None, ClientBucket::default(), false)
                    .await
            ),
            Duration::from_millis(200)
        );
        // Beyond the bound it still refuses: 5 more would need a full second.
        let mut waits = Vec::new();
        for _ in 0..6 {
            let started = Instant::now();
            let admission = limits
                .admit(NUMBER, None, ClientBucket::default(), false)
                .await;
            waits.push((admission, started.elapsed()));
        }
        assert!(
            waits
                .iter()
                .all(|(a, _)| matches!(a, Admission::Admitted { .. }))
        );
        let config = "[limits.number]\nthroughput = 1\nmode = \"shape\"\nmax_wait_ms = 500\n";
        let strict = build(config);
        admitted(
            strict
                .admit(NUMBER, None, ClientBucket::default(), false)
                .await,
        );
        assert_eq!(
            refused(
                strict
                    .admit(NUMBER, None, ClientBucket::default(), false)
                    .await
            )
            .retry_after,
            Duration::from_secs(1)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn pair_allows_a_burst_then_refuses_per_person() {
        let limits = build("");
        for _ in 0..45 {
            admitted(
                limits
                    .admit(NUMBER, Some("US.1"), ClientBucket::default(), false)
                    .await,
            );
        }
        let refusal = refused(
            limits
                .admit(NUMBER, Some("US.1"), ClientBucket::default(), false)
                .await,
        );
        assert_eq!(
            (refusal.limit, refusal.limit.code()),
            (LimitKind::Pair, 131056)
        );
        assert_eq!(refusal.retry_after, Duration::from_secs(6));
        admitted(
            limits
                .admit(NUMBER, Some("US.2"), ClientBucket::default(), false)
                .await,
        );
        admitted(
            limits
                .admit("777", Some("US.1"), ClientBucket::default(), false)
                .await,
        );
        tokio::time::advance(Duration::from_secs(6)).await;
        admitted(
            limits
                .admit(NUMBER, Some("US.1"), ClientBucket::default(), false)
                .await,
        );
    }

    #[tokio::test(start_paused = true)]
    async fn clients_have_independent_shares() {
        let limits = build(
            "[limits.client]\nmode = \"reject\"\nper_second = 2\nburst = 2\n\
             [clients.big]\nper_second = 10\ntokens = [\"00000000000000bb\"]\n",
        );
        let crm = ClientBucket {
            key: 1,
            share: None,
        };
        for _ in 0..2 {
            admitted(limits.admit(NUMBER, None, crm, false).await);
        }
        assert_eq!(
            refused(limits.admit(NUMBER, None, crm, false).await).limit,
            LimitKind::Client
        );
        let bot = ClientBucket {
            key: 2,
            share: None,
        };
        admitted(limits.admit(NUMBER, None, bot, false).await);
        let big = ClientBucket {
            key: 0xbb,
            share: Some("big"),
        };
        for _ in 0..3 {
            admitted(limits.admit(NUMBER, None, big, false).await);
        }
        // The same token under a share it is not given is still one bucket
        // of the default size.
        let big_default = ClientBucket {
            key: 0xbb,
            share: None,
        };
        for _ in 0..2 {
            admitted(limits.admit(NUMBER, None, big_default, false).await);
        }
        refused(limits.admit(NUMBER, None, big_default, false).await);
    }

    #[tokio::test(start_paused = true)]
    async fn meta_answers_impose_back_offs() {
        let limits = build("[limits.number]\nbackoff_secs = 30\n");
        limits.feedback(NUMBER, None, Some(130429), false).await;
        let refusal = refused(
            limits
                .admit(NUMBER, None, ClientBucket::default(), false)
                .await,
        );
        assert_eq!(
            (refusal.limit, refusal.retry_after),
            (LimitKind::Number, Duration::from_secs(30))
        );
        tokio::time::advance(Duration::from_secs(30)).await;
        admitted(
            limits
                .admit(NUMBER, None, ClientBucket::default(), false)
                .await,
        );

        // 131056: 4 s, then 16 s, growing; a success resets the count.
        limits
            .feedback(NUMBER, Some("US.1"), Some(131056), false)
            .await;
        assert_eq!(
            refused(
                limits
                    .admit(NUMBER, Some("US.1"), ClientBucket::default(), false)
                    .await
            )
            .retry_after,
            Duration::from_secs(4)
        );
        limits
            .feedback(NUMBER, Some("US.1"), Some(131056), false)
            .await;
        assert_eq!(
            refused(
                limits
                    .admit(NUMBER, Some("US.1"), ClientBucket::default(), false)
                    .await
            )
            .retry_after,
            Duration::from_secs(16)
        );
        admitted(
            limits
                .admit(NUMBER, Some("US.2"), ClientBucket::default(), false)
                .await,
        );
        tokio::time::advance(Duration::from_secs(16)).await;
        admitted(
            limits
                .admit(NUMBER, Some("US.1"), ClientBucket::default(), false)
                .await,
        );
        limits.feedback(NUMBER, Some("US.1"), None, true).await;
        limits
            .feedback(NUMBER, Some("US.1"), Some(131056), false)
            .await;
        assert_eq!(
            refused(
                limits
                    .admit(NUMBER, Some("US.1"), ClientBucket::default(), false)
                    .await
            )
            .retry_after,
            Duration::from_secs(4)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn report_mode_counts_without_refusing() {
        let limits = build("[limits.number]\nthroughput = 1\n");
        admitted(
            limits
                .admit(NUMBER, None, ClientBucket::default(), true)
                .await,
        );
        assert_eq!(
            limits
                .admit(NUMBER, None, ClientBucket::default(), true)
                .await,
            Admission::WouldLimit(LimitKind::Number)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn reconfiguring_keeps_unchanged_state_and_applies_new_quotas() {
        let old = build("[limits.number]\nthroughput = 2\n");
        for _ in 0..2 {
            admitted(
                old.admit(NUMBER, Some("US.1"), ClientBucket::default(), false)
                    .await,
            );
        }
        let same = old.reconfigured(
            &Config::from_sources("[limits.number]\nthroughput = 2\n", std::iter::empty()).unwrap(),
        );
        assert_eq!(
            refused(
                same.admit(NUMBER, None, ClientBucket::default(), false)
                    .await
            )
            .limit,
            LimitKind::Number,
            "state kept"
        );
        let raised = old.reconfigured(
            &Config::from_sources("[limits.number]\nthroughput = 1000\n", std::iter::empty())
                .unwrap(),
        );
        admitted(
            raised
                .admit(NUMBER, None, ClientBucket::default(), false)
                .await,
        );
    }

    #[tokio::test(start_paused = true)]
    async fn idle_keys_are_dropped() {
        let limits = build("[limits.number]\nmode = \"off\"\n");
        for i in 0..1000 {
            admitted(
                limits
                    .admit(
                        NUMBER,
                        Some(&format!("US.{i}")),
                        ClientBucket::default(),
                        false,
                    )
                    .await,
            );
        }
        assert_eq!(limits.keys()[1], (LimitKind::Pair, 1000));
        limits.retain_recent();
        assert_eq!(limits.keys()[1], (LimitKind::Pair, 1000), "still in use");
        // A bucket is indistinguishable from a fresh one once it has refilled
        // completely (45 sends of 6 s each at most).
        tokio::time::advance(Duration::from_secs(271)).await;
        limits.retain_recent();
        assert_eq!(limits.keys()[1], (LimitKind::Pair, 0));
    }

    /// Fleet mode against a real redis-server, in real time (Redis' clock
    /// is the one that counts).
    mod fleet {
        use super::*;
        use crate::fleet::limits::tests::LocalRedis;

        /// A replica: `text` over the defaults, its own Redis connection.
        fn replica(redis: &LocalRedis, text: &str, fleet: &str) -> Limits {
            let text = format!("{text}\n[fleet]\nredis_url = \"{}\"\n{fleet}", redis.url());
            let config = Config::from_sources(&text, std::iter::empty()).unwrap();
            Limits::with_fleet(&config, redis.connect())
        }

        async fn exists(redis: &LocalRedis, key: &str) -> bool {
            let mut cmd = redis::cmd("EXISTS");
            cmd.arg(key);
            redis.connect().query::<bool>(&cmd).await.unwrap()
        }

        async fn send(limits: &Limits, person: Option<&str>) -> Admission {
            limits
                .admit(NUMBER, person, ClientBucket::default(), false)
                .await
        }

        /// A fast quota leases: two replicas sending as fast as they can
        /// for 300 ms stay within what the fleet may send (the burst and
        /// 5% over the rate, plus a lease each that may lapse unspent), at
        /// a Redis call per many sends.
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn a_fast_quota_leases_and_still_holds_across_replicas() {
            let redis = LocalRedis::start();
            let text = "[limits.number]\nmode = \"reject\"\nthroughput = 2000\n\
                        [limits.pair]\nmode = \"off\"";
            let fleet = "expected_replicas = 2";
            let connections = [redis.connect(), redis.connect()];
            let calls = prometheus_client::metrics::counter::Counter::<u64>::default();
            let replicas: Vec<Arc<Limits>> = connections
                .into_iter()
                .map(|connection| {
                    connection.count_calls_in(calls.clone());
                    let text = format!("{text}\n[fleet]\nredis_url = \"{}\"\n{fleet}", redis.url());
                    let config = Config::from_sources(&text, std::iter::empty()).unwrap();
                    Arc::new(Limits::with_fleet(&config, connection))
                })
                .collect();
            let started = std::time::Instant::now();
            let mut tasks = tokio::task::JoinSet::new();
            for replica in replicas {
                tasks.spawn(async move {
                    let (mut admitted, mut asked) = (0u64, 0u64);
                    while started.elapsed() < Duration::from_millis(300) {
                        asked += 1;
                        if matches!(send(&replica, None).await, Admission::Admitted { .. }) {
                            admitted += 1;
                        }
                    }
                    (admitted, asked)
                });
            }
            let (mut admitted, mut asked) = (0, 0);
            while let Some(done) = tasks.join_next().await {
                let (a, b) = done.unwrap();
                (admitted, asked) = (admitted + a, asked + b);
            }
            let elapsed = started.elapsed().as_secs_f64();
            // Burst 2,000 (one second of rate), 2,000/s; a lease is 20 ms
            // of rate (40 units).
            let allowed = 2000.0 + 2000.0 * 1.05 * elapsed + 2.0 * 40.0;
            assert!(
                admitted as f64 <= allowed,
                "{admitted} admitted, {allowed} allowed"
            );
            assert!(admitted >= 2000, "the burst went: {admitted}");
            assert!(
                calls.get() * 10 <= admitted,
                "{} Redis calls for {admitted} admitted of {asked}",
                calls.get()
            );
        }

        #[tokio::test]
        async fn replicas_share_one_number_budget() {
            let redis = LocalRedis::start();
            let text = "[limits.number]\nthroughput = 10\n";
            let replicas = [replica(&redis, text, ""), replica(&redis, text, "")];
            let mut admitted = 0;
            let mut refusal = None;
            for i in 0..20 {
                match send(&replicas[i % 2], None).await {
                    Admission::Admitted { .. } => admitted += 1,
                    Admission::Refused(refused) => refusal = Some(refused),
                    other => panic!("{other:?}"),
                }
            }
            // 10 at once; at 10/s, one more if the loop took 100 ms.
            assert!((10..=11).contains(&admitted), "{admitted}");
            let refusal = refusal.unwrap();
            assert_eq!(refusal.limit, LimitKind::Number);
            assert!(refusal.retry_after <= Duration::from_millis(100));
        }

        #[tokio::test]
        async fn without_redis_each_replica_keeps_to_its_share() {
            let mut redis = LocalRedis::start();
            let limits = replica(
                &redis,
                "[limits.number]\nthroughput = 20\n",
                "expected_replicas = 4\ntimeout_ms = 200\n",
            );
            redis.kill();
            let started = std::time::Instant::now();
            let mut admitted = 0;
            let mut refusal = None;
            for _ in 0..20 {
                match send(&limits, None).await {
                    Admission::Admitted { .. } => admitted += 1,
                    Admission::Refused(refused) => refusal = Some(refused),
                    other => panic!("{other:?}"),
                }
            }
            assert!(
                started.elapsed() < Duration::from_millis(400),
                "no send waits for a dead Redis past its deadline: {:?}",
                started.elapsed()
            );
            // 20/s over 4 replicas: a burst of 5, then one per 200 ms.
            assert!((5..=6).contains(&admitted), "{admitted}");
            assert!(refusal.unwrap().retry_after <= Duration::from_millis(200));

            // Back: shared limiting resumes by itself (the fleet's burst of 20).
            redis.restart();
            let started = std::time::Instant::now();
            loop {
                send(&limits, None).await;
                // Written by the send, gone 50 ms later: ask at once.
                if exists(&redis, "sg:lim:{n:106540352242922}").await {
                    break;
                }
                assert!(started.elapsed() < Duration::from_secs(8), "never resumed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            // The sends while it came back took what they took: start full.
            tokio::time::sleep(Duration::from_secs(1)).await;
            let mut admitted = 0;
            for _ in 0..15 {
                if let Admission::Admitted { .. } = send(&limits, None).await {
                    admitted += 1;
                }
            }
            assert!(admitted >= 10, "more than the local share of 5: {admitted}");
        }

        #[tokio::test]
        async fn metas_answers_through_one_replica_hold_on_another() {
            let redis = LocalRedis::start();
            let a = replica(&redis, "", "");
            let b = replica(&redis, "", "");
            a.feedback(NUMBER, None, Some(130429), false).await;
            let paused = refused(send(&b, None).await);
            assert_eq!(paused.limit, LimitKind::Number);
            assert!(paused.retry_after > Duration::from_secs(59));

            let pair = "sg:str:{p:106540352242922:US.1}";
            a.feedback("777", Some("US.1"), Some(131056), false).await;
            a.feedback(NUMBER, Some("US.1"), Some(131056), false).await;
            let refusal = refused(
                b.admit("777", Some("US.1"), ClientBucket::default(), false)
                    .await,
            );
            assert_eq!(refusal.limit, LimitKind::Pair);
            assert!(refusal.retry_after > Duration::from_secs(3));
            // The back-off over (as if 4 s had passed), B sends and sees the
            // strike, so its success clears it, for every replica.
            let mut del = redis::cmd("DEL");
            del.arg("sg:off:{p:777:US.1}").arg("sg:off:{n:777}");
            redis.connect().query::<()>(&del).await.unwrap();
            admitted(
                b.admit("777", Some("US.1"), ClientBucket::default(), false)
                    .await,
            );
            assert!(exists(&redis, "sg:str:{p:777:US.1}").await);
            b.feedback("777", Some("US.1"), None, true).await;
            assert!(!exists(&redis, "sg:str:{p:777:US.1}").await);
            // A struck the other pair itself: its own success clears it.
            assert!(exists(&redis, pair).await);
            a.feedback(NUMBER, Some("US.1"), None, true).await;
            assert!(!exists(&redis, pair).await);
            // Nothing left that a success would clear.
            assert!(b.fleet.as_ref().unwrap().struck.pairs.is_empty());
        }

        #[tokio::test]
        async fn shape_and_report_modes_read_the_fleets_budget() {
            let redis = LocalRedis::start();
            let text = "[limits.number]\nthroughput = 5\nmode = \"shape\"\nmax_wait_ms = 1000\n";
            let a = replica(&redis, text, "");
            let b = replica(&redis, text, "");
            for _ in 0..5 {
                admitted(send(&a, None).await);
            }
            let waited = admitted(send(&b, None).await);
            assert!(
                waited > Duration::from_millis(100) && waited <= Duration::from_millis(250),
                "{waited:?}"
            );
            let report = b.admit(NUMBER, None, ClientBucket::default(), true).await;
            assert_eq!(report, Admission::WouldLimit(LimitKind::Number));
        }

        #[tokio::test]
        async fn admin_state_is_the_fleets_and_survives_a_reload() {
            let redis = LocalRedis::start();
            let text = "[numbers.\"106540352242922\"]\nthroughput = 10\n[numbers.\"777\"]\n";
            let a = replica(&redis, text, "");
            let b = replica(&redis, text, "");
            for _ in 0..3 {
                admitted(send(&a, None).await);
            }
            a.feedback(NUMBER, None, Some(130429), false).await;
            // B never sent: it shows what Redis holds for the configured numbers.
            let numbers = b.numbers().await;
            assert_eq!(numbers.len(), 2, "{numbers:?}");
            assert_eq!((numbers[0].number.as_str(), numbers[0].budget), (NUMBER, 7));
            assert!(numbers[0].backoff_secs.unwrap() > 59.0);
            assert_eq!(
                (
                    numbers[1].number.as_str(),
                    numbers[1].budget,
                    numbers[1].backoff_secs
                ),
                ("777", 80, None)
            );
            // A reload keeps the connection: the budget spent is still spent.
            let reloaded = b.reconfigured(
                &Config::from_sources(
                    &format!("{text}[fleet]\nredis_url = \"{}\"\n", redis.url()),
                    std::iter::empty(),
                )
                .unwrap(),
            );
            assert_eq!(
                refused(send(&reloaded, None).await).limit,
                LimitKind::Number
            );
            assert_eq!(reloaded.numbers().await[0].budget, 7);
        }
    }
}
