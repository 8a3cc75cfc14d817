//! A model check of the read protocol.
//!
//! Random interleavings of readers (each a [`ReadFlow`]), loads that finish
//! or fail, lease renewals, crashed loaders, invalidations and a fake clock
//! run against the memory store's state ([`MemoryState`], the same ops the
//! drivers use). After every action the simulation checks:
//!
//! 1. **One loader per lease period**: when a reader takes the lease, no
//!    other reader still loads under a lease that is neither expired nor
//!    revoked.
//! 2. **No stale value after an invalidation**: a value served as fresh was
//!    loaded from the source of truth at or after the last invalidation that
//!    completed before its reader started (so a stale-off reader never gets
//!    the earlier value); stale values only go to stale-on readers.
//! 3. **Every waiter ends within its budget**: no reader waits more than the
//!    retry count, and every reader finishes within a bounded number of its
//!    own steps once loads are allowed to finish.

use std::time::Duration;

use proptest::prelude::*;

use super::{Claim, Found, Policy, ReadFlow, Step};
use crate::envelope::{self, Codec, Envelope};
use crate::key::StoreKeys;
use crate::storage::memory::{ClaimRequest, FillRequest, MemoryState};
use crate::storage::{
    ClaimLease, Expiry, Extend, Fill, Get, IndexAdd, Invalidate, Op, Register, Release, Removal,
};

const PREFIX: &str = "CM:";
const LEASE_MS: u64 = 100;
const RETRIES: u32 = 3;
/// Steps a reader may take once loads finish promptly: read, share, claims
/// and waits within the budget, register, load, fill, serve, plus re-reads of
/// an undecodable value.
const MAX_STEPS: u32 = 12 + 3 * RETRIES;

#[derive(Debug, Clone)]
enum Action {
    /// A new caller, accepting stale values or not.
    Spawn { stale: bool },
    /// Advance one step of reader `i` (modulo the number of readers).
    Step(usize),
    /// Reader `i`'s loader returns (ok or with an error).
    FinishLoad(usize, bool),
    /// Reader `i` renews its lease.
    Renew(usize),
    /// Reader `i`'s process dies; its lease stays until it expires.
    Crash(usize),
    /// The source of truth changes, then the key is invalidated.
    Invalidate { delete: bool },
    /// Time passes.
    Tick(u64),
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        2 => any::<bool>().prop_map(|stale| Action::Spawn { stale }),
        10 => (0..64usize).prop_map(Action::Step),
        3 => (0..64usize, prop::bool::weighted(0.8)).prop_map(|(i, ok)| Action::FinishLoad(i, ok)),
        1 => (0..64usize).prop_map(Action::Renew),
        1 => (0..64usize).prop_map(Action::Crash),
        1 => any::<bool>().prop_map(|delete| Action::Invalidate { delete }),
        2 => (0..=2 * LEASE_MS).prop_map(Action::Tick),
    ]
}

#[derive(Debug)]
struct Reader {
    flow: ReadFlow,
    token: String,
    stale_ok: bool,
    /// The next step; None once served (or crashed).
    next: Option<Step>,
    /// The source version this reader's load read, once it started loading.
    load_version: Option<u64>,
    /// The loaded value, once the loader returned it.
    loaded: Option<u64>,
    /// The last value read from the store.
    read: Option<Vec<u8>>,
    /// The source version when the reader started.
    floor: u64,
    lease_until: u64,
    revoked: bool,
    waits: u32,
    steps: u32,
    served: bool,
}

struct World {
    store: MemoryState,
    keys: StoreKeys,
    now: u64,
    /// Version of the source of truth.
    version: u64,
    readers: Vec<Reader>,
    tag: Vec<IndexAdd>,
}

fn policy(stale: bool) -> Policy {
    Policy {
        stale,
        refresh_after: None,
        retries: RETRIES,
        interval: Duration::from_millis(20),
        background_refresh: false,
    }
}

fn found(read: Option<&[u8]>) -> Found {
    match read.map(Envelope::parse) {
        None => Found::Missing,
        Some(Ok(e)) => Found::Value {
            state: e.state,
            written_at_ms: e.written_at_ms,
        },
        Some(Err(_)) => Found::Unreadable,
    }
}

impl World {
    fn new() -> Self {
        World {
            store: MemoryState::default(),
            keys: StoreKeys::new(PREFIX, "k"),
            now: 1_000,
            version: 0,
            readers: Vec::new(),
            tag: vec![IndexAdd {
                index: crate::key::tag_index(PREFIX, "t"),
                expiry: Expiry::After(LEASE_MS),
                prune: false,
            }],
        }
    }

    fn apply<O: Op>(&mut self, op: &O) -> O::Output {
        op.apply(&mut self.store, self.now, &mut Vec::new())
    }

    fn reader(&mut self, i: usize) -> Option<usize> {
        (!self.readers.is_empty()).then(|| i % self.readers.len())
    }

