//! Group commit: one thread makes writes durable for everyone who is waiting.
//!
//! A writer first writes to the store (visible, not yet durable), then hands its completion to
//! the flusher. The flusher takes every completion queued so far, calls [`Store::flush`] once,
//! and completes them all with its result. While one flush runs, new completions queue up and
//! share the next one, so the number of fsyncs grows with time, not with the number of writes.
//!
//! Correctness: a completion is queued only after its write returned, and a flush makes every
//! write that returned before it durable, so no completion fires before its write is on disk.

use crate::TypeConfig;
use idmesh_store::Store;
use openraft::storage::IOFlushed;
use std::io;
use std::sync::Arc;
use std::sync::mpsc;
use tokio::sync::oneshot;

/// Who waits for a flush.
enum Waiter {
    /// openraft's log-append callback.
    Raft(IOFlushed<TypeConfig>),
    /// A caller awaiting durability (e.g. a vote).
    Oneshot(oneshot::Sender<Result<(), io::Error>>),
}

/// Handle to the flusher thread. Cloning shares the thread; it stops when every handle is gone.
///
/// Over an in-memory store ([`Store::is_in_memory`]) there is no thread: each waiter's flush
/// runs at once, in the caller's task.
#[derive(Clone)]
pub struct Flusher {
    mode: Mode,
}

#[derive(Clone)]
enum Mode {
    Thread(mpsc::Sender<Waiter>),
    Inline(Arc<dyn Store>),
}

impl std::fmt::Debug for Flusher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Flusher")
    }
}

impl Flusher {
    /// Starts the flusher thread for `store`.
    pub fn start(store: Arc<dyn Store>) -> Result<Self, io::Error> {
        if store.is_in_memory() {
            return Ok(Self { mode: Mode::Inline(store) });
        }
        let (tx, rx) = mpsc::channel::<Waiter>();
        std::thread::Builder::new().name("idmesh-flusher".into()).spawn(move || run(store, rx))?;
        Ok(Self { mode: Mode::Thread(tx) })
    }

    /// Completes `callback` once every write made before this call is durable.
    pub fn after_flush(&self, callback: IOFlushed<TypeConfig>) {
        match &self.mode {
            Mode::Inline(store) => callback.io_completed(flush_now(store.as_ref(), 1)),
            Mode::Thread(tx) => {
                if let Err(mpsc::SendError(Waiter::Raft(callback))) = tx.send(Waiter::Raft(callback)) {
                    callback.io_completed(Err(stopped()));
                }
            }
        }
    }

    /// Returns once every write made before this call is durable.
    pub async fn flush(&self) -> Result<(), io::Error> {
        match &self.mode {
            Mode::Inline(store) => flush_now(store.as_ref(), 1),
            Mode::Thread(tx) => {
                let (reply, rx) = oneshot::channel();
                tx.send(Waiter::Oneshot(reply)).map_err(|_| stopped())?;
                rx.await.map_err(|_| stopped())?
            }
        }
    }
}

/// One flush for `waiters` waiters, its failure logged.
fn flush_now(store: &dyn Store, waiters: usize) -> Result<(), io::Error> {
    store.flush().map_err(|e| {
        tracing::error!(error = %e, waiters, "flush failed; writes are not durable");
        io::Error::other(e.to_string())
    })
}

fn stopped() -> io::Error {
    io::Error::other("the flusher thread has stopped; nothing more can be made durable")
}

fn run(store: Arc<dyn Store>, rx: mpsc::Receiver<Waiter>) {
    let mut waiters = Vec::new();
    while let Ok(first) = rx.recv() {
        waiters.push(first);
        waiters.extend(rx.try_iter());
        let result = flush_now(store.as_ref(), waiters.len());
        for waiter in waiters.drain(..) {
            let outcome = result.as_ref().map(|_| ()).map_err(|e| io::Error::other(e.to_string()));
            match waiter {
                Waiter::Raft(callback) => callback.io_completed(outcome),
                Waiter::Oneshot(tx) => {
                    let _ = tx.send(outcome);
                }
            }
        }
    }
}
