//! Every client connection of one runtime: what it is doing and since when.
//!
//! A connection tells its [`Activity`] when it moves between waiting,
//! reading and answering, with two atomic writes a request and no clock
//! read: the time is a coarse one the sweeper keeps. One sweeper task per
//! runtime looks at every connection a few times a second and, by nginx's
//! rules, closes the ones that took too long to send a request head
//! (`client_header_timeout`) or sat idle too long between requests
//! (`keepalive_timeout`), and tells the ones idle for a moment to put away
//! their per-request state (see `http1`). At the connection cap the accept
//! loop closes the longest-idle connection through the same registry, and
//! shutdown closes every connection as soon as it is between requests.
//!
//! A connection acts on a signal at its next wait, never in the middle of
//! answering: a timeout or an eviction applies only while the phase it
//! was decided on lasts (the signal is set by compare-and-swap on the
//! whole state), so a request that arrives just then is not cut off.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use atomic_waker::AtomicWaker;
use slab::Slab;
use tokio::sync::Notify;

/// The time limits on a client connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// From accepting a connection, or from the first byte of a later
    /// request, to having its whole head (and the body of a request read
    /// whole): nginx's `client_header_timeout`.
    pub header: Duration,
    /// Idle between requests: nginx's `keepalive_timeout`.
    pub keepalive: Duration,
}

impl Default for Timeouts {
    /// nginx's defaults.
    fn default() -> Self {
        Timeouts {
            header: Duration::from_secs(60),
            keepalive: Duration::from_secs(75),
        }
    }
}

impl Timeouts {
    /// How often the sweeper looks: often enough that a timeout fires at
    /// most two periods (half of itself) late, and that an idle connection
    /// puts its state away within half a second.
    fn tick(&self) -> Duration {
        (self.header.min(self.keepalive) / 4).clamp(Duration::from_millis(10), PARK_TICK)
    }
}

/// The sweeper's period when the timeouts are the usual tens of seconds.
const PARK_TICK: Duration = Duration::from_millis(250);

/// What a connection is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    /// Accepted, its first request not yet read: the head timeout runs
    /// from the accept.
    Opening,
    /// Reading a request whose first bytes came after an idle spell.
    Reading,
    /// Answering a request: no limit here (the upstream's and the write
    /// stall's apply).
    Busy,
    /// Between requests, still holding the state it answers with.
    Idle,
    /// Between requests with that state put away.
    Parked,
    /// Served by hyper (HTTP/2, HTTP/1.0, ...): idle while no request of
    /// it is being answered.
    Hyper,
}

impl Phase {
    const ALL: [Phase; 6] = [
        Phase::Opening,
        Phase::Reading,
        Phase::Busy,
        Phase::Idle,
        Phase::Parked,
        Phase::Hyper,
    ];
}

/// What the sweeper, the cap or shutdown asks of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Signal {
    /// Put the per-request state away (the connection is idle).
    Park,
    /// Close once between requests (hyper: shut down gracefully).
    Close,
}

// The state word: the time the phase began (milliseconds on the registry's
// clock) in the low 32 bits, the phase above it, the signals above that.
const PHASE_SHIFT: u32 = 32;
const PARK_BIT: u64 = 1 << 40;
const CLOSE_BIT: u64 = 1 << 41;

fn state_of(phase: Phase, since: u32) -> u64 {
    ((phase as u64) << PHASE_SHIFT) | u64::from(since)
}

fn phase_of(state: u64) -> Phase {
    Phase::ALL[((state >> PHASE_SHIFT) & 0xff) as usize]
}

fn since_of(state: u64) -> u32 {
    state as u32
}

/// One connection's phase and the signals for it.
pub(super) struct Activity {
    state: AtomicU64,
    /// hyper's requests being answered (only in [`Phase::Hyper`]).
    in_flight: AtomicU32,
    /// The connection's task while it waits.
    waker: AtomicWaker,
    /// When it last went idle, as a count of its registry's idle
    /// transitions: the coarse clock gives connections that went idle
    /// within one sweep the same time, and this orders them.
    idle_order: AtomicU32,
}

impl Activity {
    fn new(since: u32) -> Self {
        Activity {
            state: AtomicU64::new(state_of(Phase::Opening, since)),
            in_flight: AtomicU32::new(0),
            waker: AtomicWaker::new(),
            idle_order: AtomicU32::new(0),
        }
    }