    fn act(&mut self, action: &Action) -> Result<(), TestCaseError> {
        match *action {
            Action::Spawn { stale } => {
                let flow = ReadFlow::read(policy(stale));
                let next = Some(flow.start());
                self.readers.push(Reader {
                    flow,
                    token: format!("{:024}", self.readers.len()),
                    stale_ok: stale,
                    next,
                    load_version: None,
                    loaded: None,
                    read: None,
                    floor: self.version,
                    lease_until: 0,
                    revoked: false,
                    waits: 0,
                    steps: 0,
                    served: false,
                });
            }
            Action::Step(i) => {
                if let Some(i) = self.reader(i) {
                    self.step(i)?;
                }
            }
            Action::FinishLoad(i, ok) => {
                if let Some(i) = self.reader(i) {
                    self.finish_load(i, ok);
                }
            }
            Action::Renew(i) => {
                if let Some(i) = self.reader(i) {
                    self.renew(i);
                }
            }
            Action::Crash(i) => {
                if let Some(i) = self.reader(i) {
                    let reader = &mut self.readers[i];
                    if reader.next.is_some() {
                        reader.next = None;
                        reader.served = true; // nothing to check
                    }
                }
            }
            Action::Invalidate { delete } => {
                self.version += 1;
                for reader in &mut self.readers {
                    if reader.flow.holds_lease() {
                        reader.revoked = true;
                    }
                }
                let keys = [self.keys.clone()];
                let removal = if delete {
                    Removal::Delete
                } else {
                    Removal::MarkStale
                };
                self.apply(&Invalidate {
                    keys: &keys,
                    removal,
                });
            }
            Action::Tick(ms) => self.now += ms,
        }
        Ok(())
    }

    fn renew(&mut self, i: usize) {
        let (loading, holds) = {
            let r = &self.readers[i];
            (
                r.load_version.is_some() && r.next.is_some(),
                r.flow.holds_lease(),
            )
        };
        if !(loading && holds) {
            return;
        }
        let token = self.readers[i].token.clone();
        let keys = self.keys.clone();
        let tag = self.tag.clone();
        let extended = self.apply(&Extend {
            register: Register {
                prefix: PREFIX,
                keys: &keys,
                indexes: &tag,
            },
            token: &token,
            lease_ms: LEASE_MS,
        });
        if extended {
            self.readers[i].lease_until = self.now + LEASE_MS;
        }
    }

    fn finish_load(&mut self, i: usize, ok: bool) {
        let reader = &mut self.readers[i];
        if reader.next != Some(Step::Load) || reader.loaded.is_some() {
            return;
        }
        let Some(version) = reader.load_version else {
            return;
        };
        if ok {
            reader.loaded = Some(version);
        }
        reader.next = Some(reader.flow.on_loaded(ok));
    }

    fn step(&mut self, i: usize) -> Result<(), TestCaseError> {
        let Some(step) = self.readers[i].next else {
            return Ok(());
        };
        if step == Step::Load && self.readers[i].load_version.is_some() {
            return Ok(()); // still loading: only FinishLoad moves it on
        }
        self.readers[i].steps += 1;
        let now = self.now;
        let keys = self.keys.clone();
        let token = self.readers[i].token.clone();
        let next = match step {
            Step::Read => {
                let read = self.apply(&Get { keys: &keys });
                let reader = &mut self.readers[i];
                reader.read = read;
                reader.flow.on_read(found(reader.read.as_deref()), now)
            }
            Step::Share => self.readers[i].flow.on_shared(),
            Step::Claim => {
                let (fresh_since_ms, stale_ok) = {
                    let flow = &self.readers[i].flow;
                    (flow.fresh_since_ms(now), flow.stale_ok())
                };
                let tag = self.tag.clone();
                let (claim, read) = self.apply(&ClaimLease {
                    claim: ClaimRequest {
                        keys: &keys,
                        token: &token,
                        lease_ms: LEASE_MS,
                        fresh_since_ms,
                        stale_ok,
                    },
                    register: Register {
                        prefix: PREFIX,
                        keys: &keys,
                        indexes: &tag,
                    },
                });
                if claim == Claim::Acquired {
                    self.check_single_loader(i)?;
                    let reader = &mut self.readers[i];
                    reader.lease_until = now + LEASE_MS;
                    reader.revoked = false;
                }
                let reader = &mut self.readers[i];
                if read.is_some() {
                    reader.read = read;
                }
                reader
                    .flow
                    .on_claim(claim, found(reader.read.as_deref()), now)
            }
            Step::Wait(_) => {
                let reader = &mut self.readers[i];
                reader.waits += 1;
                prop_assert!(reader.waits <= RETRIES, "a reader waited past its budget");
                reader.flow.on_wait_done()
            }
            Step::Load => {
                let reader = &mut self.readers[i];
                reader.load_version = Some(self.version);
                Step::Load
            }
            Step::Fill => {
                let version = self.readers[i]
                    .loaded
                    .expect("filled after a successful load");
                let payload = Codec::MessagePack.encode(&version).expect("u64 encodes");
                let sealed = envelope::seal(Codec::MessagePack, now, &payload);
                let tag = self.tag.clone();
                let stored = self.apply(&Fill(FillRequest {
                    prefix: PREFIX,
                    keys: &keys,
                    token: &token,
                    envelope: &sealed,
                    ttl_ms: None,
                    lease_ms: LEASE_MS,
                    indexes: &tag,
                }));
                let reader = &self.readers[i];
                if stored {
                    prop_assert!(
                        !reader.revoked,
                        "a fill succeeded under a lease revoked by an invalidation"
                    );
                }
                self.readers[i].flow.on_filled(stored)
            }
            Step::Release => {
                self.apply(&Release {
                    keys: &keys,
                    token: &token,
                    lease_ms: LEASE_MS,
                });
                self.readers[i].flow.on_released()
            }
            Step::Serve(serve) => {
                let reader = &mut self.readers[i];
                let envelope = Envelope::parse(reader.read.as_deref().unwrap_or_default())
                    .expect("the flow serves only values it classified as ours");
                let version: u64 = envelope.decode().expect("the model stores u64 payloads");
                if serve.stale {
                    prop_assert!(reader.stale_ok, "a stale value went to a stale-off reader");
                } else {
                    prop_assert!(
                        version >= reader.floor,
                        "served version {} as fresh to a reader that started after version {} was invalidated away",
                        version,
                        reader.floor
                    );
                }
                reader.served = true;
                reader.next = None;
                return Ok(());
            }
            Step::ServeLoaded { .. } => {
                let reader = &mut self.readers[i];
                let version = reader.loaded.expect("served after a successful load");
                prop_assert!(version >= reader.floor);
                reader.served = true;
                reader.next = None;
                return Ok(());
            }
            Step::ServeError | Step::Done => {
                let reader = &mut self.readers[i];
                reader.served = true;
                reader.next = None;
                return Ok(());
            }
        };
        let reader = &mut self.readers[i];
        prop_assert!(
            reader.steps <= MAX_STEPS,
            "reader {} took {} steps",
            i,
            reader.steps
        );
        reader.next = Some(next);
        Ok(())
    }

