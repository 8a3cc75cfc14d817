//! A model check of the read protocol (v2).
//!
//! Random interleavings of readers (each a [`ReadFlow`]) in two processes,
//! loads that finish or fail, lease renewals, crashed loaders, invalidations
//! of the key (mark stale, delete), of its group and of its tag, events that
//! reach the other process late, twice or never (a lost event is noticed at
//! the next one, or at a reconnect, and read back from a log that keeps only
//! the last few entries), and a fake clock, against the memory store's
//! state ([`MemoryState`], the same ops the drivers use) and each process's
//! [`Stamps`]. After every action the simulation checks:
//!
//! 1. **One loader per lease period**: when a reader takes a lease, no other
//!    reader still loads under a lease that is neither expired nor revoked.
//! 2. **No stale value after an invalidation**: a value served as fresh was
//!    loaded from the source of truth at or after every invalidation that its
//!    reader's process knew of when the reader started (the invalidating
//!    process knows its own at once; the other learns it from the event or
//!    the log). Stale values only go to stale-on readers, and never from
//!    before a tag invalidation or a delete (those delete).
//! 3. **A fill refused after a revocation**: no fill succeeds under a lease
//!    that a key invalidation revoked.
//! 4. **Every waiter ends within its budget**: no reader waits more than the
//!    retry count, and every reader finishes within a bounded number of its
//!    own steps once loads are allowed to finish.
//! 5. **The fail-safe serves only what it may**: values expire (they are
//!    kept, fresh for a while, then served only if their reload fails, with
//!    a throttled write-back under the lease); an expired value served by
//!    the fail-safe was never reached by an invalidation its reader knew of.
//!
//! The mutant test runs the same check with the invalidation sequence
//! ignored (`stamps::mutant`): it must find a violation.

use std::collections::VecDeque;
use std::time::Duration;

use proptest::prelude::*;

use super::{Claim, Found, Lease, Policy, ReadFlow, Step, judge};
use crate::codec::Codec;
use crate::envelope::{self, Dependency, Envelope, Header};
use crate::events::Invalidated;
use crate::key::StoreKeys;
use crate::stamps::{Stamps, Verdict};
use crate::storage::memory::MemoryState;
use crate::storage::{
    ClaimRefresh, Extend, Fill, Invalidate, Op, ReadClaim, Record, Release, Removal, Watch,
};

const PREFIX: &str = "CM:";
const TAG: &str = "t";
const GROUP: &str = "g";
const LEASE_MS: u64 = 100;
const RETRIES: u32 = 3;
/// The log keeps this many entries: losing more events than that loses them.
const LOG_LEN: u64 = 3;
const PROCESSES: usize = 2;
/// Values are fresh this long, then expired (fail-safe).
const FRESH_MS: u64 = 150;
/// After a failed reload, the expired value is fresh again this long.
const THROTTLE_MS: u64 = 50;
/// Steps a reader may take once loads finish promptly.
const MAX_STEPS: u32 = 16 + 4 * RETRIES;

#[derive(Debug, Clone, Copy)]
enum Kind {
    Key { delete: bool },
    Group,
    Tag,
}

#[derive(Debug, Clone)]
enum Action {
    /// A new caller in process `p`, accepting stale values or not.
    Spawn { process: usize, stale: bool },
    /// Advance one step of reader `i` (modulo the number of readers).
    Step(usize),
    /// Reader `i`'s loader returns (ok or with an error).
    FinishLoad(usize, bool),
    /// Reader `i` renews its lease.
    Renew(usize),
    /// Reader `i`'s process dies; its lease stays until it expires.
    Crash(usize),
    /// The source of truth changes, then process `p` invalidates.
    Invalidate { process: usize, kind: Kind },
    /// Process `p` receives its next event.
    Deliver(usize),
    /// Process `p`'s next event is lost.
    Lose(usize),
    /// Process `p` reconnects and reads the log back.
    Reconnect(usize),
    /// Time passes.
    Tick(u64),
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        any::<bool>().prop_map(|delete| Kind::Key { delete }),
        Just(Kind::Group),
        Just(Kind::Tag),
    ]
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        2 => (0..PROCESSES, any::<bool>()).prop_map(|(process, stale)| Action::Spawn { process, stale }),
        10 => (0..64usize).prop_map(Action::Step),
        3 => (0..64usize, prop::bool::weighted(0.8)).prop_map(|(i, ok)| Action::FinishLoad(i, ok)),
        1 => (0..64usize).prop_map(Action::Renew),
        1 => (0..64usize).prop_map(Action::Crash),
        2 => (0..PROCESSES, kind()).prop_map(|(process, kind)| Action::Invalidate { process, kind }),
        3 => (0..PROCESSES).prop_map(Action::Deliver),
        1 => (0..PROCESSES).prop_map(Action::Lose),
        1 => (0..PROCESSES).prop_map(Action::Reconnect),
        2 => (0..=2 * LEASE_MS).prop_map(Action::Tick),
    ]
}

