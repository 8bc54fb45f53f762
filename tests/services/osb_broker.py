#!/usr/bin/env python3
"""An Open Service Broker (openbrokerapi) that provisions real PostgreSQL
databases, for torii's integration tests.

Usage:
  osb_broker.py --port 0 --username U --password P \
      --pg postgres://torii@127.0.0.1:54329/postgres

Prints exactly one line "LISTENING <port>" to stdout once it accepts
connections; logs requests to stderr; exits 0 on SIGTERM/SIGINT.
Unauthenticated test controls live under /_test/ (see README.md).
"""

import argparse
import json
import logging
import os
import re
import hashlib
import secrets
import signal
import sys
import threading
import time
from urllib.parse import quote

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from flask import Flask, Response, g, jsonify, request
from werkzeug.serving import WSGIRequestHandler, make_server

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from faults import Faults  # noqa: E402

import openbrokerapi.settings
from openbrokerapi import errors
from openbrokerapi.api import get_blueprint
from openbrokerapi.auth import BrokerCredentials
from openbrokerapi.catalog import Schemas, ServicePlan
from openbrokerapi.service_broker import (
    BindDetails,
    Binding,
    BindState,
    DeprovisionDetails,
    DeprovisionServiceSpec,
    LastOperation,
    OperationState,
    ProvisionDetails,
    ProvisionedServiceSpec,
    ProvisionState,
    Service,
    ServiceBroker,
    UnbindDetails,
    UnbindSpec,
    UpdateDetails,
    UpdateServiceSpec,
)

log = logging.getLogger("osb_broker")

SERVICE_ID = "pg-service-id"
PLAN_SYNC = "pg-sync"
PLAN_ASYNC = "pg-async"

# JSON schema of the async plan's create parameters. "comment" becomes
# COMMENT ON DATABASE; anything else is refused (400 InvalidParameters).
ASYNC_CREATE_SCHEMA = {
    "$schema": "http://json-schema.org/draft-04/schema#",
    "type": "object",
    "properties": {
        "comment": {"type": "string", "description": "set as the database comment"},
    },
    "additionalProperties": False,
}


