//! The audit trail's writer: every call that asks to change something is recorded,
//! allowed or refused, by the coordinator that served it, and committed through Raft.
//!
//! [`crate::auth::AuthLayer`] makes the records (who, which call, from where, the
//! outcome); a service names what the call acted on through the [`AuditNote`] it finds
//! in the request. Records go into a bounded queue (a call never waits for its record,
//! and a flood of refused calls cannot hold up the cluster: when the queue is full a
//! record is dropped and counted). [`run`] drains the queue in batches, each gathering
//! for [`LINGER`]: on the leader it proposes them, on a follower it sends them to the
//! leader (`RaftPeer.RecordAudit`), retrying across elections for up to
//! [`GIVE_UP_AFTER`].
//!
//! A coordinator that dies between a call and the commit of its record loses that
//! record; the call's own effect (a release event, a token) still names its actor.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use flotilla_proto::v1;
use flotilla_proto::v1::raft_peer_client::RaftPeerClient;
use tokio::sync::mpsc;

use crate::error::CoordinatorError;
use crate::node::{Lifecycle, Node};
use crate::state::{AuditBatch, AuditRecord, Op, Retention};

/// How many records may wait to be committed.
pub const QUEUE: usize = 4_096;

/// The most records committed in one log entry.
const BATCH: usize = 512;

/// How long the first record of a batch waits for others to join it.
pub const LINGER: Duration = Duration::from_millis(50);

/// How long a batch is retried (no leader, a leader change) before it is dropped.
pub const GIVE_UP_AFTER: Duration = Duration::from_secs(30);

/// Where records are submitted; cloned into the auth layer.
#[derive(Debug, Clone)]
pub struct Auditor {
    tx: mpsc::Sender<AuditRecord>,
    counts: Arc<Counts>,
}

/// What happened to the records submitted here.
#[derive(Debug, Default)]
pub struct Counts {
    /// Committed.
    pub committed: AtomicU64,
    /// Dropped: the queue was full, or no leader took them in time.
    pub dropped: AtomicU64,
}

impl Auditor {
    /// An auditor and the queue [`run`] drains.
    pub fn new() -> (Self, mpsc::Receiver<AuditRecord>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        (Self { tx, counts: Arc::new(Counts::default()) }, rx)
    }

    /// Queues a record; when the queue is full it is dropped and counted.
    pub fn submit(&self, record: AuditRecord) {
        if let Err(e) = self.tx.try_send(record) {
            let dropped = self.counts.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if dropped.is_power_of_two() {
                tracing::warn!(dropped, "audit queue full or closed: a record was dropped ({e})");
            }
        }
    }

    /// The counts of records committed and dropped.
    pub fn counts(&self) -> &Arc<Counts> {
        &self.counts
    }
}

/// What a service says about the call it serves, for its audit record.
#[derive(Debug, Clone, Default)]
pub struct AuditNote(Arc<Mutex<Note>>);

#[derive(Debug, Clone, Default)]
struct Note {
    target: String,
    release_id: String,
}

impl AuditNote {
    /// The note of `request` (a request the layer did not audit gets a note nobody reads).
    pub fn of<T>(request: &tonic::Request<T>) -> Self {
        request.extensions().get::<AuditNote>().cloned().unwrap_or_default()
    }

    /// The call acted on `target` (`host web-1`, `token 1a2b3c4d`...).
    pub fn target(&self, target: impl Into<String>) {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).target = target.into();
    }

    /// The call acted on release `id`.
    pub fn release(&self, id: &str) {
        if id.is_empty() {
            return;
        }
        let mut note = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        note.target = format!("release {id}");
        id.clone_into(&mut note.release_id);
    }

    /// Fills `record`'s target and release.
    pub fn fill(&self, record: &mut AuditRecord) {
        let note = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        record.target.clone_from(&note.target);
        record.release_id.clone_from(&note.release_id);
    }
}

