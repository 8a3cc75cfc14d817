//! The read / load / fill decisions, with no I/O (protocol v2).
//!
//! A [`ReadFlow`] is a small state machine. A driver asks it for the next
//! [`Step`], performs that step against a store (a Redis round trip, a loader
//! call, a wait), and feeds back what happened. The async and the blocking
//! drivers (`crate::driver`) are the same loop; the unit tests below, and the
//! model check in `model_check.rs` (random interleavings of many callers,
//! invalidations of keys, groups and tags, lease expiries, crashes and lost
//! events against the memory store), drive it without I/O.
//!
//! The protocol in one paragraph: the read **is** the claim of a cold key:
//! `SET key <placeholder> NX PX <lease> GET` returns the value when there is
//! one (a hit: one round trip, no script), and when there is none it leaves
//! this caller's placeholder in the key, which is its lease: it loads, and
//! its fill replaces the placeholder only if it is still its own (a script),
//! so a miss costs two round trips. A value found is judged by its state
//! byte (key invalidation flips it in place) and by the invalidation
//! sequence (tag and group invalidations, see `crate::stamps`): fresh values
//! are served; stale ones are served to readers that accept stale data while
//! exactly one caller refreshes under the key's lease key
//! (`{key}:lease`, taken by a script that re-checks the value); deleted,
//! unknown or unreadable ones are refreshed the same way before anyone is
//! served. Every invalidation of a key removes its placeholder and its lease
//! key, so a load that began before it can never fill. Callers that find the
//! key being loaded register as waiters and sleep until the fill is
//! announced (or `interval` passes), then read again; when their budget of
//! `retries` waits is spent they load for themselves without storing. See
//! `docs/protocol.md` for the diagrams and the guarantees.

use std::time::Duration;

use crate::envelope::{State, Stored, Unreadable};
use crate::stamps::{Stamps, Verdict};

#[cfg(test)]
mod model_check;

/// What a reader accepts and how long it waits; resolved from settings,
/// node meta and decorator arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Policy {
    /// Serve a stale (invalidated) value while one caller refreshes it.
    pub(crate) stale: bool,
    /// Past this age a fresh value is refreshed ahead of its expiry.
    pub(crate) refresh_after: Option<Duration>,
    /// How many times a caller waits for another caller's load.
    pub(crate) retries: u32,
    /// The longest single wait.
    pub(crate) interval: Duration,
    /// The driver can run a refresh in the background (the loader owns its
    /// data); otherwise the caller that wins the lease refreshes inline.
    pub(crate) background_refresh: bool,
    /// With an expired value in hand (fail-safe), how long a caller waits for
    /// another caller's reload before it is served the expired value.
    pub(crate) soft_timeout: Option<Duration>,
}

impl Policy {
    /// Whether a fresh value written at `written_at_ms` is young enough to
    /// need no refresh at `now_ms`.
    fn young(&self, written_at_ms: u64, now_ms: u64) -> bool {
        match self.refresh_after {
            Some(age) => written_at_ms.saturating_add(age.as_millis() as u64) > now_ms,
            None => true,
        }
    }
}

/// What a value key was found to hold, judged (state byte, invalidation
/// sequence) by the driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Found {
    /// Nothing.
    Missing,
    /// Another caller's placeholder: it loads this cold key.
    Loading,
    /// A value nobody may be served: bytes that are not one of our values,
    /// a payload that does not decode, a value whose tag was invalidated
    /// after it was claimed (deleted), or one claimed before what this
    /// process knows of the invalidation sequence.
    Unusable,
    /// A value that may be served.
    Value {
        /// Invalidated (in place, or by a group) after it was claimed.
        stale: bool,
        /// Past its freshness: kept only to be served if its reload fails
        /// (fail-safe). Everyone reloads it.
        expired: bool,
        /// When it was written (ms since the Unix epoch).
        written_at_ms: u64,
    },
}

