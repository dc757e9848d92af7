//! [`Worker`]: what the sessions of one worker thread share. Each worker thread runs its own
//! single-threaded runtime; its sessions use its metrics shard (single writer: no atomic
//! read-modify-write on the message path), its read buffer and its pool of write buffers, so
//! that an idle connection holds neither.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use crate::instance::Instance;
use crate::metrics::Shard;

/// Read buffer of a worker: the most one read takes from a socket.
const READ_SCRATCH: usize = 64 * 1024;

/// Write buffers kept for reuse, and the largest capacity kept.
const POOL_BUFFERS: usize = 8;
const POOL_MAX_CAPACITY: usize = 256 * 1024;

/// One worker thread's context.
pub struct Worker {
    /// The instance.
    pub instance: Arc<Instance>,
    /// This thread's metrics shard.
    pub metrics: Arc<Shard>,
    read: RefCell<Box<[u8]>>,
    buffers: RefCell<Vec<Vec<u8>>>,
}

thread_local! {
    static CURRENT: RefCell<Option<Rc<Worker>>> = const { RefCell::new(None) };
}

impl Worker {
    /// A worker context for this thread of `instance`, made current.
    pub fn enter(instance: Arc<Instance>) -> Rc<Self> {
        let metrics = instance.metrics.worker_shard();
        let worker = Rc::new(Self {
            instance,
            metrics,
            read: RefCell::new(vec![0; READ_SCRATCH].into_boxed_slice()),
            buffers: RefCell::new(Vec::new()),
        });
        CURRENT.with(|c| *c.borrow_mut() = Some(Rc::clone(&worker)));
        worker
    }

    /// The worker of the calling thread, if it is one.
    pub fn current() -> Option<Rc<Self>> {
        CURRENT.with(|c| c.borrow().clone())
    }

    /// Runs `f` with the read buffer. Not re-entrant: `f` must not read for another session.
    pub fn with_read_buffer<R>(&self, f: impl FnOnce(&mut [u8]) -> R) -> R {
        f(&mut self.read.borrow_mut())
    }

    /// An empty write buffer, reused when one is free.
    pub fn take_buffer(&self) -> Vec<u8> {
        self.buffers.borrow_mut().pop().unwrap_or_default()
    }

    /// Returns a write buffer for reuse.
    pub fn give_buffer(&self, mut buf: Vec<u8>) {
        buf.clear();
        let mut pool = self.buffers.borrow_mut();
        if pool.len() < POOL_BUFFERS && buf.capacity() <= POOL_MAX_CAPACITY {
            pool.push(buf);
        }
    }
}
