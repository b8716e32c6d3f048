//! Group commit: one thread that flushes the engine for every waiter queued since its
//! last flush, then tells them, in the order they queued.
//!
//! Appending to the Raft log queues a waiter that completes openraft's `LogFlushed`
//! callback; `save_vote`, `truncate` and `purge` queue one and wait for it. Concurrent
//! writers share one fsync, and nothing blocks the async runtime while a flush runs.

use std::fmt;
use std::sync::mpsc;
use std::thread::JoinHandle;

use super::kv::{KvEngine, KvError};

/// Called once the writes made before it was queued are durable (or the flush failed).
pub type Waiter = Box<dyn FnOnce(Result<(), &KvError>) + Send>;

/// The flushing thread of one engine. Dropping it lets the thread finish the waiters
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
    /// Starts the thread for `engine`.
    pub fn start<E: KvEngine>(engine: E) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel::<Waiter>();
        let thread = std::thread::Builder::new().name("flotilla-store-flush".to_owned()).spawn(move || {
            while let Ok(first) = rx.recv() {
                let mut group = vec![first];
                group.extend(rx.try_iter());
                let result = engine.flush();
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

    /// Waits until every write made before this call is durable.
    pub async fn flush(&self) -> Result<(), KvError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let waiter: Waiter = Box::new(move |result| {
            let _ = tx.send(result.map_err(|e| e.to_string()));
        });
        let stopped = || KvError::Engine(Box::new(FlusherStopped));
        self.after_flush(waiter).map_err(|_| stopped())?;
        match rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(message)) => Err(KvError::Engine(message.into())),
            Err(_) => Err(stopped()),
        }
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
