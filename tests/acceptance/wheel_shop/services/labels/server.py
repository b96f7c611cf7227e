"""A gRPC label printer for the wheel test: stubs generated from ../../protos at start."""

import subprocess
import sys
import tempfile
import threading
from concurrent import futures
from pathlib import Path

import grpc

PROTOS = Path(__file__).resolve().parents[2] / "protos"
out = Path(tempfile.mkdtemp())
subprocess.run([sys.executable, "-m", "grpc_tools.protoc", f"-I{PROTOS}", f"--python_out={out}",
                f"--grpc_python_out={out}", "labels.proto"], check=True)
sys.path.insert(0, str(out))
import labels_pb2  # noqa: E402
import labels_pb2_grpc  # noqa: E402

state: dict[str, str] = {}
lock = threading.Lock()


class Labels(labels_pb2_grpc.LabelsServicer):
    def Print(self, request, context):
        with lock:
            if state.get(request.idempotency_key) == "voided":
                context.abort(grpc.StatusCode.FAILED_PRECONDITION, "voided before printing")
            if request.parcel == "unprintable":
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, "cannot print that")
            state[request.idempotency_key] = "printed"
        return labels_pb2.PrintReply(label_id="L-" + request.idempotency_key[-8:])

    def Void(self, request, context):
        with lock:
            state[request.forward_key] = "voided"
        return labels_pb2.VoidReply(voided=True)

    def Get(self, request, context):
        with lock:
            return labels_pb2.GetReply(state=state.get(request.key, ""))


server = grpc.server(futures.ThreadPoolExecutor(4))
labels_pb2_grpc.add_LabelsServicer_to_server(Labels(), server)
server.add_insecure_port(f"127.0.0.1:{sys.argv[1]}")
server.start()
print("serving", flush=True)
server.wait_for_termination()
