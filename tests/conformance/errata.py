"""Writes a copy of tsuru-api.yaml with errata.yaml applied.

usage: errata.py REFERENCE_YAML ERRATA_YAML OUTPUT_YAML
"""
import sys

import yaml

METHODS = ("get", "post", "put", "delete", "patch")


def main(reference, errata_path, output):
    with open(reference) as f:
        spec = yaml.safe_load(f)
    with open(errata_path) as f:
        errata = yaml.safe_load(f)

    operations = {}
    for _, item in spec["paths"].items():
        for method, op in item.items():
            if method in METHODS:
                operations[op.get("operationId")] = op
    for path in errata.get("nullable", []):
        node = spec["definitions"]
        for key in path.split("/"):
            if key not in node:
                sys.exit(f"errata: {path}: no {key!r} in the reference yaml")
            node = node[key]
        node["x-nullable"] = True

    for op_id, statuses in errata.get("nullable-responses", {}).items():
        if op_id not in operations:
            sys.exit(f"errata: no operation {op_id!r} in the reference yaml")
        for status in statuses:
            operations[op_id]["responses"][str(status)]["schema"]["x-nullable"] = True

    for op_id, statuses in errata.get("responses", {}).items():
        if op_id == "*with-body*":
            targets = [
                op for op in operations.values()
                if any(p.get("in") in ("body", "formData") for p in op.get("parameters", []))
            ]
        elif op_id == "*authenticated*":
            targets = [op for op in operations.values() if op.get("security")]
        elif op_id in operations:
            targets = [operations[op_id]]
        else:
            sys.exit(f"errata: no operation {op_id!r} in the reference yaml")
        for op in targets:
            for status, reason in statuses.items():
                op.setdefault("responses", {}).setdefault(str(status), {"description": f"erratum: {reason}"})

    with open(output, "w") as f:
        yaml.safe_dump(spec, f, sort_keys=False)


if __name__ == "__main__":
    main(*sys.argv[1:])
