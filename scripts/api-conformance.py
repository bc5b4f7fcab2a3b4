#!/usr/bin/env python3
"""Runs schemathesis with all its checks against a running gateway's OpenAPI
document (every operation but the long-lived streams), prints the share of
generated requests the server accepted, and fails on any failure except the
known ones below, each of which is a rule the document cannot state.

usage: api-conformance.py GATEWAY_URL WORK_DIR [MAX_EXAMPLES] [SEED]
"""
import functools
import json
import subprocess
import sys

# (check code, operation): why schemathesis cannot know the request is bad.
KNOWN = {
    # A page token is opaque: only one the service issued is accepted, and a
    # generated string never is one.
    ("ST202", "GET /v1/namespaces"): "page_token is opaque",
    ("ST202", "GET /v1/namespaces/{namespace}/stamps"): "page_token is opaque",
    ("ST202", "GET /v1/namespaces/{namespace}/workflows"): "page_token is opaque",
    ("ST202", "GET /v1/workflowDefinitions"): "page_token is opaque",
    # `normalize: true` hashes text as Stamp does: bytes that are not UTF-8
    # cannot be normalised (a rule between two fields).
    ("ST202", "POST /v1/hash"): "normalize needs UTF-8 content",
    # retry.max_backoff_ms must not be below retry.initial_backoff_ms (a rule between two fields).
    ("ST202", "POST /v1/workflowDefinitions"): "max_backoff_ms >= initial_backoff_ms",
}


print = functools.partial(print, flush=True)  # before any exit message


# What the server answers for each known rule, to recognise them in the
# stateful phase (where the report names no operation).
KNOWN_MESSAGES = {
    "page_token is not a token this service issued": "page_token is opaque",
    "normalize needs text": "normalize needs UTF-8 content",
    "is below retry.initial_backoff_ms": "max_backoff_ms >= initial_backoff_ms",
}


def stateful_known(log, code):
    """The known rules behind every `code` failure of the stateful phase, or None."""
    section = log.split("Stateful tests", 1)[1] if "Stateful tests" in log else ""
    section = section.split("=====", 1)[0]
    causes = set()
    for block in section.split(f"- {code} ")[1:]:
        found = [why for text, why in KNOWN_MESSAGES.items() if text in block.split("\n- ", 1)[0]]
        if not found:
            return None
        causes.update(found)
    return ", ".join(sorted(causes)) if causes else None


def main():
    url, work = sys.argv[1], sys.argv[2]
    examples = sys.argv[3] if len(sys.argv) > 3 else "20"
    seed = sys.argv[4] if len(sys.argv) > 4 else "1"
    report, har = f"{work}/schemathesis.json", f"{work}/schemathesis.har"
    command = [
        "schemathesis", "run", f"{url}/openapi.json", "--checks", "all",
        "--max-examples", examples, "--seed", seed, "--exclude-path-regex", ":watch$",
        "--request-timeout", "10", "--report", "json,har",
        "--report-json-path", report, "--report-har-path", har,
    ]
    with open(f"{work}/schemathesis.log", "w") as log:
        run = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT)
    result = json.load(open(report))
    entries = json.load(open(har))["log"]["entries"]
    accepted = sum(1 for e in entries if 200 <= e["response"]["status"] < 300)
    statuses = {}
    for e in entries:
        statuses[e["response"]["status"]] = statuses.get(e["response"]["status"], 0) + 1
    print(f"schemathesis: {len(entries)} requests to {result['operations']['tested']} operations, "
          f"{accepted} accepted ({100 * accepted / max(len(entries), 1):.1f} %); "
          f"statuses {dict(sorted(statuses.items()))}")
    valid = [phase for op in result.get("valid_rates", {}).values() for phase in op.values()]
    meant, taken = sum(p["accepted"] + p["rejected"] for p in valid), sum(p["accepted"] for p in valid)
    if meant:
        print(f"  of {meant} requests generated to be valid, {taken} accepted ({100 * taken / meant:.1f} %)")
    if result["errors"]:
        sys.exit(f"schemathesis errors: {json.dumps(result['errors'])[:2000]}")
    unexpected = []
    log = open(f"{work}/schemathesis.log").read()
    for failure in result["failures"]:
        for operation in failure["operations"]:
            why = KNOWN.get((failure["code"], operation))
            if why is None and operation == "Stateful tests":
                why = stateful_known(log, failure["code"])
            if why:
                print(f"  known: {failure['code']} {operation}: {why}")
            else:
                unexpected.append(f"{failure['code']} {failure['title']}: {operation}")
    if any(e["response"]["status"] >= 500 for e in entries):
        unexpected.append("a server error (5xx)")
    if unexpected:
        sys.exit("schemathesis found:\n  " + "\n  ".join(unexpected) + f"\n(details: {work}/schemathesis.log)")
    if run.returncode not in (0, 1):
        sys.exit(f"schemathesis exited with {run.returncode} (see {work}/schemathesis.log)")


main()
