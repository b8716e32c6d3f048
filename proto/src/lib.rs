//! Flotilla's wire contract: the `flotilla.v1` gRPC services and messages.
//!
//! The contract lives in `proto/flotilla/v1/*.proto`; the build compiles it with
//! `protox` (no `protoc` needed) and generates code with `tonic-prost-build`.
//!
//! - [`v1`]: every message, plus a client (`v1::<service>_client`) and a server
//!   (`v1::<service>_server`) module per service: `Releases`, `Fleet`, `Cluster`,
//!   `AgentLink`, `RaftPeer`.
//! - [`FILE_DESCRIPTOR_SET`]: the encoded descriptors, for gRPC reflection.
//! - [`PROTOCOL_VERSION`] / [`MIN_PROTOCOL_VERSION`] (agents and clients) and
//!   [`PEER_PROTOCOL_VERSION`] / [`MIN_PEER_PROTOCOL_VERSION`] (coordinators): what
//!   this build speaks and accepts.
//! - [`status`]: the API's error model (gRPC's richer error model: `ErrorInfo`
//!   reasons, `BadRequest`, `ResourceInfo`, `RetryInfo`, and the contract's own
//!   `NotLeader` and `SpecErrors` details), for servers and clients.
//!
//! Conventions (also written at the top of `common.proto`): instants are
//! `*_unix_ms` (i64 milliseconds since the Unix epoch), configured durations
//! `*_ms` (u64 milliseconds), measured latencies `*_us` (u64 microseconds);
//! coordinator node ids are non-zero u64 (0 = none); host, release and command
//! ids are strings.

pub mod status;

/// The generated `flotilla.v1` package.
#[allow(
    missing_docs,
    missing_debug_implementations,
    unused_qualifications,
    unreachable_pub,
    clippy::all,
    clippy::pedantic,
    clippy::nursery,
    rustdoc::all
)]
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/flotilla.v1.rs"));
}

/// The encoded `google.protobuf.FileDescriptorSet` of every `flotilla.v1` file
/// (with source comments). Register it with the reflection service:
///
/// ```text
/// let reflection = tonic_reflection::server::Builder::configure()
///     .register_encoded_file_descriptor_set(flotilla_proto::FILE_DESCRIPTOR_SET)
///     .build_v1()?;
/// ```
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/flotilla_v1_descriptor.bin"));

/// The protobuf package name.
pub const PACKAGE: &str = "flotilla.v1";

/// The revision of the agent and client protocol this build speaks (`AgentLink`,
/// `Releases`, `Fleet`, `Cluster`), sent in `VersionInfo.protocol_version`. Bumped on
/// any change in meaning of those messages; additive field changes keep it.
///
/// The side with the newer build decides: a coordinator refuses an agent older than
/// [`MIN_PROTOCOL_VERSION`], and an agent accepts any coordinator at least as new as
/// its own minimum (a newer coordinator still speaks the older revisions it accepts).
/// So coordinators are upgraded first, then agents.
///
/// - 1: the first revision.
/// - 2: error details in gRPC's richer error model (a `google.rpc.Status` with
///   `ErrorInfo` and further `Any`-packed details; see [`status`]) instead of a bare
///   `NotLeader` or `SpecErrors`; `EventKind::HostBaked`. A revision-1 agent still
///   works with a revision-2 coordinator: hints reach it as the `LeaderHint` message
///   of its session, which did not change; the rarer hint carried by a status it
///   cannot read (its dial of the misread address fails), so it goes on with the
///   coordinators of its list in turn, as when no leader is known.
pub const PROTOCOL_VERSION: u32 = 2;

/// The oldest agent/client protocol revision this build accepts.
pub const MIN_PROTOCOL_VERSION: u32 = 1;

/// The revision of the coordinator-to-coordinator protocol (`RaftPeer`: the envelope
/// and the encoding of the openraft payloads inside it), sent in
/// `RaftEnvelope.protocol_version`.
///
/// - 1: openraft payloads as JSON.
/// - 2: openraft payloads as postcard; `RaftPeer.TimeoutNow` (leadership hand-over);
///   `RaftEnvelope.software_version`.
pub const PEER_PROTOCOL_VERSION: u32 = 2;

/// The oldest peer protocol revision this build accepts from another coordinator.
/// A revision-1 node cannot read revision-2 payloads (nor the reverse), so a cluster
/// of revision-1 coordinators is upgraded by stopping all of them, not one by one.
pub const MIN_PEER_PROTOCOL_VERSION: u32 = 2;

/// Whether an agent or client speaking `version` can talk to this coordinator build.
pub fn protocol_supported(version: u32) -> bool {
    (MIN_PROTOCOL_VERSION..=PROTOCOL_VERSION).contains(&version)
}

/// Whether an agent of this build can follow a coordinator speaking `version`: any
/// revision from this build's minimum on (a newer coordinator speaks the revisions it
/// accepts, and refuses agents it cannot serve itself).
pub fn coordinator_supported(version: u32) -> bool {
    version >= MIN_PROTOCOL_VERSION
}

/// Whether another coordinator speaking peer revision `version` can exchange Raft
/// messages with this build.
pub fn peer_protocol_supported(version: u32) -> bool {
    (MIN_PEER_PROTOCOL_VERSION..=PEER_PROTOCOL_VERSION).contains(&version)
}

/// This build's [`v1::VersionInfo`] with the given software version and features.
pub fn version_info(
    software_version: impl Into<String>,
    features: impl IntoIterator<Item = String>,
) -> v1::VersionInfo {
    v1::VersionInfo {
        protocol_version: PROTOCOL_VERSION,
        software_version: software_version.into(),
        features: features.into_iter().collect(),
    }
}
