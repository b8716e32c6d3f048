//! Durability of the coordinator's storage: what it acknowledged is still there after
//! the process dies or the store is reopened, snapshots move between stores, and data
//! in an unknown format is refused.

use std::collections::BTreeMap;
use std::io;
use std::path::Path;
use std::process;
use std::sync::Arc;
use std::time::{Duration, Instant};

use flotilla_coordinator::raft::{Entry, NodeId, TypeConfig};
use flotilla_coordinator::state::{AuditBatch, AuditRecord, Command, NewRelease, Op, Response, Retention, State};
use flotilla_coordinator::store::spaces::{Format, FormatKey, FormatRecord, RaftLog};
use flotilla_coordinator::store::{
    self, KeySpace, KvEngine, LogStore, SledEngine, StateMachineStore, StoreError, ValueEncoding,
};
use openraft::error::{InstallSnapshotError, RPCError, RaftError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine, StorageHelper};
use openraft::testing::log_id;
use openraft::{BasicNode, EntryPayload, LogId, Membership, RaftLogReader, RaftSnapshotBuilder, SnapshotPolicy, Vote};

/// Set in the helper process: the data directory it writes to before aborting.
const HELPER_DIR_ENV: &str = "FLOTILLA_STORE_HELPER_DIR";

fn audit(i: u64) -> Command {
    Command {
        at_unix_ms: 1_000 + i64::try_from(i).unwrap(),
        op: Op::Audit(AuditBatch {
            records: vec![AuditRecord {
                actor: "operator test".into(),
                method: format!("action {i}"),
                ..AuditRecord::default()
            }],
            retention: Retention::default(),
        }),
    }
}

fn create_release(i: u64) -> Command {
    Command {
        at_unix_ms: 5_000,
        op: Op::CreateRelease(NewRelease {
            id: format!("r-{i}"),
            name: "shop".into(),
            file_name: "shop.toml".into(),
            spec_text: "release = \"shop\"".into(),
            ..NewRelease::default()
        }),
    }
}

fn normal(term: u64, index: u64, command: Command) -> Entry {
    Entry { log_id: log_id(term, 1, index), payload: EntryPayload::Normal(command) }
}

fn membership(term: u64, index: u64) -> Entry {
    let voters = [1u64, 2, 3].into_iter().collect();
    Entry { log_id: log_id(term, 1, index), payload: EntryPayload::Membership(Membership::new(vec![voters], None)) }
}

/// Reopens the store in `dir`, waiting (with a deadline) for the previous owner's
/// tasks to release the database: a shut-down Raft drops its storage asynchronously.
fn reopen(dir: &Path) -> (LogStore, StateMachineStore) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match store::open(dir) {
            Ok(stores) => return stores,
            Err(e) if Instant::now() >= deadline => panic!("reopening {}: {e}", dir.display()),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// `store::open`, tried again (with a deadline) while a handle this test dropped still
/// holds the database's lock: sled lets go of it from a background thread.
fn open_when_free(dir: &Path) -> Result<(LogStore, StateMachineStore), StoreError> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match store::open(dir) {
            Err(e) if e.to_string().contains("could not acquire lock") && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

/// The sled engine in `dir`, as [`open_when_free`] waits for it.
fn engine_when_free(dir: &Path) -> SledEngine {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match SledEngine::open(&dir.join(store::DB_DIR)) {
            Ok(engine) => return engine,
            Err(e) if Instant::now() >= deadline => panic!("opening the engine in {}: {e}", dir.display()),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

async fn all_entries(log: &mut LogStore) -> Vec<Entry> {
    log.try_get_log_entries(..).await.unwrap()
}

/// Not a test of its own: the process `acknowledged_appends_and_the_vote_survive_an_abort`
/// starts. Writes, waits for the acknowledgements, then aborts without running any
/// destructor, so nothing but what the store made durable can survive.
#[tokio::test]
async fn helper_process_appends_then_aborts() {
    let Ok(dir) = std::env::var(HELPER_DIR_ENV) else { return };
    let (mut log, _sm) = store::open(&dir).unwrap();
    log.save_vote(&Vote::new(4, 2)).await.unwrap();
    for i in 1..=40 {
        log.blocking_append([normal(4, i, audit(i))]).await.unwrap();
    }
    std::fs::write(Path::new(&dir).join("acknowledged"), b"40").unwrap();
    process::abort();
}

#[test]
fn acknowledged_appends_and_the_vote_survive_an_abort() {
    let dir = tempfile::tempdir().unwrap();
    let status = process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "helper_process_appends_then_aborts", "--nocapture", "--test-threads=1"])
        .env(HELPER_DIR_ENV, dir.path())
        .status()
        .unwrap();
    assert!(!status.success(), "the helper process aborts");
    assert!(dir.path().join("acknowledged").exists(), "the helper got its acknowledgements before aborting");

    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let (mut log, _sm) = reopen(dir.path());
        assert_eq!(log.read_vote().await.unwrap(), Some(Vote::new(4, 2)));
        let entries = all_entries(&mut log).await;
        let indexes: Vec<u64> = entries.iter().map(|e| e.log_id.index).collect();
        assert_eq!(indexes, (1..=40).collect::<Vec<_>>());
        assert_eq!(entries[39], normal(4, 40, audit(40)));
    });
}

