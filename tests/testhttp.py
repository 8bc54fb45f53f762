"""The HTTP plumbing torii's Python test servers share (stdlib only): a
request handler base that reads a body (Content-Length or chunked) and
answers one (JSON, text or bytes, with Content-Length; none for 1xx, 204
and 304 or to HEAD).

A server script in a subdirectory of tests/ imports it with
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
"""

import json
import sys
from http.server import BaseHTTPRequestHandler


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # What each logged request line starts with (the server's name).
    log_name = "test-server"

    def log_message(self, fmt, *args):
        sys.stderr.write("%s: %s - %s\n" % (self.log_name, self.address_string(), fmt % args))
        sys.stderr.flush()

    def read_body(self):
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                line = self.rfile.readline()
                if not line:
                    break
                size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    # trailers until an empty line
                    while True:
                        t = self.rfile.readline()
                        if not t or t in (b"\r\n", b"\n"):
                            break
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()  # CRLF after the chunk
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def send(self, status, body=None, content_type=None, extra_headers=None):
        if isinstance(body, (dict, list)):
            data = json.dumps(body).encode()
            content_type = content_type or "application/json"
        elif isinstance(body, str):
            data = body.encode()
            content_type = content_type or "text/plain; charset=utf-8"
        elif body is None:
            data = b""
        else:
            data = body
        self.send_response(status)
        for k, v in (extra_headers or {}).items():
            self.send_header(k, v)
        no_body = status in (204, 304) or 100 <= status < 200
        if not no_body:
            if content_type:
                self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if not no_body and self.command != "HEAD":
            self.wfile.write(data)
