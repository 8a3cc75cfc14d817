//! The read / load / fill decisions, with no I/O.
//!
//! A [`ReadFlow`] is a small state machine. A driver asks it for the next
//! [`Step`], performs that step against a store (a Redis round trip, a loader
//! call, a wait), and feeds back what happened. The async and the blocking
//! drivers (`crate::driver`) are the same loop, one with `.await`; the unit
//! tests below, and the model check in `model_check.rs` (random interleavings
//! of many callers, invalidations, lease expiries and crashes against the
//! memory store with a fake clock), drive it without I/O.
//!
//! The protocol in one paragraph: read the value (one `GET`). A fresh value
//! is served. A stale value (invalidated in place) is served to readers that
//! accept stale data while exactly one caller refreshes it; other readers
//! treat it as a miss. On a miss, claim the key's lease (an atomic script that
//! also re-checks the value, sent in one round trip with the key's
//! registration in its tag and dependency indexes): the one caller that gets
//! it loads and fills; the fill is conditional on
//! still holding the lease, and every kind of invalidation deletes the leases
//! of the keys it reaches (which it finds through those indexes), so a load
//! that began before an invalidation never stores its result as fresh. Callers that do not get the lease register as waiters and sleep
//! until the fill is announced (or `interval` passes), then look again; when
//! their budget of `retries` waits is spent, they load for themselves without
//! storing. See `docs/protocol.md` for the diagram and the guarantees.

use std::time::Duration;

use crate::envelope::State;

#[cfg(test)]
mod model_check;

/// What a reader accepts and how long it waits; resolved from settings,
/// node meta and decorator arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Policy {
    /// Serve a stale (invalidated) value while one caller refreshes it.
    pub stale: bool,
    /// Past this age a fresh value is refreshed ahead of its expiry.
    pub refresh_after: Option<Duration>,
    /// How many times a caller waits for another caller's load.
    pub retries: u32,
    /// The longest single wait.
    pub interval: Duration,
    /// The driver can run a refresh in the background (the loader owns its
    /// data); otherwise the caller that wins the lease refreshes inline.
    pub background_refresh: bool,
}

impl Policy {
    /// The oldest write time (ms) that still counts as current at `now_ms`.
    pub(crate) fn fresh_since_ms(&self, now_ms: u64) -> u64 {
        match self.refresh_after {
            Some(age) => now_ms.saturating_sub(age.as_millis() as u64),
            None => 0,
        }
    }
}

/// What a read of the value key found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Found {
    /// Nothing under the key.
    Missing,
    /// Bytes that are not one of our values (foreign, truncated, newer format,
    /// or a payload that no longer decodes): a miss that the fill overwrites.
    Unreadable,
    /// One of our values.
    Value {
        /// Fresh or stale.
        state: State,
        /// When it was written (ms since the Unix epoch).
        written_at_ms: u64,
    },
}

/// What the claim script answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Claim {
    /// This caller holds the lease and must load, then fill or release.
    Acquired,
    /// Another caller holds the lease. The script registered this caller as a
    /// waiter when what it found is not servable to it.
    Busy,
    /// The value is current (someone filled it since the first read): no load.
    Current,
}

/// The next thing the driver must do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// Read the value key (`GET`).
    Read,
    /// Hand the value just read to the callers waiting in this process, then
    /// continue with [`ReadFlow::on_shared`]. Used before an inline refresh,
    /// so that only the refreshing caller waits for the loader.
    Share,
    /// Put the key in its tag and dependency indexes (so that an
    /// invalidation of the tag or group during a load finds the key and
    /// revokes the lease), then run the claim script: re-check the value,
    /// take the lease if free, register as a waiter otherwise. One round
    /// trip. The driver feeds the re-read value to [`ReadFlow::on_claim`].
    Claim,
    /// Wait for a fill announcement for this key, at most this long.
    Wait(Duration),
    /// Run the loader. The lease is held if [`ReadFlow::holds_lease`].
    Load,
    /// Write the loaded value, only if the lease is still ours.
    Fill,
    /// Give the lease back (the loader failed).
    Release,
    /// Return the value that was read (decode it; if it does not decode, call
    /// [`ReadFlow::on_read`] with [`Found::Unreadable`]).
    Serve(Serve),
    /// Return the loaded value.
    ServeLoaded {
        /// Whether callers waiting in this process may take this value. False
        /// when the fill was refused because an invalidation revoked the lease:
        /// the value may predate the invalidation, so waiters read again.
        shareable: bool,
    },
    /// Return the loader's error.
    ServeError,
    /// A background refresh is over.
    Done,
}

