"""Generates the Python gRPC stubs of every Shlyuz proto into clients/python/generated/.

The stubs are not committed: they are made from proto/ by grpcio-tools' own protoc, so the client
is built from the contract alone, by a gRPC implementation Shlyuz does not share code with.
"""
import pathlib
import sys

from grpc_tools import protoc

HERE = pathlib.Path(__file__).resolve().parent
PROTO_ROOT = HERE.parent.parent / "proto"
OUT = HERE / "generated"


def main() -> int:
    OUT.mkdir(exist_ok=True)
    files = sorted(str(path.relative_to(PROTO_ROOT)) for path in PROTO_ROOT.glob("shlyuz/**/v1/*.proto"))
    if not files:
        print(f"no proto files under {PROTO_ROOT}", file=sys.stderr)
        return 1
    well_known = pathlib.Path(protoc.__file__).resolve().parent / "_proto"
    arguments = ["protoc", f"-I{PROTO_ROOT}", f"-I{well_known}", f"--python_out={OUT}", f"--grpc_python_out={OUT}", *files]
    result = protoc.main(arguments)
    if result != 0:
        print("protoc failed", file=sys.stderr)
        return result
    # Make every generated folder a package so `import shlyuz.registry.v1.person_pb2` works.
    for folder in OUT.rglob("*"):
        if folder.is_dir():
            (folder / "__init__.py").touch()
    return 0


if __name__ == "__main__":
    sys.exit(main())
