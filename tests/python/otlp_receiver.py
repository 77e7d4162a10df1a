#!/usr/bin/env python3
"""A small OTLP trace receiver for the tests, on the published
opentelemetry-proto definitions: OTLP/gRPC (TraceService.Export) and
OTLP/HTTP with protobuf (POST /v1/traces).

Every span received is written as one JSON line to OUT:
  {"via": "grpc"|"http", "resource": {...}, "scope": "...", "trace_id": hex,
   "span_id": hex, "parent_span_id": hex|"", "name": ..., "kind": int,
   "attributes": {...}, "status": {"code": int, "message": ...},
   "events": [{"name": ..., "attributes": {...}}], "start": ns, "end": ns}

Ports are written to PORTS as one JSON line once both servers listen:
  {"grpc": PORT, "http": PORT}

With --count-only (for benchmarks, where writing every span would cost
the machine more than the worker's tracing does), OUT holds only the
number of spans received so far.

Faults, for the tests of a collector that is slow or refuses:
  --slow S     answer every export S seconds late
  --refuse     answer every export with UNAVAILABLE (gRPC) or 503 (HTTP)

    .venv/bin/python tests/python/otlp_receiver.py --out spans.jsonl --ports ports.json
"""

import argparse
import http.server
import json
import os
import sys
import threading
import time
from concurrent import futures

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc


def any_value(v):
    kind = v.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [any_value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in v.kvlist_value.values}
    if kind == "bytes_value":
        return v.bytes_value.hex()
    return getattr(v, kind)


def attributes(kvs):
    return {kv.key: any_value(kv.value) for kv in kvs}


class Sink:
    def __init__(self, path, slow, refuse, count_only):
        self.lock = threading.Lock()
        self.path = path
        self.out = None if count_only else open(path, "a", encoding="utf-8")
        self.count = 0
        self.slow = slow
        self.refuse = refuse

    def take(self, request, via):
        if self.slow:
            time.sleep(self.slow)
        if self.refuse:
            return False
        if self.out is None:
            n = sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)
            with self.lock:
                self.count += n
                with open(self.path + ".tmp", "w", encoding="utf-8") as f:
                    f.write("%d\n" % self.count)
                os.replace(self.path + ".tmp", self.path)
            return True
        lines = []
        for rs in request.resource_spans:
            resource = attributes(rs.resource.attributes)
            for ss in rs.scope_spans:
                for s in ss.spans:
                    lines.append(json.dumps({
                        "via": via,
                        "resource": resource,
                        "scope": ss.scope.name,
                        "trace_id": s.trace_id.hex(),
                        "span_id": s.span_id.hex(),
                        "parent_span_id": s.parent_span_id.hex(),
                        "name": s.name,
                        "kind": s.kind,
                        "attributes": attributes(s.attributes),
                        "status": {"code": s.status.code, "message": s.status.message},
                        "events": [{"name": e.name, "attributes": attributes(e.attributes)} for e in s.events],
                        "start": s.start_time_unix_nano,
                        "end": s.end_time_unix_nano,
                    }))
        with self.lock:
            for line in lines:
                self.out.write(line + "\n")
            self.out.flush()
        return True


class TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, sink):
        self.sink = sink

    def Export(self, request, context):  # noqa: N802 (the proto's name)
        if not self.sink.take(request, "grpc"):
            context.abort(grpc.StatusCode.UNAVAILABLE, "refusing, as told")
        return trace_service_pb2.ExportTraceServiceResponse()


def http_handler(sink):
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server's name)
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if self.path != "/v1/traces":
                self.send_error(404)
                return
            request = trace_service_pb2.ExportTraceServiceRequest()
            try:
                request.ParseFromString(body)
            except Exception:  # noqa: BLE001 (any undecodable body is the sender's fault)
                self.send_error(400, "not an ExportTraceServiceRequest")
                return
            if not sink.take(request, "http"):
                self.send_error(503, "refusing, as told")
                return
            reply = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, *args):
            pass

    return Handler


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--ports", required=True)
    parser.add_argument("--slow", type=float, default=0.0)
    parser.add_argument("--refuse", action="store_true")
    parser.add_argument("--count-only", action="store_true")
    opts = parser.parse_args()
    sink = Sink(opts.out, opts.slow, opts.refuse, opts.count_only)

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(TraceService(sink), server)
    grpc_port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    web = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http_handler(sink))
    threading.Thread(target=web.serve_forever, daemon=True).start()
    # Written whole, then renamed: a reader never sees half of it.
    with open(opts.ports + ".tmp", "w", encoding="utf-8") as f:
        f.write(json.dumps({"grpc": grpc_port, "http": web.server_address[1]}) + "\n")
    os.replace(opts.ports + ".tmp", opts.ports)
    try:
        server.wait_for_termination()
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
