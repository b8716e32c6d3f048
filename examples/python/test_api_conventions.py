"""The coordinator API as stock gRPC tooling meets it, against a running cluster.

* Server reflection, both revisions: grpcio-reflection's v1alpha descriptor database
  lists and resolves the services and messages, and a raw
  ``grpc.reflection.v1.ServerReflection`` stub lists the services and serves file
  descriptors (what ``grpcurl list`` and ``grpcurl describe`` use).
* A call by method name with messages built only from the descriptors reflection
  served, the request parsed from JSON (what ``grpcurl -d '{...}' ... Releases/Get``
  does), its error details unpacked with reflected classes too.
* Every kind of error detail, read with ``grpc_status.rpc_status.from_call``:
  INVALID_SPEC (``BadRequest`` + ``flotilla.v1.SpecErrors``), INVALID_FIELD,
  RELEASE_NOT_FOUND (``ResourceInfo``), IDEMPOTENCY_KEY_REUSED, NOT_LEADER
  (``RetryInfo`` + ``flotilla.v1.NotLeader``), and ``flotilla_client`` following the
  leader from a NOT_LEADER answer.

Run (with the stubs generated, see README.md)::

    FLOTILLA_COORDINATORS=127.0.0.1:7601,127.0.0.1:7602,127.0.0.1:7603 FLOTILLA_INSECURE=1 \\
        python3 -m pytest -q examples/python/test_api_conventions.py

``FLOTILLA_TLS_CA``/``_CERT``/``_KEY`` instead of ``FLOTILLA_INSECURE`` for mutual TLS.
The idempotency test creates a real release: it runs only when
``FLOTILLA_TEST_SPEC`` names a spec that the cluster can deploy (it waits for the
release to succeed).
"""

import os
import time
import uuid
from pathlib import Path

import grpc
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory
from google.rpc import error_details_pb2
from grpc_reflection.v1alpha import reflection_pb2 as reflection_v1alpha
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from grpc_status import rpc_status

import flotilla_client
from flotilla.v1 import cluster_pb2, cluster_pb2_grpc, common_pb2, releases_pb2, releases_pb2_grpc

ADDRESSES = [a.strip() for a in os.environ.get("FLOTILLA_COORDINATORS", "").split(",") if a.strip()]
if not ADDRESSES:
    pytest.skip("set FLOTILLA_COORDINATORS to the coordinators' HOST:PORT list", allow_module_level=True)

# How long one call may take.
TIMEOUT = 10.0

# The services every coordinator serves.
FLOTILLA_SERVICES = {"flotilla.v1.Releases", "flotilla.v1.Fleet", "flotilla.v1.Cluster", "flotilla.v1.AgentLink"}


def credentials():
    """Plaintext with FLOTILLA_INSECURE=1, else mutual TLS from FLOTILLA_TLS_*."""
    env = os.environ.get
    insecure = env("FLOTILLA_INSECURE", "").lower() in ("1", "true", "yes")
    files = (env("FLOTILLA_TLS_CA"), env("FLOTILLA_TLS_CERT"), env("FLOTILLA_TLS_KEY"))
    return flotilla_client.channel_credentials(*files, insecure=insecure)


_CHANNELS = {}


def channel(addr):
    """One channel per coordinator for the whole module."""
    if addr not in _CHANNELS:
        creds = credentials()
        _CHANNELS[addr] = grpc.insecure_channel(addr) if creds is None else grpc.secure_channel(addr, creds)
    return _CHANNELS[addr]


def releases(addr):
    """The generated Releases stub on one coordinator."""
    return releases_pb2_grpc.ReleasesStub(channel(addr))


