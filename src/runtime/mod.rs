//! How a process runs and stops: readiness (`/ready`, see [`readiness`] and [`checks`]) and the stop sequence an
//! orchestrator's SIGTERM starts.
//!
//! A stop unfolds in this order: `/ready` turns 503 at once; after `SHUTDOWN_DELAY_MS` (time for load balancers
//! to notice, 0 by default) the processor stops consuming, drains what is publishing, writes its hand-over
//! snapshot and commits, and the HTTP server stops accepting and finishes the requests it has; the process then
//! exits 0. All of it must fit in `SHUTDOWN_GRACE_SECS` counted from the signal; past it the process exits 1 and
//! the next owner of its partitions restores from the previous snapshot (nothing is lost, more is replayed).

pub mod checks;
pub mod readiness;

use std::future::Future;
use std::time::Duration;

use tokio::sync::watch;

use readiness::Readiness;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    Running,
    /// A stop was asked for; `/ready` answers 503.
    Draining,
    /// The components stop now.
    Stopping,
}

/// The stop sequence of one process, shared by everything that must stop.
#[derive(Clone)]
pub struct Stop {
    phase: watch::Sender<Phase>,
}

impl Default for Stop {
    fn default() -> Self {
        Stop {
            phase: watch::Sender::new(Phase::Running),
        }
    }
}

/// The stop overran `SHUTDOWN_GRACE_SECS`.
#[derive(Debug, thiserror::Error)]
#[error("the stop did not finish within the grace of {0:?}")]
pub struct GraceExceeded(pub Duration);

impl Stop {
    /// Resolves when the components must stop (after the delay).
    pub fn stopping(&self) -> impl Future<Output = ()> + 'static {
        self.reached(Phase::Stopping)
    }

    /// Resolves when a stop was asked for.
    pub fn asked(&self) -> impl Future<Output = ()> + 'static {
        self.reached(Phase::Draining)
    }

    fn reached(&self, phase: Phase) -> impl Future<Output = ()> + 'static {
        let mut rx = self.phase.subscribe();
        async move {
            // An error means the sender is gone: nobody can ask for a stop any more, so never resolve.
            if rx.wait_for(|p| *p >= phase).await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    /// Starts the sequence: `/ready` 503 now, the components told to stop after `delay`.
    pub async fn begin(&self, readiness: &Readiness, delay: Duration) {
        readiness.drain();
        self.phase.send_if_modified(|p| advance(p, Phase::Draining));
        if !delay.is_zero() {
            tracing::info!(
                delay_ms = delay.as_millis() as u64,
                "waiting before stopping"
            );
            tokio::time::sleep(delay).await;
        }
        self.phase.send_if_modified(|p| advance(p, Phase::Stopping));
    }

    /// Runs `work` (everything the process does, its orderly stop included) and, once a stop was asked for,
    /// gives it at most `grace` to finish.
    pub async fn bounded<T>(
        &self,
        grace: Duration,
        work: impl Future<Output = T>,
    ) -> Result<T, GraceExceeded> {
        let asked = self.asked();
        let deadline = async move {
            asked.await;
            tokio::time::sleep(grace).await;
        };
        tokio::select! {
            done = work => Ok(done),
            _ = deadline => Err(GraceExceeded(grace)),
        }
    }
}

fn advance(phase: &mut Phase, to: Phase) -> bool {
    let moved = *phase < to;
    if moved {
        *phase = to;
    }
    moved
}

/// Waits for SIGTERM or Ctrl-C, then runs the stop sequence with `delay` before the components stop.
pub async fn stop_on_signal(stop: Stop, readiness: Readiness, delay: Duration) {
    shutdown_signal().await;
    stop.begin(&readiness, delay).await;
}

/// Ctrl-C or SIGTERM (what orchestrators send).
pub async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let terminated = async {
        match term.as_mut() {
            Some(signal) => {
                signal.recv().await;
            }
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminated => {}
    }
    tracing::info!("shutdown requested");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_stop_drains_first_and_waits_out_the_delay_before_stopping() {
        let (stop, readiness) = (Stop::default(), Readiness::default());
        let stopping = tokio::spawn(stop.stopping());
        let begun = {
            let (stop, readiness) = (stop.clone(), readiness.clone());
            tokio::spawn(async move { stop.begin(&readiness, Duration::from_secs(3_600)).await })
        };
        stop.asked().await;
        assert!(readiness.draining(), "/ready turns 503 first");
        tokio::task::yield_now().await;
        assert!(!stopping.is_finished(), "nothing stops during the delay");
        begun.abort();
    }

    #[tokio::test]
    async fn without_a_delay_the_components_stop_at_once() {
        let (stop, readiness) = (Stop::default(), Readiness::default());
        stop.begin(&readiness, Duration::ZERO).await;
        stop.stopping().await;
        assert!(readiness.draining());
    }

    #[tokio::test]
    async fn work_past_the_grace_is_cut_off() {
        let (stop, readiness) = (Stop::default(), Readiness::default());
        stop.begin(&readiness, Duration::ZERO).await;
        let outcome = stop
            .bounded(Duration::from_millis(20), std::future::pending::<()>())
            .await;
        assert!(outcome.is_err());
        let quick = stop.bounded(Duration::from_secs(3), async { 7 }).await;
        assert_eq!(quick.unwrap(), 7);
    }

    #[tokio::test]
    async fn without_a_stop_there_is_no_deadline() {
        let stop = Stop::default();
        let work = async {
            for _ in 0..3 {
                tokio::task::yield_now().await;
            }
            1
        };
        assert_eq!(stop.bounded(Duration::ZERO, work).await.unwrap(), 1);
    }
}
