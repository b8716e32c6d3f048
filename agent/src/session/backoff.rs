//! Reconnect delays: exponential backoff with full jitter, and the order in which the
//! coordinators are dialled (the configured list in turn, a leader hint first).

use std::time::Duration;

/// How reconnects back off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffPolicy {
    /// The cap of the first delay.
    pub initial: Duration,
    /// The largest cap (the delay doubles up to it).
    pub max: Duration,
    /// A welcomed session that lasted this long resets the backoff.
    pub stable_after: Duration,
}

impl Default for BackoffPolicy {
    /// 100 ms doubling to 5 s; reset after a session of 10 s.
    fn default() -> Self {
        Self { initial: Duration::from_millis(100), max: Duration::from_secs(5), stable_after: Duration::from_secs(10) }
    }
}

/// Exponential backoff with full jitter: the n-th delay is uniform in
/// `[0, min(max, initial * 2^n)]`, so that agents cut off together (a leader change,
/// a network blip) do not come back in lockstep.
#[derive(Debug, Clone)]
pub struct Backoff {
    policy: BackoffPolicy,
    attempt: u32,
}

impl Backoff {
    /// A backoff at its first attempt.
    pub fn new(policy: BackoffPolicy) -> Self {
        Self { policy, attempt: 0 }
    }

    /// The cap of the next delay (before jitter).
    pub fn cap(&self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(31)).unwrap_or(u32::MAX);
        self.policy.initial.saturating_mul(factor).min(self.policy.max)
    }

    /// The next delay, and one attempt more.
    pub fn next_delay(&mut self) -> Duration {
        let cap = self.cap();
        self.attempt = self.attempt.saturating_add(1);
        jitter(cap)
    }

    /// Back to the first attempt (after a session that lasted).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// The policy.
    pub fn policy(&self) -> BackoffPolicy {
        self.policy
    }
}

/// Failed dials within one pass over the configured coordinators. Only a pass in which
/// every coordinator failed (refused, or no leader known) takes the next exponential
/// delay; the dials inside a pass wait a short jitter (up to the policy's first cap).
/// When the leader dies, its agents find the new one after one pass over the
/// survivors instead of after several doublings spent on the dead address.
#[derive(Debug, Clone)]
pub struct Passes {
    size: usize,
    failed: usize,
}

impl Passes {
    /// Passes over `size` coordinators (at least one).
    pub fn new(size: usize) -> Self {
        Self { size: size.max(1), failed: 0 }
    }

    /// A dial failed: the delay before the next one.
    pub fn failed(&mut self, backoff: &mut Backoff) -> Duration {
        self.failed += 1;
        if self.failed >= self.size {
            self.failed = 0;
            backoff.next_delay()
        } else {
            jitter(backoff.policy().initial)
        }
    }

    /// A session was welcomed: the next failure starts a new pass.
    pub fn reset(&mut self) {
        self.failed = 0;
    }
}

/// A uniformly random duration in `[0, cap]`.
pub fn jitter(cap: Duration) -> Duration {
    let nanos = u64::try_from(cap.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(fastrand::u64(0..=nanos))
}

/// Which coordinator to dial next: a leader hint once, else the configured list in
/// turn (from the first).
#[derive(Debug, Clone)]
pub struct Targets {
    list: Vec<String>,
    next: usize,
    hint: Option<String>,
}

impl Targets {
    /// The coordinators, in the operator's order.
    pub fn new(list: Vec<String>) -> Self {
        Self { list, next: 0, hint: None }
    }

    /// Dial `addr` next (a leader's advertised address, maybe not in the list).
    pub fn hint(&mut self, addr: String) {
        self.hint = Some(addr);
    }

    /// The address to dial now.
    pub fn next_addr(&mut self) -> Option<String> {
        if let Some(hint) = self.hint.take() {
            return Some(hint);
        }
        let addr = self.list.get(self.next % self.list.len().max(1))?.clone();
        self.next = (self.next + 1) % self.list.len();
        Some(addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_double_up_to_the_max_and_delays_stay_under_the_cap() {
        let mut backoff = Backoff::new(BackoffPolicy::default());
        let mut caps = Vec::new();
        for _ in 0..10 {
            let cap = backoff.cap();
            caps.push(cap.as_millis());
            for _ in 0..50 {
                assert!(jitter(cap) <= cap);
            }
            assert!(backoff.next_delay() <= cap);
        }
        assert_eq!(caps, vec![100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000, 5000]);
        backoff.reset();
        assert_eq!(backoff.cap(), Duration::from_millis(100));
        for _ in 0..100 {
            backoff.next_delay();
        }
        assert_eq!(backoff.cap(), Duration::from_secs(5), "no overflow after many attempts");
    }

    #[test]
    fn only_a_whole_pass_of_failures_backs_off() {
        let policy = BackoffPolicy {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(5),
            stable_after: Duration::from_secs(10),
        };
        let mut backoff = Backoff::new(policy);
        let mut passes = Passes::new(3);
        // Two failures inside the pass: short waits, the backoff does not grow.
        for _ in 0..2 {
            assert!(passes.failed(&mut backoff) <= policy.initial);
            assert_eq!(backoff.cap(), Duration::from_millis(100));
        }
        // The third coordinator fails too: the pass is over, the backoff grows.
        passes.failed(&mut backoff);
        assert_eq!(backoff.cap(), Duration::from_millis(200));
        // A welcomed session in between starts the count again.
        passes.failed(&mut backoff);
        passes.reset();
        passes.failed(&mut backoff);
        passes.failed(&mut backoff);
        assert_eq!(backoff.cap(), Duration::from_millis(200));
        // One coordinator: every failure is a whole pass.
        let mut single = Passes::new(0);
        single.failed(&mut backoff);
        assert_eq!(backoff.cap(), Duration::from_millis(400));
    }

    #[test]
    fn jitter_spreads_delays() {
        let cap = Duration::from_secs(1);
        let samples: Vec<Duration> = (0..200).map(|_| jitter(cap)).collect();
        assert!(samples.iter().any(|d| *d < cap / 4) && samples.iter().any(|d| *d > cap * 3 / 4), "{samples:?}");
    }

    #[test]
    fn targets_rotate_and_a_hint_goes_first_once() {
        let mut t = Targets::new(vec!["a:1".into(), "b:1".into(), "c:1".into()]);
        assert_eq!(t.next_addr().as_deref(), Some("a:1"));
        assert_eq!(t.next_addr().as_deref(), Some("b:1"));
        t.hint("leader:1".into());
        assert_eq!(t.next_addr().as_deref(), Some("leader:1"));
        assert_eq!(t.next_addr().as_deref(), Some("c:1"));
        assert_eq!(t.next_addr().as_deref(), Some("a:1"));
        assert_eq!(Targets::new(Vec::new()).next_addr(), None);
    }
}