/// What the bytes of a value key are to a reader that knows `stamps`:
/// the state byte (key invalidation) and the invalidation sequence (tags
/// and groups) decide. `Err` for bytes that are not one of our values.
pub(crate) fn judge(
    stamps: &Stamps,
    read: Option<&[u8]>,
    now_ms: u64,
) -> Result<Found, Unreadable> {
    let Some(bytes) = read else {
        return Ok(Found::Missing);
    };
    Ok(match Stored::parse(bytes)? {
        Stored::Loading { .. } => Found::Loading,
        Stored::Value(envelope) => {
            match stamps.judge(envelope.claim_seq, envelope.dependencies()) {
                Verdict::Deleted | Verdict::Unknown => Found::Unusable,
                verdict => Found::Value {
                    stale: verdict == Verdict::Stale || envelope.state == State::Stale,
                    expired: envelope.fresh_until_ms != 0 && now_ms >= envelope.fresh_until_ms,
                    written_at_ms: envelope.written_at_ms,
                },
            }
        }
    })
}

/// Which lease a caller holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lease {
    /// Its placeholder in the value key (a cold key).
    Placeholder,
    /// The key's lease key (a refresh of a value that is there).
    Key,
}

/// What the refresh-claim script answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Claim {
    /// This caller holds the lease key and must load, then fill or release.
    Acquired,
    /// Another caller holds it. The script registered this caller as a
    /// waiter if it asked to.
    Busy,
    /// The value is not the one this caller judged (someone refreshed it,
    /// or it is gone): judge what the script returned instead.
    Changed,
}

/// The next thing the driver must do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// Read the value key, claiming it if it is empty
    /// (`SET key <placeholder> NX PX <lease> GET`).
    Read,
    /// Register as a waiter of the placeholder found (a script that sets
    /// its waiters flag and returns what the key holds now). Take the
    /// wake-up ticket before, then feed the reply to [`ReadFlow::on_watch`].
    Watch,
    /// Hand the value just read to the callers waiting in this process, then
    /// continue with [`ReadFlow::on_shared`]. Used before an inline refresh,
    /// so that only the refreshing caller waits for the loader.
    Share,
    /// Take the key's lease key to refresh the value judged (a script that
    /// re-checks that the value is still that one). `wait`: register as a
    /// waiter if the lease is busy (this caller cannot be served what is
    /// there). Take the wake-up ticket before when `wait`.
    Claim {
        /// Register as a waiter when busy.
        wait: bool,
    },
    /// Wait for a fill announcement for this key, at most this long.
    Wait(Duration),
    /// Run the loader. A lease is held if [`ReadFlow::lease`] says so.
    Load,
    /// Write the loaded value, only if the lease is still ours.
    Fill,
    /// Give the lease back (the loader failed, or the value cannot be stored).
    Release,
    /// The reload of an expired value failed (or timed out): write the
    /// expired value back, fresh for `fail_safe_throttle`, under the lease,
    /// so that nobody in the fleet retries the source before then; then
    /// continue with [`ReadFlow::on_throttled`].
    Throttle,
    /// Return the value that was read (decode it; if it does not decode,
    /// call [`ReadFlow::on_undecodable`]).
    Serve(Serve),
    /// Return the loaded value.
    ServeLoaded {
        /// Whether callers waiting in this process may take this value. False
        /// when the fill was refused or failed: the value may predate an
        /// invalidation, so waiters read again.
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
    pub(crate) stale: bool,
    /// Start a background refresh after serving.
    pub(crate) refresh: bool,
    /// An expired value, served because its reload failed, timed out, or
    /// outlasted this caller's wait (fail-safe).
    pub(crate) fail_safe: bool,
}

impl Serve {
    /// A fresh value, no refresh.
    pub(crate) const FRESH: Serve = Serve {
        stale: false,
        refresh: false,
        fail_safe: false,
    };

    /// A stale value for a stale-on reader.
    #[cfg(test)]
    pub(crate) const fn stale(refresh: bool) -> Serve {
        Serve {
            stale: true,
            refresh,
            fail_safe: false,
        }
    }

    /// An expired value, served by the fail-safe.
    pub(crate) const FAIL_SAFE: Serve = Serve {
        stale: false,
        refresh: false,
        fail_safe: true,
    };
}

/// Which storage step a store error interrupted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Reading,
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

/// How many times in a row the refresh claim may find the value changed
/// before the flow reads afresh (each time someone else refreshed it).
const CHANGES: u32 = 3;

