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
    default_quota: Quota,
    default: Arc<Keyed>,
    /// Keys with a quota of their own (a number's tier, a client's share).
    overrides: HashMap<String, (Quota, Arc<Keyed>)>,
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

impl Limit {
    fn new(
        kind: LimitKind,
        settings: Settings,
        overrides: HashMap<String, Quota>,
        old: Option<&Limit>,
    ) -> Self {
        // A limiter whose quota did not change keeps its state across a reload.
        let reuse = |quota: Quota, previous: Option<&(Quota, Arc<Keyed>)>| match previous {
            Some((old_quota, limiter)) if *old_quota == quota => limiter.clone(),
            _ => Arc::new(
                RateLimiter::dashmap_with_clock_and_hasher(quota, TokioClock, PreHashed)
                    .with_middleware(),
            ),
        };
        let default_quota = settings.quota;
        let default = match old {
            Some(old) if old.default_quota == default_quota => old.default.clone(),
            _ => reuse(default_quota, None),
        };
        let overrides = overrides
            .into_iter()
            .map(|(key, quota)| {
                let limiter = reuse(quota, old.and_then(|old| old.overrides.get(&key)));
                (key, (quota, limiter))
            })
            .collect();
        Limit {
            kind,
            mode: settings.mode,
            max_wait: Duration::from_millis(settings.max_wait_ms),
            default_quota,
            default,
            overrides,
        }
    }

    /// Takes one unit for `key`, or says how long until one is available.
    fn check(&self, scope: &str, key: u64) -> Result<u32, Duration> {
        let limiter = if self.overrides.is_empty() {
            &self.default
        } else {
            self.overrides
                .get(scope)
                .map_or(&self.default, |(_, limiter)| limiter)
        };
        match limiter.check_key(&key) {
            Ok(snapshot) => Ok(snapshot.remaining_burst_capacity()),
            Err(not_until) => Err(not_until.wait_time_from(TokioClock.now())),
        }
    }

    fn keys(&self) -> usize {
        self.default.len() + self.overrides.values().map(|(_, l)| l.len()).sum::<usize>()
    }

    fn retain_recent(&self) {
        self.default.retain_recent();
        for (_, limiter) in self.overrides.values() {
            limiter.retain_recent();
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
}

/// Most numbers whose budget is shown; numbers beyond it are not tracked.
const BUDGETS_CAPACITY: usize = 10_000;

impl Limits {
    pub fn new(config: &Config) -> Self {
        Self::build(config, None)
    }

    /// The limits of a new config, keeping the state of every limiter whose
    /// quota did not change and every back-off in force.
    pub fn reconfigured(&self, config: &Config) -> Self {
        Self::build(config, Some(self))
    }

    fn build(config: &Config, old: Option<&Limits>) -> Self {
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
        Limits {
            number: Limit::new(
                LimitKind::Number,
                number,
                number_overrides,
                old.map(|o| &o.number),
            ),
            pair: Limit::new(LimitKind::Pair, pair, HashMap::new(), old.map(|o| &o.pair)),
            client: Limit::new(
                LimitKind::Client,
                client,
                client_overrides,
                old.map(|o| &o.client),
            ),
            number_backoff: Duration::from_secs(limits.number.backoff_secs),
            pair_backoff_max_exponent: limits.pair.backoff_max_exponent,
            backoffs,
            budgets: old.map(|o| o.budgets.clone()).unwrap_or_default(),
            // Reused limiters hold keys hashed with the old seed.
            hasher: old.map(|o| o.hasher.clone()).unwrap_or_default(),
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
            let (scope, key) = match limit.kind {
                LimitKind::Client => (client.share.unwrap_or(""), client.key),
                LimitKind::Pair => match person {
                    Some(person) => (number, self.pair_key(number, person)),
                    None => continue,
                },
                LimitKind::Number => (number, self.hasher.key(&[number])),
            };
            match self.pass(limit, scope, key, report).await {
                Ok(wait) => waited += wait,
                Err(refusal) if report => return Admission::WouldLimit(refusal.limit),
                Err(refusal) => return Admission::Refused(refusal),
            }
        }
        Admission::Admitted { waited }
    }

    /// One limit that is not off: a back-off first, then the limiter; in
    /// shape mode, wait (bounded by `max_wait`) for the unit instead of
    /// refusing. Returns how long it waited. The clock is read only when a
    /// unit is not free.
    async fn pass(
        &self,
        limit: &Limit,
        scope: &str,
        key: u64,
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
            let wait = match self.backoff_left(limit.kind, key) {
                Some(left) => Err(left),
                None => limit.check(scope, key),
            };
            let wait = match wait {
                Ok(budget) => {
                    if limit.kind == LimitKind::Number {
                        self.record_budget(scope, budget);
                    }
                    return Ok(waited);
                }
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

    /// What Meta answered a send: 130429 pauses the number, 131056 the pair
    /// for 4^n seconds (n growing with each consecutive answer), and a
    /// success clears the pair's count.
    pub fn feedback(
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
                let backoff = Backoff {
                    until: Instant::now() + self.number_backoff,
                    strikes: 1,
                };
                self.backoffs
                    .numbers
                    .insert(self.hasher.key(&[number]), backoff);
                self.backoffs.any.store(true, Ordering::Relaxed);
            }
            Some(131056) => {
                let Some(person) = person else { return };
                let key = self.pair_key(number, person);
                let strikes = self.backoffs.pairs.get(&key).map_or(0, |b| b.strikes) + 1;
                let exponent = strikes.min(self.pair_backoff_max_exponent);
                let wait = Duration::from_secs(4u64.saturating_pow(exponent));
                self.backoffs.pairs.insert(
                    key,
                    Backoff {
                        until: Instant::now() + wait,
                        strikes,
                    },
                );
                self.backoffs.any.store(true, Ordering::Relaxed);
            }
            _ if success => {
                if let Some(person) = person
                    && self.backoffs.any.load(Ordering::Relaxed)
                {
                    self.backoffs.pairs.remove(&self.pair_key(number, person));
                }
            }
            _ => {}
        }
    }

    /// Drops limiter state of keys idle long enough to be indistinguishable
    /// from fresh ones; run periodically so memory stays bounded.
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
    }

    /// Live keys per limit, for metrics.
    pub fn keys(&self) -> [(LimitKind, usize); 3] {
        [
            (LimitKind::Number, self.number.keys()),
            (LimitKind::Pair, self.pair.keys()),
            (LimitKind::Client, self.client.keys()),
        ]
    }

    /// Per-number live state for the admin API.
    pub fn numbers(&self) -> Vec<NumberState> {
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

    /// Pairs currently backing off after Meta's 131056.
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
        limits.feedback(NUMBER, None, Some(130429), false);
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
        limits.feedback(NUMBER, Some("US.1"), Some(131056), false);
        assert_eq!(
            refused(
                limits
                    .admit(NUMBER, Some("US.1"), ClientBucket::default(), false)
                    .await
            )
            .retry_after,
            Duration::from_secs(4)
        );
        limits.feedback(NUMBER, Some("US.1"), Some(131056), false);
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
        limits.feedback(NUMBER, Some("US.1"), None, true);
        limits.feedback(NUMBER, Some("US.1"), Some(131056), false);
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
}
