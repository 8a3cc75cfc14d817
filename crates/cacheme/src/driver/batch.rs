//! The batch driver: many keys in one call (`get_or_load_many`), each key
//! decided by its own [`ReadFlow`] and [`Run`], exactly as the single-key
//! driver decides it, with the I/O of all the keys gathered into a few round
//! trips:
//!
//! 1. no I/O: the enabled and skip checks, and the local tier, per key
//!    ([`before_store`]); duplicate ids are read once;
//! 2. the in-process flight of every key: keys another caller of this
//!    process is reading or loading are left to the single-key driver (they
//!    wait for it as they would alone);
//! 3. **one `MGET`** of every key; then, for the keys it found empty,
//!    **one pipeline of claims**: the protocol's claiming read (`SET key
//!    <placeholder> NX PX <lease> GET`), which reads a key filled meanwhile
//!    and claims an empty one (a read to make again, after a foreign Redis
//!    type was repaired or on a full server, is made on its own);
//! 4. one pipeline of refresh claims, for the keys whose value is stale for
//!    this reader or unusable (their flows ask to claim the lease key);
//! 5. **one loader call** with every key whose flow must load: the keys this
//!    call claimed (and those that cannot use the store, which load without
//!    storing: fail-open per key);
//! 6. **one pipeline of fills** (and one of releases, for the keys the
//!    loader did not return or when it failed);
//! 7. the keys another caller (in any process) was loading: each goes on
//!    with its flow in the single-key loop (watch, wait, read again) after
//!    this call's own load, with a loader for that one key should its wait
//!    end without a value.
//!
//! Written once for async and blocking code (`load_many!`, expanded with and
//! without `.await`), like the single-key driver.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use super::run::Run;
use super::{Before, LocalUse, before_store, steps};
use crate::cache::Inner;
use crate::error::LoadError;
use crate::flight::Join;
use crate::lookup::{CacheValue, Lookup};
use crate::protocol::{ReadFlow, Step};
use crate::storage::batch::{MultiGet, Pipelined, each};
use crate::wakeups::Ticket;

/// Why an element of a batch has no value, as its [`Run`] records it.
#[derive(Debug)]
pub(crate) enum Gap<E> {
    /// The loader did not return a value for it: not cached, reported absent.
    Absent,
    /// The batch's loader failed (its error is kept once, for the caller).
    Failed,
    /// A loader call for this element alone failed.
    Own(E),
}

/// One distinct key of a batch.
struct Slot<'r, 'a, V, E> {
    /// The input position of the key's first occurrence.
    index: usize,
    local: Option<LocalUse<V>>,
    way: Way<'r, 'a, V, E>,
    /// The wake-up ticket a refresh claim that registered as a waiter took.
    ticket: Option<Ticket<'r>>,
}

/// Where a distinct key of a batch is.
enum Way<'r, 'a, V, E> {
    /// Its value is decided (served, loaded, absent, or failed).
    Done,
    /// The cache is left out for it: it loads without the store.
    Bypass,
    /// Another caller of this process leads its flight: the single-key
    /// driver waits for it.
    Joined,
    /// This call leads its flight: its run, and the step it is at.
    Run(Box<Run<'r, 'a, V, Gap<E>>>, Step),
}