@pytest.fixture(scope="module")
def cluster():
    """The leader's address and id, and the followers' addresses, once every
    coordinator agrees on a leader among them."""
    deadline = time.monotonic() + 30
    seen = {}
    while True:
        seen = {}
        for addr in ADDRESSES:
            try:
                status = cluster_pb2_grpc.ClusterStub(channel(addr)).Status(
                    cluster_pb2.StatusRequest(local=True), timeout=TIMEOUT
                ).status
                seen[addr] = (status.leader_id, flotilla_client.normalize_address(status.leader_addr))
            except grpc.RpcError as error:
                seen[addr] = (0, f"unreachable: {error.code().name}")
        leaders = set(seen.values())
        if len(leaders) == 1:
            leader_id, leader_addr = leaders.pop()
            if leader_id and leader_addr in ADDRESSES:
                followers = [a for a in ADDRESSES if a != leader_addr]
                return {"leader": leader_addr, "leader_id": leader_id, "followers": followers}
        assert time.monotonic() < deadline, f"the coordinators agree on no leader among them: {seen}"
        time.sleep(0.2)


# ------------------------------------------------------------------ error details


def call_fails(call, *args, **kwargs):
    """The grpc.RpcError a unary call raises (failing the test if it succeeds)."""
    with pytest.raises(grpc.RpcError) as failure:
        call(*args, timeout=TIMEOUT, **kwargs)
    return failure.value


def status_details(error):
    """The google.rpc.Status in grpc-status-details-bin, checked to repeat the call's
    code and message (``from_call`` raises ValueError otherwise)."""
    status = rpc_status.from_call(error)
    assert status is not None, f"no grpc-status-details-bin in {error.code()}: {error.details()}"
    assert (status.code, status.message) == (error.code().value[0], error.details())
    return status


def unpack_all(status, cls):
    """Every detail of type ``cls``, unpacked."""
    found = []
    for detail in status.details:
        if detail.Is(cls.DESCRIPTOR):
            message = cls()
            assert detail.Unpack(message)
            found.append(message)
    return found


def unpack_one(status, cls):
    """The one detail of type ``cls``."""
    found = unpack_all(status, cls)
    assert len(found) == 1, f"{len(found)} {cls.DESCRIPTOR.full_name} in {[d.type_url for d in status.details]}"
    return found[0]


def error_info(error, code, reason):
    """Checks the code, and the ErrorInfo every error carries; returns the status and
    the ErrorInfo."""
    assert error.code() == code, f"{error.code()}: {error.details()}"
    status = status_details(error)
    info = unpack_one(status, error_details_pb2.ErrorInfo)
    assert (info.domain, info.reason) == ("flotilla.v1", reason), f"{info}"
    return status, info


