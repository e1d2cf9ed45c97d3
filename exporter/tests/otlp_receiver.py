#!/usr/bin/env python3
"""A real OTLP metrics receiver for tests and benchmarks, built on the
OpenTelemetry project's Python bindings (opentelemetry-proto, protobuf):
decodes every ExportMetricsServiceRequest and prints one JSON line per
request on stdout (proto field names; NaN and infinities as the protobuf
JSON mapping writes them: "NaN", "Infinity", "-Infinity").

    otlp_receiver.py --http PORT          OTLP/HTTP (POST /v1/metrics, protobuf)
    otlp_receiver.py --grpc PORT          OTLP/gRPC (needs grpcio)
    --points-only                         print {"points": N} per request instead

The first line on stdout is {"listening": true} once the ports are bound.
"""
import argparse
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from google.protobuf import json_format
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2

LOCK = threading.Lock()


def count_points(request):
    n = 0
    for rm in request.resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                kind = m.WhichOneof("data")
                if kind:
                    n += len(getattr(m, kind).data_points)
    return n


def emit(request, points_only):
    if points_only:
        line = json.dumps({"points": count_points(request)})
    else:
        line = json.dumps(json_format.MessageToDict(request, preserving_proto_field_name=True))
    with LOCK:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def http_server(port, points_only):
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if self.path != "/v1/metrics" or self.headers.get("Content-Type") != "application/x-protobuf":
                self.send_response(400)
                self.end_headers()
                return
            request = metrics_service_pb2.ExportMetricsServiceRequest()
            try:
                request.ParseFromString(body)
            except Exception:  # noqa: BLE001 - any decode failure is a bad request
                self.send_response(400)
                self.end_headers()
                return
            emit(request, points_only)
            answer = metrics_service_pb2.ExportMetricsServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()


def grpc_server(port, points_only):
    from concurrent import futures

    import grpc
    from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2_grpc

    class Service(metrics_service_pb2_grpc.MetricsServiceServicer):
        def Export(self, request, context):
            emit(request, points_only)
            return metrics_service_pb2.ExportMetricsServiceResponse()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(Service(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    return server


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--http", type=int)
    parser.add_argument("--grpc", type=int)
    parser.add_argument("--points-only", action="store_true")
    args = parser.parse_args()
    if args.http:
        http_server(args.http, args.points_only)
    keep = grpc_server(args.grpc, args.points_only) if args.grpc else None
    sys.stdout.write(json.dumps({"listening": True}) + "\n")
    sys.stdout.flush()
    threading.Event().wait()
    del keep


if __name__ == "__main__":
    main()