/// A run taken out of its slot for the single-key loop: the run, its
/// step, and the wake-up ticket its refresh claim took.
type Slow<'r, 'a, V, E> = (Box<Run<'r, 'a, V, Gap<E>>>, Step, Option<Ticket<'r>>);

/// What a batch call returns.
pub(crate) type Many<V, E> = Result<Vec<Option<V>>, LoadError<E>>;

/// The first input position of each distinct key, and for every input
/// position the first position of its key.
fn distinct<V>(lookups: &[Lookup<'_, V>]) -> (Vec<usize>, Vec<usize>) {
    let mut first_of: HashMap<&str, usize> = HashMap::with_capacity(lookups.len());
    let mut firsts = Vec::with_capacity(lookups.len());
    let same = lookups
        .iter()
        .enumerate()
        .map(|(index, lookup)| {
            *first_of.entry(&lookup.key).or_insert_with(|| {
                firsts.push(index);
                index
            })
        })
        .collect();
    (firsts, same)
}

/// The state of a batch call between its round trips.
struct Batch<'r, 'a, V, A, E> {
    lookups: &'r [Lookup<'a, V>],
    args: &'r [A],
    inner: &'r Arc<Inner>,
    slots: Vec<Slot<'r, 'a, V, E>>,
    out: Vec<Option<V>>,
    /// The first error a loader call returned (or a timeout).
    error: Option<LoadError<E>>,
}

impl<'r, 'a, V, A, E> Batch<'r, 'a, V, A, E>
where
    V: CacheValue,
    A: Clone,
    E: Send + Sync + 'static,
{
    /// Step 1: what needs no I/O, per distinct key.
    fn new(lookups: &'r [Lookup<'a, V>], args: &'r [A], inner: &'r Arc<Inner>) -> Self {
        let (firsts, _) = distinct(lookups);
        let mut out: Vec<Option<V>> = (0..lookups.len()).map(|_| None).collect();
        let mut slots = Vec::with_capacity(firsts.len());
        for index in firsts {
            let (local, way) = match before_store(&lookups[index]) {
                Before::Served(value) => {
                    out[index] = Some(value);
                    continue;
                }
                Before::Bypass => (None, Way::Bypass),
                Before::Store(local) => (local, Way::Joined),
            };
            slots.push(Slot {
                index,
                local,
                way,
                ticket: None,
            });
        }
        Batch {
            lookups,
            args,
            inner,
            slots,
            out,
            error: None,
        }
    }

    /// Every key that would go to the store loads without it (no runtime).
    fn bypass_store(&mut self) {
        for slot in &mut self.slots {
            if matches!(slot.way, Way::Joined) {
                slot.way = Way::Bypass;
                slot.local = None;
            }
        }
    }

    /// Step 2: join the in-process flight of every key that goes to the
    /// store; lead it with a run, or leave the key to the single-key driver.
    fn join_flights(&mut self) {
        let inner = self.inner;
        // (A flight older than the longest load is hung: lead a new one.)
        let hung_after = inner.settings().max_load_time;
        for slot in &mut self.slots {
            if !matches!(slot.way, Way::Joined) {
                continue;
            }
            let lookup = &self.lookups[slot.index];
            let keys = inner.store_keys(&lookup.key);
            if let Join::Leader(leader) = inner.flights.join(keys.value(), hung_after) {
                let flow = ReadFlow::read(inner.policy_for(lookup, false));
                let run = Run::new(lookup, inner, keys, Some(leader), flow);
                slot.way = Way::Run(Box::new(run), Step::Read);
            } else {
                inner.stats.of(lookup.spec).coalesced();
            }
        }
    }

    /// The positions of the slots whose runs are at a step `at` accepts.
    fn at(&self, at: impl Fn(&Step) -> bool) -> Vec<usize> {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, slot)| matches!(&slot.way, Way::Run(_, step) if at(step)))
            .map(|(position, _)| position)
            .collect()
    }

    fn run(&self, position: usize) -> &Run<'r, 'a, V, Gap<E>> {
        match &self.slots[position].way {
            Way::Run(run, _) => run,
            _ => unreachable!("`at` only returns slots with runs"),
        }
    }

    /// Feed a reply to the run of a slot: `after` returns its next step,
    /// which is then settled.
    fn advance(
        &mut self,
        position: usize,
        after: impl FnOnce(&mut Run<'r, 'a, V, Gap<E>>) -> Step,
    ) {
        if let Way::Run(run, step) = &mut self.slots[position].way {
            *step = after(run);
        }
        self.settle(position);
    }

    /// Take the steps of a slot's run that need no I/O: serve what was
    /// read, share it with this process's waiters, hand over what was
    /// loaded or the error. The run stays at the first step that needs I/O.
    fn settle(&mut self, position: usize) {
        let slot = &mut self.slots[position];
        let Way::Run(run, step) = &mut slot.way else {
            return;
        };
        let lookup = &self.lookups[slot.index];
        loop {
            match *step {
                Step::Serve(serve) => match run.serve(serve) {
                    Ok(value) => {
                        let current = !serve.stale && !serve.refresh;
                        if let (true, Some(local), Some(bytes)) =
                            (current, slot.local.take(), run.read_bytes())
                        {
                            local.fill(self.inner, lookup, &value, bytes);
                        }
                        self.out[slot.index] = Some(value);
                        break;
                    }
                    Err(next) => *step = next,
                },
                Step::Share => *step = run.share(),
                Step::ServeLoaded { shareable } => {
                    let value = run.finish_loaded(shareable);
                    if let (true, Some(local), Some(bytes)) =
                        (shareable, slot.local.take(), run.sealed_bytes())
                    {
                        local.fill(self.inner, lookup, &value, bytes);
                    }
                    self.out[slot.index] = Some(value);
                    break;
                }
                Step::ServeError => {
                    let error = run.finish_error();
                    keep_first(&mut self.error, error);
                    break;
                }
                Step::Done => break,
                _ => return,
            }
        }
        slot.way = Way::Done;
    }

    /// Step 5, before the loader: the keys to load, each run told that it
    /// loads (stats, miss hook), and the loader's argument.
    fn begin_load(&mut self) -> (Vec<usize>, Vec<A>) {
        let loading: Vec<usize> = self
            .slots
            .iter()
            .enumerate()
            .filter(|(_, slot)| matches!(slot.way, Way::Bypass | Way::Run(_, Step::Load)))
            .map(|(position, _)| position)
            .collect();
        let mut args = Vec::with_capacity(loading.len());
        for &position in &loading {
            let slot = &self.slots[position];
            if let Way::Run(run, _) = &slot.way {
                run.begin_load();
            }
            args.push(self.args[slot.index].clone());
        }
        (loading, args)
    }

    /// The shortest hard timeout of the runs that load, if any applies.
    fn hard_timeout(&self, loading: &[usize]) -> Option<std::time::Duration> {
        loading
            .iter()
            .filter_map(|&position| match &self.slots[position].way {
                Way::Run(run, _) => run.hard_timeout(),
                _ => None,
            })
            .min()
    }

    /// Step 5, after the loader: each key's value to its run (or to the
    /// output, for keys without one); keys the loader did not return are
    /// absent.
    fn after_load<I>(
        &mut self,
        loading: &[usize],
        loaded: Result<I, E>,
        key_of: &(dyn Fn(&A) -> String + Sync),
    ) where
        I: IntoIterator<Item = (A, V)>,
    {
        let mut values = match loaded {
            Ok(items) => Some(
                items
                    .into_iter()
                    .map(|(arg, value)| (key_of(&arg), value))
                    .collect::<HashMap<String, V>>(),
            ),
            Err(error) => {
                keep_first(&mut self.error, LoadError::<E>::Own(error));
                None
            }
        };
        for &position in loading {
            let index = self.slots[position].index;
            let result = match &mut values {
                Some(values) => values.remove(&*self.lookups[index].key).ok_or(Gap::Absent),
                None => Err(Gap::Failed),
            };
            match &mut self.slots[position].way {
                Way::Run(run, step) => *step = run.after_load(result),
                way => {
                    self.out[index] = result.ok();
                    *way = Way::Done;
                }
            }
            self.settle(position);
        }
    }

    /// Step 5 when the loader outlasted the hard timeout.
    fn after_timeout(&mut self, loading: &[usize], after: std::time::Duration) {
        keep_first(&mut self.error, LoadError::<E>::TimedOut(after));
        for &position in loading {
            match &mut self.slots[position].way {
                Way::Run(run, step) => *step = run.after_timeout(after),
                way => *way = Way::Done,
            }
            self.settle(position);
        }
    }

    /// Step 7 for a key this call leads: take the wait a refresh claim
    /// asked for (with its ticket) and hand the rest to the single-key loop.
    fn take_slow(&mut self, position: usize) -> Option<Slow<'r, 'a, V, E>> {
        let slot = &mut self.slots[position];
        match std::mem::replace(&mut slot.way, Way::Done) {
            Way::Run(run, step) => Some((run, step, slot.ticket.take())),
            way => {
                slot.way = way;
                None
            }
        }
    }

    /// Put a run back after the single-key loop reached an end step, and settle it.
    fn put_back(&mut self, position: usize, run: Box<Run<'r, 'a, V, Gap<E>>>, step: Step) {
        self.slots[position].way = Way::Run(run, step);
        self.settle(position);
    }

    /// Step 7 for a key another caller of this process leads: what the
    /// single-key driver returned.
    fn after_joined(&mut self, position: usize, result: Result<V, LoadError<Gap<E>>>) {
        let index = self.slots[position].index;
        match result {
            Ok(value) => self.out[index] = Some(value),
            Err(error) => keep_first(&mut self.error, error),
        }
        self.slots[position].way = Way::Done;
    }

    /// The values in the order of the input (duplicates copied), or the
    /// first error.
    fn finish(self) -> Many<V, E>
    where
        V: Clone,
    {
        if let Some(error) = self.error {
            return Err(error);
        }
        let (_, same) = distinct(self.lookups);
        let mut out = self.out;
        for (index, first) in same.into_iter().enumerate() {
            if first != index {
                out[index] = out[first].clone();
            }
        }
        Ok(out)
    }
}

