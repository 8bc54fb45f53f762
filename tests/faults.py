"""Injected faults for torii's Python test providers (stdlib only): a test
posts a spec, and the next matching requests get the status, body and
delay it names instead of the provider's answer.

A spec is {"route": "<METHOD or *> <path prefix>", "status": 500,
"body": "", "delay_ms": 0, "times": 1, "request_contains": ""}; times -1
means every time, a status of 0 only delays, and `request_contains`
(optional) matches only requests whose body holds that text (query APIs
such as EC2's name their action in the body).
"""

import threading


class Faults:
    def __init__(self):
        self._lock = threading.Lock()
        self._faults = []

    @staticmethod
    def parse(spec):
        """The fault a spec (a dict) names; raises on a bad spec."""
        method, _, prefix = spec["route"].strip().partition(" ")
        return {
            "method": method.upper(),
            "prefix": prefix.strip() or "/",
            "status": int(spec.get("status", 500)),
            "body": spec.get("body", ""),
            "delay_ms": int(spec.get("delay_ms", 0)),
            "times": int(spec.get("times", 1)),
            "request_contains": spec.get("request_contains", ""),
        }

    def add(self, fault):
        with self._lock:
            self._faults.append(fault)

    def clear(self):
        with self._lock:
            self._faults.clear()

    def listed(self):
        with self._lock:
            return [dict(f) for f in self._faults]

    def take(self, method, path, body=b""):
        """The first fault matching the request (a copy), used up once; None when none does."""
        with self._lock:
            found = None
            for f in self._faults:
                wanted = f.get("request_contains", "")
                if wanted and wanted.encode() not in body:
                    continue
                if f["times"] != 0 and f["method"] in ("*", method) and path.startswith(f["prefix"]):
                    if f["times"] > 0:
                        f["times"] -= 1
                    found = dict(f)
                    break
            self._faults[:] = [f for f in self._faults if f["times"] != 0]
            return found
