"""A client in another language: Python grpcio stubs generated from proto/ create, search and
update a link against a running `linkreg serve --dev` node, and read a structured error."""

import os
import subprocess
import sys
import tempfile
import time
import traceback

import grpc
from grpc_tools import protoc

from loopback import free_port

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BINARY = os.path.join(ROOT, "target", "debug", "linkreg")


def generate_stubs(out):
    os.makedirs(out, exist_ok=True)
    proto = os.path.join(ROOT, "proto")
    args = ["protoc", f"-I{proto}", f"-I{os.path.dirname(protoc.__file__)}/_proto",
            f"--python_out={out}", f"--grpc_python_out={out}",
            os.path.join(proto, "linkreg", "v1", "link_register.proto")]
    if protoc.main(args) != 0:
        raise RuntimeError("protoc failed")
    sys.path.insert(0, out)


def start_node(data):
    client = f"127.0.0.1:{free_port()}"
    node = subprocess.Popen(
        [BINARY, "serve", "--dev", "--data-dir", data, "--client-addr", client,
         "--peer-addr", f"127.0.0.1:{free_port()}", "--http-addr", f"127.0.0.1:{free_port()}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return node, client


def tests(stub, pb):
    writer = [("authorization", "Bearer dev-writer")]

    def call(method, request, metadata=writer):
        # The node may still be electing itself; UNAVAILABLE is retryable by contract.
        for _ in range(100):
            try:
                return method(request, metadata=metadata, timeout=10)
            except grpc.RpcError as e:
                if e.code() != grpc.StatusCode.UNAVAILABLE:
                    raise
                time.sleep(0.1)
        raise AssertionError("node never became available")

    def create_search_update():
        created = call(stub.CreateLink, pb.CreateLinkRequest(
            ssin="85.07.30-033.28", country="nl", key_type="PASSPORT", value="nx-123.456",
            valid_from="2020-01-01", client_id="python", request_id=1))
        link = created.link
        assert link.ssin == "85073003328" and link.country == "NL", link
        assert link.normalized_value == "NX123456" and link.version == 1, link
        found = call(stub.SearchLinksBySsin, pb.SearchLinksBySsinRequest(
            ssin="85073003328", consistency=pb.CONSISTENCY_LINEARIZABLE))
        assert [l.id for l in found.links] == [link.id], found
        assert found.read.node_id == 1, found.read
        by_key = call(stub.SearchLinksByForeignKey, pb.SearchLinksByForeignKeyRequest(
            country="NL", value="NX 123 456"))
        assert [l.id for l in by_key.links] == [link.id], by_key
        updated = call(stub.UpdateLinkValidity, pb.UpdateLinkValidityRequest(
            id=link.id, valid_from="2020-01-01", valid_to="2030-12-31", expected_version=1))
        assert updated.link.version == 2 and updated.link.valid_to == "2030-12-31", updated

    def errors_are_structured():
        try:
            call(stub.CreateLink, pb.CreateLinkRequest(
                ssin="12345678901", country="NL", key_type="PASSPORT", value="NX999999"))
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, e
            assert "ssin" in e.details(), e.details()
            assert any(k == "grpc-status-details-bin" for k, _ in e.trailing_metadata()), \
                "rich error details missing"
        else:
            raise AssertionError("an invalid SSIN was accepted")

    def unauthenticated_is_refused():
        try:
            stub.GetLink(pb.GetLinkRequest(id=1), timeout=10)
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.UNAUTHENTICATED, e
        else:
            raise AssertionError("a call without a token was answered")

    return [create_search_update, errors_are_structured, unauthenticated_is_refused]


def main():
    passed = failed = 0
    with tempfile.TemporaryDirectory() as tmp:
        generate_stubs(os.path.join(tmp, "stubs"))
        from linkreg.v1 import link_register_pb2 as pb
        from linkreg.v1 import link_register_pb2_grpc as pb_grpc
        node, client = start_node(os.path.join(tmp, "data"))
        try:
            with grpc.insecure_channel(client) as channel:
                stub = pb_grpc.LinkRegisterStub(channel)
                for test in tests(stub, pb):
                    try:
                        test()
                        passed += 1
                        print(f"test python::{test.__name__} ... ok")
                    except Exception:
                        failed += 1
                        print(f"test python::{test.__name__} ... FAILED")
                        traceback.print_exc()
        finally:
            node.terminate()
            node.wait(timeout=30)
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