/// The state machine of one caller's read (or of one background refresh).
#[derive(Debug, Clone)]
pub(crate) struct ReadFlow {
    policy: Policy,
    mode: Mode,
    phase: Phase,
    waits_left: u32,
    changes_left: u32,
    lease: Option<Lease>,
    /// A value already read that may be served if the refresh is not ours.
    fallback: Option<Serve>,
    /// An expired value already read, served if its reload fails, times
    /// out, or outlasts the wait (fail-safe).
    fail_safe: bool,
    /// With `fail_safe`: when the soft timeout ends (ms since the epoch).
    soft_deadline_ms: Option<u64>,
}

impl ReadFlow {
    /// A caller's read.
    pub(crate) fn read(policy: Policy) -> Self {
        ReadFlow {
            policy,
            mode: Mode::Read,
            phase: Phase::Reading,
            waits_left: policy.retries,
            changes_left: CHANGES,
            lease: None,
            fallback: None,
            fail_safe: false,
            soft_deadline_ms: None,
        }
    }

    /// A background refresh of a value that was just served (and read).
    pub(crate) fn refresh(policy: Policy) -> Self {
        ReadFlow {
            mode: Mode::Refresh,
            ..ReadFlow::read(policy)
        }
    }

    /// The first step.
    pub(crate) fn start(&self) -> Step {
        match self.mode {
            Mode::Read => Step::Read,
            Mode::Refresh => Step::Claim { wait: false },
        }
    }

    /// Whether an expired value is in hand, to be served if the reload
    /// fails (fail-safe).
    pub(crate) fn has_fail_safe(&self) -> bool {
        self.fail_safe
    }

    /// The lease this caller holds, between taking it and `Fill`/`Release`.
    pub(crate) fn lease(&self) -> Option<Lease> {
        self.lease
    }

    /// The result of a `Read`: what the key held, and whether the read left
    /// this caller's placeholder in an empty key.
    pub(crate) fn on_read(&mut self, found: Found, claimed: bool, now_ms: u64) -> Step {
        if claimed {
            return self.leased(Lease::Placeholder);
        }
        self.judge(found, now_ms)
    }

    /// Decide on a value key's content that this caller did not claim.
    fn judge(&mut self, found: Found, now_ms: u64) -> Step {
        self.phase = Phase::Reading;
        match found {
            Found::Value {
                stale: false,
                expired: true,
                ..
            } => {
                // Expired: everyone reloads it, but it stays in hand to be
                // served if the reload fails (fail-safe).
                self.fallback = None;
                if self.mode == Mode::Read && !self.fail_safe {
                    self.fail_safe = true;
                    self.soft_deadline_ms = self
                        .policy
                        .soft_timeout
                        .map(|soft| now_ms.saturating_add(soft.as_millis() as u64));
                }
                Step::Claim {
                    wait: self.mode == Mode::Read,
                }
            }
            Found::Value {
                stale: false,
                written_at_ms,
                ..
            } if self.policy.young(written_at_ms, now_ms) => {
                if self.mode == Mode::Refresh {
                    // Someone refreshed it meanwhile.
                    return self.finish(Step::Done);
                }
                self.finish(Step::Serve(Serve::FRESH))
            }
            Found::Value { stale, .. } if !stale || self.policy.stale => {
                if self.mode == Mode::Refresh {
                    return Step::Claim { wait: false };
                }
                self.serve_and_refresh(stale)
            }
            // Empty (an expired placeholder, a deleted value): read again,
            // which claims it.
            Found::Missing => {
                self.fail_safe = false;
                Step::Read
            }
            Found::Loading => {
                self.fail_safe = false;
                if self.mode == Mode::Refresh {
                    return self.finish(Step::Done);
                }
                self.wait_or_load_alone(Step::Watch)
            }
            // Stale for a stale-off reader, unusable for anyone: refresh it
            // under the lease key before serving.
            Found::Value { .. } | Found::Unusable => {
                self.fallback = None;
                self.fail_safe = false;
                Step::Claim {
                    wait: self.mode == Mode::Read,
                }
            }
        }
    }

    fn serve_and_refresh(&mut self, stale: bool) -> Step {
        if self.policy.background_refresh {
            self.finish(Step::Serve(Serve {
                stale,
                refresh: true,
                fail_safe: false,
            }))
        } else {
            self.fallback = Some(Serve {
                stale,
                refresh: false,
                fail_safe: false,
            });
            Step::Share
        }
    }

