#!/usr/bin/env python3
"""A fake tsuru "service API" provider for torii's integration tests.

Stdlib only. Implements the routes of tsuru's service API
(/resources/...; see the README next to this file) with in-memory state,
plus unauthenticated /_test/* controls so a test can read what torii sent
and inject faults.

Usage: tsuru_service.py --port 0 --username U --password P
Prints exactly one line "LISTENING <port>" to stdout once it accepts
connections; logs every request to stderr; exits 0 on SIGTERM/SIGINT.
"""

import argparse
import base64
import hmac
import json
import signal
import sys
import threading
import time
import os
from http.server import ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import testhttp  # noqa: E402
from faults import Faults  # noqa: E402

PLANS = [
    {"name": "small", "description": "a small one"},
    {"name": "big", "description": "a big one"},
]

LOCK = threading.Lock()
INSTANCES = {}  # name -> dict (see new_instance)
CALLS = []  # every non-/_test request, in arrival order
FAULTS = Faults()
CREDS = {"username": "", "password": ""}


def new_instance(form):
    return {
        "plan": first(form, "plan"),
        "team": first(form, "team"),
        "user": first(form, "user"),
        "eventid": first(form, "eventid"),
        "description": first(form, "description"),
        "tags": list(form.get("tag", [])),
        "params": params_of(form),
        "binds": {},  # app name -> [app hosts]
        "units": set(),  # unit hosts
        "pending": False,
    }


def first(form, key, default=None):
    values = form.get(key)
    return values[0] if values else default


def last(form, key, default=None):
    values = form.get(key)
    return values[-1] if values else default


def params_of(form):
    """parameters.x=v -> {"x": "v"} (last value wins)."""
    out = {}
    for key, values in form.items():
        if key.startswith("parameters.") and values:
            out[key[len("parameters."):]] = values[-1]
    return out


def hosts_of(form):
    hosts = list(form.get("app-hosts", []))
    hosts += [h for h in form.get("app-host", []) if h not in hosts]
    return hosts


def jsonable_instance(inst):
    out = dict(inst)
    out["units"] = sorted(inst["units"])
    out["binds"] = {k: list(v) for k, v in inst["binds"].items()}
    out["state"] = "pending" if inst["pending"] else "up"
    return out