/// Keep the first error of a batch: a loader's own error, or a timeout.
/// (An absent key is not an error; `Failed` is the batch loader's error,
/// kept already; `Shared` cannot happen: batch lookups do not share errors.)
fn keep_first<E>(kept: &mut Option<LoadError<E>>, error: impl Into<Kept<E>>) {
    let error = match error.into() {
        Kept::Error(error) => error,
        Kept::Nothing => return,
    };
    if kept.is_none() {
        *kept = Some(error);
    }
}

/// An error worth keeping, or none.
enum Kept<E> {
    Error(LoadError<E>),
    Nothing,
}

impl<E> From<LoadError<E>> for Kept<E> {
    fn from(error: LoadError<E>) -> Self {
        Kept::Error(error)
    }
}

impl<E> From<LoadError<Gap<E>>> for Kept<E> {
    fn from(error: LoadError<Gap<E>>) -> Self {
        match error {
            LoadError::Own(Gap::Own(error)) => Kept::Error(LoadError::Own(error)),
            LoadError::TimedOut(after) => Kept::Error(LoadError::TimedOut(after)),
            LoadError::Own(Gap::Absent | Gap::Failed) | LoadError::Shared(_) => Kept::Nothing,
        }
    }
}

/// The one key's value in what a loader returned for it alone.
fn pick<A, V, I, E>(
    loaded: Result<I, E>,
    key: &str,
    key_of: &(dyn Fn(&A) -> String + Sync),
) -> Result<V, Gap<E>>
where
    I: IntoIterator<Item = (A, V)>,
{
    match loaded {
        Ok(items) => items
            .into_iter()
            .find(|(arg, _)| key_of(arg) == key)
            .map(|(_, value)| value)
            .ok_or(Gap::Absent),
        Err(error) => Err(Gap::Own(error)),
    }
}