    /// The driver handed the read value to this process's waiters.
    pub(crate) fn on_shared(&mut self) -> Step {
        Step::Claim { wait: false }
    }

    /// The result of a `Watch`: what the key holds now (the waiters flag is
    /// set if it still holds a placeholder).
    pub(crate) fn on_watch(&mut self, found: Found, now_ms: u64) -> Step {
        match found {
            Found::Loading => self.wait(),
            found => {
                // Filled, or gone, between the read and the watch: the wait
                // that `judge` counted did not happen.
                self.waits_left += 1;
                self.judge(found, now_ms)
            }
        }
    }

    /// The result of a `Claim`, with what the script found in the value key.
    pub(crate) fn on_claim(&mut self, claim: Claim, found: Found, now_ms: u64) -> Step {
        match claim {
            Claim::Acquired => self.leased(Lease::Key),
            Claim::Changed if self.changes_left > 0 => {
                // Judge what is there now (the driver keeps it as the value
                // read): serve it, share it before refreshing it, or claim
                // again for it.
                self.changes_left -= 1;
                self.fallback = None;
                self.judge(found, now_ms)
            }
            Claim::Changed => self.finish_or_read(),
            Claim::Busy => {
                if self.mode == Mode::Refresh {
                    return self.finish(Step::Done);
                }
                if let Some(serve) = self.fallback {
                    // Someone else refreshes; serve what we read.
                    return self.finish(Step::Serve(serve));
                }
                if self.fail_safe && self.soft_deadline_ms.is_some_and(|at| now_ms >= at) {
                    // Someone else reloads an expired value, and takes longer
                    // than this caller's soft timeout: serve what we have.
                    return self.finish(Step::Serve(Serve::FAIL_SAFE));
                }
                let interval = match (self.fail_safe, self.soft_deadline_ms) {
                    (true, Some(at)) => self.policy.interval.min(
                        Duration::from_millis(at.saturating_sub(now_ms))
                            .max(Duration::from_millis(1)),
                    ),
                    _ => self.policy.interval,
                };
                self.wait_or_load_alone(Step::Wait(interval))
            }
        }
    }

    fn finish_or_read(&mut self) -> Step {
        match self.mode {
            Mode::Refresh => self.finish(Step::Done),
            Mode::Read => Step::Read,
        }
    }

    /// Wait (with `step`: a `Watch` first, or the `Wait` itself) while the
    /// budget lasts; then load alone, without storing.
    fn wait_or_load_alone(&mut self, step: Step) -> Step {
        if self.waits_left > 0 {
            self.waits_left -= 1;
            step
        } else if self.fail_safe {
            // Budget spent with an expired value in hand: serve it.
            self.finish(Step::Serve(Serve::FAIL_SAFE))
        } else {
            // Budget spent: load for ourselves, as Python cacheme does, without
            // storing (we hold no lease).
            self.phase = Phase::Loading;
            Step::Load
        }
    }

    fn wait(&mut self) -> Step {
        Step::Wait(self.policy.interval)
    }

    /// A `Wait` ended (woken by an announcement or timed out).
    pub(crate) fn on_wait_done(&mut self) -> Step {
        self.phase = Phase::Reading;
        Step::Read
    }

    fn leased(&mut self, lease: Lease) -> Step {
        self.lease = Some(lease);
        self.phase = Phase::Loading;
        Step::Load
    }