def test_a_refused_spec_names_every_error_in_bad_request_and_spec_errors(cluster):
    bad = 'release = "x"\n[[service]]\nname = "svc"\nverison = "1"\nbake = "30 parsecs"\n'
    request = releases_pb2.PlanRequest(spec_toml=bad, file_name="bad.toml", offline=True)
    error = call_fails(releases(cluster["followers"][0]).Plan, request)
    status, _ = error_info(error, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_SPEC")
    violations = unpack_one(status, error_details_pb2.BadRequest).field_violations
    assert violations and all(v.field == "spec_toml" for v in violations), violations
    assert any(v.description.startswith("bad.toml:4:") for v in violations), violations
    # Flotilla's own detail, unpacked with the class generated from common.proto.
    diagnostics = unpack_one(status, common_pb2.SpecErrors).errors
    assert len(diagnostics) == len(violations)
    assert any("verison" in d.message and d.location.line == 4 for d in diagnostics), diagnostics
    assert all(d.severity == common_pb2.SEVERITY_ERROR and d.rendered for d in diagnostics)


def test_a_missing_release_id_is_invalid_naming_the_field(cluster):
    for addr in ADDRESSES:
        error = call_fails(releases(addr).Get, releases_pb2.GetRequest())
        status, info = error_info(error, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELD")
        assert info.metadata["field"] == "release_id"
        violations = unpack_one(status, error_details_pb2.BadRequest).field_violations
        assert [v.field for v in violations] == ["release_id"]
    # A server-streaming call fails when its first message is read.
    stream = releases(cluster["leader"]).Watch(releases_pb2.WatchRequest(), timeout=TIMEOUT)
    with pytest.raises(grpc.RpcError) as failure:
        next(stream)
    error_info(failure.value, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELD")


def test_an_unknown_release_is_not_found_at_once_naming_the_resource(cluster):
    for addr in ADDRESSES:
        error = call_fails(releases(addr).Get, releases_pb2.GetRequest(release_id="r-does-not-exist"))
        status, _ = error_info(error, grpc.StatusCode.NOT_FOUND, "RELEASE_NOT_FOUND")
        resource = unpack_one(status, error_details_pb2.ResourceInfo)
        assert (resource.resource_type, resource.resource_name) == ("flotilla.v1.Release", "r-does-not-exist")
        started = time.monotonic()
        stream = releases(addr).Watch(releases_pb2.WatchRequest(release_id="r-does-not-exist"), timeout=TIMEOUT)
        with pytest.raises(grpc.RpcError) as failure:
            next(stream)
        assert time.monotonic() - started < 2.0, f"{addr} took {time.monotonic() - started:.1f}s"
        error_info(failure.value, grpc.StatusCode.NOT_FOUND, "RELEASE_NOT_FOUND")


def test_a_follower_asked_not_to_forward_answers_not_leader_with_the_leaders_address(cluster):
    assert cluster["followers"], "a cluster of one has no follower"
    for follower in cluster["followers"]:
        error = call_fails(
            releases(follower).Get,
            releases_pb2.GetRequest(release_id="r-does-not-exist"),
            metadata=[(flotilla_client.FORWARDED_BY, "pytest")],
        )
        status, info = error_info(error, grpc.StatusCode.UNAVAILABLE, "NOT_LEADER")
        assert flotilla_client.normalize_address(info.metadata["leader_addr"]) == cluster["leader"]
        retry = unpack_one(status, error_details_pb2.RetryInfo)
        assert retry.retry_delay.ToNanoseconds() == 0, "retry on the leader at once"
        hint = unpack_one(status, common_pb2.NotLeader)
        assert (hint.leader_id, flotilla_client.normalize_address(hint.leader_addr)) == (
            cluster["leader_id"],
            cluster["leader"],
        )

    # The example client follows the hint to the leader, which answers the call.
    notes = []
    with flotilla_client.FlotillaClient(
        [cluster["followers"][0]],
        credentials(),
        metadata=[(flotilla_client.FORWARDED_BY, "pytest")],
        log=notes.append,
    ) as client:
        with pytest.raises(flotilla_client.FlotillaError) as failure:
            client.get("r-does-not-exist")
        assert (failure.value.code, failure.value.reason) == (grpc.StatusCode.NOT_FOUND, "RELEASE_NOT_FOUND")
        assert client.current == cluster["leader"], notes
        assert any("NOT_LEADER" in n for n in notes), notes


def test_an_idempotency_key_reused_for_another_spec_is_refused_naming_the_release(cluster):
    spec_file = os.environ.get("FLOTILLA_TEST_SPEC")
    if not spec_file:
        pytest.skip("set FLOTILLA_TEST_SPEC to a spec the cluster can deploy")
    spec = Path(spec_file).read_text(encoding="utf-8")
    key = f"pytest-{uuid.uuid4()}"
    stub = releases(cluster["followers"][0] if cluster["followers"] else cluster["leader"])

    def create(text):
        request = releases_pb2.CreateRequest(spec_toml=text, file_name="spec.toml", idempotency_key=key)
        return stub.Create(request, timeout=TIMEOUT)

    first = create(spec)
    assert first.created and first.release.id
    again = create(spec)
    assert (again.release.id, again.created) == (first.release.id, False)

    error = call_fails(
        stub.Create,
        releases_pb2.CreateRequest(spec_toml=spec + "\n# changed\n", file_name="spec.toml", idempotency_key=key),
    )
    status, info = error_info(error, grpc.StatusCode.ALREADY_EXISTS, "IDEMPOTENCY_KEY_REUSED")
    assert info.metadata["release_id"] == first.release.id
    assert info.metadata["idempotency_key"] == key
    assert unpack_one(status, error_details_pb2.ResourceInfo).resource_name == first.release.id

    # The release runs to its end; the example client's watch yields each event once.
    with flotilla_client.FlotillaClient(ADDRESSES, credentials()) as client:
        events = list(client.watch(first.release.id))
    assert [e.index for e in events] == list(range(1, len(events) + 1))
    assert flotilla_client.kind_name(events[-1].kind) == "RELEASE_SUCCEEDED", [
        f"{e.index} {flotilla_client.kind_name(e.kind)} {e.message}" for e in events
    ]


# ------------------------------------------------------------------ reflection


def test_reflection_v1alpha_lists_and_resolves_the_api(cluster):
    addr = cluster["followers"][0] if cluster["followers"] else cluster["leader"]
    database = ProtoReflectionDescriptorDatabase(channel(addr))
    services = set(database.get_services())
    assert FLOTILLA_SERVICES <= services, services
    assert "grpc.health.v1.Health" in services, services

    pool = descriptor_pool.DescriptorPool(database)
    service = pool.FindServiceByName("flotilla.v1.Releases")
    methods = {m.name for m in service.methods}
    assert {"Plan", "Create", "Get", "List", "Watch", "Approve", "Pause", "Resume", "Abort", "Rollback"} <= methods
    as_proto = descriptor_pb2.ServiceDescriptorProto()
    service.CopyToProto(as_proto)
    watch = next(m for m in as_proto.method if m.name == "Watch")
    assert watch.server_streaming and watch.input_type == ".flotilla.v1.WatchRequest"

    release = pool.FindMessageTypeByName("flotilla.v1.Release")
    assert {"id", "state", "stages", "last_event_index"} <= set(release.fields_by_name)
    assert release.fields_by_name["state"].enum_type.full_name == "flotilla.v1.ReleaseState"
    kinds = pool.FindEnumTypeByName("flotilla.v1.EventKind")
    assert kinds.values_by_name["EVENT_KIND_HOST_BAKED"].number == 34
    # The error details' types resolve too, so a reflection client can print them.
    for name in ("google.rpc.ErrorInfo", "google.rpc.BadRequest", "google.rpc.RetryInfo", "flotilla.v1.NotLeader"):
        assert pool.FindMessageTypeByName(name).full_name == name


def reflection_v1_classes():
    """``grpc.reflection.v1`` request and response classes. grpcio-reflection ships
    stubs for v1alpha only; v1 has the same messages under another package, so its
    descriptor is v1alpha's with the package renamed."""
    file = descriptor_pb2.FileDescriptorProto()
    reflection_v1alpha.DESCRIPTOR.CopyToProto(file)
    old, new = ".grpc.reflection.v1alpha.", ".grpc.reflection.v1."
    file.name, file.package = "grpc/reflection/v1/reflection.proto", "grpc.reflection.v1"
    file.ClearField("options")
    for message in file.message_type:
        for field in message.field:
            if field.HasField("type_name"):
                field.type_name = field.type_name.replace(old, new)
    for service in file.service:
        for method in service.method:
            method.input_type = method.input_type.replace(old, new)
            method.output_type = method.output_type.replace(old, new)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    def get(name):
        return message_factory.GetMessageClass(pool.FindMessageTypeByName(f"grpc.reflection.v1.{name}"))

    return get("ServerReflectionRequest"), get("ServerReflectionResponse")


def reflect_v1(addr, requests):
    """Sends ``requests`` (dicts of ServerReflectionRequest fields) on one
    ``grpc.reflection.v1.ServerReflection/ServerReflectionInfo`` stream; the answers."""
    request_cls, response_cls = reflection_v1_classes()
    info = channel(addr).stream_stream(
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        request_serializer=request_cls.SerializeToString,
        response_deserializer=response_cls.FromString,
    )
    answers = list(info(iter([request_cls(**r) for r in requests]), timeout=TIMEOUT))
    assert len(answers) == len(requests)
    for answer in answers:
        assert not answer.HasField("error_response"), answer.error_response
    return answers


def pool_from_v1(addr, symbol):
    """A descriptor pool holding the file that defines ``symbol`` and its imports,
    fetched with reflection v1 only (what grpcurl 1.9+ does)."""
    files = {}
    wanted = [("file_containing_symbol", symbol)]
    while wanted:
        answers = reflect_v1(addr, [{kind: name} for kind, name in wanted])
        wanted = []
        for answer in answers:
            for raw in answer.file_descriptor_response.file_descriptor_proto:
                file = descriptor_pb2.FileDescriptorProto.FromString(raw)
                files[file.name] = file
        missing = {d for f in files.values() for d in f.dependency if d not in files}
        wanted = [("file_by_filename", name) for name in sorted(missing)]
    pool = descriptor_pool.DescriptorPool()
    added = set()

    def add(name):
        if name not in added:
            for dependency in files[name].dependency:
                add(dependency)
            pool.Add(files[name])
            added.add(name)

    for name in files:
        add(name)
    return pool


def test_reflection_v1_lists_the_services_and_serves_their_files(cluster):
    addr = cluster["leader"]
    listed = reflect_v1(addr, [{"list_services": ""}])[0].list_services_response.service
    names = {s.name for s in listed}
    assert FLOTILLA_SERVICES <= names, names
    assert "grpc.health.v1.Health" in names, names

    answer = reflect_v1(addr, [{"file_containing_symbol": "flotilla.v1.Releases"}])[0]
    served = answer.file_descriptor_response.file_descriptor_proto
    files = [descriptor_pb2.FileDescriptorProto.FromString(raw) for raw in served]
    releases_file = next(f for f in files if f.name == "flotilla/v1/releases.proto")
    assert releases_file.package == "flotilla.v1"
    assert [s.name for s in releases_file.service] == ["Releases"]


def test_releases_get_by_name_with_messages_from_reflection_only(cluster):
    """What ``grpcurl -d '{"releaseId": "..."}' ADDR flotilla.v1.Releases/Get`` does."""
    addr = cluster["followers"][0] if cluster["followers"] else cluster["leader"]
    pool = pool_from_v1(addr, "flotilla.v1.Releases")
    service = pool.FindServiceByName("flotilla.v1.Releases")

    def method(name):
        m = service.methods_by_name[name]
        request_cls = message_factory.GetMessageClass(m.input_type)
        response_cls = message_factory.GetMessageClass(m.output_type)
        call = channel(addr).unary_unary(
            f"/{service.full_name}/{m.name}",
            request_serializer=request_cls.SerializeToString,
            response_deserializer=response_cls.FromString,
        )
        return lambda json: call(json_format.Parse(json, request_cls()), timeout=TIMEOUT)

    listed = method("List")('{"pageSize": 1}')
    if listed.releases:
        release_id = listed.releases[0].id
        got = method("Get")(f'{{"releaseId": "{release_id}"}}')
        assert got.release.id == release_id
        as_json = json_format.MessageToDict(got)
        assert as_json["release"]["id"] == release_id and as_json["release"]["state"].startswith("RELEASE_STATE_")

    with pytest.raises(grpc.RpcError) as failure:
        method("Get")('{"releaseId": "r-does-not-exist"}')
    error = failure.value
    assert error.code() == grpc.StatusCode.NOT_FOUND
    # The details, unpacked with classes built from reflected descriptors too (how a
    # reflection client prints them).
    details_pool = pool_from_v1(addr, "google.rpc.ErrorInfo")
    error_info_cls = message_factory.GetMessageClass(details_pool.FindMessageTypeByName("google.rpc.ErrorInfo"))
    resource_cls = message_factory.GetMessageClass(details_pool.FindMessageTypeByName("google.rpc.ResourceInfo"))
    status = status_details(error)
    (info,) = unpack_all(status, error_info_cls)
    assert (info.domain, info.reason) == ("flotilla.v1", "RELEASE_NOT_FOUND")
    (resource,) = unpack_all(status, resource_cls)
    assert resource.resource_name == "r-does-not-exist"