/// How a read value is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Serve {
    /// The value was invalidated (served because the reader accepts stale data).
    pub stale: bool,
    /// Start a background refresh after serving.
    pub refresh: bool,
}

impl Serve {
    /// A fresh value, no refresh.
    pub(crate) const FRESH: Serve = Serve {
        stale: false,
        refresh: false,
    };
}

/// Which storage step a store error interrupted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Reading,
    Claiming,
    Waiting,
    Loading,
    Filling,
    Releasing,
    Finished,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// A caller that wants a value.
    Read,
    /// A background refresh: claim, load, fill, nothing to serve.
    Refresh,
}

/// The state machine of one caller's read (or of one background refresh).
#[derive(Debug, Clone)]
pub(crate) struct ReadFlow {
    policy: Policy,
    mode: Mode,
    phase: Phase,
    waits_left: u32,
    leased: bool,
    /// A value already read that may be served if the refresh is not ours.
    fallback: Option<Serve>,
    /// The write time of a stored value whose payload did not decode: that
    /// value is treated as unreadable from then on (a newer one is not).
    undecodable: Option<u64>,
}

impl ReadFlow {
    /// A caller's read.
    pub(crate) fn read(policy: Policy) -> Self {
        ReadFlow {
            policy,
            mode: Mode::Read,
            phase: Phase::Reading,
            waits_left: policy.retries,
            leased: false,
            fallback: None,
            undecodable: None,
        }
    }

    /// A background refresh of a value that was just served.
    pub(crate) fn refresh(policy: Policy) -> Self {
        ReadFlow {
            mode: Mode::Refresh,
            phase: Phase::Claiming,
            ..ReadFlow::read(policy)
        }
    }

    /// The first step.
    pub(crate) fn start(&self) -> Step {
        match self.mode {
            Mode::Read => Step::Read,
            Mode::Refresh => Step::Claim,
        }
    }

    /// True while this caller holds the lease (between `Claim` and `Fill`/`Release`).
    pub(crate) fn holds_lease(&self) -> bool {
        self.leased
    }

    /// Whether readers of this flow accept stale values.
    pub(crate) fn stale_ok(&self) -> bool {
        self.policy.stale
    }

    /// The oldest write time that counts as current for the claim script: the
    /// policy's, but never a value already found undecodable.
    pub(crate) fn fresh_since_ms(&self, now_ms: u64) -> u64 {
        let since = self.policy.fresh_since_ms(now_ms);
        match self.undecodable {
            Some(written_at) => since.max(written_at + 1),
            None => since,
        }
    }

    /// A value whose payload does not decode into the caller's type (the
    /// struct changed): a miss, and the same value stays a miss for this
    /// flow, so that the claim does not report it as current again.
    pub(crate) fn on_undecodable(&mut self, written_at_ms: u64, now_ms: u64) -> Step {
        self.undecodable = Some(written_at_ms);
        self.on_read(Found::Unreadable, now_ms)
    }

    fn recheck(&self, found: Found) -> Found {
        match found {
            Found::Value { written_at_ms, .. } if Some(written_at_ms) == self.undecodable => {
                Found::Unreadable
            }
            found => found,
        }
    }

    /// The result of a `Read`.
    pub(crate) fn on_read(&mut self, found: Found, now_ms: u64) -> Step {
        self.phase = Phase::Claiming;
        match self.recheck(found) {
            Found::Value {
                state: State::Fresh,
                written_at_ms,
            } => {
                if written_at_ms >= self.policy.fresh_since_ms(now_ms) {
                    self.finish(Step::Serve(Serve::FRESH))
                } else {
                    self.serve_and_refresh(false)
                }
            }
            Found::Value {
                state: State::Stale,
                ..
            } if self.policy.stale => self.serve_and_refresh(true),
            _ => {
                self.fallback = None;
                Step::Claim
            }
        }
    }

