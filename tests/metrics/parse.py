#!/usr/bin/env python3
"""Parses a Prometheus text exposition (stdin) with the reference parser of
the official Python client (PyPI `prometheus_client`) and prints its
samples as JSON: [{"family", "type", "name", "labels", "value"}, ...].
A document the parser refuses exits 1 with the reason on stderr.

Usage: parse.py < exposition.txt
"""

import json
import math
import sys

from prometheus_client.parser import text_string_to_metric_families

try:
    out = []
    for family in text_string_to_metric_families(sys.stdin.read()):
        for s in family.samples:
            value = s.value
            if isinstance(value, float) and (math.isinf(value) or math.isnan(value)):
                value = str(value)
            out.append({"family": family.name, "type": family.type, "name": s.name, "labels": s.labels, "value": value})
except Exception as e:  # the parser's refusal, whatever its class
    sys.stderr.write("not a valid exposition: %s\n" % e)
    sys.exit(1)
json.dump(out, sys.stdout)
