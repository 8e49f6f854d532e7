//! Rate limits shared by every replica of a fleet: the GCRA state and Meta's
//! back-offs live in Redis, so N replicas together send what one would.
//!
//! # Key layout
//!
//! Every key begins with `sg:`; the `{…}` part is the Redis Cluster hash
//! tag, the same for a key's limiter state and its back-off, so that one
//! script can read and write both (they live in one slot):
//!
//! | limit  | GCRA state                    | back-off                      | strikes                       |
//! |--------|-------------------------------|-------------------------------|-------------------------------|
//! | number | `sg:lim:{n:<number>}`         | `sg:off:{n:<number>}`         |                               |
//! | pair   | `sg:lim:{p:<number>:<person>}`| `sg:off:{p:<number>:<person>}`| `sg:str:{p:<number>:<person>}`|
//! | client | `sg:lim:{c:<share>:<token>}`  |                               |                               |
//!
//! `<person>` is the bucket the send path chose (a BSUID when one is known,
//! else the phone), `<share>` the configured client whose share applies
//! (empty for the default share) and `<token>` the sender's token
//! fingerprint as 16 hex digits. The fingerprint key must be the same on
//! every replica (`SENDGATE_FINGERPRINT_KEY`), or each counts its own.
//!
//! A GCRA key holds the "theoretical arrival time" (TAT), in microseconds
//! of Redis' clock, and expires when that time comes: from then on a fresh
//! key means the same thing, so Redis holds state only for keys sent to
//! within their last burst's worth of time. A back-off key is a marker
//! whose TTL is the back-off; strikes (Meta's n in 4^n s) expire
//! `STRIKES_OUTLIVE_BACKOFF` (10 min) after their back-off ends.
//!
//! # The scripts
//!
//! `ADMIT` takes one unit of one limit for one key: if the key's back-off
//! is in force it refuses with the time left; otherwise it runs GCRA
//! (governor's algorithm: emission interval T, tolerance τ = T·(burst−1))
//! and answers admitted or not, the wait, the burst left and the pair's
//! strikes. Time is `TIME` inside the script, so replicas' clocks do not
//! matter, and scripts replicate their effects (Redis 5 or later), so
//! replicas of Redis agree. The interval goes in microseconds rather than
//! milliseconds: 80/s is 12.5 ms, which whole milliseconds would round to a
//! faster rate than Meta's.
//!
//! `STRIKE` counts a 131056 and sets the pair's back-off to
//! 4^min(strikes, max) s in one step; a 130429 is one `SET … PX`. `PEEK`
//! reads a number's budget and back-off for `/admin/limits`, taking nothing.
//!
//! # Cost per send
//!
//! At most one `EVALSHA` per limit that is on (number + pair + client = 3;
//! the defaults, number + pair, 2); a limit that is off costs nothing. They
//! go one after another, client, pair, number, as the local limits do, so
//! a refused send does not take the number's unit. A fast quota costs less:
//! the script grants up to [`SharedQuota::lease`] units at once (what the
//! quota refills in [`LEASE_REFILL`]), which the replica spends locally
//! (within [`LEASE_FOR`], then they lapse), fetching the next lease in the
//! background once half is spent, so a 1,000/s number costs a call per 20
//! units and a send rarely waits for Redis; a number at 80/s or a pair at
//! 1 per 6 s leases nothing. A success costs nothing more, unless this
//! replica has seen strikes on its pair (see `limits.rs`), then one `DEL`.
//! Meta's throttling answers cost one call.
//!
//! # When Redis does not answer
//!
//! A call that fails or takes longer than `fleet.timeout_ms` returns an
//! error and the caller falls back to its local limiters, which hold the
//! fleet's quota divided by `fleet.expected_replicas` (`limits.rs`). After
//! a failure the [`Redis`] handle does not even try calls for a probe
//! interval (`fleet::health`): one send then tries Redis again (the sends
//! meanwhile stay local), and the first answer resumes shared limiting.

