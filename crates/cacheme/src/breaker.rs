//! The circuit breaker in front of Redis, and the gate that keeps an outage
//! from flooding the logs. Plain logic over an injected clock.
//!
//! Closed: every operation goes to Redis; `threshold` consecutive connection
//! failures (errors, timeouts) open it. Open: operations fail at once,
//! without touching the network, for `cooldown`. Then half-open: one probe
//! goes through; success closes the breaker, failure opens it again. Server
//! errors that prove the server is up (out of memory, wrong type) do not
//! count: they are answered, quickly.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What one operation told the breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Redis answered.
    Answered,
    /// Redis could not be reached or did not answer in time.
    Unreachable,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen { probing: bool },
}

/// What [`Breaker::admit`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admission {
    /// Send the operation.
    Go,
    /// Send it: it is the probe of a half-open breaker.
    Probe,
    /// Do not send it; the breaker lets a probe through in this long.
    Refuse { retry_in: Duration },
}

/// The breaker's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    pub(crate) threshold: u32,
    pub(crate) cooldown: Duration,
}

/// A circuit breaker.
#[derive(Debug)]
pub(crate) struct Breaker {
    state: Mutex<State>,
}

impl Default for Breaker {
    fn default() -> Self {
        Breaker {
            state: Mutex::new(State::Closed { failures: 0 }),
        }
    }
}

impl Breaker {
    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    /// May an operation go to Redis now?
    pub(crate) fn admit(&self, now: Instant) -> Admission {
        self.with(|state| match *state {
            State::Closed { .. } => Admission::Go,
            State::Open { until } if now < until => Admission::Refuse {
                retry_in: until - now,
            },
            State::Open { .. } | State::HalfOpen { probing: false } => {
                *state = State::HalfOpen { probing: true };
                Admission::Probe
            }
            State::HalfOpen { probing: true } => Admission::Refuse {
                retry_in: Duration::ZERO,
            },
        })
    }

    /// Record how an admitted operation went. Returns true when this opened
    /// the breaker.
    pub(crate) fn record(
        &self,
        admission: Admission,
        outcome: Outcome,
        limits: Limits,
        now: Instant,
    ) -> bool {
        self.with(|state| match (outcome, *state) {
            (Outcome::Answered, _) => {
                *state = State::Closed { failures: 0 };
                false
            }
            (Outcome::Unreachable, State::Closed { failures }) => {
                let failures = failures + 1;
                if failures >= limits.threshold.max(1) {
                    *state = State::Open {
                        until: now + limits.cooldown,
                    };
                    true
                } else {
                    *state = State::Closed { failures };
                    false
                }
            }
            (Outcome::Unreachable, State::HalfOpen { .. }) if admission == Admission::Probe => {
                *state = State::Open {
                    until: now + limits.cooldown,
                };
                true
            }
            // A failure of an operation admitted before the breaker opened.
            (Outcome::Unreachable, _) => false,
        })
    }

    /// True while operations are refused.
    #[cfg(test)]
    pub(crate) fn is_open(&self, now: Instant) -> bool {
        self.with(|state| matches!(*state, State::Open { until } if now < until))
    }
}

/// Lets one warning through per `every`, and says how many were held back.
#[derive(Debug, Default)]
pub(crate) struct WarnGate {
    state: Mutex<(Option<Instant>, u64)>,
}

impl WarnGate {
    /// `Some(held_back)` if a warning may be logged now; the count is of the
    /// warnings suppressed since the last one.
    pub(crate) fn pass(&self, every: Duration, now: Instant) -> Option<u64> {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (last, held) = &mut *state;
        match last {
            Some(at) if now.duration_since(*at) < every => {
                *held += 1;
                None
            }
            _ => {
                *last = Some(now);
                Some(std::mem::take(held))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        threshold: 3,
        cooldown: Duration::from_millis(500),
    };

    fn fail(breaker: &Breaker, now: Instant) -> bool {
        let admission = breaker.admit(now);
        breaker.record(admission, Outcome::Unreachable, LIMITS, now)
    }

    #[test]
    fn opens_after_consecutive_failures_and_refuses_during_cooldown() {
        let breaker = Breaker::default();
        let t0 = Instant::now();
        assert!(!fail(&breaker, t0));
        assert!(!fail(&breaker, t0));
        assert!(fail(&breaker, t0), "the third failure opens it");
        assert!(breaker.is_open(t0));
        assert_eq!(
            breaker.admit(t0 + Duration::from_millis(100)),
            Admission::Refuse {
                retry_in: Duration::from_millis(400)
            }
        );
    }

    #[test]
    fn a_success_resets_the_count() {
        let breaker = Breaker::default();
        let t0 = Instant::now();
        fail(&breaker, t0);
        fail(&breaker, t0);
        let go = breaker.admit(t0);
        breaker.record(go, Outcome::Answered, LIMITS, t0);
        assert!(!fail(&breaker, t0));
        assert!(!breaker.is_open(t0));
    }

    #[test]
    fn after_the_cooldown_one_probe_decides() {
        let breaker = Breaker::default();
        let t0 = Instant::now();
        for _ in 0..3 {
            fail(&breaker, t0);
        }
        let later = t0 + LIMITS.cooldown;
        let probe = breaker.admit(later);
        assert_eq!(probe, Admission::Probe);
        assert!(
            matches!(breaker.admit(later), Admission::Refuse { .. }),
            "one probe at a time"
        );
        // The probe fails: open again for a full cooldown.
        assert!(breaker.record(probe, Outcome::Unreachable, LIMITS, later));
        assert!(breaker.is_open(later + Duration::from_millis(499)));
        // The next probe succeeds: closed.
        let later = later + LIMITS.cooldown;
        let probe = breaker.admit(later);
        assert_eq!(probe, Admission::Probe);
        breaker.record(probe, Outcome::Answered, LIMITS, later);
        assert_eq!(breaker.admit(later), Admission::Go);
    }

    #[test]
    fn the_warn_gate_lets_one_through_per_period() {
        let gate = WarnGate::default();
        let t0 = Instant::now();
        assert_eq!(gate.pass(Duration::from_secs(1), t0), Some(0));
        assert_eq!(gate.pass(Duration::from_secs(1), t0), None);
        assert_eq!(gate.pass(Duration::from_secs(1), t0), None);
        assert_eq!(
            gate.pass(Duration::from_secs(1), t0 + Duration::from_secs(1)),
            Some(2)
        );
    }
}
