//! Group commit: one thread that makes the log durable once for every waiter queued
//! since its last flush, then tells them, in the order they queued.
//!
//! Appending to the Raft log queues a waiter that completes openraft's `LogFlushed`
//! callback. Concurrent appends share one fsync, the next append is written while the
//! previous one is being synced, and nothing blocks the async runtime while a sync runs.

use std::fmt;
use std::sync::mpsc;
use std::thread::JoinHandle;

/// Why a flush failed.
pub type FlushError = Box<dyn std::error::Error + Send + Sync>;

/// Called once the writes made before it was queued are durable (or the flush failed).
pub type Waiter = Box<dyn FnOnce(Result<(), &FlushError>) + Send>;

/// The flushing thread of one log. Dropping it lets the thread finish the waiters
/// already queued, then joins it.
pub struct Flusher {
    tx: Option<mpsc::Sender<Waiter>>,
    thread: Option<JoinHandle<()>>,
}

impl fmt::Debug for Flusher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Flusher").field("running", &self.tx.is_some()).finish()
    }
}

/// The flushing thread is gone (it panicked): nothing can be made durable any more.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the storage flush thread has stopped")]
pub struct FlusherStopped;

impl Flusher {
    /// Starts the thread; `sync` makes every write made before it was called durable.
    pub fn start(mut sync: impl FnMut() -> Result<(), FlushError> + Send + 'static) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel::<Waiter>();
        let thread = std::thread::Builder::new().name("flotilla-log-flush".to_owned()).spawn(move || {
            while let Ok(first) = rx.recv() {
                let mut group = vec![first];
                group.extend(rx.try_iter());
                let result = sync();
                if let Err(e) = &result {
                    tracing::error!(error = %e, waiters = group.len(), "flushing storage failed");
                }
                for waiter in group {
                    waiter(result.as_ref().map(|_| ()));
                }
            }
        })?;
        Ok(Self { tx: Some(tx), thread: Some(thread) })
    }

    /// Queues `waiter` behind the next flush.
    pub fn after_flush(&self, waiter: Waiter) -> Result<(), FlusherStopped> {
        self.tx.as_ref().ok_or(FlusherStopped)?.send(waiter).map_err(|_| FlusherStopped)
    }
}

impl Drop for Flusher {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("the storage flush thread panicked");
        }
    }
}