    /// Moves to `phase` from `since`; false when the connection has been
    /// told to close (it then closes instead).
    pub(super) fn enter(&self, phase: Phase, since: u32) -> bool {
        let new = state_of(phase, since);
        let old = self
            .state
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |old| {
                Some((old & CLOSE_BIT) | new)
            })
            .unwrap_or_else(|old| old);
        old & CLOSE_BIT == 0
    }

    /// Moves to `phase`, keeping the time the current phase began.
    pub(super) fn continue_as(&self, phase: Phase) -> bool {
        let old = self
            .state
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |old| {
                Some((old & !(0xff << PHASE_SHIFT) & !PARK_BIT) | ((phase as u64) << PHASE_SHIFT))
            })
            .unwrap_or_else(|old| old);
        old & CLOSE_BIT == 0
    }

    pub(super) fn phase(&self) -> Phase {
        phase_of(self.state.load(Ordering::Acquire))
    }

    /// Whether the connection has been told to close.
    pub(super) fn closing(&self) -> bool {
        self.state.load(Ordering::Acquire) & CLOSE_BIT != 0
    }

    /// Ready with a signal for the connection, taking a park request;
    /// pending (the task to be woken by the next signal) while there is
    /// none.
    pub(super) fn poll_signal(&self, cx: &mut Context<'_>) -> Poll<Signal> {
        // Registered before looking, so a signal set in between still wakes.
        self.waker.register(cx.waker());
        let state = self.state.load(Ordering::Acquire);
        if state & CLOSE_BIT != 0 {
            Poll::Ready(Signal::Close)
        } else if state & PARK_BIT != 0 {
            self.state.fetch_and(!PARK_BIT, Ordering::AcqRel);
            Poll::Ready(Signal::Park)
        } else {
            Poll::Pending
        }
    }

    /// Runs `work` until it completes (`Some` of its output) or the
    /// connection is told to close (`None`, `work` left as it is for the
    /// caller to wind down); a park request is taken and ignored, as
    /// `work` keeps its own state.
    pub(super) fn until_close<'a, F: Future>(&'a self, work: Pin<&'a mut F>) -> UntilClose<'a, F> {
        UntilClose {
            work,
            activity: self,
        }
    }

    /// A request of a hyper connection begins; it ends (and the connection
    /// may be idle from then) when the guard is dropped: when its response
    /// head is ready, or when hyper drops the request unanswered.
    pub(super) fn hyper_request(self: &Arc<Self>, registry: &Arc<Registry>) -> HyperRequest {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        HyperRequest {
            activity: self.clone(),
            registry: registry.clone(),
        }
    }

    /// Whether a request of a hyper connection is being answered.
    pub(super) fn in_flight(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) > 0
    }

    /// Sets `signal` if the state is still `seen`, and wakes the task.
    fn signal_if_unchanged(&self, seen: u64, signal: Signal) -> bool {
        let bit = match signal {
            Signal::Park => PARK_BIT,
            Signal::Close => CLOSE_BIT,
        };
        let set = self
            .state
            .compare_exchange(seen, seen | bit, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if set {
            self.waker.wake();
        }
        set
    }

    /// Whether a connection in `state` is idle (so may be evicted), and
    /// since when.
    fn idle_since(&self, state: u64) -> Option<u32> {
        let idle = match phase_of(state) {
            Phase::Idle | Phase::Parked => true,
            Phase::Hyper => self.in_flight.load(Ordering::Acquire) == 0,
            Phase::Opening | Phase::Reading | Phase::Busy => false,
        };
        (idle && state & CLOSE_BIT == 0).then_some(since_of(state))
    }
}

/// One request of a hyper connection, being answered.
pub(super) struct HyperRequest {
    activity: Arc<Activity>,
    registry: Arc<Registry>,
}

impl Drop for HyperRequest {
    fn drop(&mut self) {
        if self.activity.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.activity.enter(Phase::Hyper, self.registry.now());
        }
    }
}

/// Milliseconds since the registry began, as of the sweeper's last tick.
struct Clock {
    start: Instant,
    now: AtomicU32,
}

impl Clock {
    fn advance(&self) -> u32 {
        // Wraps after 49 days; every comparison is of a difference.
        let now = self.start.elapsed().as_millis() as u32;
        self.now.store(now, Ordering::Release);
        now
    }
}

/// How many client connections are open across every registry, and how
/// many may be.
pub(super) struct Cap {
    open: AtomicUsize,
    max: usize,
}

impl Cap {
    pub(super) fn new(max: usize) -> Self {
        Cap {
            open: AtomicUsize::new(0),
            max,
        }
    }

    /// Counts a connection just accepted; false if the cap was reached
    /// (the connection is counted either way).
    pub(super) fn admit(&self) -> bool {
        self.open.fetch_add(1, Ordering::AcqRel) < self.max
    }