/// Set in the helper process: the data directory whose `log/` is a small tmpfs.
const FULL_DISK_DIR_ENV: &str = "FLOTILLA_FULL_DISK_DIR";

/// An entry of about 4 KiB.
fn big(i: u64) -> Entry {
    let mut command = audit(i);
    if let Op::Audit(batch) = &mut command.op {
        batch.records[0].target = format!("{i:>4096}");
    }
    normal(1, i, command)
}

/// Not a test of its own: the process
/// `a_full_disk_refuses_the_append_cleanly_and_keeps_what_was_acknowledged` starts in a
/// mount namespace of its own, with a 256 KiB tmpfs as its log directory. Appends until
/// the disk is full, reopens the store on the full disk, and writes what it saw to
/// `report` beside the log (on the real disk).
#[tokio::test]
async fn helper_process_fills_the_disk() {
    let Ok(dir) = std::env::var(FULL_DISK_DIR_ENV) else { return };
    let dir = Path::new(&dir);
    let mut acknowledged = 0;
    let refusal = {
        let (mut log, _sm) = store::open(dir).unwrap();
        loop {
            match log.blocking_append([big(acknowledged + 1)]).await {
                Ok(()) => acknowledged += 1,
                Err(e) => break e.to_string(),
            }
            assert!(acknowledged < 1_000, "a 256 KiB disk never filled");
        }
    };
    let (mut log, _sm) = reopen(dir);
    let held: Vec<u64> = all_entries(&mut log).await.iter().map(|e| e.log_id.index).collect();
    let again = log.blocking_append([big(acknowledged + 1)]).await.map_err(|e| e.to_string());
    let report = serde_json::json!({
        "acknowledged": acknowledged,
        "refusal": refusal,
        "held_after_reopening": held,
        "refused_again": again.err(),
    });
    std::fs::write(dir.join("report"), report.to_string()).unwrap();
}

#[test]
fn a_full_disk_refuses_the_append_cleanly_and_keeps_what_was_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join(store::LOG_DIR)).unwrap();
    // A tmpfs of its own for the log, in a mount namespace only the helper sees.
    let script = r#"mount -t tmpfs -o size=256k flotilla-full-disk "$1/log" && exec "$2" --exact helper_process_fills_the_disk --nocapture --test-threads=1"#;
    let output = process::Command::new("unshare")
        .args(["--mount", "--map-root-user", "sh", "-c", script, "sh"])
        .arg(dir.path())
        .arg(std::env::current_exe().unwrap())
        .env(FULL_DISK_DIR_ENV, dir.path())
        .output()
        .expect("unshare (util-linux) runs");
    let shown = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "the helper process: {shown}");
    assert!(!shown.contains("panicked"), "{shown}");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("report")).expect("the helper wrote its report"))
            .unwrap();
    let acknowledged = report["acknowledged"].as_u64().unwrap();
    assert!(acknowledged > 10, "some appends fit before the disk filled: {report}");
    let refusal = report["refusal"].as_str().unwrap();
    assert!(refusal.contains("No space left on device"), "the refusal says why: {refusal}");
    assert!(refusal.contains(".seg"), "and names the segment: {refusal}");
    let held: Vec<u64> =
        report["held_after_reopening"].as_array().unwrap().iter().map(|i| i.as_u64().unwrap()).collect();
    assert_eq!(held, (1..=acknowledged).collect::<Vec<_>>(), "exactly the acknowledged entries, nothing half-written");
    let again = report["refused_again"].as_str().expect("an append on the still-full disk is refused again");
    assert!(again.contains("No space left on device"), "{again}");
}