    fn serve_and_refresh(&mut self, stale: bool) -> Step {
        if self.policy.background_refresh {
            self.finish(Step::Serve(Serve {
                stale,
                refresh: true,
            }))
        } else {
            self.fallback = Some(Serve {
                stale,
                refresh: false,
            });
            Step::Share
        }
    }

    /// The driver handed the read value to this process's waiters.
    pub(crate) fn on_shared(&mut self) -> Step {
        Step::Claim
    }

    /// The result of a `Claim`, with what the script re-read.
    pub(crate) fn on_claim(&mut self, claim: Claim, found: Found, now_ms: u64) -> Step {
        let found = self.recheck(found);
        match claim {
            Claim::Acquired => {
                self.leased = true;
                self.phase = Phase::Loading;
                Step::Load
            }
            Claim::Current => match self.mode {
                Mode::Refresh => self.finish(Step::Done),
                Mode::Read => self.on_read(found, now_ms),
            },
            Claim::Busy => {
                if self.mode == Mode::Refresh {
                    return self.finish(Step::Done);
                }
                if let Some(serve) = self.fallback {
                    // Someone else refreshes; serve what we read.
                    return self.finish(Step::Serve(serve));
                }
                // What the claim re-read may be servable: a value someone is
                // already refreshing, or stale data for a stale-on reader.
                match found {
                    Found::Value {
                        state: State::Fresh,
                        ..
                    } => return self.finish(Step::Serve(Serve::FRESH)),
                    Found::Value {
                        state: State::Stale,
                        ..
                    } if self.policy.stale => {
                        return self.finish(Step::Serve(Serve {
                            stale: true,
                            refresh: false,
                        }));
                    }
                    _ => {}
                }
                if self.waits_left > 0 {
                    self.waits_left -= 1;
                    self.phase = Phase::Waiting;
                    Step::Wait(self.policy.interval)
                } else {
                    // Budget spent: load for ourselves, as the seed does,
                    // without storing (we hold no lease).
                    self.phase = Phase::Loading;
                    Step::Load
                }
            }
        }
    }

    /// A `Wait` ended (woken by an announcement or timed out).
    pub(crate) fn on_wait_done(&mut self) -> Step {
        self.phase = Phase::Claiming;
        Step::Claim
    }

    /// The loader finished.
    pub(crate) fn on_loaded(&mut self, ok: bool) -> Step {
        match (ok, self.leased) {
            (true, true) => {
                self.phase = Phase::Filling;
                Step::Fill
            }
            (false, true) => {
                self.phase = Phase::Releasing;
                Step::Release
            }
            (true, false) => self.finish(match self.mode {
                Mode::Read => Step::ServeLoaded { shareable: true },
                Mode::Refresh => Step::Done,
            }),
            (false, false) => self.finish(match self.mode {
                Mode::Read => Step::ServeError,
                Mode::Refresh => Step::Done,
            }),
        }
    }

    /// The result of a `Fill`: whether the value was stored.
    pub(crate) fn on_filled(&mut self, stored: bool) -> Step {
        self.leased = false;
        self.finish(match self.mode {
            Mode::Read => Step::ServeLoaded { shareable: stored },
            Mode::Refresh => Step::Done,
        })
    }

    /// A `Release` finished.
    pub(crate) fn on_released(&mut self) -> Step {
        self.leased = false;
        self.finish(match self.mode {
            Mode::Read => Step::ServeError,
            Mode::Refresh => Step::Done,
        })
    }

    /// The store failed (error, timeout, breaker open) during the last step.
    /// The cache fails open: the caller still gets a value.
    pub(crate) fn on_store_error(&mut self) -> Step {
        match self.phase {
            Phase::Reading | Phase::Claiming | Phase::Waiting => {
                if self.mode == Mode::Refresh {
                    return self.finish(Step::Done);
                }
                if let Some(serve) = self.fallback {
                    return self.finish(Step::Serve(serve));
                }
                self.leased = false;
                self.phase = Phase::Loading;
                Step::Load
            }
            // A failed fill: the value is returned, not stored. The lease
            // expires by itself.
            Phase::Filling => self.on_filled(true),
            Phase::Releasing => self.on_released(),
            Phase::Loading | Phase::Finished => self.finish(Step::Done),
        }
    }

