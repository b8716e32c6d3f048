"""A small client of Flotilla's coordinator API (``flotilla.v1``) built on grpcio alone.

It talks to a list of coordinators with stubs generated from the repository's proto
files (``generate_stubs.py``) and handles every error the way gRPC's richer error
model says (``proto/proto/flotilla/v1/common.proto`` describes Flotilla's use of it):

* each error status carries ``grpc-status-details-bin``, a ``google.rpc.Status``
  that :func:`decode_error` reads with ``grpc_status.rpc_status.from_call`` into a
  :class:`FlotillaError`: the ``google.rpc.ErrorInfo`` reason (what to branch on),
  ``BadRequest`` field violations, ``ResourceInfo``, ``RetryInfo``, and Flotilla's
  own ``NotLeader`` and ``SpecErrors`` details;
* UNAVAILABLE is retried: at once on the leader a ``NotLeader`` detail names, else on
  the next coordinator after the delay ``RetryInfo`` asks for (a stopping node, an
  election), with a growing pause once every coordinator failed in a row;
* ``Watch`` resumes after a disconnect or a leader change from the last index it
  received, on another coordinator, and never yields an event twice.

Writes are safe to retry: ``create`` takes an idempotency key, and the other actions
are refused with FAILED_PRECONDITION when they were already applied (see
``flotilla_example.py --approve-all``).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

# The generated stubs: FLOTILLA_STUBS, or gen/ next to this file (generate_stubs.py).
STUBS_DIR = os.environ.get("FLOTILLA_STUBS") or str(Path(__file__).resolve().parent / "gen")
if STUBS_DIR not in sys.path:
    sys.path.insert(0, STUBS_DIR)
try:
    from flotilla.v1 import common_pb2, releases_pb2, releases_pb2_grpc  # noqa: E402
except ImportError as missing:  # pragma: no cover - a setup mistake, explained
    raise ImportError(
        f"the generated flotilla.v1 stubs are not in {STUBS_DIR} ({missing}); "
        "run `python3 generate_stubs.py` in examples/python first"
    ) from missing

# The `domain` of every ErrorInfo a coordinator sends.
ERROR_DOMAIN = "flotilla.v1"

# Metadata a coordinator sets on a call it forwards to the leader. A follower answers
# a call that carries it with UNAVAILABLE NOT_LEADER instead of forwarding it again;
# clients never need it, tests use it to provoke NOT_LEADER.
FORWARDED_BY = "x-flotilla-forwarded-by"

# Release states after which nothing more happens.
TERMINAL_STATES = frozenset(
    {
        releases_pb2.RELEASE_STATE_SUCCEEDED,
        releases_pb2.RELEASE_STATE_ROLLED_BACK,
        releases_pb2.RELEASE_STATE_FAILED,
        releases_pb2.RELEASE_STATE_ABORTED,
    }
)

# Channel settings: keep-alive pings find a coordinator that vanished without closing
# its connections (a host that lost power) while a Watch waits quietly, and a
# coordinator that comes back is reconnected to within seconds (gRPC's default
# reconnect backoff grows to two minutes).
_CHANNEL_OPTIONS = [
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.initial_reconnect_backoff_ms", 250),
    ("grpc.min_reconnect_backoff_ms", 250),
    ("grpc.max_reconnect_backoff_ms", 2_000),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
]

# A stream that ran this long before it failed counts as having worked: the failures
# before it no longer count towards giving up.
_STREAM_WORKED_AFTER = 5.0


def enum_suffix(enum_type, value: int, prefix: str) -> str:
    """The name of an enum value without its prefix (``BATCH_STARTED``); unknown
    values (a newer server) as ``<prefix>VALUE``."""
    try:
        return enum_type.Name(value).removeprefix(prefix)
    except ValueError:
        return f"{prefix}{value}"


def kind_name(kind: int) -> str:
    """An event kind's short name: ``BATCH_STARTED`` for ``EVENT_KIND_BATCH_STARTED``."""
    return enum_suffix(releases_pb2.EventKind, kind, "EVENT_KIND_")


def state_name(state: int) -> str:
    """A release state's short name: ``SUCCEEDED``."""
    return enum_suffix(releases_pb2.ReleaseState, state, "RELEASE_STATE_")


def normalize_address(addr: str) -> str:
    """``host:port`` from an advertised address (which may be a URL)."""
    for scheme in ("https://", "http://"):
        if addr.startswith(scheme):
            addr = addr[len(scheme) :]
    return addr.rstrip("/")


