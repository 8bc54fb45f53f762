"""Sends hostile input to every operation of tsuru-api.yaml and fails on any
5xx answer: huge strings, NUL, CR/LF, bidirectional overrides, markup, path
tricks, encoded NULs, huge lists. The run's schemathesis pass generates what
the schema allows; this one sends what an attacker would.

usage: hostile.py SPEC_YAML SCHEMATHESIS_TOML BASE_URL TOKEN
"""
import json
import sys
import tomllib
import urllib.error
import urllib.parse
import urllib.request

import yaml

METHODS = ("get", "post", "put", "delete", "patch")
HOSTILE = [
    "a" * 100_000,
    "x\x00y",
    "x\r\nInjected: 1",
    "evil\u202etxt",
    "<script>alert(1)</script>",
    "../../../etc/passwd",
    "%00",
    "a" * 10_000 + "@example.com",
    "99999999999999999999999",
    "-1",
]
# Operations the run never calls: they end the run's own session.
NEVER = {"UserDelete", "UserTokenDelete"}


def left_out_and_accepted_500(toml_path):
    with open(toml_path, "rb") as f:
        config = tomllib.load(f)
    left_out, accepted = set(NEVER), set()
    for entry in config.get("operations", []):
        ids = set(entry.get("include-operation-id", []))
        if entry.get("enabled") is False:
            left_out |= ids
        statuses = entry.get("checks", {}).get("not_a_server_error", {}).get("expected-statuses", [])
        if "500" in statuses:
            accepted |= ids
    return left_out, accepted


def fill(schema, definitions, value, depth=0):
    """A JSON value of `schema` with every string set to `value`."""
    if depth > 4 or not isinstance(schema, dict):
        return value
    if "$ref" in schema:
        return fill(definitions.get(schema["$ref"].split("/")[-1], {}), definitions, value, depth + 1)
    kind = schema.get("type")
    if kind == "object" or "properties" in schema:
        return {k: fill(v, definitions, value, depth + 1) for k, v in schema.get("properties", {}).items()}
    if kind == "array":
        return [fill(schema.get("items", {}), definitions, value, depth + 1)] * (300 if len(value) < 100 else 2)
    return value


def send(base, token, method, path, query, form, body):
    url = base + path
    if query:
        url += "?" + urllib.parse.urlencode(query)
    headers = {"Authorization": f"bearer {token}"}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    elif form:
        data = urllib.parse.urlencode(form).encode()
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    req = urllib.request.Request(url, data=data, method=method.upper(), headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.read(300)
    except urllib.error.HTTPError as e:
        return e.code, e.read(300)
    except urllib.error.URLError as e:
        # The server refused a body it would not read whole (a 100 KB
        # string past a limit) and closed before urllib had sent it all:
        # a refusal, not a server error. A crash shows at the healthcheck
        # after the run.
        if isinstance(e.reason, (BrokenPipeError, ConnectionResetError)):
            return 0, f"connection closed while the request was sent: {e.reason}".encode()
        raise
    except (BrokenPipeError, ConnectionResetError) as e:
        return 0, f"connection closed while the request was sent: {e}".encode()


def main(spec_path, toml_path, base, token):
    with open(spec_path) as f:
        spec = yaml.safe_load(f)
    left_out, accepted = left_out_and_accepted_500(toml_path)
    definitions = spec.get("definitions", {})
    failures, sent, closed = [], 0, 0
    for path, item in spec["paths"].items():
        for method, op in item.items():
            op_id = op.get("operationId") if isinstance(op, dict) else None
            if method not in METHODS or op_id in left_out:
                continue
            params = op.get("parameters", []) + item.get("parameters", [])
            for value in HOSTILE:
                real_path, query, form, body = path, {}, {}, None
                for p in params:
                    where, name = p.get("in"), p.get("name")
                    if where == "path":
                        real_path = real_path.replace("{" + name + "}", urllib.parse.quote(value[:2000], safe=""))
                    elif where == "query":
                        query[name] = value
                    elif where == "formData":
                        form[name] = value
                    elif where == "body":
                        body = fill(p.get("schema", {}), definitions, value)
                status, answer = send(base, token, method, real_path, query, form, body)
                sent += 1
                closed += status == 0
                if status >= 500 and not (status == 500 and op_id in accepted):
                    failures.append(f"{method.upper()} {path} ({op_id}) with {value[:40]!r}: {status} {answer[:120]!r}")
    status, _ = send(base, token, "get", "/healthcheck", {}, {}, None)
    if status != 200:
        failures.append(f"the server no longer answers /healthcheck: {status}")
    print(f"hostile inputs: {sent} requests, {len(failures)} server errors, {closed} closed while being sent")
    for f in failures:
        print("  " + f)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:5]))