class PgBroker(ServiceBroker):
    def __init__(self, pg_url, async_delay, db_prefix, role_prefix):
        self.pg_url = pg_url
        info = conninfo_to_dict(pg_url)
        self.pg_host = info.get("host") or "127.0.0.1"
        if self.pg_host.startswith("/"):
            self.pg_host = "127.0.0.1"
        self.pg_port = int(info.get("port") or 5432)
        self.async_delay = async_delay
        self.db_prefix = db_prefix
        self.role_prefix = role_prefix
        self.lock = threading.RLock()
        self.instances = {}  # instance_id -> dict
        self.bindings = {}  # binding_id -> dict
        self.fail_next_async = None  # message or None
        with self.connect() as conn:
            self.superuser = conn.execute("SELECT current_user").fetchone()[0]

    # ---- PostgreSQL helpers ------------------------------------------------

    def connect(self, dbname=None):
        url = make_conninfo(self.pg_url, dbname=dbname) if dbname else self.pg_url
        return psycopg.connect(url, autocommit=True, connect_timeout=10)

    def db_exists(self, conn, db):
        return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (db,)).fetchone() is not None

    def db_name(self, instance_id):
        name = (self.db_prefix + instance_id.replace("-", "_")).lower()
        if len(name.encode()) > 63:
            raise errors.ErrBadRequest("database name %r is longer than 63 bytes" % name)
        return name

    def role_name(self, binding_id):
        hexpart = binding_id.lower().replace("-", "")
        if not re.fullmatch(r"[0-9a-f]{16,}", hexpart):
            hexpart = hashlib.sha256(binding_id.encode()).hexdigest()
        role = self.role_prefix + hexpart[:16]
        if any(b["role"] == role for b in self.bindings.values()):
            role = self.role_prefix + hashlib.sha256(binding_id.encode()).hexdigest()[:16]
        return role

    def create_database(self, db, comment=None):
        with self.connect() as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(db)))
            if comment is not None:
                conn.execute(
                    sql.SQL("COMMENT ON DATABASE {} IS {}").format(sql.Identifier(db), sql.Literal(comment))
                )

    def drop_role(self, role, db):
        """Revoke a binding: kick its sessions, give its objects to the
        superuser, drop its privileges and the role itself."""
        su = sql.Identifier(self.superuser)
        r = sql.Identifier(role)
        with self.connect() as conn:
            if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone() is None:
                return
            conn.execute(sql.SQL("ALTER ROLE {} NOLOGIN").format(r))
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (role,))
            if db and self.db_exists(conn, db):
                owner = conn.execute(
                    "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s", (db,)
                ).fetchone()[0]
                if owner == role:
                    conn.execute(sql.SQL("ALTER DATABASE {} OWNER TO {}").format(sql.Identifier(db), su))
                with self.connect(db) as dconn:
                    dconn.execute(sql.SQL("REASSIGN OWNED BY {} TO {}").format(r, su))
                    dconn.execute(sql.SQL("DROP OWNED BY {}").format(r))
            conn.execute(sql.SQL("REASSIGN OWNED BY {} TO {}").format(r, su))
            conn.execute(sql.SQL("DROP OWNED BY {}").format(r))
            conn.execute(sql.SQL("DROP ROLE {}").format(r))

    # ---- catalog -------------------------------------------------------------

    def catalog(self):
        return Service(
            id=SERVICE_ID,
            name="postgresql",
            description="PostgreSQL databases",
            bindable=True,
            plan_updateable=True,
            plans=[
                ServicePlan(id=PLAN_SYNC, name="sync", description="created at once"),
                ServicePlan(
                    id=PLAN_ASYNC,
                    name="async",
                    description="created in the background",
                    schemas=Schemas(service_instance={"create": {"parameters": ASYNC_CREATE_SCHEMA}}),
                ),
            ],
        )

    # ---- instances -----------------------------------------------------------

    @staticmethod
    def check_params(plan_id, params):
        if plan_id != PLAN_ASYNC or params is None:
            return
        if not isinstance(params, dict):
            raise errors.ErrInvalidParameters("parameters must be an object")
        for key, value in params.items():
            spec = ASYNC_CREATE_SCHEMA["properties"].get(key)
            if spec is None:
                raise errors.ErrInvalidParameters("unknown parameter %r" % key)
            if spec["type"] == "string" and not isinstance(value, str):
                raise errors.ErrInvalidParameters("parameter %r must be a string" % key)

    def provision(self, instance_id, details: ProvisionDetails, async_allowed, **kwargs):
        is_async = details.plan_id == PLAN_ASYNC
        if is_async and not async_allowed:
            raise errors.ErrAsyncRequired()
        self.check_params(details.plan_id, details.parameters)
        db = self.db_name(instance_id)
        with self.lock:
            if instance_id in self.instances:
                raise errors.ErrInstanceAlreadyExists()
            inst = {
                "instance_id": instance_id,
                "db": db,
                "service_id": details.service_id,
                "plan_id": details.plan_id,
                "parameters": details.parameters,
                "context": details.context,
                "state": OperationState.IN_PROGRESS.value,
                "description": "creating database %s" % db,
            }
            self.instances[instance_id] = inst
        try:
            with self.connect() as conn:
                exists = self.db_exists(conn, db)
        except Exception:
            with self.lock:
                self.instances.pop(instance_id, None)
            raise
        if exists:
            with self.lock:
                self.instances.pop(instance_id, None)
            raise errors.ErrInstanceAlreadyExists()
        comment = (details.parameters or {}).get("comment")

        if not is_async:
            try:
                self.create_database(db, comment)
            except Exception:
                with self.lock:
                    self.instances.pop(instance_id, None)
                raise
            with self.lock:
                inst["state"] = OperationState.SUCCEEDED.value
                inst["description"] = "database %s created" % db
            log.info("provisioned %s (sync) -> %s", instance_id, db)
            return ProvisionedServiceSpec(state=ProvisionState.SUCCESSFUL_CREATED)

        with self.lock:
            fail, self.fail_next_async = self.fail_next_async, None

        def work():
            time.sleep(self.async_delay)
            try:
                if fail is not None:
                    raise RuntimeError(fail)
                self.create_database(db, comment)
            except Exception as e:  # noqa: BLE001
                log.warning("async provision of %s failed: %s", instance_id, e)
                with self.lock:
                    inst["state"] = OperationState.FAILED.value
                    inst["description"] = str(e).strip()
                return
            with self.lock:
                inst["state"] = OperationState.SUCCEEDED.value
                inst["description"] = "database %s created" % db
            log.info("provisioned %s (async) -> %s", instance_id, db)

        threading.Thread(target=work, name="provision-" + instance_id, daemon=True).start()
        return ProvisionedServiceSpec(state=ProvisionState.IS_ASYNC, operation="provision")

    def last_operation(self, instance_id, operation_data, service_id=None, plan_id=None, **kwargs):
        with self.lock:
            inst = self.instances.get(instance_id)
            if inst is None:
                raise errors.ErrInstanceDoesNotExist()
            return LastOperation(OperationState(inst["state"]), inst["description"])

    def update(self, instance_id, details: UpdateDetails, async_allowed, **kwargs):
        with self.lock:
            inst = self.instances.get(instance_id)
            if inst is None:
                raise errors.ErrBadRequest("Instance does not exist")
            if inst["state"] == OperationState.IN_PROGRESS.value:
                raise errors.ErrConcurrentInstanceAccess()
            if details.plan_id:
                inst["plan_id"] = details.plan_id
            if details.parameters is not None:
                inst["parameters"] = details.parameters
        log.info("updated %s: plan %s", instance_id, details.plan_id)
        return UpdateServiceSpec(is_async=False)

    def deprovision(self, instance_id, details: DeprovisionDetails, async_allowed, **kwargs):
        with self.lock:
            inst = self.instances.get(instance_id)
            if inst is None:
                raise errors.ErrInstanceDoesNotExist()
            if inst["state"] == OperationState.IN_PROGRESS.value:
                raise errors.ErrConcurrentInstanceAccess()
            roles = [b["role"] for b in self.bindings.values() if b["instance_id"] == instance_id]
        db = inst["db"]
        with self.connect() as conn:
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (db,))
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db)))
        # Bindings the platform did not unbind first: their roles go too.
        for role in roles:
            self.drop_role(role, None)
        with self.lock:
            self.instances.pop(instance_id, None)
            for bid in [k for k, b in self.bindings.items() if b["instance_id"] == instance_id]:
                del self.bindings[bid]
        log.info("deprovisioned %s (dropped %s)", instance_id, db)
        return DeprovisionServiceSpec(is_async=False)

    # ---- bindings ------------------------------------------------------------

    def bind(self, instance_id, binding_id, details: BindDetails, async_allowed, **kwargs):
        with self.lock:
            inst = self.instances.get(instance_id)
            if inst is None:
                raise errors.ErrBadRequest("Instance does not exist")
            if inst["state"] == OperationState.IN_PROGRESS.value:
                raise errors.ErrConcurrentInstanceAccess()
            if inst["state"] == OperationState.FAILED.value:
                raise errors.ErrBadRequest("Instance is in a failed state: %s" % inst["description"])
            existing = self.bindings.get(binding_id)
            if existing is not None:
                if existing["credentials"] is None:
                    raise errors.ErrConcurrentInstanceAccess()
                if existing["instance_id"] == instance_id:
                    return Binding(state=BindState.IDENTICAL_ALREADY_EXISTS, credentials=existing["credentials"])
                raise errors.ErrBindingAlreadyExists()
            role = self.role_name(binding_id)
            password = secrets.token_hex(16)
            db = inst["db"]
            # reserve the binding id (and role name) while we talk to PostgreSQL
            self.bindings[binding_id] = {"instance_id": instance_id, "role": role, "credentials": None}
        r = sql.Identifier(role)
        try:
            with self.connect() as conn:
                conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(r, sql.Literal(password)))
                conn.execute(sql.SQL("GRANT ALL PRIVILEGES ON DATABASE {} TO {}").format(sql.Identifier(db), r))
            with self.connect(db) as dconn:
                dconn.execute(sql.SQL("GRANT ALL ON SCHEMA public TO {}").format(r))
        except Exception:
            with self.lock:
                self.bindings.pop(binding_id, None)
            try:
                self.drop_role(role, db)
            except Exception as e:  # noqa: BLE001
                log.warning("cleanup of role %s failed: %s", role, e)
            raise
        creds = {
            "host": self.pg_host,
            "port": self.pg_port,
            "database": db,
            "username": role,
            "password": password,
            "uri": "postgres://%s:%s@%s:%d/%s"
            % (quote(role, safe=""), quote(password, safe=""), self.pg_host, self.pg_port, quote(db, safe="")),
        }
        with self.lock:
            self.bindings[binding_id]["credentials"] = creds
            self.bindings[binding_id]["app_guid"] = details.app_guid
        log.info("bound %s to %s as role %s", binding_id, instance_id, role)
        return Binding(state=BindState.SUCCESSFUL_BOUND, credentials=creds)

    def unbind(self, instance_id, binding_id, details: UnbindDetails, async_allowed, **kwargs):
        with self.lock:
            b = self.bindings.get(binding_id)
            if b is None or b["instance_id"] != instance_id or b["credentials"] is None:
                raise errors.ErrBindingDoesNotExist()
            inst = self.instances.get(instance_id)
            db = inst["db"] if inst else None
        self.drop_role(b["role"], db)
        with self.lock:
            self.bindings.pop(binding_id, None)
        log.info("unbound %s (dropped role %s)", binding_id, b["role"])
        return UnbindSpec(is_async=False)


