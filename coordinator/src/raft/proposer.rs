//! Group proposals: writes that arrive while earlier ones are being committed share one
//! log entry.
//!
//! openraft 0.9's core appends each proposal as an entry of its own and waits for that
//! append to be durable before it takes its next message (`RaftCore::append_to_log`
//! awaits the flush), so a leader fed one proposal per write commits at most one write
//! per `fdatasync`, however many clients write at once and however little CPU it uses.
//! The proposer stands in front of it. It hands openraft at most [`MAX_IN_FLIGHT`]
//! entries at a time and packs every proposal that arrives meanwhile into the next one:
//! an [`Op::Batch`] of up to [`MAX_OPS`] operations and about [`MAX_BYTES`] encoded,
//! whose responses go back to their callers one by one. A write that finds nothing in
//! flight is proposed at once as an entry of its own, as before; under load an entry
//! carries as many writes as arrived during one commit, so the fsyncs, AppendEntries
//! round trips and applies are shared among them (group commit, as etcd and TiKV batch
//! their proposals).
//!
//! A batch applies its operations in order, each as it would apply in an entry of its
//! own (`State::apply`): one refused operation refuses only itself. A failure to commit
//! the entry (this node no longer leads, Raft stopped) fails every operation in it, each
//! as its own call would have failed. An operation whose caller has gone before it was
//! proposed is not proposed.
//!
//! Every operation of one entry is stamped with the same time and the same log index
//! (two releases created in one entry share their `created_index`).

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use openraft::BasicNode;
use openraft::error::{ClientWriteError, RaftError};
use tokio::sync::{mpsc, oneshot};

use super::{NodeId, Raft, codec};
use crate::state::{Command, Op, Response};

/// The most operations in one entry.
pub const MAX_OPS: usize = 256;

/// About the most encoded bytes of operations in one entry (an operation larger than
/// this goes alone). With openraft's `max_payload_entries` of 512 it keeps an
/// AppendEntries of full entries near 32 MiB, under the peer message limit.
pub const MAX_BYTES: usize = 64 * 1024;

/// The most entries handed to openraft and not yet answered. Two: while one entry is
/// replicated the next is appended, so writes from different sources (a client's and
/// the release engine's) overlap instead of queueing one behind the other, and every
/// write that arrives meanwhile waits for the next entry rather than taking one of its
/// own. Measured (BENCHMARKS.md): with one, release creates from a single client fell
/// about 15 % (the engine's entry for the release before went first) while notes from
/// 16 writers gained 3 %; with four, notes from 16 writers lost 10 %.
pub const MAX_IN_FLIGHT: usize = 2;

/// How many proposals may wait for the proposer before callers wait to queue.
const QUEUE: usize = 4_096;

/// Why openraft did not commit a write.
pub type WriteError = RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>;

/// Why a proposal has no result.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProposeError {
    /// openraft refused or failed the entry.
    #[error(transparent)]
    Raft(Box<WriteError>),
    /// The proposer task is gone (the node is stopping).
    #[error("the node's proposer has stopped")]
    Stopped,
    /// The entry was applied but its response does not have the batch's shape.
    #[error("a batch of {ops} operations was answered with {response:?}")]
    Unanswered {
        /// Operations in the batch.
        ops: usize,
        /// What applying it returned.
        response: Box<Response>,
    },
}

impl From<WriteError> for ProposeError {
    fn from(e: WriteError) -> Self {
        Self::Raft(Box::new(e))
    }
}

struct Proposal {
    op: Op,
    bytes: usize,
    reply: oneshot::Sender<Result<Response, ProposeError>>,
}

/// The handle callers propose through; cheap to clone. The proposing task stops when the
/// last handle is dropped, after answering what it has taken.
#[derive(Debug, Clone)]
pub struct Proposer {
    tx: mpsc::Sender<Proposal>,
}

impl Proposer {
    /// Starts proposing to `raft`, stamping each entry with `clock()` (Unix ms).
    pub fn start(raft: Raft, clock: fn() -> i64) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(raft, clock, rx));
        Self { tx }
    }

    /// Commits `op` (alone or with others in one entry) and returns what applying it
    /// produced.
    pub async fn propose(&self, op: Op) -> Result<Response, ProposeError> {
        // Measured here, by each caller, not by the one task that packs entries.
        let bytes = codec::encode(&op).map_or(MAX_BYTES, |b| b.len());
        let (reply, answer) = oneshot::channel();
        self.tx.send(Proposal { op, bytes, reply }).await.map_err(|_| ProposeError::Stopped)?;
        answer.await.map_err(|_| ProposeError::Stopped)?
    }
}

async fn run(raft: Raft, clock: fn() -> i64, mut rx: mpsc::Receiver<Proposal>) {
    let mut in_flight = FuturesUnordered::new();
    // A proposal that did not fit the last entry opens the next one.
    let mut held: Option<Proposal> = None;
    loop {
        tokio::select! {
            Some(()) = in_flight.next(), if !in_flight.is_empty() => {}
            first = next(&mut held, &mut rx), if in_flight.len() < MAX_IN_FLIGHT => {
                let Some(first) = first else { break };
                let batch = gather(first, &mut rx, &mut held);
                if !batch.is_empty() {
                    in_flight.push(commit(raft.clone(), clock(), batch));
                }
            }
        }
    }
    while in_flight.next().await.is_some() {}
}