use std::sync::LazyLock;
use std::time::Duration;

use redis::Script;

use super::connection::Redis;
use super::error::FleetError;

/// How long a pair's strikes are remembered after its back-off ends: a
/// 131056 within this counts as consecutive with the one before.
pub(crate) const STRIKES_OUTLIVE_BACKOFF: Duration = Duration::from_secs(600);

/// The exponent stops here whatever the config says: 4^15 s is 34 years
/// already, and larger ones would overflow the script's integers.
pub(crate) const MAX_EXPONENT: u32 = 15;

/// KEYS: GCRA state, [back-off], [strikes]. ARGV: interval (µs), burst.
/// Answers {status (1 admitted, 0 over the limit, 2 backing off), wait (ms),
/// burst left, strikes, units granted}.
static ADMIT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local strikes = 0
if KEYS[3] then strikes = tonumber(redis.call('GET', KEYS[3]) or '0') end
if KEYS[2] then
  local off = redis.call('PTTL', KEYS[2])
  if off > 0 then return {2, off, 0, strikes, 0} end
end
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local interval = tonumber(ARGV[1])
local tau = interval * (tonumber(ARGV[2]) - 1)
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
-- Units that may go now; up to ARGV[3] of them are granted (a lease).
local free = math.floor((now + tau + interval - tat) / interval)
if free < 1 then
  return {0, math.ceil((tat - tau - now) / 1000), 0, strikes, 0}
end
local granted = math.min(free, tonumber(ARGV[3]))
local new_tat = tat + granted * interval
-- %.0f: a Lua number as an argument is written with 14 digits, too few.
redis.call('SET', KEYS[1], string.format('%.0f', new_tat),
  'PX', string.format('%.0f', math.ceil((new_tat - now) / 1000)))
return {1, 0, free - granted, strikes, granted}
",
    )
});

/// KEYS: strikes, back-off. ARGV: max exponent, how long strikes outlive
/// the back-off (ms). Answers {strikes, back-off (ms)}.
static STRIKE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local strikes = redis.call('INCR', KEYS[1])
local wait = 1000 * 4 ^ math.min(strikes, tonumber(ARGV[1]))
redis.call('SET', KEYS[2], '1', 'PX', string.format('%.0f', wait))
redis.call('PEXPIRE', KEYS[1], string.format('%.0f', wait + tonumber(ARGV[2])))
return {strikes, wait}
",
    )
});

/// KEYS: GCRA state, back-off. ARGV: interval (µs), burst. Answers {burst
/// left now, back-off left (ms, ≤ 0 for none)}; changes nothing.
static PEEK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local interval = tonumber(ARGV[1])
local tau = interval * (tonumber(ARGV[2]) - 1)
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local left = math.floor((now + tau + interval - tat) / interval)
if left < 0 then left = 0 end
return {left, redis.call('PTTL', KEYS[2])}
",
    )
});

/// A lease holds what the quota refills in this long (at most): a fast
/// quota (1,000/s and more) costs a Redis call per lease instead of per
/// send. Units are granted only when GCRA has them free, and a replica
/// asks for the next lease only once half of one is spent, so at any time
/// the fleet holds at most a lease per replica and key that it has not
/// sent: over any window, it sends at most that much more than the quota.
pub(crate) const LEASE_REFILL: Duration = Duration::from_millis(20);
/// How long a lease's units may wait to be spent before they lapse (a
/// replica that went quiet does not keep them).
pub(crate) const LEASE_FOR: Duration = Duration::from_secs(1);
/// Most units one lease holds.
pub(crate) const LEASE_MAX: u32 = 1024;

/// A fleet-wide quota as the script reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SharedQuota {
    /// One unit every this many microseconds (GCRA's emission interval).
    interval_us: u64,
    /// Units that may go at once.
    burst: u32,
}