class FlotillaError(Exception):
    """A failed call, decoded from its status and its ``google.rpc.Status`` details.

    Branch on ``code`` and ``reason``; ``message`` is for people.
    """

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code
        self.message = message
        # google.rpc.ErrorInfo: what went wrong, as a stable name, and about what.
        self.reason = ""
        self.domain = ""
        self.metadata: dict[str, str] = {}
        # google.rpc.BadRequest: (field, description) per bad field.
        self.field_violations: list[tuple[str, str]] = []
        # flotilla.v1.SpecErrors: every problem of a refused spec, with its place.
        self.spec_errors: list[common_pb2.Diagnostic] = []
        # google.rpc.ResourceInfo: the resource concerned.
        self.resource: Optional[error_details_pb2.ResourceInfo] = None
        # google.rpc.RetryInfo: seconds to wait before retrying.
        self.retry_delay: Optional[float] = None
        # flotilla.v1.NotLeader: the leader to retry on at once.
        self.not_leader: Optional[common_pb2.NotLeader] = None
        # Type URLs of details this client does not know (a newer server's).
        self.other_details: list[str] = []
        # Whether the status carried google.rpc.Status details at all (a transport
        # failure, e.g. a coordinator that died mid-call, has none).
        self.has_details = False

    @property
    def leader_addr(self) -> str:
        """The leader's address when the status names one, else ``""``."""
        if self.not_leader is not None and self.not_leader.leader_addr:
            return normalize_address(self.not_leader.leader_addr)
        return ""

    def __str__(self) -> str:
        first = self.message.splitlines()[0] if self.message else ""
        return f"{self.reason or self.code.name}: {first}"

    def describe(self) -> str:
        """Every part of the error, for a terminal."""
        lines = self.message.splitlines() or [""]
        if self.spec_errors:
            # The message repeats the rendered diagnostics printed below.
            lines = lines[:1]
        first = lines[0].removeprefix("error: ")
        label = f"{self.reason} ({self.code.name})" if self.reason else self.code.name
        out = [f"error: {label}: {first}"]
        out += [f"  {line}" for line in lines[1:]]
        for field, description in self.field_violations:
            out.append(f"  invalid {field}: {description}")
        if self.resource is not None:
            out.append(f"  resource: {self.resource.resource_type} {self.resource.resource_name}")
        for key in sorted(self.metadata):
            out.append(f"  {key}: {self.metadata[key]}")
        if self.retry_delay is not None:
            out.append(f"  retry after: {self.retry_delay:g}s")
        for diagnostic in self.spec_errors:
            out.append("")
            out.append(diagnostic.rendered or diagnostic.message)
        return "\n".join(out)


def decode_error(error: grpc.RpcError) -> FlotillaError:
    """Reads a failed call's status and its ``google.rpc.Status`` details."""
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    message = error.details() if hasattr(error, "details") else str(error)
    decoded = FlotillaError(code, message or "")
    try:
        status = rpc_status.from_call(error)
    except ValueError as mismatch:
        # The details' code or message differ from the call's: a broken server.
        decoded.other_details.append(f"unreadable google.rpc.Status: {mismatch}")
        return decoded
    if status is None:
        return decoded
    decoded.has_details = True
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            decoded.reason, decoded.domain = info.reason, info.domain
            decoded.metadata = dict(info.metadata)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            decoded.field_violations += [(v.field, v.description) for v in bad.field_violations]
        elif detail.Is(error_details_pb2.ResourceInfo.DESCRIPTOR):
            decoded.resource = error_details_pb2.ResourceInfo()
            detail.Unpack(decoded.resource)
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            detail.Unpack(retry)
            decoded.retry_delay = retry.retry_delay.ToTimedelta().total_seconds()
        elif detail.Is(common_pb2.NotLeader.DESCRIPTOR):
            decoded.not_leader = common_pb2.NotLeader()
            detail.Unpack(decoded.not_leader)
        elif detail.Is(common_pb2.SpecErrors.DESCRIPTOR):
            spec = common_pb2.SpecErrors()
            detail.Unpack(spec)
            decoded.spec_errors = list(spec.errors)
        else:
            decoded.other_details.append(detail.type_url)
    return decoded


def channel_credentials(
    ca: Optional[str] = None,
    cert: Optional[str] = None,
    key: Optional[str] = None,
    insecure: bool = False,
) -> Optional[grpc.ChannelCredentials]:
    """Mutual TLS from three PEM files (the coordinators' CA, this client's
    certificate and key), or ``None`` for plaintext when ``insecure`` is set. Like
    Flotilla's own binaries, refuses anything in between."""
    files = [f for f in (ca, cert, key) if f]
    if insecure:
        if files:
            raise ValueError("give either --insecure or the three TLS files, not both")
        return None
    if len(files) != 3:
        raise ValueError("mutual TLS needs --tls-ca, --tls-cert and --tls-key (or --insecure for plaintext)")

    def read(path: str) -> bytes:
        with open(path, "rb") as f:
            return f.read()

    return grpc.ssl_channel_credentials(
        root_certificates=read(ca), private_key=read(key), certificate_chain=read(cert)
    )