class PlainLogHandler(WSGIRequestHandler):
    """werkzeug's request log without ANSI colours."""

    def log_request(self, code="-", size="-"):
        self.log("info", '"%s" %s %s', self.requestline, getattr(code, "value", code), size)


# ---- test controls, request log, faults -----------------------------------

REQUESTS = []
FAULTS = Faults()
REQ_LOCK = threading.Lock()


def make_app(broker, username, password):
    app = Flask("osb_broker")

    @app.before_request
    def record_and_fault():
        if request.path.startswith("/_test"):
            return None
        body = request.get_json(silent=True)
        rec = {
            "method": request.method,
            "path": request.path,
            "query": request.args.to_dict(flat=True),
            "raw_query": request.query_string.decode("utf-8", "replace"),
            "headers": {k.lower(): v for k, v in request.headers.items()},
            "body": body,
            "raw_body": request.get_data(as_text=True) if body is None else None,
            "status": None,
        }
        with REQ_LOCK:
            REQUESTS.append(rec)
            g.record = rec
        fault = FAULTS.take(request.method, request.path)
        if fault:
            if fault["delay_ms"]:
                time.sleep(fault["delay_ms"] / 1000.0)
            if fault["status"]:
                b = fault["body"]
                if isinstance(b, (dict, list)):
                    return Response(json.dumps(b), status=fault["status"], mimetype="application/json")
                return Response(str(b), status=fault["status"], mimetype="text/plain")
        return None

    @app.after_request
    def record_status(resp):
        rec = g.get("record")
        if rec is not None:
            rec["status"] = resp.status_code
        return resp

    app.register_blueprint(
        get_blueprint(broker, BrokerCredentials(username, password), logging.getLogger("openbrokerapi"))
    )

    @app.post("/_test/fail-next-async")
    def fail_next_async():
        spec = request.get_json(silent=True) or {}
        with broker.lock:
            broker.fail_next_async = spec.get("message", "disk full")
        return jsonify({"message": broker.fail_next_async})

    @app.delete("/_test/fail-next-async")
    def clear_fail_next_async():
        with broker.lock:
            broker.fail_next_async = None
        return jsonify({})

    @app.get("/_test/requests")
    def get_requests():
        with REQ_LOCK:
            return jsonify(list(REQUESTS))

    @app.delete("/_test/requests")
    def clear_requests():
        with REQ_LOCK:
            REQUESTS.clear()
        return jsonify({})

    @app.get("/_test/state")
    def get_state():
        with broker.lock:
            return jsonify(
                {
                    "instances": broker.instances,
                    "bindings": broker.bindings,
                    "fail_next_async": broker.fail_next_async,
                    "superuser": broker.superuser,
                }
            )

    @app.post("/_test/fault")
    def add_fault():
        try:
            fault = Faults.parse(request.get_json(force=True))
        except Exception as e:  # noqa: BLE001
            return Response("bad fault spec: %s" % e, status=400, mimetype="text/plain")
        FAULTS.add(fault)
        return jsonify(fault)

    @app.delete("/_test/fault")
    def clear_faults():
        FAULTS.clear()
        return jsonify({})

    return app