impl SharedQuota {
    /// How many units one call asks for: what the quota refills in
    /// [`LEASE_REFILL`], at most a share of the burst (so that replicas leave
    /// each other room) and [`LEASE_MAX`]; 1, no lease, for slow quotas
    /// such as a number's 80/s or a pair's 1 per 6 s.
    pub(crate) fn lease(&self, replicas: u32) -> u32 {
        let refill = LEASE_REFILL.as_micros() as u64 / self.interval_us;
        let share = u64::from(self.burst) / (2 * u64::from(replicas.max(1)));
        u32::try_from(refill.min(share).min(u64::from(LEASE_MAX))).map_or(1, |n| n.max(1))
    }

    /// One unit every this long.
    pub(crate) fn interval(&self) -> Duration {
        Duration::from_micros(self.interval_us)
    }

    pub(crate) fn new(interval: Duration, burst: u32) -> Self {
        SharedQuota {
            interval_us: u64::try_from(interval.as_micros())
                .unwrap_or(u64::MAX)
                .max(1),
            burst: burst.max(1),
        }
    }
}

/// Whose unit a check takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SharedKey<'a> {
    Number(&'a str),
    Pair { number: &'a str, person: &'a str },
    Client { share: &'a str, token: u64 },
}

/// A [`SharedKey`] spelled out: its hash tag and which keys it has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TaggedKey {
    tag: String,
    backs_off: bool,
    strikes: bool,
}

impl SharedKey<'_> {
    pub(crate) fn tagged(&self) -> TaggedKey {
        TaggedKey {
            tag: self.tag(),
            backs_off: !matches!(self, SharedKey::Client { .. }),
            strikes: matches!(self, SharedKey::Pair { .. }),
        }
    }

    /// The hash tag, braces included: every key of this limit and key.
    fn tag(&self) -> String {
        match self {
            SharedKey::Number(number) => format!("{{n:{number}}}"),
            SharedKey::Pair { number, person } => format!("{{p:{number}:{person}}}"),
            SharedKey::Client { share, token } => format!("{{c:{share}:{token:016x}}}"),
        }
    }
}

/// What Redis decided for one unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Taken: `granted` units (one for this send, the rest a lease);
    /// `remaining` more could go now.
    Admitted {
        remaining: u32,
        strikes: u32,
        granted: u32,
    },
    /// Over the limit: a unit is due after `retry_after`.
    Limited { retry_after: Duration },
    /// Meta put the key on a back-off with this much left.
    BackingOff { left: Duration, strikes: u32 },
}

/// A key's state as the admin API shows it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Peeked {
    /// Units that could go now.
    pub(crate) remaining: u32,
    pub(crate) backoff: Option<Duration>,
}

/// The limits every replica shares, in Redis. One per process, kept across
/// config reloads (quotas come with each call).
pub(crate) struct SharedLimiter {
    redis: Redis,
}

impl SharedLimiter {
    pub(crate) fn new(redis: Redis) -> Self {
        SharedLimiter { redis }
    }

    /// Takes up to `wanted` units (at least one) for `key` under `quota`,
    /// unless its back-off is in force. One `EVALSHA`.
    pub(crate) async fn check(
        &self,
        key: SharedKey<'_>,
        quota: SharedQuota,
        wanted: u32,
    ) -> Result<Verdict, FleetError> {
        self.check_tagged(&key.tagged(), quota, wanted).await
    }

    /// [`check`](Self::check) for a key spelled out already (a lease
    /// refreshed in the background owns its key).
    pub(crate) async fn check_tagged(
        &self,
        key: &TaggedKey,
        quota: SharedQuota,
        wanted: u32,
    ) -> Result<Verdict, FleetError> {
        let tag = &key.tag;
        let mut invocation = ADMIT.key(key_of("lim", tag));
        if key.backs_off {
            invocation.key(key_of("off", tag));
        }
        if key.strikes {
            invocation.key(key_of("str", tag));
        }
        invocation
            .arg(quota.interval_us)
            .arg(quota.burst)
            .arg(wanted.max(1));
        let (status, wait_ms, remaining, strikes, granted): (i64, u64, u32, u32, u32) =
            self.redis.script(&invocation).await?;
        let wait = Duration::from_millis(wait_ms);
        Ok(match status {
            1 => Verdict::Admitted {
                remaining,
                strikes,
                granted: granted.max(1),
            },
            2 => Verdict::BackingOff {
                left: wait,
                strikes,
            },
            _ => Verdict::Limited { retry_after: wait },
        })
    }

