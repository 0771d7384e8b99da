//! Reading ahead on a thread of its own: the producer (sled's iterator, a file being parsed and
//! hashed) runs a few batches ahead of the consumer (verify, a projection folding records), so the
//! two use both cores. Memory stays bounded by the batches in flight; dropping the consumer stops
//! the producer at its next batch.

use std::sync::mpsc::{Receiver, sync_channel};

use crate::error::{Result, StoreError};

/// A batch closes at this many items or this many bytes, whichever comes first; this many batches
/// are in flight. Records are at most 32 KiB (export lines are refused past that), so the thread
/// holds at most about a megabyte ahead of the consumer.
const BATCH_ITEMS: usize = 256;
const BATCH_BYTES: usize = 256 * 1024;
const BATCHES_IN_FLIGHT: usize = 4;

enum Message<T> {
    Batch(Vec<Result<T>>),
    /// The producer ran to its end. A channel closed without it means the thread died (a panic):
    /// the consumer must not take that for the end of the log.
    End,
}

/// The items of `items`, produced on another thread; `weigh` tells an item's size in bytes.
pub(crate) fn read_ahead<T: Send + 'static>(
    items: impl Iterator<Item = Result<T>> + Send + 'static,
    weigh: fn(&T) -> usize,
) -> ReadAhead<T> {
    let (sender, receiver) = sync_channel::<Message<T>>(BATCHES_IN_FLIGHT);
    let spawned = std::thread::Builder::new().name("regent-read-ahead".into()).spawn(move || {
        let mut batch = Vec::with_capacity(BATCH_ITEMS);
        let mut bytes = 0;
        for item in items {
            bytes += item.as_ref().map_or(0, weigh);
            batch.push(item);
            if (batch.len() >= BATCH_ITEMS || bytes >= BATCH_BYTES)
                && sender.send(Message::Batch(std::mem::take(&mut batch))).is_err()
            {
                return; // the consumer stopped early
            }
            if batch.is_empty() {
                bytes = 0;
            }
        }
        if !batch.is_empty() && sender.send(Message::Batch(batch)).is_err() {
            return;
        }
        let _ = sender.send(Message::End);
    });
    let failed = spawned.err().map(|e| StoreError::Io { path: "a thread to read the log with".into(), source: e });
    ReadAhead { batches: Some(receiver), current: Vec::new().into_iter(), failed }
}

pub(crate) struct ReadAhead<T> {
    batches: Option<Receiver<Message<T>>>,
    current: std::vec::IntoIter<Result<T>>,
    /// The thread could not start, or stopped before the end: said once, as the last item.
    failed: Option<StoreError>,
}

impl<T> Iterator for ReadAhead<T> {
    type Item = Result<T>;

    fn next(&mut self) -> Option<Result<T>> {
        loop {
            if let Some(item) = self.current.next() {
                return Some(item);
            }
            if let Some(error) = self.failed.take() {
                self.batches = None;
                return Some(Err(error));
            }
            match self.batches.as_ref()?.recv() {
                Ok(Message::Batch(batch)) => self.current = batch.into_iter(),
                Ok(Message::End) => {
                    self.batches = None;
                    return None;
                }
                Err(_) => {
                    self.failed = Some(StoreError::Internal("the thread reading the log stopped before its end".into()))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_item_arrives_in_order_and_an_error_stays_where_it_was() {
        let items = (0..2000u64).map(|i| if i == 1500 { Err(StoreError::Internal("x".into())) } else { Ok(i) });
        let got: Vec<Result<u64>> = read_ahead(items, |_| 8).collect();
        assert_eq!(got.len(), 2000);
        assert!(got[1500].is_err());
        assert!(got.iter().enumerate().all(|(i, r)| i == 1500 || r.as_ref().ok() == Some(&(i as u64))));
    }

    #[test]
    fn a_producer_that_dies_is_not_taken_for_the_end() {
        let items = (0..1000u64).map(|i| if i == 700 { panic!("producer died") } else { Ok(i) });
        let got: Vec<Result<u64>> = read_ahead(items, |_| 8).collect();
        assert!(got.len() < 1000);
        assert!(matches!(got.last(), Some(Err(StoreError::Internal(_)))), "the last item must say so");
    }

    #[test]
    fn dropping_the_consumer_stops_the_producer() {
        let produced = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counter = produced.clone();
        let items = (0..u64::MAX).map(move |i| {
            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Ok(i)
        });
        let first: Vec<_> = read_ahead(items, |_| 8).take(10).collect();
        assert_eq!(first.len(), 10);
        std::thread::sleep(std::time::Duration::from_millis(200));
        let after = produced.load(std::sync::atomic::Ordering::Relaxed);
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert_eq!(produced.load(std::sync::atomic::Ordering::Relaxed), after, "still producing");
        assert!(after <= ((BATCHES_IN_FLIGHT + 2) * BATCH_ITEMS) as u64, "{after}");
    }
}
