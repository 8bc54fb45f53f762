"""A front for moto's EC2 (tests/iaas/ec2_server.py) that injects faults:
requests go through to moto unless a fault posted to /_test/faults
(tests/faults.py: status, body, delay, a text the request body holds, e.g.
"Action=RunInstances") answers them instead. Prints `LISTENING <port>`."""

import argparse
import os
import sys
import time
import urllib.error
import urllib.request
from http.server import ThreadingHTTPServer

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from faults import Faults  # noqa: E402
from testhttp import Handler  # noqa: E402

FAULTS = Faults()
UPSTREAM = ""


class Front(Handler):
    log_name = "ec2-front"

    def do_POST(self):
        body = self.read_body()
        if self.path == "/_test/faults":
            import json

            FAULTS.add(Faults.parse(json.loads(body or b"{}")))
            return self.send(200, {"ok": True})
        fault = FAULTS.take("POST", self.path, body)
        if fault:
            time.sleep(fault["delay_ms"] / 1000.0)
            if fault["status"]:
                return self.send(fault["status"], fault["body"].encode(), "text/xml")
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length", "connection")}
        request = urllib.request.Request(UPSTREAM + self.path, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=30) as r:
                return self.send(r.status, r.read(), r.headers.get("Content-Type"))
        except urllib.error.HTTPError as e:
            return self.send(e.code, e.read(), e.headers.get("Content-Type"))


def main():
    global UPSTREAM
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--upstream", required=True)
    args = parser.parse_args()
    UPSTREAM = args.upstream.rstrip("/")
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Front)
    print(f"LISTENING {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