def main():
    ap = argparse.ArgumentParser(description="Open Service Broker for PostgreSQL databases (test double)")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--username", default="broker")
    ap.add_argument("--password", default="secret")
    ap.add_argument("--pg", required=True, help="libpq URL of a PostgreSQL superuser")
    ap.add_argument("--async-delay", type=float, default=1.5, help="seconds the async plan takes (default 1.5)")
    ap.add_argument("--db-prefix", default="db_", help="database name prefix (default db_)")
    ap.add_argument("--role-prefix", default="u_", help="binding role name prefix (default u_)")
    ap.add_argument(
        "--no-guid-check",
        action="store_true",
        help="accept provision requests without organization_guid/space_guid",
    )
    args = ap.parse_args()

    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO, format="osb_broker: %(levelname)s %(name)s: %(message)s"
    )
    if args.no_guid_check:
        openbrokerapi.settings.DISABLE_SPACE_ORG_GUID_CHECK = True

    broker = PgBroker(args.pg, args.async_delay, args.db_prefix, args.role_prefix)
    app = make_app(broker, args.username, args.password)
    server = make_server("127.0.0.1", args.port, app, threaded=True, request_handler=PlainLogHandler)
    server.daemon_threads = True

    def stop(*_):
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    sys.stdout.write("LISTENING %d\n" % server.server_port)
    sys.stdout.flush()
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
        log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