#[tokio::test]
async fn the_log_vote_and_committed_id_survive_reopening() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut log, _sm) = store::open(dir.path()).unwrap();
        log.save_vote(&Vote::new_committed(2, 1)).await.unwrap();
        log.blocking_append((1..=10).map(|i| normal(2, i, audit(i)))).await.unwrap();
        log.save_committed(Some(log_id(2, 1, 8))).await.unwrap();
        // A later flush makes the committed id durable too.
        log.blocking_append([normal(2, 11, audit(11))]).await.unwrap();
    }
    let (mut log, _sm) = reopen(dir.path());
    assert_eq!(log.read_vote().await.unwrap(), Some(Vote::new_committed(2, 1)));
    assert_eq!(log.read_committed().await.unwrap(), Some(log_id(2, 1, 8)));
    let state = log.get_log_state().await.unwrap();
    assert_eq!(state.last_log_id, Some(log_id(2, 1, 11)));
    assert_eq!(state.last_purged_log_id, None);
    let mut reader = log.get_log_reader().await;
    assert_eq!(reader.try_get_log_entries(3..5).await.unwrap(), [normal(2, 3, audit(3)), normal(2, 4, audit(4))]);
}

#[tokio::test]
async fn purge_and_truncate_survive_reopening() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut log, _sm) = store::open(dir.path()).unwrap();
        log.blocking_append((1..=20).map(|i| normal(1, i, audit(i)))).await.unwrap();
        log.purge(log_id(1, 1, 5)).await.unwrap();
        log.truncate(log_id(1, 1, 16)).await.unwrap();
    }
    {
        let (mut log, _sm) = reopen(dir.path());
        let state = log.get_log_state().await.unwrap();
        assert_eq!(state.last_purged_log_id, Some(log_id(1, 1, 5)));
        assert_eq!(state.last_log_id, Some(log_id(1, 1, 15)));
        let indexes: Vec<u64> = all_entries(&mut log).await.iter().map(|e| e.log_id.index).collect();
        assert_eq!(indexes, (6..=15).collect::<Vec<_>>());
        // Purging past the end leaves no entry; the purged id stands for the last one.
        log.purge(log_id(1, 1, 15)).await.unwrap();
    }
    let (mut log, _sm) = reopen(dir.path());
    let state = log.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(log_id(1, 1, 15)));
    assert_eq!(state.last_log_id, Some(log_id(1, 1, 15)));
    assert!(all_entries(&mut log).await.is_empty());
}

/// The state after applying entries `1..=n` of the test log (a membership entry at 1,
/// releases and audit records after it).
fn expected_state(n: u64) -> State {
    let mut state = State::default();
    for i in 2..=n {
        state.apply(i, 1, &test_command(i));
    }
    state
}

fn test_command(i: u64) -> Command {
    if i % 3 == 0 { create_release(i) } else { audit(i) }
}

fn test_entry(i: u64) -> Entry {
    if i == 1 { membership(1, 1) } else { normal(1, i, test_command(i)) }
}

