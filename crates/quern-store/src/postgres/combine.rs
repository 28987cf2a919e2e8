//! Concurrent requests of one kind on one node, merged into shared
//! transactions, as the SQLite writer groups its jobs into one commit.
//!
//! On PostgreSQL each transaction costs its statements' round trips, a
//! commit and a WAL flush, whatever it holds; sixteen workers completing one
//! task each pay that sixteen times. A [`Combiner`] runs one transaction
//! of its kind at a time; requests that come meanwhile wait and go together
//! into the next one. (Two at a time split the waiting requests between
//! them: sixteen single-task clients and sixteen one-task workers ran about
//! 13 % slower, at more PostgreSQL CPU per task.) A lone request runs at
//! once, as before, and a large one (a batch) runs in a transaction of its
//! own.
//!
//! Invariant: each request gets its own answer, and no request fails
//! because of another's items: when a merged transaction fails, each of its
//! requests runs again alone and gets its own answer.
//! The transactions run in tasks of their own, so a request whose caller
//! goes away does not take the others down with it.

use crate::{Result, StoreError};
use futures_util::future::BoxFuture;
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

/// Runs one transaction for some requests; answers one answer per request,
/// in their order.
pub(super) type Run<I, O> = Arc<dyn Fn(Vec<I>) -> BoxFuture<'static, Result<Vec<O>>> + Send + Sync>;

struct Waiting<I, O> {
    request: I,
    reply: oneshot::Sender<Result<O>>,
}

struct Queue<I, O> {
    waiting: Vec<Waiting<I, O>>,
    /// A task is running merged transactions (and will take what waits).
    running: bool,
}

/// Merges the concurrent requests of one kind (see the module's doc).
pub(super) struct Combiner<I, O> {
    queue: Mutex<Queue<I, O>>,
    run: Run<I, O>,
    /// How many items a request holds.
    size: fn(&I) -> usize,
}

/// Requests of more items than this (batches) run in transactions of their
/// own, as they always did: merging is for the one-at-a-time path.
pub(super) const MERGED_AT_MOST: usize = 16;

impl<I: Clone + Send + 'static, O: Send + 'static> Combiner<I, O> {
    /// Merged transactions by `run`, one at a time; `size` tells how many
    /// items a request holds.
    pub(super) fn new(size: fn(&I) -> usize, run: Run<I, O>) -> Arc<Self> {
        let queue = Mutex::new(Queue { waiting: Vec::new(), running: false });
        Arc::new(Self { queue, run, size })
    }

    /// Runs `request`, with whatever other requests are waiting then, or
    /// alone when it is a batch.
    pub(super) async fn call(self: &Arc<Self>, request: I) -> Result<O> {
        if (self.size)(&request) > MERGED_AT_MOST {
            return self.alone(request).await;
        }
        let (reply, answer) = oneshot::channel();
        let start = {
            let mut q = self.queue.lock().map_err(|_| StoreError::Closed)?;
            q.waiting.push(Waiting { request, reply });
            !std::mem::replace(&mut q.running, true)
        };
        if start {
            tokio::spawn(self.clone().drain());
        }
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// Runs what waits, a merged transaction at a time, until nothing does.
    async fn drain(self: Arc<Self>) {
        loop {
            let batch = {
                let Ok(mut q) = self.queue.lock() else { return };
                if q.waiting.is_empty() {
                    q.running = false;
                    return;
                }
                std::mem::take(&mut q.waiting)
            };
            self.run_batch(batch).await;
        }
    }

    async fn run_batch(&self, batch: Vec<Waiting<I, O>>) {
        if batch.len() > 1 {
            let requests: Vec<I> = batch.iter().map(|w| w.request.clone()).collect();
            if let Ok(answers) = (self.run)(requests).await
                && answers.len() == batch.len()
            {
                for (w, answer) in batch.into_iter().zip(answers) {
                    let _ = w.reply.send(Ok(answer));
                }
                return;
            }
        }
        for w in batch {
            let _ = w.reply.send(self.alone(w.request).await);
        }
    }

    /// Runs `request` in a transaction of its own.
    async fn alone(&self, request: I) -> Result<O> {
        (self.run)(vec![request]).await.and_then(|mut a| a.pop().ok_or(StoreError::Closed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn requests_that_wait_share_a_run_and_each_gets_its_own_answers() {
        let runs = Arc::new(AtomicUsize::new(0));
        let counted = runs.clone();
        let run: Run<Vec<u32>, Vec<u32>> = Arc::new(move |requests: Vec<Vec<u32>>| {
            counted.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                // One bad item fails the whole run, as a refused batch does.
                if requests.iter().flatten().any(|i| *i == 13) {
                    let alone = requests.len() == 1;
                    return Err(StoreError::Backend(if alone { "13 alone" } else { "13 spoils the batch" }.into()));
                }
                Ok(requests.iter().map(|r| r.iter().map(|i| i * 10).collect()).collect())
            })
        });
        let combiner = Combiner::new(Vec::len, run);
        let mut calls = Vec::new();
        for i in 0..8u32 {
            let c = combiner.clone();
            calls.push(tokio::spawn(async move { c.call(vec![i, 100 + i]).await }));
        }
        for (i, call) in calls.into_iter().enumerate() {
            let i = u32::try_from(i).unwrap_or(0);
            assert_eq!(call.await.ok().and_then(|r| r.ok()), Some(vec![i * 10, (100 + i) * 10]));
        }
        assert!(runs.load(Ordering::SeqCst) < 8, "requests that waited shared a run");
        // While one run is under way, two requests wait and go together;
        // one spoils the merged run, so each runs again alone.
        let busy = combiner.clone();
        let first = tokio::spawn(async move { busy.call(vec![1]).await });
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        let before = runs.load(Ordering::SeqCst);
        let (spoiled, good) = tokio::join!(combiner.call(vec![13]), combiner.call(vec![7]));
        assert_eq!(first.await.ok().and_then(|r| r.ok()), Some(vec![10]));
        assert_eq!(runs.load(Ordering::SeqCst) - before, 3, "one merged run, then one each");
        assert!(matches!(spoiled, Err(StoreError::Backend(m)) if m == "13 alone"), "its own error");
        assert_eq!(good.ok(), Some(vec![70]), "not failed by another's item");
    }
}
