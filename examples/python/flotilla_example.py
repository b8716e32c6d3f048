"""Drives Flotilla releases end to end from Python: plan, start, watch, approve, roll back.

A command-line example of ``flotilla_client``: every event is printed as one line,
``INDEX KIND MESSAGE``, exactly once, also when the watch resumes on another
coordinator after a leader change. Failures print the error's reason, message and
details on stderr and exit non-zero: 1 for an operational error, 2 for a refused
request (INVALID_ARGUMENT, e.g. a bad spec; an idempotency key used before for another
spec) or bad usage, 3 when the release did not
end as wanted. See README.md for setup and examples.
"""

from __future__ import annotations

import argparse
import os
import sys
import uuid
from pathlib import Path

import grpc

from flotilla_client import (
    FlotillaClient,
    FlotillaError,
    channel_credentials,
    kind_name,
    releases_pb2,
    state_name,
)

EXIT_OPERATIONAL, EXIT_REFUSED, EXIT_NOT_AS_WANTED = 1, 2, 3


def note(line: str) -> None:
    """A line about what the client does (failovers, approvals), on stderr."""
    print(line, file=sys.stderr, flush=True)


def out(line: str) -> None:
    """A line of output, flushed at once (a reader may follow it live)."""
    print(line, flush=True)


def print_plan(plan: releases_pb2.Plan) -> None:
    """The plan's services, waves, stages with their batches, and gates."""
    where = "against the live fleet" if plan.fleet_known else "offline"
    out(f"release {plan.release}: {len(plan.services)} services, {len(plan.stages)} stages, planned {where}")
    for wave in plan.waves:
        out(f"wave {wave.wave}: {' '.join(wave.services)}")
    for stage in plan.stages:
        approval = " (approval before the next stage)" if stage.approval else ""
        out(f"stage {stage.name}{approval}: {len(stage.hosts)} hosts")
        for rollout in stage.rollouts:
            batches = ", ".join(
                f"{b.name}" + (f" [{' '.join(b.hosts)}]" if b.hosts else "") for b in rollout.batches
            )
            skipped = f" (already there: {' '.join(rollout.skipped_hosts)})" if rollout.skipped_hosts else ""
            out(f"  {rollout.service}: {batches or 'nothing to do'}{skipped}")
    for gate in plan.gates:
        out(f"gate {gate.name}: after {', '.join(gate.after)}; blocks {', '.join(gate.blocks) or 'nothing'}")
    for warning in plan.warnings:
        note(f"warning: {warning.rendered or warning.message}")


def follow(client: FlotillaClient, release_id: str, after: int, approve_all: bool, want: int) -> int:
    """Prints the release's events after ``after`` until it ends; approves what it
    waits for when ``approve_all``. Exit code 0 when it ends in state ``want``."""
    final = None
    for event in client.watch(release_id, after_index=after):
        out(f"{event.index} {kind_name(event.kind)} {event.message}")
        final = event.release_state
        if approve_all and event.kind == releases_pb2.EVENT_KIND_APPROVAL_REQUIRED:
            what = f"gate {event.gate}" if event.gate else f"stage {event.stage}"
            note(f"approving {what} of release {release_id}")
            try:
                client.approve(
                    release_id,
                    gate=event.gate or None,
                    stage=None if event.gate else event.stage,
                    comment="approved by flotilla_example.py --approve-all",
                )
            except FlotillaError as error:
                # Approved already (by someone else, or by an attempt whose answer was
                # lost and which the client retried): the release goes on either way.
                if error.code != grpc.StatusCode.FAILED_PRECONDITION:
                    raise
                note(f"not approved: {error}")
    if final is None:
        final = client.get(release_id).state
    out(f"release {release_id} ended: {state_name(final)}")
    return 0 if final == want else EXIT_NOT_AS_WANTED


def read_spec(path: str) -> tuple[str, str]:
    """The spec's text and the file name diagnostics show."""
    return Path(path).read_text(encoding="utf-8"), Path(path).name