    fn finish(&mut self, step: Step) -> Step {
        self.phase = Phase::Finished;
        step
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INTERVAL: Duration = Duration::from_millis(20);

    fn policy() -> Policy {
        Policy {
            stale: true,
            refresh_after: None,
            retries: 2,
            interval: INTERVAL,
            background_refresh: false,
        }
    }

    fn fresh(at: u64) -> Found {
        Found::Value {
            state: State::Fresh,
            written_at_ms: at,
        }
    }

    fn stale() -> Found {
        Found::Value {
            state: State::Stale,
            written_at_ms: 1,
        }
    }

    const SERVE_FRESH: Step = Step::Serve(Serve::FRESH);

    #[test]
    fn a_fresh_value_is_served_after_one_read() {
        let mut flow = ReadFlow::read(policy());
        assert_eq!(flow.start(), Step::Read);
        assert_eq!(flow.on_read(fresh(10), 20), SERVE_FRESH);
    }

    #[test]
    fn a_miss_claims_loads_and_fills() {
        let mut flow = ReadFlow::read(policy());
        assert_eq!(flow.on_read(Found::Missing, 0), Step::Claim);
        assert_eq!(
            flow.on_claim(Claim::Acquired, Found::Missing, 0),
            Step::Load
        );
        assert!(flow.holds_lease());
        assert_eq!(flow.on_loaded(true), Step::Fill);
        assert_eq!(flow.on_filled(true), Step::ServeLoaded { shareable: true });
        assert!(!flow.holds_lease());
    }

    #[test]
    fn an_unreadable_value_is_a_miss() {
        let mut flow = ReadFlow::read(policy());
        assert_eq!(flow.on_read(Found::Unreadable, 0), Step::Claim);
    }

    #[test]
    fn a_revoked_fill_is_not_shared() {
        let mut flow = ReadFlow::read(policy());
        flow.on_read(Found::Missing, 0);
        flow.on_claim(Claim::Acquired, Found::Missing, 0);
        flow.on_loaded(true);
        assert_eq!(
            flow.on_filled(false),
            Step::ServeLoaded { shareable: false }
        );
    }

    #[test]
    fn a_failed_load_releases_the_lease() {
        let mut flow = ReadFlow::read(policy());
        flow.on_read(Found::Missing, 0);
        flow.on_claim(Claim::Acquired, Found::Missing, 0);
        assert_eq!(flow.on_loaded(false), Step::Release);
        assert_eq!(flow.on_released(), Step::ServeError);
    }

    #[test]
    fn busy_waits_within_budget_then_loads_alone() {
        let mut flow = ReadFlow::read(policy());
        flow.on_read(Found::Missing, 0);
        assert_eq!(
            flow.on_claim(Claim::Busy, Found::Missing, 0),
            Step::Wait(INTERVAL)
        );
        assert_eq!(flow.on_wait_done(), Step::Claim);
        assert_eq!(
            flow.on_claim(Claim::Busy, Found::Missing, 0),
            Step::Wait(INTERVAL)
        );
        assert_eq!(flow.on_wait_done(), Step::Claim);
        assert_eq!(flow.on_claim(Claim::Busy, Found::Missing, 0), Step::Load);
        assert!(!flow.holds_lease());
        assert_eq!(flow.on_loaded(true), Step::ServeLoaded { shareable: true });
    }

    #[test]
    fn a_waiter_serves_the_value_that_was_filled() {
        let mut flow = ReadFlow::read(policy());
        flow.on_read(Found::Missing, 0);
        flow.on_claim(Claim::Busy, Found::Missing, 0);
        flow.on_wait_done();
        assert_eq!(flow.on_claim(Claim::Current, fresh(5), 6), SERVE_FRESH);
    }

    #[test]
    fn stale_on_serves_stale_and_refreshes_inline() {
        let mut flow = ReadFlow::read(policy());
        assert_eq!(flow.on_read(stale(), 0), Step::Share);
        assert_eq!(flow.on_shared(), Step::Claim);
        // Someone else refreshes: serve the stale value now.
        assert_eq!(
            flow.on_claim(Claim::Busy, stale(), 0),
            Step::Serve(Serve {
                stale: true,
                refresh: false
            })
        );
        // Or we win the lease and refresh.
        let mut flow = ReadFlow::read(policy());
        flow.on_read(stale(), 0);
        flow.on_shared();
        assert_eq!(flow.on_claim(Claim::Acquired, stale(), 0), Step::Load);
    }

    #[test]
    fn stale_on_with_background_refresh_serves_at_once() {
        let mut flow = ReadFlow::read(Policy {
            background_refresh: true,
            ..policy()
        });
        assert_eq!(
            flow.on_read(stale(), 0),
            Step::Serve(Serve {
                stale: true,
                refresh: true
            })
        );
        let mut refresh = ReadFlow::refresh(policy());
        assert_eq!(refresh.start(), Step::Claim);
        assert_eq!(refresh.on_claim(Claim::Busy, stale(), 0), Step::Done);
        let mut refresh = ReadFlow::refresh(policy());
        assert_eq!(refresh.on_claim(Claim::Acquired, stale(), 0), Step::Load);
        assert_eq!(refresh.on_loaded(true), Step::Fill);
        assert_eq!(refresh.on_filled(true), Step::Done);
    }

    #[test]
    fn stale_off_treats_stale_as_a_miss() {
        let mut flow = ReadFlow::read(Policy {
            stale: false,
            ..policy()
        });
        assert_eq!(flow.on_read(stale(), 0), Step::Claim);
        assert_eq!(flow.on_claim(Claim::Busy, stale(), 0), Step::Wait(INTERVAL));
    }

    #[test]
    fn refresh_after_refreshes_old_values() {
        let policy = Policy {
            refresh_after: Some(Duration::from_millis(100)),
            ..policy()
        };
        let mut young = ReadFlow::read(policy);
        assert_eq!(young.on_read(fresh(950), 1000), SERVE_FRESH);
        let mut old = ReadFlow::read(policy);
        assert_eq!(old.on_read(fresh(800), 1000), Step::Share);
        assert_eq!(policy.fresh_since_ms(1000), 900);
    }

    #[test]
    fn an_undecodable_value_is_never_current_again() {
        let mut flow = ReadFlow::read(policy());
        assert_eq!(flow.on_read(fresh(5), 6), SERVE_FRESH);
        // The driver could not decode it.
        assert_eq!(flow.on_undecodable(5, 6), Step::Claim);
        assert_eq!(flow.fresh_since_ms(6), 6);
        // Someone else holds the lease and the same value is still there: wait.
        assert_eq!(
            flow.on_claim(Claim::Busy, fresh(5), 6),
            Step::Wait(INTERVAL)
        );
        flow.on_wait_done();
        // A newer value was filled meanwhile: serve it.
        assert_eq!(flow.on_claim(Claim::Current, fresh(9), 10), SERVE_FRESH);
    }

    #[test]
    fn store_errors_fail_open() {
        let mut flow = ReadFlow::read(policy());
        assert_eq!(flow.on_store_error(), Step::Load);
        assert_eq!(flow.on_loaded(true), Step::ServeLoaded { shareable: true });

        let mut flow = ReadFlow::read(policy());
        flow.on_read(Found::Missing, 0);
        flow.on_claim(Claim::Acquired, Found::Missing, 0);
        flow.on_loaded(true);
        assert_eq!(flow.on_store_error(), Step::ServeLoaded { shareable: true });

        // A stale value already read is served when the claim fails.
        let mut flow = ReadFlow::read(policy());
        flow.on_read(stale(), 0);
        flow.on_shared();
        assert_eq!(
            flow.on_store_error(),
            Step::Serve(Serve {
                stale: true,
                refresh: false
            })
        );
    }
}