/// One process: what it knows of the sequence, and its undelivered events.
struct Process {
    stamps: Stamps,
    pending: VecDeque<(u64, Invalidated)>,
    /// The source version below which it must not serve fresh values, and
    /// the one below which it must not serve anything (tags, deletes).
    floor: u64,
    delete_floor: u64,
}

#[derive(Debug)]
struct Reader {
    process: usize,
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
    /// Sequence seen before the step that took the lease, and at the claim.
    seen_seq: u64,
    claim_seq: u64,
    floor: u64,
    delete_floor: u64,
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
    /// What each sequence number invalidated: (source version before it, deletes).
    meaning: Vec<(u64, u64, bool)>,
    /// Key invalidations change the store itself: every process knows them.
    key_floor: u64,
    key_delete_floor: u64,
    processes: Vec<Process>,
    readers: Vec<Reader>,
}

fn policy(stale: bool) -> Policy {
    Policy {
        stale,
        refresh_after: None,
        retries: RETRIES,
        interval: Duration::from_millis(20),
        background_refresh: false,
        soft_timeout: None,
    }
}

impl World {
    fn new() -> Self {
        World {
            store: MemoryState::default(),
            keys: StoreKeys::new(PREFIX, "k"),
            now: 1_000,
            version: 0,
            meaning: Vec::new(),
            key_floor: 0,
            key_delete_floor: 0,
            processes: (0..PROCESSES)
                .map(|_| Process {
                    stamps: Stamps::new(64, true),
                    pending: VecDeque::new(),
                    floor: 0,
                    delete_floor: 0,
                })
                .collect(),
            readers: Vec::new(),
        }
    }

    fn apply<O: Op>(&mut self, op: &O) -> O::Output {
        op.apply(&mut self.store, self.now, &mut Vec::new())
    }

    fn reader(&mut self, i: usize) -> Option<usize> {
        (!self.readers.is_empty()).then(|| i % self.readers.len())
    }

    fn found(&self, i: usize) -> Found {
        let reader = &self.readers[i];
        judge(
            &self.processes[reader.process].stamps,
            reader.read.as_deref(),
            self.now,
        )
        .unwrap_or(Found::Unusable)
    }

