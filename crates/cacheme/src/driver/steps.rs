//! The drivers' loops, written once: `steps!` expands to the async loop
//! (store ops awaited, the loader's future awaited) and to the blocking one
//! (plain calls). Everything between the I/O is in [`Run`].

use std::future::Future;

use super::run::Run;
use crate::lookup::CacheValue;
use crate::protocol::Step;

/// Await a rare step's future boxed (async), or just call it (blocking):
/// kept out of the loop's future, which every remote hit allocates.
macro_rules! rare {
    ($future:expr, $await:tt) => {
        Box::pin($future).$await
    };
    ($call:expr) => {
        $call
    };
}

/// Defines a loop that performs steps until the flow reaches one that ends
/// it (a `Serve*`, `ServeError` or `Done`), which it returns. `$run_op` is
/// the backend's method for one op, `$wait` the ticket's, `$load` how the
/// loader is called; `$(.$await)?` is `.await` for the async loop.
macro_rules! steps {
    (
        $(#[$meta:meta])*
        fn $name:ident<$($generic:ident),*>($loader:ident: $loader_ty:ty) where { $($bound:tt)+ };
        run_op = $run_op:ident, wait = $wait:ident, load = |$run_id:ident, $load_fn:ident, $span:ident| $load:expr;
        $($async:ident)? $(.$await:tt)?
    ) => {
        $(#[$meta])*
        pub(super) $($async)? fn $name<V, E, $($generic),*>(
            run: &mut Run<'_, '_, V, E>,
            mut step: Step,
            $loader: &mut Option<$loader_ty>,
        ) -> Step
        where
            V: CacheValue,
            E: Send + Sync + 'static,
            $($bound)+
        {
            let inner = run.inner;
            let backend = &inner.backend;
            let settings = run.settings.clone();
            let report = inner.reporting(&settings).for_node(run.lookup.spec);
            let mut ticket = None;
            loop {
                step = match step {
                    Step::Read => {
                        if let Some(repair) = run.repair_op() {
                            let _ = backend.$run_op(&repair, &report)$(.$await)?;
                        }
                        let started = std::time::Instant::now();
                        let reply = if run.reads_only() {
                            backend.$run_op(&run.get_op(), &report)$(.$await)?
                        } else {
                            backend.$run_op(&run.read_op(), &report)$(.$await)?
                        };
                        run.record_read(&reply, started.elapsed());
                        run.after_read(reply)
                    }
                    Step::Watch => {
                        ticket = Some(inner.wakeups.listen(run.keys.value()));
                        let reply = backend.$run_op(&run.watch_op(), &report)$(.$await)?;
                        run.after_watch(reply)
                    }
                    Step::Share => run.share(),
                    Step::Claim { wait } => {
                        if wait {
                            ticket = Some(inner.wakeups.listen(run.keys.value()));
                        }
                        let reply = backend.$run_op(&run.claim_op(wait), &report)$(.$await)?;
                        run.after_claim(reply)
                    }
                    Step::Wait(interval) => {
                        run.begin_wait();
                        let span = run.wait_span();
                        let woken = match ticket.take() {
                            // (Boxed in the async loop: waiting is the rare path.)
                            Some(ticket) => rare!(ticket.$wait(interval) $(, $await)?),
                            None => false,
                        };
                        span.record("outcome", if woken { "woken" } else { "interval" });
                        run.after_wait(woken)
                    }
                    Step::Load => {
                        run.begin_load();
                        let $span = run.start_load();
                        let $load_fn = $loader.take().expect("a flow loads at most once");
                        let $run_id = &mut *run;
                        $load
                    }
                    Step::Fill => {
                        let reply = match run.fill_op() {
                            Some(fill) => backend.$run_op(&fill, &report)$(.$await)?,
                            None => Ok(false),
                        };
                        run.after_fill(reply)
                    }
                    Step::Throttle => {
                        if let Some(throttle) = run.throttle_op() {
                            let _ = backend.$run_op(&throttle, &report)$(.$await)?;
                        }
                        run.after_throttle()
                    }
                    Step::Release => {
                        if let Some(release) = run.release_op() {
                            let _ = backend.$run_op(&release, &report)$(.$await)?;
                        }
                        run.after_release()
                    }
                    end @ (Step::Serve(_)
                    | Step::ServeLoaded { .. }
                    | Step::ServeError
                    | Step::Done) => return end,
                };
            }
        }
    };
}

steps! {
    /// The async loop.
    fn steps_async<F, Fut>(loader: F) where { F: FnOnce() -> Fut, Fut: Future<Output = Result<V, E>> };
    run_op = run, wait = wait,
    // Boxed: the loader's future (any size) would otherwise be inline in the
    // protocol's future, which every remote hit allocates. Bounded by the
    // hard timeout when one applies (the future is then dropped).
    // (The loader runs inside its span.)
    load = |run, load, loading| match run.hard_timeout() {
        Some(hard) => {
            let future = tracing::Instrument::instrument(load(), loading.span.clone());
            match Box::pin(tokio::time::timeout(hard, future)).await {
                Ok(result) => {
                    run.end_load(&loading, if result.is_ok() { "ok" } else { "error" });
                    run.after_load(result)
                }
                Err(_) => {
                    run.end_load(&loading, "timeout");
                    run.after_timeout(hard)
                }
            }
        }
        None => {
            let future = tracing::Instrument::instrument(load(), loading.span.clone());
            let result = Box::pin(future).await;
            run.end_load(&loading, if result.is_ok() { "ok" } else { "error" });
            run.after_load(result)
        }
    };
    async .await
}

steps! {
    /// The blocking loop: the same, without `.await`.
    fn steps_blocking<F>(loader: F) where { F: FnOnce() -> Result<V, E> };
    // (A blocking loader cannot be interrupted: no hard timeout here.)
    run_op = run_blocking, wait = wait_blocking, load = |run, load, loading| {
        let result = loading.span.in_scope(load);
        run.end_load(&loading, if result.is_ok() { "ok" } else { "error" });
        run.after_load(result)
    };
}