fn snapshot_files(sm: &StateMachineStore) -> Vec<String> {
    let mut names: Vec<String> =
        std::fs::read_dir(sm.snapshot_dir()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    names
}

#[tokio::test]
async fn a_snapshot_survives_a_restart_and_installs_on_another_store() {
    let dir = tempfile::tempdir().unwrap();
    let built = {
        let (mut log, mut sm) = store::open(dir.path()).unwrap();
        log.blocking_append((1..=30).map(test_entry)).await.unwrap();
        let responses = sm.apply((1..=12).map(test_entry)).await.unwrap();
        assert_eq!(responses.len(), 12);
        assert_eq!(responses[0], Response::None, "a membership entry answers None");
        assert_eq!(responses[2], Response::Release { id: "r-3".into(), created: true });
        sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
        sm.apply((13..=20).map(test_entry)).await.unwrap();
        let built = sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
        assert_eq!(built.meta.last_log_id, Some(log_id(1, 1, 20)));
        assert_eq!(snapshot_files(&sm).len(), 1, "only the latest snapshot is kept: {:?}", snapshot_files(&sm));
        sm.apply((21..=25).map(test_entry)).await.unwrap();
        log.purge(log_id(1, 1, 18)).await.unwrap();
        log.save_committed(Some(log_id(1, 1, 25))).await.unwrap();
        log.save_vote(&Vote::new_committed(1, 1)).await.unwrap();
        built
    };

    // Restart: the state comes back from the snapshot, then openraft's start-up
    // re-applies the committed entries after it.
    let (mut log, mut sm) = reopen(dir.path());
    let shared = sm.shared_state();
    assert_eq!(shared.last_applied(), Some(log_id(1, 1, 20)));
    shared.read(|state| assert_eq!(state, &expected_state(20)));
    let current = sm.get_current_snapshot().await.unwrap().expect("a current snapshot");
    assert_eq!(current.meta, built.meta);
    assert_eq!(current.snapshot.get_ref(), built.snapshot.get_ref());
    StorageHelper::new(&mut log, &mut sm).get_initial_state().await.unwrap();
    assert_eq!(shared.last_applied(), Some(log_id(1, 1, 25)));
    shared.read(|state| assert_eq!(state, &expected_state(25)));
    assert_eq!(shared.membership().membership(), &Membership::new(vec![[1u64, 2, 3].into_iter().collect()], None));

    // Install the snapshot on another store, as a follower receiving it would.
    let other_dir = tempfile::tempdir().unwrap();
    {
        let (_log, mut other) = store::open(other_dir.path()).unwrap();
        let mut received = other.begin_receiving_snapshot().await.unwrap();
        received.get_mut().extend_from_slice(current.snapshot.get_ref());
        other.install_snapshot(&current.meta, received).await.unwrap();
        assert_eq!(
            other.applied_state().await.unwrap(),
            (current.meta.last_log_id, current.meta.last_membership.clone())
        );
        other.shared_state().read(|state| assert_eq!(state, &expected_state(20)));
    }
    let (_log, mut other) = reopen(other_dir.path());
    other.shared_state().read(|state| assert_eq!(state, &expected_state(20)));
    assert_eq!(other.get_current_snapshot().await.unwrap().expect("installed snapshot").meta, current.meta);
    assert_eq!(snapshot_files(&other).len(), 1);
}

#[tokio::test]
async fn a_snapshot_whose_header_disagrees_with_its_metadata_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (_log, mut sm) = store::open(dir.path()).unwrap();
    sm.apply((1..=4).map(test_entry)).await.unwrap();
    let snapshot = sm.get_snapshot_builder().await.build_snapshot().await.unwrap();

    let other_dir = tempfile::tempdir().unwrap();
    let (_log, mut other) = store::open(other_dir.path()).unwrap();
    let mut wrong_meta = snapshot.meta.clone();
    wrong_meta.last_log_id = Some(log_id(1, 1, 99));
    let mut received = other.begin_receiving_snapshot().await.unwrap();
    received.get_mut().extend_from_slice(snapshot.snapshot.get_ref());
    assert!(other.install_snapshot(&wrong_meta, received).await.is_err());
    let mut garbage = other.begin_receiving_snapshot().await.unwrap();
    garbage.get_mut().extend_from_slice(b"not a snapshot");
    assert!(other.install_snapshot(&snapshot.meta, garbage).await.is_err());
    assert_eq!(other.applied_state().await.unwrap().0, None, "a refused snapshot changes nothing");
    assert!(other.get_current_snapshot().await.unwrap().is_none());
}

#[tokio::test]
async fn data_in_a_newer_format_is_refused_with_both_versions_named() {
    let dir = tempfile::tempdir().unwrap();
    drop(store::open(dir.path()).unwrap());
    {
        let engine = engine_when_free(dir.path());
        let newer =
            FormatRecord { version: store::FORMAT_VERSION + 1, written_by: "flotilla-coordinator 9.0.0".into() };
        engine.put::<Format>(&FormatKey::Version, &newer).unwrap();
        engine.flush().unwrap();
    }
    let err = open_when_free(dir.path()).expect_err("a newer format is refused");
    let (newer, current) = (store::FORMAT_VERSION + 1, store::FORMAT_VERSION);
    assert!(
        matches!(err, StoreError::UnsupportedFormat { found, supported, .. } if found == newer && supported == current),
        "unexpected error: {err}"
    );
    let message = err.to_string();
    assert!(message.contains(&format!("format version {newer}")), "{message}");
    assert!(message.contains(&format!("format version {current}")), "{message}");
    assert!(message.contains("newer release"), "{message}");
}