    /// Uncounts a connection that was accepted and never registered.
    pub(super) fn release(&self) {
        self.open.fetch_sub(1, Ordering::AcqRel);
    }

    pub(super) fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    pub(super) fn max(&self) -> usize {
        self.max
    }
}

/// The connections of one runtime.
pub(super) struct Registry {
    entries: Mutex<Slab<Arc<Activity>>>,
    clock: Clock,
    timeouts: Timeouts,
    cap: Arc<Cap>,
    /// Set when shutdown begins: a connection registered from then on is
    /// told to close at once.
    stopping: AtomicBool,
    /// Woken when the last connection has gone.
    emptied: Notify,
    /// Idle connections that hold their request state (see [`Self::hold`]).
    holding: AtomicUsize,
    /// Idle transitions so far (see [`Activity::idle_order`]).
    idle_transitions: AtomicU32,
}

/// Most idle connections of a runtime that keep their request state
/// between requests. A busy client's next request then finds it ready;
/// beyond these, a connection puts it away at once and allocates it again
/// (a copy of about 3 KB) for its next request. Bounded so that thousands
/// of connections going idle together never hold, and then free, more than
/// a quarter of a megabyte, which the allocator would keep.
const HOLDING_MAX: usize = 64;

/// An idle connection's leave to keep its request state, until dropped.
pub(super) struct Hold<'a>(&'a AtomicUsize);

impl Drop for Hold<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Registry {
    pub(super) fn new(timeouts: Timeouts, cap: Arc<Cap>) -> Arc<Self> {
        Arc::new(Registry {
            entries: Mutex::new(Slab::new()),
            clock: Clock {
                start: Instant::now(),
                now: AtomicU32::new(0),
            },
            timeouts,
            cap,
            stopping: Default::default(),
            emptied: Notify::new(),
            holding: AtomicUsize::new(0),
            idle_transitions: AtomicU32::new(0),
        })
    }

    /// The coarse time, for a connection's [`Activity::enter`].
    pub(super) fn now(&self) -> u32 {
        self.clock.now.load(Ordering::Acquire)
    }

