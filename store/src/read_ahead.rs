//! Reading ahead on other threads: one thread produces batches of raw records (sled's iterator, the
//! lines of a file), a few workers parse and hash them, and the caller gets the results back in
//! order. Parsing and hashing a record do not depend on the records before it (the chain's links are
//! checked afterwards, in order, by the caller), so they spread over every core.
//!
//! Memory stays bounded: at most `tokens` batches exist between the producer and the caller, because
//! the producer takes a token for each batch and the caller gives it back once it moves on to that
//! batch. Dropping the caller's iterator stops the producer at its next batch and the workers with it.

use std::collections::BTreeMap;
use std::sync::mpsc::{Receiver, SyncSender, channel, sync_channel};
use std::sync::{Arc, Mutex};

use crate::error::{Result, StoreError};

/// A batch closes at this many items or this many bytes, whichever comes first. Records are at most
/// 32 KiB, so the batches in flight hold a few megabytes at most.
pub(crate) const BATCH_ITEMS: usize = 256;
pub(crate) const BATCH_BYTES: usize = 256 * 1024;

/// Worker threads: one per core, within reason.
fn worker_count() -> usize {
    std::thread::available_parallelism().map_or(2, usize::from).clamp(1, 4)
}

enum Job<B> {
    Batch(u64, B),
    /// The producer ran to its end after this many batches.
    End(u64),
}

enum Done<O> {
    Batch(u64, Vec<Result<O>>),
    End(u64),
}

/// Runs `batches` on a thread of its own and `work` on each batch on worker threads, and yields the
/// items of the worked batches in the producer's order.
pub(crate) fn read_ahead<B, O, W>(batches: impl Iterator<Item = B> + Send + 'static, work: W) -> ReadAhead<O>
where
    B: Send + 'static,
    O: Send + 'static,
    W: Fn(B) -> Vec<Result<O>> + Send + Sync + 'static,
{
    let workers = worker_count();
    let tokens = 2 * workers + 2;
    let (token_sender, token_receiver) = sync_channel::<()>(tokens);
    for _ in 0..tokens {
        // Cannot fail: the channel has room for exactly this many.
        let _ = token_sender.try_send(());
    }
    let (job_sender, job_receiver) = channel::<Job<B>>();
    let (done_sender, done_receiver) = channel::<Done<O>>();
    let thread_failed = |e| StoreError::Io { path: "a thread to read the log with".into(), source: e };

    let producer = std::thread::Builder::new().name("regent-read".into()).spawn(move || {
        let mut count = 0;
        for batch in batches {
            if token_receiver.recv().is_err() || job_sender.send(Job::Batch(count, batch)).is_err() {
                return; // the caller stopped early
            }
            count += 1;
        }
        let _ = job_sender.send(Job::End(count));
    });
    let mut failed = producer.err().map(thread_failed);

    let job_receiver = Arc::new(Mutex::new(job_receiver));
    let work = Arc::new(work);
    let mut started = 0;
    for index in 0..workers {
        let (jobs, done, work) = (job_receiver.clone(), done_sender.clone(), work.clone());
        let spawned = std::thread::Builder::new().name(format!("regent-decode-{index}")).spawn(move || {
            loop {
                // The lock is held only to take a job; a worker that panicked in `work` held none.
                let job = jobs.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).recv();
                let sent = match job {
                    Ok(Job::Batch(seq, batch)) => {
                        // A panic here would leave a hole the caller waits on forever: it becomes an
                        // error in the batch's place instead.
                        let worked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(batch)))
                            .unwrap_or_else(|_| {
                                vec![Err(StoreError::Internal("decoding the log failed (a bug)".into()))]
                            });
                        done.send(Done::Batch(seq, worked))
                    }
                    Ok(Job::End(count)) => done.send(Done::End(count)),
                    Err(_) => return,
                };
                if sent.is_err() {
                    return;
                }
            }
        });
        match spawned {
            Ok(_) => started += 1,
            Err(e) if started == 0 && index + 1 == workers => failed = failed.or(Some(thread_failed(e))),
            Err(_) => {}
        }
    }
    ReadAhead {
        done: Some(done_receiver),
        tokens: token_sender,
        pending: BTreeMap::new(),
        next: 0,
        end: None,
        current: Vec::new().into_iter(),
        failed,
    }
}

/// Splits `items` into batches of at most `BATCH_ITEMS` items or about `BATCH_BYTES` bytes (as
/// `weigh` counts them).
pub(crate) fn batched<T>(
    mut items: impl Iterator<Item = Result<T>>,
    weigh: fn(&T) -> usize,
) -> impl Iterator<Item = Vec<Result<T>>> {
    let mut ended = false;
    std::iter::from_fn(move || {
        if ended {
            return None;
        }
        let mut batch = Vec::with_capacity(BATCH_ITEMS);
        let mut bytes = 0;
        while batch.len() < BATCH_ITEMS && bytes < BATCH_BYTES {
            match items.next() {
                Some(item) => {
                    bytes += item.as_ref().map_or(0, weigh);
                    let stop = item.is_err();
                    batch.push(item);
                    if stop {
                        ended = true;
                        break;
                    }
                }
                None => {
                    ended = true;
                    break;
                }
            }
        }
        (!batch.is_empty()).then_some(batch)
    })
}

