//! [`Worker`]: what the sessions of one worker thread share. Each worker thread runs its own
//! single-threaded runtime; its sessions use its metrics shard (single writer: no atomic
//! read-modify-write on the message path), its read buffer and its pool of write buffers, so
//! that an idle connection holds neither; the same for the lists a session fills while it
//! works (signals taken from its outbox, the client's events).

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use crate::instance::Instance;
use crate::metrics::Shard;
use crate::signal::Signal;
use crate::ws::Event;

/// Read buffer of a worker: the most one read takes from a socket.
const READ_SCRATCH: usize = 64 * 1024;

/// Write buffers kept for reuse, and the largest capacity kept.
const POOL_BUFFERS: usize = 8;
const POOL_MAX_CAPACITY: usize = 256 * 1024;

/// Lists kept for reuse: as many as sessions can be working at once on one thread (a
/// session's work awaits only inside a handler), and the most items a kept list may hold
/// room for (a session takes at most `max_coalesce` signals at a time).
const POOL_LISTS: usize = 16;
const POOL_MAX_ITEMS: usize = 256;

/// One worker thread's context.
pub struct Worker {
    /// The instance.
    pub instance: Arc<Instance>,
    /// This thread's metrics shard.
    pub metrics: Arc<Shard>,
    read: RefCell<Box<[u8]>>,
    buffers: RefCell<Vec<Vec<u8>>>,
    /// Lists a session fills while it works: ~200 bytes a signal, kept by each idle session
    /// they would be more than half of what a viewer costs.
    pub signals: ListPool<Signal>,
    /// The same for the client's events.
    pub events: ListPool<Event>,
}

/// Empty lists, reused by the sessions of one thread so that an idle one holds none.
pub struct ListPool<T>(RefCell<Vec<Vec<T>>>);

impl<T> Default for ListPool<T> {
    fn default() -> Self {
        Self(RefCell::new(Vec::new()))
    }
}

impl<T> ListPool<T> {
    /// Makes sure `list` has room, from the pool if it has none.
    pub fn fill(&self, list: &mut Vec<T>) {
        if list.capacity() == 0
            && let Some(kept) = self.0.borrow_mut().pop()
        {
            *list = kept;
        }
    }

    /// Takes the room of `list` back if it is empty, leaving it without any.
    pub fn reclaim(&self, list: &mut Vec<T>) {
        if !list.is_empty() || list.capacity() == 0 {
            return;
        }
        let list = std::mem::take(list);
        let mut pool = self.0.borrow_mut();
        if pool.len() < POOL_LISTS && list.capacity() <= POOL_MAX_ITEMS {
            pool.push(list);
        }
    }
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
            signals: ListPool::default(),
            events: ListPool::default(),
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
