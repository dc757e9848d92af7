//! The received side of the relay channel: a queue bounded in batches and in bytes, and the
//! task that opens each envelope ([`crate::batch_seal`]) before the relay decodes anything.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::Inner;
use crate::batch_seal::{Opener, unix_ms};
use crate::metrics::RemoteDrop;
use crate::relay::codec::batch_len;

/// A received batch, opened (its envelope checked and stripped), as the relay codec reads it.
/// It holds its bytes' share of `redis.inbound_queue_bytes` until it is turned into [`Bytes`]
/// to be decoded.
pub struct InboundBatch {
    bytes: Bytes,
    /// Held for its `Drop`.
    _budget: Budget,
}

impl From<InboundBatch> for Bytes {
    fn from(batch: InboundBatch) -> Bytes {
        // The budget is given back here: the bytes leave the queue to be decoded.
        let InboundBatch { bytes, _budget } = batch;
        bytes
    }
}

/// Bytes of received batches queued and not yet decoded, shared by the queues they pass.
#[derive(Clone)]
pub(super) struct QueueBytes {
    pub(super) used: Arc<AtomicUsize>,
    pub(super) max: usize,
}

impl QueueBytes {
    /// Takes `n` bytes of the budget, or `None` when they don't fit.
    pub(super) fn take(&self, n: usize) -> Option<Budget> {
        let mut used = self.used.load(Ordering::Relaxed);
        loop {
            let next = used.checked_add(n).filter(|&u| u <= self.max)?;
            match self
                .used
                .compare_exchange_weak(used, next, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => {
                    return Some(Budget {
                        used: Arc::clone(&self.used),
                        n,
                    });
                }
                Err(now) => used = now,
            }
        }
    }
}

/// A share of [`QueueBytes`], given back on drop.
pub(super) struct Budget {
    used: Arc<AtomicUsize>,
    n: usize,
}

impl Drop for Budget {
    fn drop(&mut self) {
        self.used.fetch_sub(self.n, Ordering::AcqRel);
    }
}

/// A batch as received, before its envelope is opened.
pub(super) struct Sealed {
    pub(super) bytes: Bytes,
    pub(super) budget: Budget,
}

/// Opens received envelopes in arrival order and hands the batches on; refusals are counted.
pub(super) async fn open_batches(
    inner: Arc<Inner>,
    cancel: CancellationToken,
    mut opener: Opener,
    mut sealed: mpsc::Receiver<Sealed>,
    inbound: mpsc::Sender<InboundBatch>,
) {
    let metrics = inner.metrics.shared();
    loop {
        let batch = tokio::select! {
            () = cancel.cancelled() => return,
            b = sealed.recv() => match b { Some(b) => b, None => return },
        };
        match opener.open(batch.bytes, unix_ms()) {
            Ok(bytes) => {
                let opened = InboundBatch {
                    bytes,
                    _budget: batch.budget,
                };
                if let Err(e) = inbound.try_send(opened) {
                    // Counted in batches and, read from the batch's header, signals.
                    let signals = batch_len(&e.into_inner().bytes).unwrap_or(1);
                    metrics.remote_inbound_dropped();
                    metrics.remote_dropped(RemoteDrop::InboundFull, signals);
                }
            }
            Err(reason) => {
                // Debug: whoever can publish could flood a warn log; the counter shows it.
                debug!(reason = reason.as_str(), "a batch from Redis was refused");
                metrics.batch_refused(reason);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queued_bytes_are_bounded_and_given_back_when_a_batch_is_taken() {
        let q = QueueBytes {
            used: Arc::new(AtomicUsize::new(0)),
            max: 100,
        };
        let a = q.take(60).unwrap();
        assert!(q.take(41).is_none());
        let b = q.take(40).unwrap();
        assert!(q.take(1).is_none());
        drop(a);
        let batch = InboundBatch {
            bytes: Bytes::from_static(b"x"),
            _budget: b,
        };
        assert_eq!(q.used.load(Ordering::Relaxed), 40);
        let bytes = Bytes::from(batch);
        assert_eq!(&bytes[..], b"x");
        assert_eq!(q.used.load(Ordering::Relaxed), 0);
    }
}