    /// Leave for an idle connection to keep its request state, if fewer
    /// than [`HOLDING_MAX`] have it.
    pub(super) fn hold(&self) -> Option<Hold<'_>> {
        let held = self.holding.fetch_add(1, Ordering::Relaxed);
        let hold = Hold(&self.holding);
        (held < HOLDING_MAX).then_some(hold)
    }

    /// Uncounts a connection the cap counted that never got to register.
    pub(super) fn release_unregistered(&self) {
        self.cap.release();
    }

    /// Adds a connection the cap has counted; it stays until the entry is
    /// dropped.
    pub(super) fn register(self: &Arc<Self>) -> Entry {
        let activity = Arc::new(Activity::new(self.now()));
        let slot = self.lock().insert(activity.clone());
        if self.stopping.load(Ordering::Acquire) {
            activity.signal_if_unchanged(activity.state.load(Ordering::Acquire), Signal::Close);
        }
        Entry {
            activity,
            slot,
            registry: self.clone(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Slab<Arc<Activity>>> {
        // Nothing panics while holding it; a poisoned lock is still sound.
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Looks at every connection: closes the ones past their timeout and
    /// asks the ones idle since the last look to park.
    fn sweep(&self, now: u32, since_last: u32) {
        // A phase's start is read from the clock as of the last sweep, so
        // it may be early by as long as the sweeps were apart (a tick, or
        // more when the worker was busy): that much more keeps a timeout
        // from ever closing a connection before its time.
        let header = self.timeouts.header.as_millis() as u32 + since_last;
        let keepalive = self.timeouts.keepalive.as_millis() as u32 + since_last;
        let park_after = since_last;
        for (_, activity) in self.lock().iter() {
            let state = activity.state.load(Ordering::Acquire);
            if state & CLOSE_BIT != 0 {
                continue;
            }
            let elapsed = now.wrapping_sub(since_of(state));
            let signal = match phase_of(state) {
                Phase::Opening | Phase::Reading if elapsed >= header => Signal::Close,
                Phase::Idle | Phase::Parked if elapsed >= keepalive => Signal::Close,
                Phase::Hyper if elapsed >= keepalive && activity.idle_since(state).is_some() => {
                    Signal::Close
                }
                Phase::Idle if elapsed >= park_after && state & PARK_BIT == 0 => Signal::Park,
                _ => continue,
            };
            activity.signal_if_unchanged(state, signal);
        }
    }

    /// Closes the connection idle the longest, if one is; true if it did.
    pub(super) fn evict_oldest_idle(&self) -> bool {
        let now = self.now();
        let transitions = self.idle_transitions.load(Ordering::Relaxed);
        let entries = self.lock();
        let oldest = entries
            .iter()
            .filter_map(|(_, activity)| {
                let state = activity.state.load(Ordering::Acquire);
                let since = activity.idle_since(state)?;
                let order = activity.idle_order.load(Ordering::Relaxed);
                // Longest idle first; within one tick of the clock, the
                // one that went idle first.
                let age = (now.wrapping_sub(since), transitions.wrapping_sub(order));
                Some((age, state, activity))
            })
            .max_by_key(|(age, ..)| *age);
        oldest
            .is_some_and(|(_, state, activity)| activity.signal_if_unchanged(state, Signal::Close))
    }

    /// How many connections have been told to close and are still open:
    /// room the cap is about to get back.
    pub(super) fn closing(&self) -> usize {
        self.lock()
            .iter()
            .filter(|(_, activity)| activity.closing())
            .count()
    }

    /// The longest any connection here has been idle, if any is.
    pub(super) fn longest_idle(&self) -> Option<u32> {
        let now = self.now();
        self.lock()
            .iter()
            .filter_map(|(_, activity)| {
                let state = activity.state.load(Ordering::Acquire);
                activity
                    .idle_since(state)
                    .map(|since| now.wrapping_sub(since))
            })
            .max()
    }

    /// Tells every connection to close once between requests, and waits
    /// until all have, at most `limit`. False if some were still open.
    pub(super) async fn close_all(&self, limit: Duration) -> bool {
        self.stopping.store(true, Ordering::Release);
        for (_, activity) in self.lock().iter() {
            activity.state.fetch_or(CLOSE_BIT, Ordering::AcqRel);
            activity.waker.wake();
        }
        tokio::time::timeout(limit, async {
            loop {
                let emptied = self.emptied.notified();
                if self.lock().is_empty() {
                    return;
                }
                emptied.await;
            }
        })
        .await
        .is_ok()
    }

    /// Runs the sweeper on the current runtime for as long as the registry
    /// lives.
    pub(super) fn spawn_sweeper(self: &Arc<Self>) {
        let registry = Arc::downgrade(self);
        let tick = self.timeouts.tick();
        tokio::spawn(sweep_every(registry, tick));
    }
}

async fn sweep_every(registry: Weak<Registry>, tick: Duration) {
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = 0;
    loop {
        interval.tick().await;
        let Some(registry) = registry.upgrade() else {
            return;
        };
        let now = registry.clock.advance();
        registry.sweep(now, now.wrapping_sub(last));
        last = now;
    }
}

/// A connection's place in its registry, for as long as it is open.
pub(super) struct Entry {
    activity: Arc<Activity>,
    slot: usize,
    registry: Arc<Registry>,
}

impl Entry {
    pub(super) fn activity(&self) -> &Arc<Activity> {
        &self.activity
    }

    /// Moves the connection to `phase` from now; false when it is to close.
    pub(super) fn enter(&self, phase: Phase) -> bool {
        if phase == Phase::Idle {
            let order = self
                .registry
                .idle_transitions
                .fetch_add(1, Ordering::Relaxed);
            self.activity.idle_order.store(order, Ordering::Relaxed);
        }
        self.activity.enter(phase, self.registry.now())
    }
}

impl Drop for Entry {
    fn drop(&mut self) {
        let mut entries = self.registry.lock();
        entries.remove(self.slot);
        let empty = entries.is_empty();
        drop(entries);
        self.registry.cap.release();
        if empty {
            self.registry.emptied.notify_waiters();
        }
    }
}

/// The future of [`Activity::until_close`]. A struct rather than an async
/// fn: the future of an async fn generic over `F` that borrows the activity
/// is not proved `Send` for the spawned connection tasks (a higher-ranked
/// lifetime error).
pub(super) struct UntilClose<'a, F> {
    work: Pin<&'a mut F>,
    activity: &'a Activity,
}

impl<F: Future> Future for UntilClose<'_, F> {
    type Output = Option<F::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if let Poll::Ready(output) = this.work.as_mut().poll(cx) {
            return Poll::Ready(Some(output));
        }
        match this.activity.poll_signal(cx) {
            Poll::Ready(Signal::Close) => Poll::Ready(None),
            Poll::Ready(Signal::Park) | Poll::Pending => Poll::Pending,
        }
    }
}