class Handler(testhttp.Handler):
    server_version = "tsuru-test-service/1.0"
    log_name = "tsuru_service"

    # ---- plumbing -------------------------------------------------------

    def lower_headers(self):
        out = {}
        for name, value in self.headers.items():
            key = name.lower()
            out[key] = out[key] + ", " + value if key in out else value
        return out

    def authorized(self):
        header = self.headers.get("Authorization", "")
        if not header.lower().startswith("basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:].strip()).decode().partition(":")
        except Exception:
            return False
        return hmac.compare_digest(user, CREDS["username"]) and hmac.compare_digest(
            password, CREDS["password"]
        )

    # ---- dispatch -------------------------------------------------------

    def handle_any(self):
        url = urlsplit(self.path)
        path = url.path
        raw = self.read_body()
        ctype = self.headers.get("Content-Type", "")
        form = {}
        if raw and ("application/x-www-form-urlencoded" in ctype or not ctype):
            try:
                form = parse_qs(raw.decode(), keep_blank_values=True)
            except Exception:
                form = {}
        self.req = {
            "url": url,
            "path": path,
            "query": url.query,
            "raw": raw,
            "form": form,
            "headers": self.lower_headers(),
        }
        if path == "/_test" or path.startswith("/_test/"):
            return self.test_control(path, raw)

        with LOCK:
            CALLS.append(
                {
                    "method": self.command,
                    "path": path,
                    "query": parse_qs(url.query, keep_blank_values=True),
                    "form": form,
                    "headers": self.req["headers"],
                    "body": raw.decode("utf-8", "replace"),
                }
            )
        fault = FAULTS.take(self.command, path)
        if fault:
            if fault["delay_ms"]:
                time.sleep(fault["delay_ms"] / 1000.0)
            if fault["status"]:
                return self.send(fault["status"], fault["body"])

        if not self.authorized():
            return self.send(
                401, "unauthorized", extra_headers={"WWW-Authenticate": 'Basic realm="tsuru-service"'}
            )
        return self.route(path, form)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = handle_any

    # ---- tsuru service API ----------------------------------------------

    def route(self, path, form):
        m = self.command
        parts = [unquote(p) for p in path.strip("/").split("/")] if path.strip("/") else []

        if parts == ["echo"] or parts[:1] == ["echo"]:
            return self.echo()
        if len(parts) >= 3 and parts[0] == "resources" and parts[2] == "echo":
            return self.echo()

        if parts == ["resources", "plans"] and m == "GET":
            return self.send(200, PLANS)
        if parts == ["resources"] and m == "POST":
            return self.create(form)
        if len(parts) == 2 and parts[0] == "resources":
            name = parts[1]
            if m == "GET":
                return self.info(name)
            if m == "PUT":
                return self.update(name, form)
            if m == "DELETE":
                return self.remove(name)
        if len(parts) == 3 and parts[0] == "resources":
            name, action = parts[1], parts[2]
            if action == "bind-app" and m == "POST":
                return self.bind_app(name, form)
            if action == "bind-app" and m == "DELETE":
                return self.unbind_app(name, form)
            if action == "bind" and m == "POST":
                return self.bind_unit(name, form)
            if action == "bind" and m == "DELETE":
                return self.unbind_unit(name, form)
            if action == "status" and m == "GET":
                return self.status(name)
        return self.send(404, "not found")

    def create(self, form):
        name = first(form, "name")
        if not name:
            return self.send(400, "name is required")
        with LOCK:
            if name in INSTANCES:
                return self.send(409, "instance already exists")
            INSTANCES[name] = new_instance(form)
        return self.send(201, "")

    def update(self, name, form):
        with LOCK:
            inst = INSTANCES.get(name)
            if inst is None:
                return self.send(404, "instance not found")
            for key in ("plan", "team", "user", "eventid", "description"):
                if key in form:
                    inst[key] = first(form, key)
            inst["tags"] = list(form.get("tag", []))
            inst["params"] = params_of(form)
        return self.send(200, "")

    def remove(self, name):
        with LOCK:
            if INSTANCES.pop(name, None) is None:
                return self.send(404, "instance not found")
        return self.send(200, "")

    def info(self, name):
        with LOCK:
            inst = INSTANCES.get(name)
            if inst is None:
                return self.send(404, "instance not found")
            plan = inst["plan"] or ""
        return self.send(
            200,
            [{"label": "Address", "value": "db://%s" % name}, {"label": "Plan", "value": plan}],
        )

    def bind_app(self, name, form):
        app = first(form, "app-name")
        with LOCK:
            inst = INSTANCES.get(name)
            if inst is None:
                return self.send(404, "instance not found")
            if inst["pending"]:
                return self.send(412, "instance not ready")
            if not app:
                return self.send(400, "app-name is required")
            inst["binds"][app] = hosts_of(form)
        return self.send(201, {"DB_HOST": "db.example", "DB_NAME": name, "DB_USER": "u_%s" % app})

    def unbind_app(self, name, form):
        app = first(form, "app-name")
        with LOCK:
            inst = INSTANCES.get(name)
            if inst is None:
                return self.send(404, "instance not found")
            if app:
                inst["binds"].pop(app, None)
        return self.send(200, "")

    def bind_unit(self, name, form):
        with LOCK:
            inst = INSTANCES.get(name)
            if inst is None:
                return self.send(404, "instance not found")
            if inst["pending"]:
                return self.send(412, "instance not ready")
            unit = first(form, "unit-host")
            if unit:
                inst["units"].add(unit)
        return self.send(201, {})

    def unbind_unit(self, name, form):
        with LOCK:
            inst = INSTANCES.get(name)
            if inst is None:
                return self.send(404, "instance not found")
            unit = first(form, "unit-host")
            if unit:
                inst["units"].discard(unit)
        return self.send(200, "")

    def status(self, name):
        with LOCK:
            inst = INSTANCES.get(name)
            if inst is None:
                return self.send(404, "instance not found")
            pending = inst["pending"]
        return self.send(202, "pending") if pending else self.send(204)

    def echo(self):
        r = self.req
        return self.send(
            200,
            {
                "method": self.command,
                "path": r["path"],
                "query": r["query"],
                "args": parse_qs(r["query"], keep_blank_values=True),
                "body": r["raw"].decode("utf-8", "replace"),
                "headers": r["headers"],
            },
        )

    # ---- /_test controls (no auth) ----------------------------------------

    def test_control(self, path, raw):
        m = self.command
        parts = [unquote(p) for p in path.strip("/").split("/")]
        if parts == ["_test", "calls"]:
            if m == "GET":
                with LOCK:
                    return self.send(200, list(CALLS))
            if m == "DELETE":
                with LOCK:
                    CALLS.clear()
                return self.send(200, {})
        if parts == ["_test", "fault"]:
            if m == "POST":
                try:
                    fault = Faults.parse(json.loads(raw or b"{}"))
                except Exception as e:  # noqa: BLE001
                    return self.send(400, "bad fault spec: %s" % e)
                FAULTS.add(fault)
                return self.send(200, fault)
            if m == "DELETE":
                FAULTS.clear()
                return self.send(200, {})
            if m == "GET":
                return self.send(200, FAULTS.listed())
        if len(parts) == 3 and parts[:2] == ["_test", "pending"] and m in ("POST", "DELETE"):
            with LOCK:
                inst = INSTANCES.get(parts[2])
                if inst is None:
                    return self.send(404, "instance not found")
                inst["pending"] = m == "POST"
            return self.send(200, {})
        if parts == ["_test", "instances"] and m == "GET":
            with LOCK:
                return self.send(200, {k: jsonable_instance(v) for k, v in INSTANCES.items()})
        if parts == ["_test", "reset"] and m == "POST":
            with LOCK:
                INSTANCES.clear()
                CALLS.clear()
            FAULTS.clear()
            return self.send(200, {})
        return self.send(404, "unknown test control")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--username", default="tsuru")
    ap.add_argument("--password", default="secret")
    args = ap.parse_args()
    CREDS["username"], CREDS["password"] = args.username, args.password

    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True

    def stop(*_):
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    sys.stdout.write("LISTENING %d\n" % server.server_address[1])
    sys.stdout.flush()
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
        sys.stderr.write("tsuru_service: stopped\n")
        sys.stderr.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