/// A data directory written by format version 1 (every value JSON) is refused by its
/// format record, before any of its log or snapshot is read.
#[tokio::test]
async fn data_in_the_json_format_1_is_refused_cleanly() {
    const { assert!(store::FORMAT_VERSION > 1) };
    /// The key spaces as format 1 wrote them: JSON values.
    struct FormatV1;
    impl KeySpace for FormatV1 {
        const NAME: &'static str = Format::NAME;
        const ENCODING: ValueEncoding = ValueEncoding::Json;
        type Key = FormatKey;
        type Value = serde_json::Value;
    }
    struct RaftLogV1;
    impl KeySpace for RaftLogV1 {
        const NAME: &'static str = RaftLog::NAME;
        const ENCODING: ValueEncoding = ValueEncoding::Json;
        type Key = u64;
        type Value = serde_json::Value;
    }
    let dir = tempfile::tempdir().unwrap();
    {
        let engine = SledEngine::open(&dir.path().join(store::DB_DIR)).unwrap();
        let format = serde_json::json!({"version": 1, "written_by": "flotilla-coordinator 0.1.0"});
        engine.put::<FormatV1>(&FormatKey::Version, &format).unwrap();
        let entry =
            serde_json::json!({"log_id": {"leader_id": {"term": 1, "node_id": 1}, "index": 0}, "payload": "Blank"});
        engine.put::<RaftLogV1>(&0, &entry).unwrap();
        engine.flush().unwrap();
    }
    let err = open_when_free(dir.path()).expect_err("format 1 is refused");
    assert!(
        matches!(err, StoreError::UnsupportedFormat { found: 1, supported, .. } if supported == store::FORMAT_VERSION),
        "unexpected error: {err}"
    );
    let message = err.to_string();
    assert!(message.contains("format version 1"), "{message}");
    assert!(message.contains("no migration"), "{message}");
}

/// A format 5 data directory kept its log in the engine: opening it moves the entries
/// to segment files, empties the engine's copy and records the current format — and segments a
/// migration interrupted by a crash left behind are thrown away and written again.
#[tokio::test]
async fn a_format_5_log_moves_from_the_engine_to_segment_files() {
    const { assert!(store::FORMAT_VERSION == 10) };
    let dir = tempfile::tempdir().unwrap();
    {
        let engine = SledEngine::open(&dir.path().join(store::DB_DIR)).unwrap();
        let v5 = FormatRecord { version: 5, written_by: "flotilla-coordinator 0.1.0".into() };
        engine.put::<Format>(&FormatKey::Version, &v5).unwrap();
        for i in 1..=30 {
            engine.put::<RaftLog>(&i, &normal(3, i, audit(i))).unwrap();
        }
        engine.flush().unwrap();
    }
    // What a crash in the middle of an earlier migration left.
    let log_dir = dir.path().join(store::LOG_DIR);
    std::fs::create_dir_all(&log_dir).unwrap();
    std::fs::write(log_dir.join("00000000000000000001.seg"), b"FLOTLOG\nhalf a segment").unwrap();

    let (mut log, _sm) = reopen(dir.path());
    let entries = all_entries(&mut log).await;
    assert_eq!(entries, (1..=30).map(|i| normal(3, i, audit(i))).collect::<Vec<_>>());
    assert!(log.engine().is_empty::<RaftLog>().unwrap(), "the engine's copy is gone");
    let format = log.engine().get::<Format>(&FormatKey::Version).unwrap().unwrap();
    assert_eq!(format.version, store::FORMAT_VERSION);
    log.blocking_append([normal(3, 31, audit(31))]).await.unwrap();
    drop((log, _sm));

    let (mut log, _sm) = reopen(dir.path());
    assert_eq!(all_entries(&mut log).await.len(), 31);
}