async fn next(held: &mut Option<Proposal>, rx: &mut mpsc::Receiver<Proposal>) -> Option<Proposal> {
    match held.take() {
        Some(p) => Some(p),
        None => rx.recv().await,
    }
}

/// `first` and the proposals queued behind it, up to the limits of one entry; callers
/// that have gone are dropped.
fn gather(first: Proposal, rx: &mut mpsc::Receiver<Proposal>, held: &mut Option<Proposal>) -> Vec<Proposal> {
    let mut bytes = first.bytes;
    let mut batch = vec![first];
    while batch.len() < MAX_OPS {
        let Ok(p) = rx.try_recv() else { break };
        if bytes + p.bytes > MAX_BYTES {
            *held = Some(p);
            break;
        }
        bytes += p.bytes;
        batch.push(p);
    }
    batch.retain(|p| !p.reply.is_closed());
    batch
}

/// Commits `batch` as one entry and answers each of its callers.
async fn commit(raft: Raft, at_unix_ms: i64, mut batch: Vec<Proposal>) {
    if batch.len() == 1 {
        let Proposal { op, reply, .. } = batch.remove(0);
        let written = raft.client_write(Command { at_unix_ms, op }).await;
        let _ = reply.send(written.map(|r| r.data).map_err(ProposeError::from));
        return;
    }
    let (ops, replies): (Vec<Op>, Vec<_>) = batch.into_iter().map(|p| (p.op, p.reply)).unzip();
    let count = ops.len();
    match raft.client_write(Command { at_unix_ms, op: Op::Batch(ops) }).await {
        Ok(written) => match written.data {
            Response::Batch(responses) if responses.len() == count => {
                for (reply, response) in replies.into_iter().zip(responses) {
                    let _ = reply.send(Ok(response));
                }
            }
            other => {
                tracing::error!(ops = count, response = ?other, "a batch entry was answered out of shape");
                let error = ProposeError::Unanswered { ops: count, response: Box::new(other) };
                for reply in replies {
                    let _ = reply.send(Err(error.clone()));
                }
            }
        },
        Err(e) => {
            let error = ProposeError::from(e);
            for reply in replies {
                let _ = reply.send(Err(error.clone()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Answer = oneshot::Receiver<Result<Response, ProposeError>>;

    fn proposal(bytes: usize) -> (Proposal, Answer) {
        let (reply, answer) = oneshot::channel();
        (Proposal { op: Op::MembersSeen(std::collections::BTreeSet::new()), bytes, reply }, answer)
    }

    /// Queues proposals of these sizes; returns the first, the queue and the answers.
    fn queued(sizes: &[usize]) -> (Proposal, mpsc::Receiver<Proposal>, Vec<Answer>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let mut answers = Vec::new();
        let (first, answer) = proposal(sizes[0]);
        answers.push(answer);
        for &bytes in &sizes[1..] {
            let (p, answer) = proposal(bytes);
            answers.push(answer);
            tx.try_send(p).unwrap_or_else(|_| panic!("the queue takes {} proposals", sizes.len()));
        }
        (first, rx, answers)
    }

    #[test]
    fn an_entry_takes_the_queued_proposals_up_to_its_count() {
        let (first, mut rx, _answers) = queued(&[10; MAX_OPS + 5]);
        let mut held = None;
        assert_eq!(gather(first, &mut rx, &mut held).len(), MAX_OPS);
        assert!(held.is_none());
        let next = rx.try_recv().unwrap();
        assert_eq!(gather(next, &mut rx, &mut held).len(), 5, "the rest make the next entry");
    }

    #[test]
    fn a_proposal_past_the_byte_limit_opens_the_next_entry() {
        let (first, mut rx, _answers) = queued(&[MAX_BYTES / 2, MAX_BYTES / 4, MAX_BYTES / 2, 10]);
        let mut held = None;
        let entry = gather(first, &mut rx, &mut held);
        assert_eq!(entry.iter().map(|p| p.bytes).collect::<Vec<_>>(), [MAX_BYTES / 2, MAX_BYTES / 4]);
        let held = held.expect("the third proposal waits for the next entry");
        assert_eq!(held.bytes, MAX_BYTES / 2);
        // One larger than the limit on its own still goes, alone.
        let (big, mut rx, _answers) = queued(&[MAX_BYTES * 3, 10]);
        let mut held_big = None;
        assert_eq!(gather(big, &mut rx, &mut held_big).len(), 1);
        assert_eq!(held_big.map(|p| p.bytes), Some(10));
    }

    #[test]
    fn proposals_whose_callers_left_are_not_proposed() {
        let (first, mut rx, mut answers) = queued(&[10, 10, 10, 10]);
        drop(answers.remove(1));
        drop(answers.remove(1));
        let entry = gather(first, &mut rx, &mut None);
        assert_eq!(entry.len(), 2, "two callers are still waiting");
        assert!(entry.iter().all(|p| !p.reply.is_closed()));
    }
}