/// The batch driver, written once for both kinds of code (see the module
/// docs for its steps).
macro_rules! load_many {
    (
        $(#[$meta:meta])*
        fn $name:ident<$($generic:ident),*> where { $($bound:tt)+ };
        run_op = $run_op:ident, wait = $wait:ident, steps = $steps:ident,
        single = $single:path, sync = $sync:ident,
        names = ($loader:ident, $key_of:ident),
        load = |$batch:ident, $loading:ident, $call:ident| $load:expr,
        single_loader = |$arg:ident, $key:ident| $single_loader:expr;
        $($async:ident)? $(.$await:tt)?
    ) => {
        $(#[$meta])*
        pub(crate) $($async)? fn $name<V, A, I, E, $($generic),*>(
            mut lookups: Vec<Lookup<'_, V>>,
            args: Vec<A>,
            $key_of: &(dyn Fn(&A) -> String + Sync),
            $loader: F,
        ) -> Many<V, E>
        where
            V: CacheValue + Clone,
            A: Clone,
            I: IntoIterator<Item = (A, V)>,
            E: Send + Sync + 'static,
            $($bound)+
        {
            let Some(first) = lookups.first() else {
                return Ok(Vec::new());
            };
            let inner = first.cache.inner.clone();
            // A batch's runs record `Gap`s, which no caller waiting for them
            // could use: waiters in this process read for themselves.
            for lookup in &mut lookups {
                lookup.share_errors = false;
            }
            let mut batch = Batch::new(&lookups, &args, &inner);
            if !$sync(&mut batch)$(.$await)? {
                batch.bypass_store();
            }
            batch.join_flights();
            let backend = &inner.backend;
            let settings = inner.settings();
            let report = inner.reporting(&settings);

            // 3. One MGET of every key; then, for the keys it found empty,
            // one pipeline of claiming reads (`SET NX PX GET`: a key filled
            // meanwhile is read, an empty one claimed).
            let reading = batch.at(|step| *step == Step::Read);
            if !reading.is_empty() {
                let keys: Vec<_> = reading.iter().map(|&p| &batch.run(p).keys).collect();
                let found = backend.$run_op(&MultiGet { keys: &keys }, &report)$(.$await)?;
                drop(keys);
                match found {
                    Ok(found) => {
                        for (position, bytes) in reading.into_iter().zip(found) {
                            if let Some(bytes) = bytes {
                                batch.advance(position, |run| run.after_read(Ok(Some(bytes))));
                            }
                        }
                    }
                    // (No claim was sent: nothing to give back.)
                    Err(_) => {
                        for position in reading {
                            batch.advance(position, |run| run.flow.on_store_error());
                        }
                    }
                }
            }
            let claiming = batch.at(|step| *step == Step::Read);
            if !claiming.is_empty() {
                let ops: Vec<_> = claiming.iter().map(|&p| batch.run(p).read_op()).collect();
                let replies = each(
                    backend.$run_op(&Pipelined::per_op_errors(&ops), &report)$(.$await)?,
                    ops.len(),
                    &report,
                );
                drop(ops);
                for (position, reply) in claiming.into_iter().zip(replies) {
                    batch.advance(position, |run| run.after_read(reply));
                }
            }

            // 3b. Reads to make again, one by one (rare): after a key of
            // another Redis type (repaired: deleted), or as plain GETs on a
            // full server.
            for position in batch.at(|step| *step == Step::Read) {
                let Way::Run(run, _) = &mut batch.slots[position].way else {
                    continue;
                };
                if let Some(repair) = run.repair_op() {
                    let _ = backend.$run_op(&repair, &report)$(.$await)?;
                }
                let reply = if run.reads_only() {
                    backend.$run_op(&run.get_op(), &report)$(.$await)?
                } else {
                    backend.$run_op(&run.read_op(), &report)$(.$await)?
                };
                batch.advance(position, |run| run.after_read(reply));
            }

            // 4. One pipeline of refresh claims.
            let claiming = batch.at(|step| matches!(step, Step::Claim { .. }));
            if !claiming.is_empty() {
                for &position in &claiming {
                    if let Way::Run(run, Step::Claim { wait: true }) = &batch.slots[position].way {
                        let ticket = inner.wakeups.listen(run.keys.value());
                        batch.slots[position].ticket = Some(ticket);
                    }
                }
                let ops: Vec<_> = claiming
                    .iter()
                    .map(|&p| match &batch.slots[p].way {
                        Way::Run(run, Step::Claim { wait }) => run.claim_op(*wait),
                        _ => unreachable!("`at` returned a run at a claim"),
                    })
                    .collect();
                let replies = each(
                    backend.$run_op(&Pipelined::new(&ops), &report)$(.$await)?,
                    ops.len(),
                    &report,
                );
                drop(ops);
                for (position, reply) in claiming.into_iter().zip(replies) {
                    batch.advance(position, |run| run.after_claim(reply));
                }
            }

            // 5. One loader call for every key that must load.
            let (loading, load_args) = batch.begin_load();
            if !loading.is_empty() {
                let $batch = &mut batch;
                let $loading = &loading;
                let $call = || $loader(load_args);
                $load
            }

            // 6. One pipeline of fills, one of releases.
            let filling = batch.at(|step| *step == Step::Fill);
            if !filling.is_empty() {
                let mut ops = Vec::with_capacity(filling.len());
                let mut sent = Vec::with_capacity(filling.len());
                for &position in &filling {
                    let fill = batch.run(position).fill_op();
                    sent.push(fill.is_some());
                    ops.extend(fill);
                }
                let mut replies = each(
                    backend.$run_op(&Pipelined::new(&ops), &report)$(.$await)?,
                    ops.len(),
                    &report,
                )
                .into_iter();
                drop(ops);
                for (position, sent) in filling.into_iter().zip(sent) {
                    let reply = match sent {
                        true => replies.next().unwrap_or(Ok(false)),
                        false => Ok(false),
                    };
                    batch.advance(position, |run| run.after_fill(reply));
                }
            }
            let releasing = batch.at(|step| *step == Step::Release);
            if !releasing.is_empty() {
                let ops: Vec<_> = releasing
                    .iter()
                    .filter_map(|&p| batch.run(p).release_op())
                    .collect();
                if !ops.is_empty() {
                    let _ = backend.$run_op(&Pipelined::new(&ops), &report)$(.$await)?;
                }
                drop(ops);
                for position in releasing {
                    batch.advance(position, Run::after_release);
                }
            }

            // 7. Keys others were loading, and anything left: one by one,
            // through the single-key loop.
            for position in 0..batch.slots.len() {
                if let Some((mut run, mut step, ticket)) = batch.take_slow(position) {
                    if let Step::Wait(interval) = step {
                        run.begin_wait();
                        let woken = match ticket {
                            Some(ticket) => ticket.$wait(interval)$(.$await)?,
                            None => false,
                        };
                        step = run.after_wait(woken);
                    }
                    let $arg = args[batch.slots[position].index].clone();
                    let $key = run.lookup.key.clone().into_owned();
                    let mut single = Some($single_loader);
                    loop {
                        step = steps::$steps(&mut run, step, &mut single)$(.$await)?;
                        batch.put_back(position, run, step);
                        // (A value that did not decode sends the flow on.)
                        match batch.take_slow(position) {
                            Some((again, next, _)) => (run, step) = (again, next),
                            None => break,
                        }
                    }
                } else if matches!(batch.slots[position].way, Way::Joined) {
                    let index = batch.slots[position].index;
                    let $arg = args[index].clone();
                    let $key = lookups[index].key.clone().into_owned();
                    let local = batch.slots[position].local.take();
                    let result = $single(&lookups[index], $single_loader, local)$(.$await)?;
                    batch.after_joined(position, result);
                }
            }
            batch.finish()
        }
    };
}

/// Before the first read: the invalidation log (async). False when the
/// store cannot be used from here (no tokio runtime).
async fn sync_async<V, A, E>(batch: &mut Batch<'_, '_, V, A, E>) -> bool {
    if tokio::runtime::Handle::try_current().is_err() {
        batch.inner.warn_no_runtime();
        return false;
    }
    super::sync_async(batch.inner).await;
    true
}

/// [`sync_async`] for blocking code.
fn sync_blocking<V, A, E>(batch: &mut Batch<'_, '_, V, A, E>) -> bool {
    super::sync_blocking(batch.inner);
    true
}

/// The single-key async driver for a key another caller of this process
/// leads, with its local tier.
async fn single_async<V, F, Fut, E>(
    lookup: &Lookup<'_, V>,
    loader: F,
    local: Option<LocalUse<V>>,
) -> Result<V, LoadError<E>>
where
    V: CacheValue,
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<V, E>>,
    E: Send + Sync + 'static,
{
    super::load_async(lookup, loader, false, local).await.result
}

load_many! {
    /// `get_or_load_many`: values in the order of `lookups` (`None` for the
    /// keys the loader did not return), or the first loader error.
    fn load_many_async<F, Fut> where {
        F: Fn(Vec<A>) -> Fut,
        Fut: Future<Output = Result<I, E>>,
    };
    run_op = run, wait = wait, steps = steps_async,
    single = single_async, sync = sync_async, names = (loader, key_of),
    load = |batch, loading, call| match batch.hard_timeout(loading) {
        Some(hard) => match Box::pin(tokio::time::timeout(hard, call())).await {
            Ok(loaded) => batch.after_load(loading, loaded, key_of),
            Err(_) => batch.after_timeout(loading, hard),
        },
        None => {
            let loaded = Box::pin(call()).await;
            batch.after_load(loading, loaded, key_of)
        }
    },
    single_loader = |arg, key| {
        let loader = &loader;
        move || async move { pick(loader(vec![arg]).await, &key, key_of) }
    };
    async .await
}

load_many! {
    /// [`load_many_async`] for blocking code.
    fn load_many_blocking<F> where {
        F: Fn(Vec<A>) -> Result<I, E>,
    };
    run_op = run_blocking, wait = wait_blocking, steps = steps_blocking,
    single = super::load_blocking, sync = sync_blocking, names = (loader, key_of),
    // (A blocking loader cannot be interrupted: no hard timeout here.)
    load = |batch, loading, call| {
        let loaded = call();
        batch.after_load(loading, loaded, key_of)
    },
    single_loader = |arg, key| {
        let loader = &loader;
        move || pick(loader(vec![arg]), &key, key_of)
    };
}

/// `get_many`, before its read: the values of the local tier, and the
/// distinct keys left to read.
struct GetMany<'r, 'a, V> {
    lookups: &'r [Lookup<'a, V>],
    out: Vec<Option<V>>,
    /// Positions left to read, with their local tier and their key's place
    /// in `keys`.
    pending: Vec<(usize, Option<LocalUse<V>>, usize)>,
    keys: Vec<crate::key::StoreKeys>,
}

impl<'r, 'a, V: CacheValue> GetMany<'r, 'a, V> {
    fn new(lookups: &'r [Lookup<'a, V>]) -> Self {
        let mut out: Vec<Option<V>> = (0..lookups.len()).map(|_| None).collect();
        let mut pending = Vec::new();
        let mut keys = Vec::new();
        let mut key_at: HashMap<&str, usize> = HashMap::new();
        for (index, lookup) in lookups.iter().enumerate() {
            let inner = &lookup.cache.inner;
            if !inner.enabled() || lookup.skip {
                continue;
            }
            match LocalUse::check(lookup, inner) {
                Ok(value) => out[index] = Some(value),
                Err(local) => {
                    let at = *key_at.entry(&lookup.key).or_insert_with(|| {
                        keys.push(inner.store_keys(&lookup.key));
                        keys.len() - 1
                    });
                    pending.push((index, local, at));
                }
            }
        }
        GetMany {
            lookups,
            out,
            pending,
            keys,
        }
    }

    /// Serve what the read found, per position (judged, counted, kept
    /// locally when current), like a single `get`.
    fn after_read(mut self, replies: Vec<crate::Result<Option<Vec<u8>>>>) -> Vec<Option<V>> {
        for (index, local, at) in std::mem::take(&mut self.pending) {
            let lookup = &self.lookups[index];
            let Some(Ok(bytes)) = replies.get(at) else {
                continue;
            };
            let inner = &lookup.cache.inner;
            let settings = inner.settings();
            if let Some((value, fresh)) = super::servable(lookup, &settings, bytes.as_deref()) {
                if let (true, Some(local), Some(bytes)) = (fresh, local, bytes) {
                    local.fill(inner, lookup, &value, bytes);
                }
                self.out[index] = Some(value);
            }
        }
        self.out
    }
}