    /// The loader finished; `storable`: it succeeded and its value may be
    /// written (it serialized, is not too large, and no invalidation of its
    /// dependencies is known to have happened since the claim).
    pub(crate) fn on_loaded(&mut self, ok: bool, storable: bool) -> Step {
        match (ok, self.lease.is_some()) {
            (true, true) if storable => {
                self.phase = Phase::Filling;
                Step::Fill
            }
            (true, true) => {
                self.phase = Phase::Releasing;
                self.fallback = None;
                Step::Release
            }
            (false, true) if self.fail_safe => {
                self.phase = Phase::Releasing;
                Step::Throttle
            }
            (false, true) => {
                self.phase = Phase::Releasing;
                Step::Release
            }
            (false, false) if self.fail_safe && self.mode == Mode::Read => {
                self.finish(Step::Serve(Serve::FAIL_SAFE))
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
        self.lease = None;
        self.finish(match self.mode {
            Mode::Read => Step::ServeLoaded { shareable: stored },
            Mode::Refresh => Step::Done,
        })
    }

    /// A `Throttle` finished (whether or not the write-back landed): serve
    /// the expired value.
    pub(crate) fn on_throttled(&mut self) -> Step {
        self.lease = None;
        self.finish(match self.mode {
            Mode::Read => Step::Serve(Serve::FAIL_SAFE),
            Mode::Refresh => Step::Done,
        })
    }

    /// A `Release` finished; `loaded`: the loader had succeeded (its value
    /// was not stored).
    pub(crate) fn on_released(&mut self, loaded: bool) -> Step {
        self.lease = None;
        self.finish(match (self.mode, loaded) {
            (Mode::Read, true) => Step::ServeLoaded { shareable: false },
            (Mode::Read, false) => Step::ServeError,
            (Mode::Refresh, _) => Step::Done,
        })
    }

    /// A value this flow was about to serve does not decode into the
    /// caller's type (the struct changed): it is unusable; refresh it.
    pub(crate) fn on_undecodable(&mut self) -> Step {
        self.fallback = None;
        self.judge(Found::Unusable, 0)
    }

    /// The store failed (error, timeout, breaker open) during the last step.
    /// The cache fails open: the caller still gets a value.
    pub(crate) fn on_store_error(&mut self) -> Step {
        match self.phase {
            Phase::Reading => {
                if self.mode == Mode::Refresh {
                    return self.finish(Step::Done);
                }
                if let Some(serve) = self.fallback {
                    return self.finish(Step::Serve(serve));
                }
                if self.fail_safe {
                    return self.finish(Step::Serve(Serve::FAIL_SAFE));
                }
                self.lease = None;
                self.phase = Phase::Loading;
                Step::Load
            }
            // A failed fill: the value is returned, not stored, and not
            // shared (the server may have refused it). The lease expires by
            // itself.
            Phase::Filling => self.on_filled(false),
            Phase::Releasing if self.fail_safe => self.on_throttled(),
            Phase::Releasing => {
                self.lease = None;
                self.finish(match self.mode {
                    Mode::Read => Step::ServeError,
                    Mode::Refresh => Step::Done,
                })
            }
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
            soft_timeout: None,
        }
    }

    fn fresh(at: u64) -> Found {
        Found::Value {
            stale: false,
            expired: false,
            written_at_ms: at,
        }
    }

    fn stale() -> Found {
        Found::Value {
            stale: true,
            expired: false,
            written_at_ms: 1,
        }
    }

    const SERVE_FRESH: Step = Step::Serve(Serve::FRESH);
    const WAIT: Step = Step::Wait(INTERVAL);
    const CLAIM_WAITING: Step = Step::Claim { wait: true };

    #[test]
    fn a_fresh_value_is_served_after_one_read() {
        let mut flow = ReadFlow::read(policy());
        assert_eq!(flow.start(), Step::Read);
        assert_eq!(flow.on_read(fresh(10), false, 20), SERVE_FRESH);
    }

    #[test]
    fn a_cold_read_claims_then_loads_and_fills() {
        let mut flow = ReadFlow::read(policy());
        assert_eq!(flow.on_read(Found::Missing, true, 0), Step::Load);
        assert_eq!(flow.lease(), Some(Lease::Placeholder));
        assert_eq!(flow.on_loaded(true, true), Step::Fill);
        assert_eq!(flow.on_filled(true), Step::ServeLoaded { shareable: true });
        assert_eq!(flow.lease(), None);
    }

    #[test]
    fn an_unusable_value_is_refreshed_under_the_lease_key() {
        let mut flow = ReadFlow::read(policy());
        assert_eq!(flow.on_read(Found::Unusable, false, 0), CLAIM_WAITING);
        assert_eq!(
            flow.on_claim(Claim::Acquired, Found::Unusable, 0),
            Step::Load
        );
        assert_eq!(flow.lease(), Some(Lease::Key));
    }

    #[test]
    fn a_revoked_or_failed_fill_is_not_shared() {
        let mut flow = ReadFlow::read(policy());
        flow.on_read(Found::Missing, true, 0);
        flow.on_loaded(true, true);
        assert_eq!(
            flow.on_filled(false),
            Step::ServeLoaded { shareable: false }
        );
        let mut flow = ReadFlow::read(policy());
        flow.on_read(Found::Missing, true, 0);
        flow.on_loaded(true, true);
        assert_eq!(
            flow.on_store_error(),
            Step::ServeLoaded { shareable: false }
        );
    }

    #[test]
    fn a_value_known_to_be_invalidated_during_its_load_is_released_not_filled() {
        let mut flow = ReadFlow::read(policy());
        flow.on_read(Found::Missing, true, 0);
        assert_eq!(flow.on_loaded(true, false), Step::Release);
        assert_eq!(
            flow.on_released(true),
            Step::ServeLoaded { shareable: false }
        );
    }

    #[test]
    fn a_failed_load_releases_the_lease() {
        let mut flow = ReadFlow::read(policy());
        flow.on_read(Found::Missing, true, 0);
        assert_eq!(flow.on_loaded(false, false), Step::Release);
        assert_eq!(flow.on_released(false), Step::ServeError);
    }

    #[test]
    fn a_key_being_loaded_is_watched_and_waited_for_within_the_budget() {
        let mut flow = ReadFlow::read(policy());
        assert_eq!(flow.on_read(Found::Loading, false, 0), Step::Watch);
        assert_eq!(flow.on_watch(Found::Loading, 0), WAIT);
        assert_eq!(flow.on_wait_done(), Step::Read);
        assert_eq!(flow.on_read(Found::Loading, false, 0), Step::Watch);
        assert_eq!(flow.on_watch(Found::Loading, 0), WAIT);
        assert_eq!(flow.on_wait_done(), Step::Read);
        // Budget spent: load alone, without a lease.
        assert_eq!(flow.on_read(Found::Loading, false, 0), Step::Load);
        assert_eq!(flow.lease(), None);
        assert_eq!(
            flow.on_loaded(true, true),
            Step::ServeLoaded { shareable: true }
        );
    }

    #[test]
    fn a_fill_between_read_and_watch_is_served_without_a_wait() {
        let mut flow = ReadFlow::read(policy());
        flow.on_read(Found::Loading, false, 0);
        assert_eq!(flow.on_watch(fresh(5), 6), SERVE_FRESH);
    }

    #[test]
    fn stale_on_serves_stale_and_refreshes_inline() {
        let mut flow = ReadFlow::read(policy());
        assert_eq!(flow.on_read(stale(), false, 0), Step::Share);
        assert_eq!(flow.on_shared(), Step::Claim { wait: false });
        // Someone else refreshes: serve the stale value now.
        assert_eq!(
            flow.on_claim(Claim::Busy, stale(), 0),
            Step::Serve(Serve::stale(false))
        );
        // Or we win the lease and refresh.
        let mut flow = ReadFlow::read(policy());
        flow.on_read(stale(), false, 0);
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
            flow.on_read(stale(), false, 0),
            Step::Serve(Serve::stale(true))
        );
        let mut refresh = ReadFlow::refresh(policy());
        assert_eq!(refresh.start(), Step::Claim { wait: false });
        assert_eq!(refresh.on_claim(Claim::Busy, stale(), 0), Step::Done);
        let mut refresh = ReadFlow::refresh(policy());
        assert_eq!(refresh.on_claim(Claim::Acquired, stale(), 0), Step::Load);
        assert_eq!(refresh.on_loaded(true, true), Step::Fill);
        assert_eq!(refresh.on_filled(true), Step::Done);
        // A refresh that finds the value refreshed already stops.
        let mut refresh = ReadFlow::refresh(policy());
        assert_eq!(refresh.on_claim(Claim::Changed, fresh(9), 10), Step::Done);
    }

    #[test]
    fn stale_off_treats_stale_as_a_miss() {
        let mut flow = ReadFlow::read(Policy {
            stale: false,
            ..policy()
        });
        assert_eq!(flow.on_read(stale(), false, 0), CLAIM_WAITING);
        assert_eq!(flow.on_claim(Claim::Busy, stale(), 0), WAIT);
        assert_eq!(flow.on_wait_done(), Step::Read);
    }

    #[test]
    fn a_claim_that_finds_the_value_refreshed_serves_it() {
        let mut flow = ReadFlow::read(Policy {
            stale: false,
            ..policy()
        });
        flow.on_read(stale(), false, 0);
        assert_eq!(flow.on_claim(Claim::Changed, fresh(9), 10), SERVE_FRESH);
        // Gone meanwhile: read again (which claims the cold key).
        let mut flow = ReadFlow::read(policy());
        flow.on_read(Found::Unusable, false, 0);
        assert_eq!(
            flow.on_claim(Claim::Changed, Found::Missing, 10),
            Step::Read
        );
    }

    #[test]
    fn refresh_after_refreshes_old_values() {
        let policy = Policy {
            refresh_after: Some(Duration::from_millis(100)),
            ..policy()
        };
        let mut young = ReadFlow::read(policy);
        assert_eq!(young.on_read(fresh(950), false, 1000), SERVE_FRESH);
        let mut old = ReadFlow::read(policy);
        assert_eq!(old.on_read(fresh(800), false, 1000), Step::Share);
    }

    #[test]
    fn an_undecodable_value_is_refreshed() {
        let mut flow = ReadFlow::read(policy());
        assert_eq!(flow.on_read(fresh(5), false, 6), SERVE_FRESH);
        // The driver could not decode it.
        assert_eq!(flow.on_undecodable(), CLAIM_WAITING);
        assert_eq!(flow.on_claim(Claim::Busy, Found::Unusable, 6), WAIT);
    }

    fn expired() -> Found {
        Found::Value {
            stale: false,
            expired: true,
            written_at_ms: 1,
        }
    }

    const FAIL_SAFE: Step = Step::Serve(Serve::FAIL_SAFE);

    #[test]
    fn an_expired_value_is_reloaded_and_served_if_the_reload_fails() {
        let mut flow = ReadFlow::read(policy());
        assert_eq!(flow.on_read(expired(), false, 0), CLAIM_WAITING);
        assert_eq!(flow.on_claim(Claim::Acquired, expired(), 0), Step::Load);
        // The reload works: the new value is stored and served.
        assert_eq!(flow.on_loaded(true, true), Step::Fill);
        // Or it fails: the expired value is written back, throttled, and served.
        let mut flow = ReadFlow::read(policy());
        flow.on_read(expired(), false, 0);
        flow.on_claim(Claim::Acquired, expired(), 0);
        assert_eq!(flow.on_loaded(false, false), Step::Throttle);
        assert_eq!(flow.on_throttled(), FAIL_SAFE);
        // A store error on the way: served too.
        let mut flow = ReadFlow::read(policy());
        flow.on_read(expired(), false, 0);
        assert_eq!(flow.on_store_error(), FAIL_SAFE);
    }

    #[test]
    fn waiters_with_an_expired_value_are_served_it_at_the_soft_timeout() {
        let mut flow = ReadFlow::read(Policy {
            soft_timeout: Some(Duration::from_millis(5)),
            ..policy()
        });
        assert_eq!(flow.on_read(expired(), false, 100), CLAIM_WAITING);
        // Someone else reloads: wait, at most the rest of the soft timeout.
        assert_eq!(
            flow.on_claim(Claim::Busy, expired(), 101),
            Step::Wait(Duration::from_millis(4))
        );
        assert_eq!(flow.on_wait_done(), Step::Read);
        assert_eq!(flow.on_read(expired(), false, 105), CLAIM_WAITING);
        assert_eq!(flow.on_claim(Claim::Busy, expired(), 105), FAIL_SAFE);
        // Without a soft timeout: the expired value when the budget is spent.
        let mut flow = ReadFlow::read(policy());
        flow.on_read(expired(), false, 0);
        for _ in 0..2 {
            assert_eq!(flow.on_claim(Claim::Busy, expired(), 0), WAIT);
            flow.on_wait_done();
            flow.on_read(expired(), false, 0);
        }
        assert_eq!(flow.on_claim(Claim::Busy, expired(), 0), FAIL_SAFE);
    }

    #[test]
    fn store_errors_fail_open() {
        let mut flow = ReadFlow::read(policy());
        assert_eq!(flow.on_store_error(), Step::Load);
        assert_eq!(
            flow.on_loaded(true, true),
            Step::ServeLoaded { shareable: true }
        );

        // A stale value already read is served when the claim fails.
        let mut flow = ReadFlow::read(policy());
        flow.on_read(stale(), false, 0);
        flow.on_shared();
        assert_eq!(flow.on_store_error(), Step::Serve(Serve::stale(false)));
    }
}
