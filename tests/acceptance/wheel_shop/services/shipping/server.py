"""An HTTP slot booker for the wheel test, on nothing but the stdlib: the HTTP convention
(POST /saga/ACTION with the envelope) plus GET /state for the test to look."""

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

slots: dict[str, str] = {}
lock = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    def _answer(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        with lock:
            self._answer(200, dict(slots))

    def do_POST(self):
        envelope = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        key = self.headers["Idempotency-Key"]
        with lock:
            if self.path == "/saga/book_slot":
                assert key == envelope["key"] == envelope["forward_key"]
                if slots.get(key) == "freed":
                    return self._answer(409, {"detail": "freed before booking"})
                slots[key] = "booked"
                return self._answer(200, {"slot": key[-6:], "parcel": envelope["input"]["parcel"]})
            if self.path == "/saga/free_slot":
                slots[envelope["forward_key"]] = "freed"
                return self._answer(200, {"freed": True})
        self._answer(404, {"detail": "no such action"})

    def log_message(self, *args):
        pass


ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
