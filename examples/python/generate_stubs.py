"""Generates the Python stubs of Flotilla's API from the repository's proto files.

Runs exactly the documented one-liner (from the repository root)::

    python3 -m grpc_tools.protoc -I proto/proto \\
        --python_out=examples/python/gen --grpc_python_out=examples/python/gen \\
        proto/proto/flotilla/v1/*.proto

Usage: ``python3 examples/python/generate_stubs.py [OUT_DIR]`` (default: ``gen/`` next
to this file, which git ignores). The stubs land in ``OUT_DIR/flotilla/v1/`` and are
imported as ``flotilla.v1.releases_pb2`` etc. with ``OUT_DIR`` on ``sys.path``
(``flotilla_client`` does that; set ``FLOTILLA_STUBS=OUT_DIR`` for another directory).
"""

import argparse
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROTO_ROOT = HERE.parent.parent / "proto" / "proto"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", nargs="?", default=str(HERE / "gen"), help="where to write the stubs")
    parser.add_argument("--proto-root", default=str(PROTO_ROOT), help="the directory holding flotilla/v1/*.proto")
    args = parser.parse_args()

    proto_root = Path(args.proto_root)
    protos = sorted(str(p) for p in (proto_root / "flotilla" / "v1").glob("*.proto"))
    if not protos:
        print(f"error: no proto files under {proto_root}/flotilla/v1", file=sys.stderr)
        return 1
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"-I{proto_root}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        *protos,
    ]
    done = subprocess.run(cmd, check=False)
    if done.returncode != 0:
        print("error: grpc_tools.protoc failed (is grpcio-tools installed? see requirements.txt)", file=sys.stderr)
        return done.returncode
    print(f"generated {len(protos)} files' stubs into {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