    fn act(&mut self, action: &Action) -> Result<(), TestCaseError> {
        match *action {
            Action::Spawn { process, stale } => {
                let flow = ReadFlow::read(policy(stale));
                let next = Some(flow.start());
                let p = &self.processes[process];
                self.readers.push(Reader {
                    process,
                    flow,
                    token: format!("{:024}", self.readers.len()),
                    stale_ok: stale,
                    next,
                    load_version: None,
                    loaded: None,
                    read: None,
                    seen_seq: 0,
                    claim_seq: 0,
                    floor: p.floor.max(self.key_floor),
                    delete_floor: p.delete_floor.max(self.key_delete_floor),
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
            Action::Invalidate { process, kind } => self.invalidate(process, kind),
            Action::Deliver(p) => {
                if let Some((seq, invalidated)) = self.processes[p].pending.pop_front() {
                    self.receive(p, seq, &invalidated);
                }
            }
            Action::Lose(p) => {
                self.processes[p].pending.pop_front();
            }
            Action::Reconnect(p) => self.catch_up(p),
            Action::Tick(ms) => self.now += ms,
        }
        Ok(())
    }

    fn invalidate(&mut self, process: usize, kind: Kind) {
        let before = self.version;
        self.version += 1;
        let mut invalidated = Invalidated::default();
        match kind {
            Kind::Key { delete } => {
                for reader in &mut self.readers {
                    if reader.flow.lease().is_some() {
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
                self.key_floor = self.version;
                if delete {
                    self.key_delete_floor = self.version;
                }
                invalidated.keys.push("k".into());
            }
            Kind::Group => invalidated.groups.push(GROUP.into()),
            Kind::Tag => invalidated.tags.push(TAG.into()),
        }
        let payload = invalidated.payload();
        let seq = self.apply(&Record {
            payload: &payload,
            log_len: LOG_LEN,
        });
        let deletes = matches!(kind, Kind::Tag);
        self.meaning.push((seq, self.version, deletes));
        let _ = before;
        // The invalidating process applies it before returning.
        self.receive(process, seq, &invalidated);
        for (p, other) in self.processes.iter_mut().enumerate() {
            if p != process {
                other.pending.push_back((seq, invalidated.clone()));
            }
        }
    }

    /// An event reaches process `p` (what the subscriber does).
    fn receive(&mut self, p: usize, seq: u64, invalidated: &Invalidated) {
        if seq > self.processes[p].stamps.known() + 1 {
            self.catch_up(p);
        }
        self.applied(p, seq, invalidated);
    }

    fn applied(&mut self, p: usize, seq: u64, invalidated: &Invalidated) {
        let process = &mut self.processes[p];
        process.stamps.apply(&invalidated.entry(seq));
        for &(s, version, deletes) in &self.meaning {
            if s == seq {
                process.floor = process.floor.max(version);
                if deletes {
                    process.delete_floor = process.delete_floor.max(version);
                }
            }
        }
    }

    /// Read the log back from what process `p` knows (`subscriber::catch_up`).
    fn catch_up(&mut self, p: usize) {
        let from = self.processes[p].stamps.known() + 1;
        let (current, entries) = self.store.read_log(from, usize::MAX);
        let first = entries.first().map(|(seq, _)| *seq);
        let lost = match first {
            Some(first) => first > from,
            None => current >= from,
        };
        if lost {
            let up_to = first.map_or(current, |first| first - 1);
            self.processes[p].stamps.skip_to(up_to);
            // What was lost counts as known: values claimed before it are
            // reloaded, never trusted.
            let meanings: Vec<_> = self
                .meaning
                .iter()
                .filter(|m| m.0 <= up_to)
                .copied()
                .collect();
            let process = &mut self.processes[p];
            for (_, version, deletes) in meanings {
                process.floor = process.floor.max(version);
                if deletes {
                    process.delete_floor = process.delete_floor.max(version);
                }
            }
        }
        for (seq, payload) in entries {
            let invalidated = Invalidated::parse(&payload).expect("the model's own payloads");
            self.applied(p, seq, &invalidated);
        }
    }

    fn renew(&mut self, i: usize) {
        let (loading, lease) = {
            let r = &self.readers[i];
            (r.load_version.is_some() && r.next.is_some(), r.flow.lease())
        };
        let (true, Some(lease)) = (loading, lease) else {
            return;
        };
        let token = self.readers[i].token.clone();
        let keys = self.keys.clone();
        let extended = self.apply(&Extend {
            keys: &keys,
            lease,
            token: &token,
            lease_ms: LEASE_MS,
        });
        if extended {
            self.readers[i].lease_until = self.now + LEASE_MS;
        }
    }

    fn finish_load(&mut self, i: usize, ok: bool) {
        let reader = &self.readers[i];
        if reader.next != Some(Step::Load) || reader.loaded.is_some() {
            return;
        }
        let Some(version) = reader.load_version else {
            return;
        };
        // What `Run::seal` decides: storable unless an invalidation of the
        // value's dependencies is already known since its claim.
        let storable = ok
            && (reader.flow.lease().is_none()
                || self.processes[reader.process].stamps.judge(
                    reader.claim_seq,
                    [Dependency::Tag(TAG), Dependency::Group(GROUP)],
                ) == Verdict::Current);
        let reader = &mut self.readers[i];
        if ok {
            reader.loaded = Some(version);
        }
        reader.next = Some(reader.flow.on_loaded(ok, storable));
    }

    fn took_lease(&mut self, i: usize) -> Result<(), TestCaseError> {
        self.check_single_loader(i)?;
        let now = self.now;
        let reader = &mut self.readers[i];
        reader.claim_seq = reader.seen_seq;
        reader.lease_until = now + LEASE_MS;
        reader.revoked = false;
        Ok(())
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
        let p = self.readers[i].process;
        let next = match step {
            Step::Read => {
                self.readers[i].seen_seq = self.processes[p].stamps.latest();
                let placeholder = envelope::placeholder(&token);
                let read = self.apply(&ReadClaim {
                    keys: &keys,
                    placeholder: &placeholder,
                    lease_ms: LEASE_MS,
                });
                let claimed = read.is_none();
                self.readers[i].read = read;
                if claimed {
                    self.took_lease(i)?;
                }
                let found = self.found(i);
                self.readers[i].flow.on_read(found, claimed, now)
            }
            Step::Watch => {
                let read = self.apply(&Watch { keys: &keys });
                self.readers[i].read = read;
                let found = self.found(i);
                self.readers[i].flow.on_watch(found, now)
            }
            Step::Share => self.readers[i].flow.on_shared(),
            Step::Claim { wait } => {
                self.readers[i].seen_seq = self.processes[p].stamps.latest();
                let expected = self.readers[i]
                    .read
                    .as_deref()
                    .map(|read| read[..read.len().min(envelope::HEADER_LEN)].to_vec())
                    .unwrap_or_default();
                let (claim, read) = self.apply(&ClaimRefresh {
                    keys: &keys,
                    token: &token,
                    lease_ms: LEASE_MS,
                    expected: &expected,
                    wait,
                });
                if claim == Claim::Acquired {
                    self.took_lease(i)?;
                }
                if claim == Claim::Changed || read.is_some() {
                    self.readers[i].read = read;
                }
                let found = self.found(i);
                self.readers[i].flow.on_claim(claim, found, now)
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
                let (version, lease, claim_seq) = {
                    let reader = &self.readers[i];
                    (
                        reader.loaded.expect("filled after a successful load"),
                        reader.flow.lease().expect("a fill holds a lease"),
                        reader.claim_seq,
                    )
                };
                let payload = Codec::MessagePack.encode(&version).expect("u64 encodes");
                let sealed = envelope::seal(
                    &Header {
                        codec: Codec::MessagePack,
                        written_at_ms: now,
                        claim_seq,
                        // Fail-safe on: fresh for FRESH_MS, then expired
                        // (kept, served only when its reload fails).
                        fresh_until_ms: now + FRESH_MS,
                        dependencies: &[Dependency::Tag(TAG), Dependency::Group(GROUP)],
                    },
                    &payload,
                )
                .expect("short names");
                let stored = self.apply(&Fill {
                    keys: &keys,
                    lease,
                    token: &token,
                    envelope: &sealed,
                    ttl_ms: None,
                });
                if stored {
                    prop_assert!(
                        !self.readers[i].revoked,
                        "a fill succeeded under a lease revoked by an invalidation"
                    );
                }
                self.readers[i].flow.on_filled(stored)
            }
            Step::Throttle => {
                let lease = self.readers[i]
                    .flow
                    .lease()
                    .expect("a throttle holds a lease");
                let read = self.readers[i]
                    .read
                    .clone()
                    .expect("the expired value read");
                let back = envelope::with_fresh_until(&read, now + THROTTLE_MS);
                let stored = self.apply(&Fill {
                    keys: &keys,
                    lease,
                    token: &token,
                    envelope: &back,
                    ttl_ms: None,
                });
                if stored {
                    prop_assert!(
                        !self.readers[i].revoked,
                        "a throttle write-back landed under a revoked lease"
                    );
                }
                self.readers[i].flow.on_throttled()
            }
            Step::Release => {
                if let Some(lease) = self.readers[i].flow.lease() {
                    self.apply(&Release {
                        keys: &keys,
                        lease,
                        token: &token,
                    });
                }
                let loaded = self.readers[i].loaded.is_some();
                self.readers[i].flow.on_released(loaded)
            }
            Step::Serve(serve) => {
                let reader = &mut self.readers[i];
                let envelope = Envelope::parse(reader.read.as_deref().unwrap_or_default())
                    .expect("the flow serves only values it judged ours");
                let version: u64 = envelope.decode().expect("the model stores u64 payloads");
                if serve.fail_safe {
                    // An expired value, served because its reload failed:
                    // never one an invalidation reached.
                    prop_assert!(
                        version >= reader.floor,
                        "served version {} by the fail-safe after version {} was invalidated away",
                        version,
                        reader.floor
                    );
                } else if serve.stale {
                    prop_assert!(reader.stale_ok, "a stale value went to a stale-off reader");
                    prop_assert!(
                        version >= reader.delete_floor,
                        "served version {} as stale after a deleting invalidation (version {})",
                        version,
                        reader.delete_floor
                    );
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

    /// Property 1: reader `i` just took a lease; nobody else may still hold
    /// a live one.
    fn check_single_loader(&mut self, i: usize) -> Result<(), TestCaseError> {
        for (j, other) in self.readers.iter().enumerate() {
            if j == i || other.next.is_none() || other.flow.lease().is_none() {
                continue;
            }
            prop_assert!(
                other.revoked || self.now >= other.lease_until,
                "reader {} took a lease while reader {} still held a live one",
                i,
                j
            );
        }
        Ok(())
    }

    /// Let every unfinished reader run to the end, loads finishing at once
    /// and events delivered.
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

fn run(actions: &[Action]) -> Result<(), TestCaseError> {
    let mut world = World::new();
    world.act(&Action::Spawn {
        process: 0,
        stale: false,
    })?;
    for action in actions {
        world.act(action)?;
    }
    world.drain()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn the_protocol_keeps_its_promises(actions in prop::collection::vec(action(), 1..300)) {
        run(&actions)?;
    }
}

/// The mutant: with the invalidation sequence ignored (every value judged
/// current), random runs must find a stale value served. Proves that the
/// check sees what the stamps protect.
#[test]
fn a_mutant_that_ignores_the_stamps_fails_the_check() {
    crate::stamps::mutant::IGNORE_STAMPS.with(|ignore| ignore.set(true));
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 512,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let outcome = runner.run(&prop::collection::vec(action(), 1..300), |actions| {
        run(&actions)
    });
    crate::stamps::mutant::IGNORE_STAMPS.with(|ignore| ignore.set(false));
    let error = outcome.expect_err("the mutant must violate a property");
    let message = error.to_string();
    assert!(
        message.contains("served version"),
        "the mutant fails on a stale value: {message}"
    );
}

/// The deterministic scenario: a load begins, the value's group is
/// invalidated (O(1): the lease is not touched), the load finishes and is
/// stored; no reader that starts after the invalidation gets it as fresh.
#[test]
fn a_load_in_flight_during_a_group_invalidation_is_never_served_fresh() {
    let mut world = World::new();
    let act = |world: &mut World, actions: &[Action]| {
        for action in actions {
            world.act(action).expect("no property violated");
        }
    };
    // Reader 0 (process 0) reads a cold key: claims it, starts loading version 0.
    act(
        &mut world,
        &[
            Action::Spawn {
                process: 0,
                stale: false,
            },
            Action::Step(0),
            Action::Step(0),
        ],
    );
    assert_eq!(world.readers[0].load_version, Some(0));
    assert_eq!(world.readers[0].flow.lease(), Some(Lease::Placeholder));
    // Process 1 invalidates the group; process 0 has not heard yet.
    act(
        &mut world,
        &[Action::Invalidate {
            process: 1,
            kind: Kind::Group,
        }],
    );
    // The old load finishes and is stored (process 0 did not know).
    act(&mut world, &[Action::FinishLoad(0, true), Action::Step(0)]);
    assert!(world.store.get(world.keys.value(), world.now).is_some());
    // A stale-off reader of process 1 does not take it: it reloads version 1.
    act(
        &mut world,
        &[Action::Spawn {
            process: 1,
            stale: false,
        }],
    );
    world.drain().expect("no property violated");
    assert_eq!(world.readers[1].loaded, Some(1));
}
