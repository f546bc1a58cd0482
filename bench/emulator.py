"""The Kubernetes API emulator in a process of its own, with its request counts over HTTP.

    python -m bench.emulator --kubeconfig PATH [--crds DIR]

prints one JSON line ``{"url": ..., "control": ...}`` and serves until SIGTERM. The control
server (another port) answers ``GET /counts`` (requests by verb since start) and
``GET /objects``. A process of its own keeps the emulator's CPU off the benchmark driver's
GIL; the counts endpoint is what ``python -m tests.harness.kubeapi`` does not offer.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.harness.kubeapi import KubeAPIEmulator


class _Control(BaseHTTPRequestHandler):
    emulator: KubeAPIEmulator

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        if self.path == "/counts":
            payload: Any = self.emulator.request_counts()
        elif self.path == "/objects":
            payload = {"objects": self.emulator.object_count()}
        else:
            self.send_error(404)
            return
        body = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.emulator")
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--crds")
    parser.add_argument("--history", type=int, default=2000)
    args = parser.parse_args(argv)

    emulator = KubeAPIEmulator(history_size=args.history).start()
    if args.crds:
        emulator.load_crds(args.crds)
    emulator.write_kubeconfig(args.kubeconfig)
    handler = type("Control", (_Control,), {"emulator": emulator})
    control = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    control.daemon_threads = True
    threading.Thread(target=control.serve_forever, name="control", daemon=True).start()
    print(
        json.dumps({"url": emulator.url, "control": f"http://127.0.0.1:{control.server_address[1]}"}),
        flush=True,
    )
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    control.shutdown()
    emulator.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