class _Failover:
    """Where and when to retry after an UNAVAILABLE answer, for one call."""

    def __init__(self, client: "FlotillaClient"):
        self.client = client
        self.failures = 0
        self.first_failure: Optional[float] = None

    def worked(self) -> None:
        """The call made progress: earlier failures no longer count."""
        self.failures = 0
        self.first_failure = None

    def next(self, error: FlotillaError, addr: str, retry_ambiguous: bool) -> tuple[str, float]:
        """The address to try next and how long to wait first; raises ``error`` when
        it is not worth retrying (another code, or retrying for too long)."""
        retryable = error.code == grpc.StatusCode.UNAVAILABLE or (
            retry_ambiguous and error.code == grpc.StatusCode.DEADLINE_EXCEEDED
        )
        now = time.monotonic()
        if self.first_failure is None:
            self.first_failure = now
        if not retryable or now - self.first_failure > self.client.retry_for:
            raise error
        self.failures += 1
        hint = error.leader_addr
        if hint and hint != addr:
            # Another coordinator leads: retry there at once (RetryInfo says 0).
            self.client.learn(hint)
            return hint, error.retry_delay or 0.0
        following = self.client.next_address(addr)
        if error.retry_delay is not None:
            # No leader known (an election, a stopping node): wait as asked.
            return following, error.retry_delay
        # No details: the coordinator could not be reached. Try the others at once,
        # then pause a little longer after each round that failed everywhere.
        rounds, rest = divmod(self.failures, len(self.client.addresses))
        return following, 0.0 if rest else min(0.1 * 2 ** (rounds - 1), 2.0)

    def worth_noting(self) -> bool:
        """Whether to report the latest failure: each one of the first round over the
        coordinators, then the last of rounds 1, 2, 4, 8..."""
        rounds, rest = divmod(self.failures, len(self.client.addresses))
        return rounds == 0 or (rest == 0 and rounds & (rounds - 1) == 0)


