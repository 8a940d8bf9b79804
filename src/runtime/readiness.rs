//! What `GET /ready` answers: a list of named checks (Kafka producer reachable, Redis and Postgres answering,
//! partitions assigned and restored, …) that each role fills with what it depends on, run together at most once
//! per [`READY_CACHE`] and answered from the cache in between, so probes may poll as often as they like. Once a
//! stop begins ([`Readiness::drain`]) the answer is 503 at once, whatever the checks say, so load balancers and
//! Kubernetes take the instance out of rotation before its listener closes.
//!
//! Other roles add their own checks with [`Readiness::add`] (the `sync` role: its consumer assigned).

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use futures_util::future::{join_all, BoxFuture};
use serde_json::{json, Map, Value};

/// How long a readiness answer is reused; concurrent callers share one run of the checks.
pub const READY_CACHE: Duration = Duration::from_secs(1);

/// How long one check may take before it counts as failed: a probe must get its answer within its own timeout
/// (Kubernetes' default is 1 s, so set `timeoutSeconds` above this).
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

type RunCheck = Arc<dyn Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

/// One named readiness condition.
#[derive(Clone)]
pub struct Check {
    name: &'static str,
    run: RunCheck,
}

impl Check {
    /// `run` answers `Err(reason)` when the dependency is not usable; it is bounded by [`CHECK_TIMEOUT`].
    pub fn new<F, Fut>(name: &'static str, run: F) -> Check
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        Check {
            name,
            run: Arc::new(move || Box::pin(run())),
        }
    }
}

/// A readiness answer: the status code to send and its JSON body.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub ready: bool,
    pub body: Value,
}

#[derive(Default)]
struct Inner {
    checks: RwLock<Vec<Check>>,
    draining: AtomicBool,
    last: tokio::sync::Mutex<Option<(Instant, Answer)>>,
}

/// The readiness of this process; cheap to clone, shared by the HTTP server and whatever stops the process.
#[derive(Clone, Default)]
pub struct Readiness {
    inner: Arc<Inner>,
}

impl Readiness {
    /// Adds a condition; a check of the same name replaces the earlier one.
    pub fn add(&self, check: Check) {
        let mut checks = self.inner.checks.write().unwrap_or_else(|p| p.into_inner());
        checks.retain(|c| c.name != check.name);
        checks.push(check);
    }

    /// The names of the conditions, in the order they were added.
    pub fn names(&self) -> Vec<&'static str> {
        let checks = self.inner.checks.read().unwrap_or_else(|p| p.into_inner());
        checks.iter().map(|c| c.name).collect()
    }

    /// From now on the answer is 503: the process is stopping.
    pub fn drain(&self) {
        if !self.inner.draining.swap(true, Ordering::SeqCst) {
            tracing::info!("not ready: stopping");
        }
    }

    pub fn draining(&self) -> bool {
        self.inner.draining.load(Ordering::SeqCst)
    }

    /// The current answer: from the cache when it is younger than [`READY_CACHE`], else from a fresh run.
    pub async fn answer(&self) -> Answer {
        if self.draining() {
            return Answer {
                ready: false,
                body: json!({ "ready": false, "draining": true, "failed": ["draining"] }),
            };
        }
        let mut last = self.inner.last.lock().await;
        if let Some((at, answer)) = last.as_ref() {
            if at.elapsed() < READY_CACHE {
                return answer.clone();
            }
        }
        let answer = self.run().await;
        // One line per change, not one per probe: a restore keeps the answer 503 for a while.
        let was_ready = last.as_ref().map(|(_, previous)| previous.ready);
        if was_ready != Some(answer.ready) {
            match answer.ready {
                true => tracing::info!("ready"),
                false => {
                    tracing::warn!(failed = %answer.body["failed"], checks = %answer.body["checks"], "not ready")
                }
            }
        }
        *last = Some((Instant::now(), answer.clone()));
        answer
    }

    async fn run(&self) -> Answer {
        metrics::counter!(streams::metric_names::READY_CHECKS).increment(1);
        let checks = self
            .inner
            .checks
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let runs = checks.iter().map(|check| async move {
            let outcome = tokio::time::timeout(CHECK_TIMEOUT, (check.run)())
                .await
                .unwrap_or_else(|_| Err(format!("no answer within {CHECK_TIMEOUT:?}")));
            (check.name, outcome)
        });
        let outcomes = join_all(runs).await;
        let mut detail = Map::new();
        let mut failed = Vec::new();
        for (name, outcome) in outcomes {
            let text = match outcome {
                Ok(()) => "ok".to_owned(),
                Err(reason) => {
                    failed.push(name);
                    reason
                }
            };
            detail.insert(name.to_owned(), Value::String(text));
        }
        let ready = failed.is_empty();
        Answer {
            ready,
            body: json!({ "ready": ready, "checks": detail, "failed": failed }),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU32;

    use super::*;

    fn counting(name: &'static str, calls: Arc<AtomicU32>, ok: bool) -> Check {
        Check::new(name, move || {
            let calls = calls.clone();
            async move {
                calls.fetch_add(1, Ordering::SeqCst);
                if ok {
                    Ok(())
                } else {
                    Err("down".to_owned())
                }
            }
        })
    }

    #[tokio::test]
    async fn names_the_failed_check_and_caches_the_answer() {
        let readiness = Readiness::default();
        let calls = Arc::new(AtomicU32::new(0));
        readiness.add(counting("kafka", calls.clone(), true));
        readiness.add(counting("postgres", calls.clone(), false));
        let answer = readiness.answer().await;
        assert!(!answer.ready);
        assert_eq!(answer.body["failed"], json!(["postgres"]));
        assert_eq!(answer.body["checks"]["kafka"], "ok");
        assert_eq!(answer.body["checks"]["postgres"], "down");
        let again = readiness.answer().await;
        assert_eq!(again, answer);
        assert_eq!(
            calls.load(Ordering::SeqCst),
            2,
            "the second answer came from the cache"
        );
    }

    #[tokio::test]
    async fn draining_answers_not_ready_without_running_the_checks() {
        let readiness = Readiness::default();
        let calls = Arc::new(AtomicU32::new(0));
        readiness.add(counting("kafka", calls.clone(), true));
        assert!(readiness.answer().await.ready);
        readiness.drain();
        let answer = readiness.answer().await;
        assert!(!answer.ready);
        assert_eq!(answer.body["draining"], true);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_check_of_the_same_name_replaces_the_earlier_one() {
        let readiness = Readiness::default();
        let calls = Arc::new(AtomicU32::new(0));
        readiness.add(counting("redis", calls.clone(), false));
        readiness.add(counting("redis", calls.clone(), true));
        assert_eq!(readiness.names(), ["redis"]);
        assert!(readiness.answer().await.ready);
    }
}