def run(args: argparse.Namespace) -> int:
    """Runs one subcommand."""
    credentials = channel_credentials(args.tls_ca, args.tls_cert, args.tls_key, args.insecure)
    addresses = [a.strip() for a in args.coordinators.split(",")]
    succeeded = releases_pb2.RELEASE_STATE_SUCCEEDED
    with FlotillaClient(addresses, credentials, server_name=args.tls_server_name, log=note) as client:
        if args.command == "plan":
            print_plan(client.plan(*read_spec(args.spec), offline=args.offline))
            return 0
        if args.command == "start":
            text, name = read_spec(args.spec)
            # One key per invocation: the client's own retries of Create are safe.
            key = args.idempotency_key or str(uuid.uuid4())
            release, created = client.create(text, name, key)
            out(f"release {release.id} {'created' if created else 'exists already'} (idempotency key {key})")
            if not args.watch:
                return 0
            return follow(client, release.id, 0, args.approve_all, succeeded)
        if args.command == "watch":
            return follow(client, args.id, args.after, args.approve_all, succeeded)
        if args.command == "get":
            r = client.get(args.id)
            out(f"release {r.id} ({r.name}): {state_name(r.state)}{' - ' + r.reason if r.reason else ''}")
            for stage in r.stages:
                services = " ".join(
                    f"{s.service}={releases_pb2.ServiceState.Name(s.state).removeprefix('SERVICE_STATE_')}"
                    f"({s.hosts_done}/{s.hosts_total})"
                    for s in stage.services
                )
                out(f"  stage {stage.name}: {services}")
            for a in r.pending_approvals:
                out(f"  waits for approval of {releases_pb2.ApprovalKind.Name(a.kind)} {a.name}")
            out(f"  last event: {r.last_event_index}")
            return 0
        if args.command == "approve":
            r = client.approve(args.id, gate=args.gate, stage=args.stage, comment=args.comment)
            out(f"release {r.id}: {state_name(r.state)}")
            return 0
        if args.command == "rollback":
            before = client.get(args.id).last_event_index
            r, services = client.rollback(args.id, service=args.service, reason=args.reason)
            out(f"release {r.id} rolls back: {' '.join(services)}")
            if not args.watch:
                return 0
            return follow(client, r.id, before, False, releases_pb2.RELEASE_STATE_ROLLED_BACK)
    raise AssertionError(f"unknown command {args.command}")


def parser() -> argparse.ArgumentParser:
    """The command line; connection flags also read the CLI's environment variables."""
    env = os.environ.get
    connection = argparse.ArgumentParser(add_help=False)
    connection.add_argument(
        "--coordinators",
        default=env("FLOTILLA_COORDINATORS", "127.0.0.1:7600"),
        help="HOST:PORT,... of coordinators to try (FLOTILLA_COORDINATORS)",
    )
    connection.add_argument(
        "--insecure",
        action="store_true",
        default=env("FLOTILLA_INSECURE", "").lower() in ("1", "true", "yes"),
        help="plaintext, for coordinators run with --insecure (FLOTILLA_INSECURE=1)",
    )
    connection.add_argument("--tls-ca", default=env("FLOTILLA_TLS_CA"), help="CA certificate, PEM (FLOTILLA_TLS_CA)")
    connection.add_argument(
        "--tls-cert", default=env("FLOTILLA_TLS_CERT"), help="client certificate, PEM (FLOTILLA_TLS_CERT)"
    )
    connection.add_argument("--tls-key", default=env("FLOTILLA_TLS_KEY"), help="client key (FLOTILLA_TLS_KEY)")
    connection.add_argument("--tls-server-name", help="the name the coordinators' certificates carry, if not the host")

    main = argparse.ArgumentParser(description=__doc__.splitlines()[0], parents=[connection])
    sub = main.add_subparsers(dest="command", required=True)

    p = sub.add_parser("plan", help="validate and plan a spec (changes nothing)")
    p.add_argument("spec", help="the release spec (TOML)")
    p.add_argument("--offline", action="store_true", help="plan without the live fleet")

    p = sub.add_parser("start", help="submit a release")
    p.add_argument("spec", help="the release spec (TOML)")
    p.add_argument("--watch", action="store_true", help="then print its events until it ends")
    p.add_argument("--approve-all", action="store_true", help="with --watch: approve every approval it waits for")
    p.add_argument("--idempotency-key", help="the Create key (default: a new UUID)")

    p = sub.add_parser("watch", help="print a release's events until it ends (exit 0 if it succeeded)")
    p.add_argument("id", help="the release id")
    p.add_argument("--after", type=int, default=0, help="start after this event index")
    p.add_argument("--approve-all", action="store_true", help="approve every approval it waits for")

    p = sub.add_parser("get", help="show a release's state")
    p.add_argument("id", help="the release id")

    p = sub.add_parser("approve", help="approve what a release waits for")
    p.add_argument("id", help="the release id")
    target = p.add_mutually_exclusive_group()
    target.add_argument("--gate", help="the gate to approve")
    target.add_argument("--stage", help="the stage whose approval lets the next one start")
    p.add_argument("--comment", default="", help="a note recorded in the event")

    p = sub.add_parser("rollback", help="roll a release (or one service and its closure) back")
    p.add_argument("id", help="the release id")
    p.add_argument("--service", help="roll back only this service and what depends on it")
    p.add_argument("--reason", default="", help="why, recorded in the event")
    p.add_argument("--watch", action="store_true", help="then print the rollback's events (exit 0 once rolled back)")
    return main


def main() -> int:
    """Entry point: the exit code."""
    args = parser().parse_args()
    try:
        return run(args)
    except FlotillaError as error:
        note(error.describe())
        # A bad request, or an idempotency key given again for another spec: the
        # invocation is wrong (the `flotilla` CLI says so with 2 too).
        refused = error.code == grpc.StatusCode.INVALID_ARGUMENT or error.reason == "IDEMPOTENCY_KEY_REUSED"
        return EXIT_REFUSED if refused else EXIT_OPERATIONAL
    except (OSError, ValueError) as error:
        note(f"error: {error}")
        return EXIT_REFUSED
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