class FlotillaClient:
    """A client of the ``Releases`` service over a list of coordinators.

    ``addresses`` are ``host:port``; ``credentials`` from :func:`channel_credentials`
    (``None``: plaintext). Calls go to the coordinator that answered last; a call
    answered UNAVAILABLE goes where :class:`_Failover` says, for up to ``retry_for``
    seconds. ``log`` receives a line for every failover (e.g. ``print`` to stderr).
    ``metadata`` is sent with every call.
    """

    def __init__(
        self,
        addresses: Sequence[str],
        credentials: Optional[grpc.ChannelCredentials] = None,
        *,
        call_timeout: float = 10.0,
        retry_for: float = 30.0,
        server_name: Optional[str] = None,
        metadata: Sequence[tuple[str, str]] = (),
        log: Optional[Callable[[str], None]] = None,
    ):
        self.addresses = [normalize_address(a) for a in addresses if a.strip()]
        if not self.addresses:
            raise ValueError("no coordinator addresses")
        self.credentials = credentials
        self.call_timeout = call_timeout
        self.retry_for = retry_for
        self.metadata = list(metadata)
        self.current = self.addresses[0]
        self._log = log
        self._options = list(_CHANNEL_OPTIONS)
        if server_name:
            self._options.append(("grpc.ssl_target_name_override", server_name))
        self._channels: dict[str, grpc.Channel] = {}

    # -------------------------------------------------------------- plumbing

    def __enter__(self) -> "FlotillaClient":
        return self

    def __exit__(self, *_exc) -> None:
        self.close()

    def close(self) -> None:
        """Closes every channel."""
        for channel in self._channels.values():
            channel.close()
        self._channels.clear()

    def note(self, line: str) -> None:
        """Reports what the client does about a failure."""
        if self._log is not None:
            self._log(line)

    def learn(self, addr: str) -> None:
        """Adds a coordinator address heard of (a leader hint) to the list."""
        if addr not in self.addresses:
            self.addresses.append(addr)

    def next_address(self, addr: str) -> str:
        """The address after ``addr`` in the list, round-robin."""
        at = self.addresses.index(addr) if addr in self.addresses else -1
        return self.addresses[(at + 1) % len(self.addresses)]

    def channel(self, addr: str) -> grpc.Channel:
        """The (lazily connecting) channel to one coordinator."""
        channel = self._channels.get(addr)
        if channel is None:
            if self.credentials is None:
                channel = grpc.insecure_channel(addr, options=self._options)
            else:
                channel = grpc.secure_channel(addr, self.credentials, options=self._options)
            self._channels[addr] = channel
        return channel

    def releases(self, addr: str) -> releases_pb2_grpc.ReleasesStub:
        """The generated ``Releases`` stub on one coordinator."""
        return releases_pb2_grpc.ReleasesStub(self.channel(addr))

    def _unary(self, method: str, request, *, idempotent: bool):
        """Calls ``Releases/<method>``, following the leader and failing over.

        ``idempotent``: the call may also be retried after DEADLINE_EXCEEDED, when
        it is unknown whether the first attempt took effect.
        """
        failover = _Failover(self)
        addr = self.current
        while True:
            try:
                call = getattr(self.releases(addr), method)
                response = call(request, timeout=self.call_timeout, metadata=self.metadata)
            except grpc.RpcError as rpc_error:
                error = decode_error(rpc_error)
                try:
                    nxt, delay = failover.next(error, addr, retry_ambiguous=idempotent)
                except FlotillaError:
                    if error.has_details:
                        self.current = addr  # it answered: the next call goes there too
                    raise
                if failover.worth_noting():
                    self.note(f"{method} on {addr}: {error}; retrying on {nxt}" + (f" in {delay:g}s" if delay else ""))
                time.sleep(delay)
                addr = nxt
                continue
            self.current = addr
            return response

    # -------------------------------------------------------------- the API

    def plan(self, spec_toml: str, file_name: str, offline: bool = False) -> releases_pb2.Plan:
        """Validates and plans a spec (against the live fleet unless ``offline``).
        INVALID_ARGUMENT (INVALID_SPEC) when it is refused."""
        request = releases_pb2.PlanRequest(spec_toml=spec_toml, file_name=file_name, offline=offline)
        return self._unary("Plan", request, idempotent=True).plan

    def create(self, spec_toml: str, file_name: str, idempotency_key: str) -> tuple[releases_pb2.Release, bool]:
        """Submits a release; returns it and whether this call created it (False:
        the key already stood for this spec). The key makes retries safe: a retried
        Create returns the release the first attempt made."""
        request = releases_pb2.CreateRequest(
            spec_toml=spec_toml, file_name=file_name, idempotency_key=idempotency_key
        )
        response = self._unary("Create", request, idempotent=bool(idempotency_key))
        return response.release, response.created

    def get(self, release_id: str) -> releases_pb2.Release:
        """One release with its full status."""
        return self._unary("Get", releases_pb2.GetRequest(release_id=release_id), idempotent=True).release

    def approve(
        self, release_id: str, gate: Optional[str] = None, stage: Optional[str] = None, comment: str = ""
    ) -> releases_pb2.Release:
        """Approves a gate, a stage, or (neither) the single pending approval."""
        request = releases_pb2.ApproveRequest(release_id=release_id, comment=comment)
        if gate:
            request.gate = gate
        elif stage:
            request.stage = stage
        return self._unary("Approve", request, idempotent=False).release

    def rollback(
        self, release_id: str, service: Optional[str] = None, reason: str = ""
    ) -> tuple[releases_pb2.Release, list[str]]:
        """Rolls back the whole release, or one service and its closure; returns the
        release and the rollback set in order."""
        request = releases_pb2.RollbackRequest(release_id=release_id, reason=reason)
        if service:
            request.service = service
        response = self._unary("Rollback", request, idempotent=False)
        return response.release, list(response.services)

    def watch(self, release_id: str, after_index: int = 0) -> Iterator[releases_pb2.ReleaseEvent]:
        """The release's events after ``after_index``, each once and in order, until
        the release reaches a terminal state.

        When the stream breaks (the coordinator died, stopped, or lost the
        leadership), calls ``Watch`` again with ``after_index`` = the last index
        received: on the leader a ``NotLeader`` detail names, else on the next
        coordinator. Events are committed, so any coordinator has them.
        """
        last = after_index
        failover = _Failover(self)
        addr = self.current
        while True:
            request = releases_pb2.WatchRequest(release_id=release_id, after_index=last)
            call = self.releases(addr).Watch(request, metadata=self.metadata)
            opened = time.monotonic()
            terminal = False
            try:
                for event in call:
                    if event.index <= last:
                        continue  # already yielded: never twice
                    last = event.index
                    self.current = addr
                    failover.worked()
                    terminal = event.release_state in TERMINAL_STATES
                    yield event
                if terminal:
                    return
                # Ended without a terminal event: when resuming after the release
                # ended, the history has nothing left; otherwise resume.
                if self.get(release_id).state in TERMINAL_STATES:
                    return
                self.note(f"watch of {release_id} on {addr} ended early; resuming after event {last}")
                time.sleep(0.2)
            except grpc.RpcError as rpc_error:
                error = decode_error(rpc_error)
                if time.monotonic() - opened > _STREAM_WORKED_AFTER:
                    failover.worked()
                nxt, delay = failover.next(error, addr, retry_ambiguous=True)
                if failover.worth_noting():
                        self.note(
                        f"watch of {release_id} on {addr} ended: {error}; resuming after event {last} on {nxt}"
                        + (f" in {delay:g}s" if delay else "")
                    )
                time.sleep(delay)
                addr = nxt
            finally:
                call.cancel()