/// `get_many`: the cached values of `lookups`, in their order, from the
/// local tier and then one `MGET`; never loads. Store trouble
/// reads as misses (logged and counted).
pub(crate) async fn get_many_async<V: CacheValue>(lookups: &[Lookup<'_, V>]) -> Vec<Option<V>> {
    let many = GetMany::new(lookups);
    let Some(first) = lookups.first().filter(|_| !many.keys.is_empty()) else {
        return many.out;
    };
    let inner = &first.cache.inner;
    if tokio::runtime::Handle::try_current().is_err() {
        inner.warn_no_runtime();
        return many.out;
    }
    super::sync_async(inner).await;
    let keys: Vec<_> = many.keys.iter().collect();
    let settings = inner.settings();
    let report = inner.reporting(&settings);
    let reply = inner.backend.run(&MultiGet { keys: &keys }, &report).await;
    let replies = split(reply, keys.len());
    drop(keys);
    many.after_read(replies)
}

/// An `MGET`'s reply, one per key: its own, or a share of its failure.
fn split(
    reply: crate::Result<Vec<Option<Vec<u8>>>>,
    len: usize,
) -> Vec<crate::Result<Option<Vec<u8>>>> {
    match reply {
        Ok(found) => found.into_iter().map(Ok).collect(),
        Err(error) => (0..len)
            .map(|_| Err(crate::storage::batch::share_of(&error)))
            .collect(),
    }
}

/// [`get_many_async`] for blocking code.
pub(crate) fn get_many_blocking<V: CacheValue>(lookups: &[Lookup<'_, V>]) -> Vec<Option<V>> {
    let many = GetMany::new(lookups);
    let Some(first) = lookups.first().filter(|_| !many.keys.is_empty()) else {
        return many.out;
    };
    let inner = &first.cache.inner;
    super::sync_blocking(inner);
    let keys: Vec<_> = many.keys.iter().collect();
    let settings = inner.settings();
    let report = inner.reporting(&settings);
    let reply = inner
        .backend
        .run_blocking(&MultiGet { keys: &keys }, &report);
    let replies = split(reply, keys.len());
    drop(keys);
    many.after_read(replies)
}
