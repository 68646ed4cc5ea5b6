"""A prefill worker that answers wrong: for the decode worker's checks.

usage: fake_prefill.py PORT ANSWERS.json
ANSWERS.json is a list of {"status": N, "body": "..."}; each POST to
/kvf/v1/prefill gets the next one (the last repeats). /kvf/v1/release and
/kvf/v1/extend answer 200. Every request path is appended to ANSWERS.json.log
so the test can tell the decode worker really asked.
"""
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

port, path = int(sys.argv[1]), sys.argv[2]
answers = json.load(open(path))
served = 0


class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def do_POST(self):
        global served
        n = int(self.headers.get("Content-Length", "0"))
        self.rfile.read(n)
        with open(path + ".log", "a") as f:
            f.write(self.path + "\n")
        if self.path == "/kvf/v1/prefill":
            a = answers[min(served, len(answers) - 1)]
            served += 1
            status, body = a["status"], a["body"].encode()
        else:
            status, body = 200, b"{}"
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


ThreadingHTTPServer(("127.0.0.1", port), H).serve_forever()
