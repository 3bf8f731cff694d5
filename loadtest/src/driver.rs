//! The arrival process. Open loop: iteration `i` is due at `t0 + i / rate` whatever Kassa
//! does, and its first request is timed from that intended moment, so a stall shows up in
//! the latency of every request that should have been sent during it (coordinated omission
//! corrected, as wrk2 does). Closed loop: `concurrency` workers, each starting its next
//! iteration when the previous one ended. Both stop at the duration or the count.

use crate::stats::{Op, Recorder};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// How late a tokio timer may fire (its wheel's resolution).
const TIMER_GRANULARITY: Duration = Duration::from_millis(1);

#[derive(Debug, Clone, Copy)]
pub enum Load {
    /// Iterations started per second.
    Open { rate: f64 },
    /// Iterations running at once.
    Closed { concurrency: usize },
}

impl Load {
    pub fn describe(&self) -> String {
        match self {
            Self::Open { rate } => format!("open loop, {rate}/s"),
            Self::Closed { concurrency } => format!("closed loop, {concurrency} concurrent"),
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Plan {
    pub load: Load,
    /// Stop starting iterations after this long.
    pub duration: Option<Duration>,
    /// Stop after this many iterations.
    pub count: Option<u64>,
    /// Open loop only: iterations in flight at most; a late start still counts from its
    /// intended time, so the cap never hides latency.
    pub max_in_flight: usize,
}

/// What the progress line shows.
#[derive(Clone)]
pub struct Progress {
    pub label: &'static str,
    pub op: Op,
    pub recorder: Arc<Recorder>,
    pub quiet: bool,
}

/// Runs `work(i, intended_start)` per `plan`; answers the time from the first intended start
/// to the last iteration's end.
pub async fn drive<W, F>(plan: Plan, progress: Progress, work: W) -> Duration
where
    W: Fn(u64, Instant) -> F + Send + Sync + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    let work = Arc::new(work);
    let started = Instant::now();
    let deadline = plan.duration.map(|d| started + d);
    let count = plan.count.unwrap_or(u64::MAX);
    let in_flight = Arc::new(AtomicU64::new(0));
    let ticker = (!progress.quiet).then(|| {
        let (progress, in_flight) = (progress.clone(), in_flight.clone());
        tokio::spawn(async move { print_progress(progress, started, in_flight).await })
    });
    let mut tasks = JoinSet::new();
    match plan.load {
        Load::Open { rate } => {
            let period = Duration::from_secs_f64(1.0 / rate.max(1e-6));
            let slots = Arc::new(Semaphore::new(plan.max_in_flight.max(1)));
            let mut i = 0;
            while i < count {
                let intended = started + period.mul_f64(i as f64);
                if deadline.is_some_and(|d| intended >= d) {
                    break;
                }
                tokio::time::sleep_until(intended.into()).await;
                // Tokio's timers tick in whole milliseconds: the sleep ends up to 1 ms late
                // through no fault of Kassa's, so that much lateness is forgiven; whatever
                // comes on top of it (waiting for a slot below, a loop held up by earlier
                // iterations) still counts.
                let intended = Instant::now().min(intended + TIMER_GRANULARITY);
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    break;
                };
                let (work, in_flight) = (work.clone(), in_flight.clone());
                in_flight.fetch_add(1, Ordering::Relaxed);
                tasks.spawn(async move {
                    work(i, intended).await;
                    in_flight.fetch_sub(1, Ordering::Relaxed);
                    drop(slot);
                });
                // Reap finished tasks so the set does not grow with the run.
                while tasks.try_join_next().is_some() {}
                i += 1;
            }
        }
        Load::Closed { concurrency } => {
            let next = Arc::new(AtomicU64::new(0));
            for _ in 0..concurrency.max(1) {
                let (work, next, in_flight) = (work.clone(), next.clone(), in_flight.clone());
                tasks.spawn(async move {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= count || deadline.is_some_and(|d| Instant::now() >= d) {
                            break;
                        }
                        in_flight.fetch_add(1, Ordering::Relaxed);
                        work(i, Instant::now()).await;
                        in_flight.fetch_sub(1, Ordering::Relaxed);
                    }
                });
            }
        }
    }
    while tasks.join_next().await.is_some() {}
    let elapsed = started.elapsed();
    if let Some(ticker) = ticker {
        ticker.abort();
    }
    elapsed
}

async fn print_progress(progress: Progress, started: Instant, in_flight: Arc<AtomicU64>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    let mut last = 0;
    loop {
        tick.tick().await;
        let done = progress.recorder.iterations();
        let (count, p99) = progress.recorder.glance(progress.op);
        eprintln!(
            "[{:>6.1}s] {}: {} done ({}/s), {} {} (p99 {:.1} ms), {} unexpected, {} in flight",
            started.elapsed().as_secs_f64(),
            progress.label,
            done,
            done - last,
            count,
            progress.op.name(),
            p99,
            progress.recorder.unexpected(),
            in_flight.load(Ordering::Relaxed)
        );
        last = done;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quiet(recorder: &Arc<Recorder>) -> Progress {
        Progress {
            label: "test",
            op: Op::Healthz,
            recorder: recorder.clone(),
            quiet: true,
        }
    }

    #[tokio::test]
    async fn the_closed_loop_runs_exactly_the_count() {
        let recorder = Arc::new(Recorder::new());
        let plan = Plan {
            load: Load::Closed { concurrency: 4 },
            duration: None,
            count: Some(37),
            max_in_flight: 1,
        };
        let r = recorder.clone();
        drive(plan, quiet(&recorder), move |_, _| {
            let r = r.clone();
            async move { r.iteration_done() }
        })
        .await;
        assert_eq!(recorder.iterations(), 37);
    }

    #[tokio::test]
    async fn the_open_loop_keeps_its_schedule_and_counts_from_the_intended_start() {
        let recorder = Arc::new(Recorder::new());
        let plan = Plan {
            load: Load::Open { rate: 200.0 },
            duration: Some(Duration::from_millis(100)),
            count: None,
            max_in_flight: 1,
        };
        let r = recorder.clone();
        // Every iteration takes 10 ms with one slot: later ones start late, and their
        // latency (from the intended start) must show the queueing.
        drive(plan, quiet(&recorder), move |_, intended| {
            let r = r.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(10)).await;
                r.record(Op::Healthz, intended.elapsed(), 200, "ok", true);
                r.iteration_done();
            }
        })
        .await;
        assert_eq!(recorder.iterations(), 20);
        let report = recorder.report(Duration::from_secs(1));
        assert!(
            report[0].latency_ms.max > 100.0,
            "the last of 20 10-ms iterations through one slot waited ~190 ms: {:?}",
            report[0].latency_ms
        );
    }
}