    /// Property 1: reader `i` just took the lease; nobody else may still hold
    /// a live one.
    fn check_single_loader(&mut self, i: usize) -> Result<(), TestCaseError> {
        for (j, other) in self.readers.iter().enumerate() {
            if j == i || other.next.is_none() || !other.flow.holds_lease() {
                continue;
            }
            prop_assert!(
                other.revoked || self.now >= other.lease_until,
                "reader {} took the lease while reader {} still held a live one",
                i,
                j
            );
        }
        Ok(())
    }

    /// Let every unfinished reader run to the end, loads finishing at once.
    fn drain(&mut self) -> Result<(), TestCaseError> {
        for _ in 0..(MAX_STEPS as usize + 2) * (self.readers.len() + 1) {
            if self.readers.iter().all(|r| r.next.is_none()) {
                break;
            }
            for i in 0..self.readers.len() {
                if self.readers[i].next == Some(Step::Load)
                    && self.readers[i].load_version.is_some()
                {
                    self.finish_load(i, true);
                } else {
                    self.step(i)?;
                }
            }
            self.now += 20;
        }
        for (i, reader) in self.readers.iter().enumerate() {
            prop_assert!(
                reader.served,
                "reader {} never finished: {:?}",
                i,
                reader.next
            );
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn the_protocol_keeps_its_promises(actions in prop::collection::vec(action(), 1..300)) {
        let mut world = World::new();
        world.act(&Action::Spawn { stale: false })?;
        for action in &actions {
            world.act(action)?;
        }
        world.drain()?;
    }
}

/// The deterministic scenario of the issue, in the model: a load begins,
/// the key is invalidated, the load finishes; a stale-off reader that starts
/// after the invalidation must not get the old value.
#[test]
fn a_load_that_began_before_an_invalidation_is_not_served_afterwards() {
    let mut world = World::new();
    let run = |world: &mut World, actions: &[Action]| {
        for action in actions {
            world.act(action).expect("no property violated");
        }
    };
    // Reader 0 reads (miss), claims (and registers), starts loading version 0.
    run(
        &mut world,
        &[
            Action::Spawn { stale: false },
            Action::Step(0),
            Action::Step(0),
            Action::Step(0),
            Action::Step(0),
        ],
    );
    assert_eq!(world.readers[0].load_version, Some(0));
    // The source changes; the key is invalidated (the lease is revoked).
    run(&mut world, &[Action::Invalidate { delete: false }]);
    // The old load finishes; its fill is refused.
    run(&mut world, &[Action::FinishLoad(0, true), Action::Step(0)]);
    assert_eq!(world.store.get(world.keys.value(), world.now), None);
    // A stale-off reader started now loads version 1 itself.
    run(&mut world, &[Action::Spawn { stale: false }]);
    world.drain().expect("no property violated");
    assert_eq!(world.readers[1].loaded, Some(1));
}
