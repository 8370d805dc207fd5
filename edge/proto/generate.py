"""Regenerate the Python bindings of edge's protobuf schemas.

Usage::

    python -m edge.proto.generate [--out DIR]

The schemas are ``tero.policy.v1`` (``tero/policy/v1/policy.proto``) and the part of the
Datadog agent's metrics payload edge reads (``datadog/agentpayload/agent_payload.proto``).
By default the generated ``*_pb2.py`` and ``*_pb2.pyi`` are written in place, next to each
``.proto``. The proto path is ``edge/proto``, so each schema is registered in the descriptor
pool under its path relative to it.

The ``opentelemetry-proto`` wheel ships only compiled ``_pb2.py`` modules, not the ``.proto``
sources, so the imported ``opentelemetry/proto/common/v1/common.proto`` is fed to protoc as a
``FileDescriptorSet`` serialized from the installed module's descriptor (``--descriptor_set_in``).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import FileDescriptor

PROTO_ROOT: Path = Path(__file__).resolve().parent
"""The protoc ``--proto_path``: the directory containing ``tero/``."""

SCHEMA: str = "tero/policy/v1/policy.proto"
"""Path of the policy schema relative to :data:`PROTO_ROOT` (also its registered descriptor name)."""

SCHEMAS: tuple[str, ...] = (SCHEMA, "datadog/agentpayload/agent_payload.proto")
"""Every schema compiled, relative to :data:`PROTO_ROOT`."""

OUTPUT_SUFFIXES: tuple[str, ...] = ("_pb2.py", "_pb2.pyi")
"""Files generated per schema: the message module and its type stub."""


class GenerationError(RuntimeError):
    """Raised when protoc fails to compile a schema."""


def _collect_file_descriptors(root: FileDescriptor) -> list[descriptor_pb2.FileDescriptorProto]:
    """Return ``root`` and its transitive dependencies as protos, dependencies first."""
    ordered: list[descriptor_pb2.FileDescriptorProto] = []
    seen: set[str] = set()

    def visit(file_descriptor: FileDescriptor) -> None:
        if file_descriptor.name in seen:
            return
        seen.add(file_descriptor.name)
        for dependency in file_descriptor.dependencies:
            visit(dependency)
        proto = descriptor_pb2.FileDescriptorProto()
        file_descriptor.CopyToProto(proto)
        ordered.append(proto)

    visit(root)
    return ordered


def build_dependency_descriptor_set() -> bytes:
    """Serialize a ``FileDescriptorSet`` holding ``opentelemetry/proto/common/v1/common.proto``.

    The descriptor comes from the installed ``opentelemetry-proto`` package, so the schema is always
    compiled against the same ``KeyValue`` definition the runtime uses.
    """
    from opentelemetry.proto.common.v1 import common_pb2

    descriptor_set = descriptor_pb2.FileDescriptorSet()
    descriptor_set.file.extend(_collect_file_descriptors(common_pb2.DESCRIPTOR))
    return descriptor_set.SerializeToString(deterministic=True)


def expected_outputs(out_dir: Path) -> list[Path]:
    """Return the paths :func:`generate` writes below ``out_dir``."""
    return [out_dir / f"{schema.removesuffix('.proto')}{suffix}" for schema in SCHEMAS for suffix in OUTPUT_SUFFIXES]


def generate(out_dir: Path) -> list[Path]:
    """Compile every schema into ``out_dir`` and return the generated file paths.

    ``out_dir`` is created if needed; files land next to each schema's path below it
    (``out_dir/tero/policy/v1/policy_pb2.py(i)``...).

    Raises:
        GenerationError: if protoc reports an error or does not produce the expected files.
    """
    from grpc_tools import protoc

    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="edge-proto-") as tmp:
        descriptor_set_path = Path(tmp) / "deps.binpb"
        descriptor_set_path.write_bytes(build_dependency_descriptor_set())
        args = [
            "grpc_tools.protoc",
            f"--proto_path={PROTO_ROOT}",
            f"--descriptor_set_in={descriptor_set_path}",
            f"--python_out={out_dir}",
            f"--pyi_out={out_dir}",
            *(str(PROTO_ROOT / schema) for schema in SCHEMAS),
        ]
        status = protoc.main(args)
    if status != 0:
        raise GenerationError(f"protoc failed with exit status {status} while compiling {', '.join(SCHEMAS)}")
    outputs = expected_outputs(out_dir)
    missing = [str(path) for path in outputs if not path.is_file()]
    if missing:
        raise GenerationError(f"protoc did not produce: {', '.join(missing)}")
    return outputs


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the process exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m edge.proto.generate",
        description="Regenerate the *_pb2.py/.pyi of every schema below edge/proto.",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=PROTO_ROOT,
        metavar="DIR",
        help="output root directory (default: %(default)s, i.e. in place)",
    )
    args = parser.parse_args(argv)
    try:
        written = generate(args.out)
    except GenerationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for path in written:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