pub(crate) struct ReadAhead<O> {
    done: Option<Receiver<Done<O>>>,
    tokens: SyncSender<()>,
    /// Batches that arrived before the one the caller needs next.
    pending: BTreeMap<u64, Vec<Result<O>>>,
    next: u64,
    end: Option<u64>,
    current: std::vec::IntoIter<Result<O>>,
    /// A thread could not start, or stopped before the end: said once, as the last item.
    failed: Option<StoreError>,
}

impl<O> Iterator for ReadAhead<O> {
    type Item = Result<O>;

    fn next(&mut self) -> Option<Result<O>> {
        loop {
            if let Some(item) = self.current.next() {
                return Some(item);
            }
            if let Some(error) = self.failed.take() {
                self.done = None;
                return Some(Err(error));
            }
            if self.end == Some(self.next) {
                self.done = None;
                return None;
            }
            if let Some(batch) = self.pending.remove(&self.next) {
                self.current = batch.into_iter();
                self.next += 1;
                // The producer may make another batch; it cannot fail while the producer lives.
                let _ = self.tokens.try_send(());
                continue;
            }
            match self.done.as_ref()?.recv() {
                Ok(Done::Batch(seq, batch)) => {
                    self.pending.insert(seq, batch);
                }
                Ok(Done::End(count)) => self.end = Some(count),
                // Every thread is gone and the end was not reached: one of them died (a panic). That
                // must not be taken for the end of the log.
                Err(_) => {
                    self.failed = Some(StoreError::Internal("a thread reading the log stopped before its end".into()))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn each(batch: Vec<Result<u64>>) -> Vec<Result<u64>> {
        batch
    }

    #[test]
    fn every_item_arrives_in_order_and_an_error_ends_the_batches_where_it_was() {
        let items = (0..2000u64).map(|i| if i == 1500 { Err(StoreError::Internal("x".into())) } else { Ok(i) });
        let got: Vec<Result<u64>> = read_ahead(batched(items, |_| 8), each).collect();
        assert_eq!(got.len(), 1501);
        assert!(got[1500].is_err());
        assert!(got[..1500].iter().enumerate().all(|(i, r)| r.as_ref().ok() == Some(&(i as u64))));
    }

    #[test]
    fn slow_and_fast_batches_still_come_back_in_order() {
        let batches = (0..200u64).map(|b| (b * 10..b * 10 + 10).map(Ok).collect::<Vec<_>>());
        let work = |batch: Vec<Result<u64>>| {
            // Uneven work, so that workers finish out of order.
            let first = batch.first().and_then(|r| r.as_ref().ok().copied()).unwrap_or(0);
            std::thread::sleep(std::time::Duration::from_micros((first * 7919) % 900));
            batch.into_iter().map(|r| r.map(|i| i * 2)).collect()
        };
        let got: Vec<u64> = read_ahead(batches, work).map(|r| r.unwrap_or(u64::MAX)).collect();
        assert_eq!(got, (0..2000u64).map(|i| i * 2).collect::<Vec<_>>());
    }

    #[test]
    fn batches_close_at_their_item_and_byte_bounds() {
        let sizes: Vec<usize> = batched((0..1000u64).map(Ok), |_| 1).map(|b| b.len()).collect();
        assert_eq!(sizes, vec![256, 256, 256, 232]);
        let sizes: Vec<usize> = batched((0..10u64).map(Ok), |_| BATCH_BYTES / 3 + 1).map(|b| b.len()).collect();
        assert_eq!(sizes, vec![3, 3, 3, 1]);
    }

    #[test]
    fn a_producer_that_dies_is_not_taken_for_the_end() {
        let items = (0..1000u64).map(|i| if i == 700 { panic!("producer died") } else { Ok(i) });
        let got: Vec<Result<u64>> = read_ahead(batched(items, |_| 8), each).collect();
        assert!(got.len() < 1000);
        assert!(matches!(got.last(), Some(Err(StoreError::Internal(_)))), "the last item must say so");
    }

    #[test]
    fn a_panic_in_the_work_is_an_error_in_its_batch_place() {
        let work = |batch: Vec<Result<u64>>| {
            if batch.iter().any(|r| matches!(r, Ok(500))) {
                panic!("decoding failed");
            }
            batch
        };
        let got: Vec<Result<u64>> = read_ahead(batched((0..1000u64).map(Ok), |_| 8), work).collect();
        // Batches of 256: the second one (256..512) panicked.
        assert!(got[..256].iter().enumerate().all(|(i, r)| r.as_ref().ok() == Some(&(i as u64))));
        assert!(matches!(got[256], Err(StoreError::Internal(_))), "the failed batch must say so in its place");
        assert_eq!(got.len(), 256 + 1 + 488);
    }

    #[test]
    fn dropping_the_consumer_stops_the_producer() {
        let produced = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counter = produced.clone();
        let items = (0..u64::MAX).map(move |i| {
            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Ok(i)
        });
        let first: Vec<_> = read_ahead(batched(items, |_| 8), each).take(10).collect();
        assert_eq!(first.len(), 10);
        std::thread::sleep(std::time::Duration::from_millis(200));
        let after = produced.load(std::sync::atomic::Ordering::Relaxed);
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert_eq!(produced.load(std::sync::atomic::Ordering::Relaxed), after, "still producing");
        let most_in_flight = (2 * worker_count() + 4) * BATCH_ITEMS;
        assert!(after <= most_in_flight as u64, "{after} read ahead, at most {most_in_flight} expected");
    }
}