/// Commits the records `rx` receives until the node closes (then what is queued gets
/// one bounded try), keeping `retention`
/// (applied to what this node proposes as leader; records a follower sends are kept
/// as the leader's configuration says).
pub async fn run(node: Node, mut rx: mpsc::Receiver<AuditRecord>, counts: Arc<Counts>, retention: Retention) {
    let mut life = node.lifecycle_changes();
    loop {
        let first = tokio::select! {
            r = rx.recv() => r,
            _ = life.wait_for(|l| *l == Lifecycle::Closing) => None,
        };
        let Some(first) = first else {
            flush_on_close(&node, &mut rx, &counts, retention).await;
            return;
        };
        // The records of the next LINGER join this one: a client writing one call at a
        // time then pays for an audit entry every few dozen calls, not one per call.
        let mut records = vec![first];
        let linger = tokio::time::sleep(LINGER);
        tokio::pin!(linger);
        while records.len() < BATCH {
            tokio::select! {
                r = rx.recv() => match r {
                    Some(r) => records.push(r),
                    None => break,
                },
                () = &mut linger => break,
            }
        }
        let n = records.len() as u64;
        let give_up = tokio::time::Instant::now() + GIVE_UP_AFTER;
        let mut pause = Duration::from_millis(50);
        loop {
            match commit(&node, &records, retention).await {
                Ok(()) => {
                    counts.committed.fetch_add(n, Ordering::Relaxed);
                    break;
                }
                Err(e) if tokio::time::Instant::now() + pause < give_up && node.lifecycle() != Lifecycle::Closing => {
                    tracing::debug!(records = n, "audit records not committed yet: {e}");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(2));
                }
                Err(e) => {
                    counts.dropped.fetch_add(n, Ordering::Relaxed);
                    tracing::warn!(records = n, "audit records dropped: {e}");
                    break;
                }
            }
        }
    }
}

/// How long a closing node tries to hand its last records to the leader.
const CLOSING_FLUSH: Duration = Duration::from_secs(2);

/// What is still queued when the node closes: one try, bounded, to have it committed
/// (the leadership was handed over, so it goes to the new leader).
async fn flush_on_close(node: &Node, rx: &mut mpsc::Receiver<AuditRecord>, counts: &Counts, retention: Retention) {
    let mut records = Vec::new();
    while let Ok(r) = rx.try_recv() {
        records.push(r);
    }
    if records.is_empty() {
        return;
    }
    let n = records.len() as u64;
    match tokio::time::timeout(CLOSING_FLUSH, commit(node, &records, retention)).await {
        Ok(Ok(())) => counts.committed.fetch_add(n, Ordering::Relaxed),
        _ => {
            tracing::warn!(records = n, "audit records dropped: the node closed before they were committed");
            counts.dropped.fetch_add(n, Ordering::Relaxed)
        }
    };
}

/// Commits `records`: proposed here when this node leads, sent to the leader otherwise.
async fn commit(node: &Node, records: &[AuditRecord], retention: Retention) -> Result<(), String> {
    match node.check_leader() {
        Ok(()) => propose(node, records.to_vec(), retention).await.map_err(|e| e.to_string()),
        Err(CoordinatorError::NotLeader { leader_id, leader_addr }) => {
            let channel = node.forward_channel(&leader_addr).map_err(|e| e.to_string())?;
            let payload = crate::raft::codec::encode(records).map_err(|e| e.to_string())?;
            let term = node.raft().metrics().borrow().current_term;
            let request = v1::RecordAuditRequest {
                envelope: crate::raft::network::envelope(node.id(), leader_id, term, node.identity()),
                record_count: u32::try_from(records.len()).unwrap_or(u32::MAX),
                payload,
            };
            RaftPeerClient::new(channel)
                .max_decoding_message_size(crate::raft::network::MAX_PEER_MESSAGE)
                .max_encoding_message_size(crate::raft::network::MAX_PEER_MESSAGE)
                .record_audit(request)
                .await
                .map(|_| ())
                .map_err(|s| format!("leader {leader_id} at {leader_addr}: {}", s.message()))
        }
        Err(e) => Err(e.to_string()),
    }
}

/// Proposes `records` on this node, the leader.
pub async fn propose(node: &Node, records: Vec<AuditRecord>, retention: Retention) -> Result<(), CoordinatorError> {
    node.propose(Op::Audit(AuditBatch { records, retention })).await.map(|_| ())
}

/// A gRPC code's canonical name (`PERMISSION_DENIED`).
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// Sets `record`'s outcome from a status (`None`: success).
pub fn set_outcome(record: &mut AuditRecord, status: Option<&tonic::Status>) {
    match status {
        None => "OK".clone_into(&mut record.code),
        Some(status) => {
            record.code = code_name(status.code()).to_owned();
            record.reason = flotilla_proto::status::error_info(status).map(|i| i.reason).unwrap_or_default();
            record.message = status.message().chars().take(1_000).collect();
        }
    }
}

/// A record on the wire.
pub fn record_wire(r: &AuditRecord) -> v1::AuditRecord {
    v1::AuditRecord {
        seq: r.seq,
        at_unix_ms: r.at_unix_ms,
        actor: r.actor.clone(),
        role: r.role.clone(),
        method: r.method.clone(),
        target: r.target.clone(),
        release_id: r.release_id.clone(),
        peer: r.peer.clone(),
        node_id: r.node_id,
        code: r.code.clone(),
        reason: r.reason.clone(),
        message: r.message.clone(),
    }
}