    /// Meta's 130429: the number pauses for `wait` on every replica.
    pub(crate) async fn pause_number(
        &self,
        number: &str,
        wait: Duration,
    ) -> Result<(), FleetError> {
        let millis = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
        if millis == 0 {
            return Ok(());
        }
        let tag = SharedKey::Number(number).tag();
        let mut cmd = redis::cmd("SET");
        cmd.arg(key_of("off", &tag)).arg(1).arg("PX").arg(millis);
        self.redis.query::<()>(&cmd).await
    }

    /// Meta's 131056: one more strike for the pair, and its back-off of
    /// 4^min(strikes, `max_exponent`) s. Returns the strikes and the wait.
    pub(crate) async fn strike_pair(
        &self,
        number: &str,
        person: &str,
        max_exponent: u32,
    ) -> Result<(u32, Duration), FleetError> {
        let tag = SharedKey::Pair { number, person }.tag();
        let mut invocation = STRIKE.key(key_of("str", &tag));
        invocation.key(key_of("off", &tag));
        let outlive = u64::try_from(STRIKES_OUTLIVE_BACKOFF.as_millis()).unwrap_or(u64::MAX);
        invocation.arg(max_exponent.min(MAX_EXPONENT)).arg(outlive);
        let (strikes, wait_ms): (u32, u64) = self.redis.script(&invocation).await?;
        Ok((strikes, Duration::from_millis(wait_ms)))
    }

    /// A send to the pair went through: its strikes start again from 0.
    pub(crate) async fn clear_strikes(&self, number: &str, person: &str) -> Result<(), FleetError> {
        let tag = SharedKey::Pair { number, person }.tag();
        let mut cmd = redis::cmd("DEL");
        cmd.arg(key_of("str", &tag));
        self.redis.query::<()>(&cmd).await
    }

    /// A number's budget and back-off as Redis holds them, taking nothing.
    pub(crate) async fn peek_number(
        &self,
        number: &str,
        quota: SharedQuota,
    ) -> Result<Peeked, FleetError> {
        let tag = SharedKey::Number(number).tag();
        let mut invocation = PEEK.key(key_of("lim", &tag));
        invocation.key(key_of("off", &tag));
        invocation.arg(quota.interval_us).arg(quota.burst);
        let (remaining, off_ms): (u32, i64) = self.redis.script(&invocation).await?;
        Ok(Peeked {
            remaining,
            backoff: u64::try_from(off_ms)
                .ok()
                .filter(|ms| *ms > 0)
                .map(Duration::from_millis),
        })
    }
}

/// `sg:<kind>:{<tag>}`: every key of one limit and key in one slot.
fn key_of(kind: &str, tag: &str) -> String {
    format!("sg:{kind}:{tag}")
}

#[cfg(test)]
pub(crate) mod tests {
    use std::net::{SocketAddr, TcpStream};
    use std::process::{Child, Command, Stdio};

    use super::*;
    use crate::fleet::settings::FleetConfig;

    /// A redis-server of a test's own on a free loopback port, killed on drop.
    pub(crate) struct LocalRedis {
        pub(crate) addr: SocketAddr,
        child: Option<Child>,
    }

    impl LocalRedis {
        pub(crate) fn start() -> Self {
            let addr = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|listener| listener.local_addr())
                .unwrap();
            let mut redis = LocalRedis { addr, child: None };
            redis.launch();
            redis
        }

