#!/usr/bin/env python3
"""Rewrites one recorded export into what another build would have written, and re-chains it.

Used by record.sh only, for the two fixtures no build in this repository can write directly:

  schema-1   the folders event as schema 1 wrote it (the backup size as typed, "backup_size": "1GiB",
             instead of "backup_size_bytes"), which the current build upcasts on read;
  short-12   a passphrase step recorded by a build whose minimum was 12 characters: the recorded
             passphrase length becomes 12 and the recorded outcome stays "accepted", so that
             `regent replay --check` must find the divergence there.

Every record after the rewritten one gets a new previous hash and hash (SHA-256 of the previous hash
and the record's bytes, as store/src/record.rs computes them) and the header gets the new head, so the
result verifies like any export. Usage: rewrite.py MODE IN OUT [ARG]
"""

import hashlib
import json
import sys

PREFIX = '{"hash":"'
MIDDLE = '","record":'


def split_line(line):
    """The stored line is {"hash":"<64 hex>","record":<record bytes>}: return the record bytes."""
    if not (line.startswith(PREFIX) and line[len(PREFIX) + 64:].startswith(MIDDLE) and line.endswith("}")):
        raise SystemExit(f"not a stored record line: {line[:80]}")
    return line[len(PREFIX) + 64 + len(MIDDLE):-1]


def to_schema_1(record, typed_size):
    payload = record["payload"]
    if payload["command"]["command"] != "choose_folders":
        return False
    for part in (payload["command"], payload["outcome"]):
        if "backup_size_bytes" in part:
            del part["backup_size_bytes"]
            part["backup_size"] = typed_size
    record["schema"] = 1
    return True


def passphrase_length_12(record, _arg):
    payload = record["payload"]
    if payload["command"]["command"] != "set_passphrase" or payload["outcome"].get("outcome") != "accepted":
        return False
    payload["observed"]["passphrase"]["length"] = 12
    return True


MODES = {"schema-1": to_schema_1, "short-12": passphrase_length_12}


def main():
    if len(sys.argv) < 4 or sys.argv[1] not in MODES:
        raise SystemExit(__doc__)
    mode, source, target = sys.argv[1], sys.argv[2], sys.argv[3]
    arg = sys.argv[4] if len(sys.argv) > 4 else None
    with open(source, encoding="utf-8") as f:
        lines = f.read().splitlines()
    header = json.loads(lines[0])
    prev = "0" * 64
    rewritten = 0
    out = []
    for line in lines[1:]:
        body = split_line(line)
        record = json.loads(body)
        changed = rewritten == 0 and MODES[mode](record, arg)
        rewritten += changed
        if changed or record["prev_hash"] != prev:
            record["prev_hash"] = prev
            body = json.dumps(record, separators=(",", ":"), ensure_ascii=False)
        digest = hashlib.sha256(bytes.fromhex(prev) + body.encode("utf-8")).hexdigest()
        out.append(f"{PREFIX}{digest}{MIDDLE}{body}}}")
        prev = digest
    if rewritten != 1:
        raise SystemExit(f"{mode}: no record to rewrite in {source}")
    header["head"]["hash"] = prev
    with open(target, "w", encoding="utf-8") as f:
        f.write(json.dumps(header, separators=(",", ":")) + "\n")
        for line in out:
            f.write(line + "\n")


if __name__ == "__main__":
    main()