/// A format 6 to 9 data directory already keeps its log in segment files: opening
/// it records the current format and keeps every entry where it is.
#[tokio::test]
async fn a_format_6_to_9_log_stays_in_its_segment_files() {
    for version in [6, 7, 8, 9] {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut log, _sm) = reopen(dir.path());
            log.blocking_append((1..=20).map(|i| normal(3, i, audit(i)))).await.unwrap();
            let old = FormatRecord { version, written_by: "flotilla-coordinator 0.1.0".into() };
            log.engine().put::<Format>(&FormatKey::Version, &old).unwrap();
            log.engine().flush().unwrap();
        }
        let (mut log, _sm) = reopen(dir.path());
        assert_eq!(all_entries(&mut log).await, (1..=20).map(|i| normal(3, i, audit(i))).collect::<Vec<_>>());
        let format = log.engine().get::<Format>(&FormatKey::Version).unwrap().unwrap();
        assert_eq!(format.version, store::FORMAT_VERSION, "format {version}");
    }
}

/// A network for a one-node cluster: there is nobody to talk to.
struct NoPeers;

struct NoPeer;

fn unreachable<E: std::error::Error>() -> RPCError<NodeId, BasicNode, E> {
    RPCError::Unreachable(Unreachable::new(&io::Error::other("a one-node test cluster has no peers")))
}

impl RaftNetworkFactory<TypeConfig> for NoPeers {
    type Network = NoPeer;

    async fn new_client(&mut self, _target: NodeId, _node: &BasicNode) -> NoPeer {
        NoPeer
    }
}

impl RaftNetwork<TypeConfig> for NoPeer {
    async fn append_entries(
        &mut self,
        _rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        Err(unreachable())
    }

    async fn install_snapshot(
        &mut self,
        _rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>>
    {
        Err(unreachable())
    }

    async fn vote(
        &mut self,
        _rpc: VoteRequest<NodeId>,
        _option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        Err(unreachable())
    }
}

fn raft_config() -> Arc<openraft::Config> {
    let config = openraft::Config {
        heartbeat_interval: 50,
        election_timeout_min: 150,
        election_timeout_max: 300,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(10),
        max_in_snapshot_log_to_keep: 2,
        purge_batch_size: 1,
        ..Default::default()
    };
    Arc::new(config.validate().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_has_every_committed_write_after_snapshots_and_purges() {
    let dir = tempfile::tempdir().unwrap();
    let timeout = Some(Duration::from_secs(10));
    let last_index = {
        let (log, sm) = store::open(dir.path()).unwrap();
        let raft = openraft::Raft::<TypeConfig>::new(1, raft_config(), NoPeers, log, sm).await.unwrap();
        raft.initialize(BTreeMap::from([(1, BasicNode { addr: "127.0.0.1:1".into() })])).await.unwrap();
        raft.wait(timeout).current_leader(1, "elected").await.unwrap();
        let mut last = 0;
        for i in 1..=35 {
            last = raft.client_write(audit(i)).await.unwrap().log_id.index;
        }
        raft.wait(timeout).metrics(|m| m.snapshot.is_some() && m.purged.is_some(), "snapshot and purge").await.unwrap();
        raft.shutdown().await.unwrap();
        last
    };

    // Reopening waits until the shut-down Raft has let go of the store, including a
    // snapshot build still in flight; what such a build left behind is cleaned up.
    let (log, sm) = reopen(dir.path());
    assert_eq!(snapshot_files(&sm).len(), 1, "{:?}", snapshot_files(&sm));
    let shared = sm.shared_state();
    let raft = openraft::Raft::<TypeConfig>::new(1, raft_config(), NoPeers, log, sm).await.unwrap();
    raft.wait(timeout).applied_index_at_least(Some(last_index), "re-applied after restart").await.unwrap();
    let audit_len = shared.read(|state| state.access().audit().count());
    assert_eq!(audit_len, 35);
    // The restarted node leads again and takes new writes.
    raft.wait(timeout).current_leader(1, "re-elected").await.unwrap();
    let reply = raft.client_write(audit(36)).await.unwrap();
    assert_eq!(reply.data, Response::Done);
    assert_eq!(shared.read(|state| state.access().audit().count()), 36);
    let last_applied: Option<LogId<NodeId>> = shared.last_applied();
    assert_eq!(last_applied, Some(reply.log_id));
    raft.shutdown().await.unwrap();
}