        fn launch(&mut self) {
            let child = Command::new("redis-server")
                .args(["--port", &self.addr.port().to_string()])
                .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                .stdout(Stdio::null())
                .spawn()
                .expect("redis-server is installed");
            self.child = Some(child);
            let started = std::time::Instant::now();
            while !self.pings() {
                assert!(
                    started.elapsed() < Duration::from_secs(10),
                    "redis-server did not start"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }

        fn pings(&self) -> bool {
            use std::io::{Read, Write};
            let Ok(mut stream) = TcpStream::connect(self.addr) else {
                return false;
            };
            let mut answer = [0u8; 7];
            stream.write_all(b"PING\r\n").is_ok()
                && stream.read_exact(&mut answer).is_ok()
                && &answer == b"+PONG\r\n"
        }

        pub(crate) fn url(&self) -> String {
            format!("redis://{}/0", self.addr)
        }

        /// Starts again on the same port, empty.
        pub(crate) fn restart(&mut self) {
            self.kill();
            self.launch();
        }

        pub(crate) fn kill(&mut self) {
            if let Some(mut child) = self.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }

        pub(crate) fn fleet_config(&self, timeout_ms: u64) -> FleetConfig {
            FleetConfig {
                redis_url: self.url(),
                cluster: false,
                expected_replicas: 1,
                timeout_ms,
                ca_file: String::new(),
            }
        }

        /// A connection of its own, as another replica would have.
        pub(crate) fn connect(&self) -> Redis {
            Redis::connect(&self.fleet_config(1000)).unwrap()
        }
    }

    impl Drop for LocalRedis {
        fn drop(&mut self) {
            self.kill();
        }
    }

    async fn raw<T: redis::FromRedisValue>(redis: &Redis, args: &[&str]) -> T {
        let mut cmd = redis::cmd(args[0]);
        for arg in &args[1..] {
            cmd.arg(*arg);
        }
        redis.query(&cmd).await.unwrap()
    }

    const NUMBER: &str = "106540352242922";

    fn per_second(n: u32, burst: u32) -> SharedQuota {
        SharedQuota::new(Duration::from_secs(1) / n, burst)
    }

    #[tokio::test]
    async fn a_lease_takes_what_is_free_up_to_what_was_asked() {
        let server = LocalRedis::start();
        let limiter = SharedLimiter::new(server.connect());
        let quota = per_second(5, 5);
        let taken = limiter.check(SharedKey::Number(NUMBER), quota, 3).await;
        assert!(matches!(
            taken.unwrap(),
            Verdict::Admitted {
                remaining: 2,
                granted: 3,
                ..
            }
        ));
        let taken = limiter.check(SharedKey::Number(NUMBER), quota, 3).await;
        assert!(matches!(
            taken.unwrap(),
            Verdict::Admitted {
                remaining: 0,
                granted: 2,
                ..
            }
        ));
        let taken = limiter.check(SharedKey::Number(NUMBER), quota, 3).await;
        assert!(matches!(taken.unwrap(), Verdict::Limited { .. }));
        // Slow quotas lease nothing; fast ones a share of the burst, capped.
        assert_eq!(per_second(80, 80).lease(3), 1);
        assert_eq!(per_second(1000, 1000).lease(3), 20);
        assert_eq!(per_second(1000, 30).lease(3), 5);
        assert_eq!(per_second(1_000_000, 1_000_000).lease(1), LEASE_MAX);
    }

    #[tokio::test]
    async fn a_burst_goes_then_the_next_unit_waits_its_interval() {
        let server = LocalRedis::start();
        let limiter = SharedLimiter::new(server.connect());
        let quota = per_second(5, 5);
        for left in (0..5).rev() {
            assert_eq!(
                limiter
                    .check(SharedKey::Number(NUMBER), quota, 1)
                    .await
                    .unwrap(),
                Verdict::Admitted {
                    remaining: left,
                    strikes: 0,
                    granted: 1
                }
            );
        }
        let Verdict::Limited { retry_after } = limiter
            .check(SharedKey::Number(NUMBER), quota, 1)
            .await
            .unwrap()
        else {
            panic!("the sixth unit is over the burst");
        };
        assert!(
            retry_after > Duration::from_millis(100) && retry_after <= Duration::from_millis(200),
            "{retry_after:?}"
        );
        tokio::time::sleep(retry_after).await;
        assert!(matches!(
            limiter
                .check(SharedKey::Number(NUMBER), quota, 1)
                .await
                .unwrap(),
            Verdict::Admitted { .. }
        ));
        // Another number, a pair and a client are buckets of their own.
        let others = [
            SharedKey::Number("999"),
            SharedKey::Pair {
                number: NUMBER,
                person: "US.1",
            },
            SharedKey::Client {
                share: "",
                token: 7,
            },
        ];
        for other in others {
            assert!(matches!(
                limiter.check(other, quota, 1).await.unwrap(),
                Verdict::Admitted { remaining: 4, .. }
            ));
        }
    }

    #[tokio::test]
    async fn replicas_on_their_own_connections_share_one_budget() {
        let server = LocalRedis::start();
        let replicas = [
            SharedLimiter::new(server.connect()),
            SharedLimiter::new(server.connect()),
            SharedLimiter::new(server.connect()),
        ];
        // 1 per hour: nothing refills while the test runs.
        let quota = SharedQuota::new(Duration::from_secs(3600), 10);
        let mut admitted = 0;
        for round in 0..10 {
            for replica in &replicas {
                let verdict = replica.check(SharedKey::Number(NUMBER), quota, 1).await;
                if matches!(verdict.unwrap(), Verdict::Admitted { .. }) {
                    admitted += 1;
                }
            }
            assert!(admitted <= 10, "round {round}: {admitted}");
        }
        assert_eq!(admitted, 10);
    }

    #[tokio::test]
    async fn a_key_expires_once_its_state_is_that_of_a_fresh_one() {
        let server = LocalRedis::start();
        let redis = server.connect();
        let limiter = SharedLimiter::new(redis.clone());
        // 100/s, burst 3: three sends put the TAT 30 ms ahead.
        let quota = per_second(100, 3);
        for _ in 0..3 {
            limiter
                .check(SharedKey::Number(NUMBER), quota, 1)
                .await
                .unwrap();
        }
        let ttl: i64 = raw(&redis, &["PTTL", "sg:lim:{n:106540352242922}"]).await;
        assert!((1..=30).contains(&ttl), "{ttl}");
        tokio::time::sleep(Duration::from_millis(60)).await;
        let keys: Vec<String> = raw(&redis, &["KEYS", "sg:*"]).await;
        assert!(keys.is_empty(), "{keys:?}");
    }

    #[tokio::test]
    async fn metas_back_offs_refuse_on_every_replica_until_they_end() {
        let server = LocalRedis::start();
        let a = SharedLimiter::new(server.connect());
        let b = SharedLimiter::new(server.connect());
        let quota = per_second(1000, 1000);
        a.pause_number(NUMBER, Duration::from_millis(300))
            .await
            .unwrap();
        let Verdict::BackingOff { left, strikes: 0 } =
            b.check(SharedKey::Number(NUMBER), quota, 1).await.unwrap()
        else {
            panic!("the number is paused");
        };
        assert!(left > Duration::from_millis(200) && left <= Duration::from_millis(300));
        assert_eq!(
            b.peek_number(NUMBER, quota).await.unwrap().remaining,
            1000,
            "a back-off takes no unit"
        );
        tokio::time::sleep(left).await;
        assert!(matches!(
            b.check(SharedKey::Number(NUMBER), quota, 1).await.unwrap(),
            Verdict::Admitted { .. }
        ));

        // 131056: 4^n seconds, n capped, strikes reported to every replica.
        let pair = SharedKey::Pair {
            number: NUMBER,
            person: "US.1",
        };
        let mut waits = Vec::new();
        for _ in 0..3 {
            waits.push(a.strike_pair(NUMBER, "US.1", 2).await.unwrap());
        }
        assert_eq!(
            waits,
            [
                (1, Duration::from_secs(4)),
                (2, Duration::from_secs(16)),
                (3, Duration::from_secs(16))
            ]
        );
        let Verdict::BackingOff { left, strikes: 3 } = b.check(pair, quota, 1).await.unwrap()
        else {
            panic!("the pair is paused");
        };
        assert!(left > Duration::from_secs(15));
        b.clear_strikes(NUMBER, "US.1").await.unwrap();
        assert_eq!(
            a.strike_pair(NUMBER, "US.1", 2).await.unwrap(),
            (1, Duration::from_secs(4)),
            "a success starts the count again"
        );
        // A huge configured exponent is capped, not an overflow.
        assert_eq!(
            a.strike_pair(NUMBER, "US.2", u32::MAX).await.unwrap(),
            (1, Duration::from_secs(4))
        );
    }

    #[tokio::test]
    async fn peek_shows_the_budget_and_back_off_without_taking_a_unit() {
        let server = LocalRedis::start();
        let limiter = SharedLimiter::new(server.connect());
        let quota = SharedQuota::new(Duration::from_secs(3600), 20);
        assert_eq!(
            limiter.peek_number(NUMBER, quota).await.unwrap(),
            Peeked {
                remaining: 20,
                backoff: None
            }
        );
        for _ in 0..5 {
            limiter
                .check(SharedKey::Number(NUMBER), quota, 1)
                .await
                .unwrap();
        }
        limiter
            .pause_number(NUMBER, Duration::from_secs(60))
            .await
            .unwrap();
        let peeked = limiter.peek_number(NUMBER, quota).await.unwrap();
        assert_eq!(peeked.remaining, 15);
        assert!(peeked.backoff.unwrap() > Duration::from_secs(59));
    }

    #[tokio::test]
    async fn keys_of_one_limit_and_key_share_a_hash_tag() {
        let pair = SharedKey::Pair {
            number: "1",
            person: "US.2",
        }
        .tag();
        assert_eq!(key_of("lim", &pair), "sg:lim:{p:1:US.2}");
        assert_eq!(key_of("off", &pair), "sg:off:{p:1:US.2}");
        assert_eq!(key_of("str", &pair), "sg:str:{p:1:US.2}");
        assert_eq!(key_of("lim", &SharedKey::Number("1").tag()), "sg:lim:{n:1}");
        let client = SharedKey::Client {
            share: "big",
            token: 0xbb,
        };
        assert_eq!(
            key_of("lim", &client.tag()),
            "sg:lim:{c:big:00000000000000bb}"
        );
    }

    #[tokio::test]
    async fn a_dead_redis_fails_within_the_deadline_then_is_not_even_tried() {
        let mut server = LocalRedis::start();
        let limiter = SharedLimiter::new(Redis::connect(&server.fleet_config(200)).unwrap());
        let quota = per_second(10, 10);
        limiter
            .check(SharedKey::Number(NUMBER), quota, 1)
            .await
            .unwrap();
        server.kill();
        let started = std::time::Instant::now();
        assert!(
            limiter
                .check(SharedKey::Number(NUMBER), quota, 1)
                .await
                .is_err()
        );
        assert!(
            started.elapsed() < Duration::from_millis(400),
            "{:?}",
            started.elapsed()
        );
        let started = std::time::Instant::now();
        for _ in 0..100 {
            assert!(
                limiter
                    .check(SharedKey::Number(NUMBER), quota, 1)
                    .await
                    .is_err()
            );
        }
        assert!(
            started.elapsed() < Duration::from_millis(50),
            "skipped, not waited for: {:?}",
            started.elapsed()
        );
        // Back: the first probe after the interval answers, and calls flow.
        server.restart();
        let started = std::time::Instant::now();
        loop {
            if limiter
                .check(SharedKey::Number(NUMBER), quota, 1)
                .await
                .is_ok()
            {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(8), "never resumed");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            limiter
                .check(SharedKey::Number(NUMBER), quota, 1)
                .await
                .is_ok()
        );
    }
}
