#!/usr/bin/env python3
"""An EtherNet/IP client for the lab, two real stacks: cpppo's client for
Logix tag reads and writes (unconnected, via Unconnected Send) and
pycomm3's CIPDriver for Identity object requests (connected and
unconnected). Prints one JSON line per operation: {"op": ..., "ok": true,
"value": ...} or {"op": ..., "ok": false, "status": N, "error": "..."}.
A refusal is a result; the exit status is 0 when the operations ran.

Operations:
    read:TAG[I-J]          read elements I..J of a tag (cpppo)
    write:TAG[I]=(INT)V    write a tag element (cpppo)
    identity               Get_Attributes_All of the Identity object, connected (pycomm3)
    name                   its product name (Get_Attribute_Single 7), unconnected (pycomm3)
    reset                  Reset of the Identity object, unconnected (pycomm3)
    reset-connected        the same Reset on a connection (Forward Open, then SendUnitData; pycomm3)

    enip_client.py --port 44818 'read:Speed[0-3]' 'write:Speed[1]=(INT)42' identity reset
"""

import argparse
import json
import sys

from cpppo.server.enip import client
from pycomm3 import ClassCode, CIPDriver, Services


def tag_op(host, port, spec):
    with client.connector(host=host, port=port, timeout=5.0) as conn:
        ops = list(client.parse_operations([spec]))
        for _, _, _, _, sts, val in conn.pipeline(operations=ops, depth=1, timeout=5.0):
            if sts not in (0, None) or val is None:
                return {"ok": False, "status": sts if isinstance(sts, int) else None, "error": f"CIP status {sts!r}"}
            return {"ok": True, "value": val if isinstance(val, list) else bool(val)}
    return {"ok": False, "error": "no reply"}


def identity_op(host, port, name):
    with CIPDriver(f"{host}:{port}") as d:
        if name == "identity":
            r = d.generic_message(service=Services.get_attributes_all, class_code=ClassCode.identity_object,
                                  instance=1, connected=True, name=name)
        elif name == "name":
            r = d.generic_message(service=Services.get_attribute_single, class_code=ClassCode.identity_object,
                                  instance=1, attribute=7, connected=False, name=name)
        else:
            r = d.generic_message(service=Services.reset, class_code=ClassCode.identity_object,
                                  instance=1, connected=name == "reset-connected", name=name)
    if r.error:
        return {"ok": False, "error": str(r.error)}
    value = r.value.hex() if isinstance(r.value, (bytes, bytearray)) else r.value
    return {"ok": True, "value": value}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=44818)
    ap.add_argument("ops", nargs="+")
    args = ap.parse_args()
    for op in args.ops:
        try:
            if op.startswith(("read:", "write:")):
                result = tag_op(args.host, args.port, op.split(":", 1)[1])
            elif op in ("identity", "name", "reset", "reset-connected"):
                result = identity_op(args.host, args.port, op)
            else:
                raise ValueError(f"unknown operation {op!r}")
        except Exception as e:  # noqa: BLE001 -- a failure is a result here
            result = {"ok": False, "error": f"{type(e).__name__}: {e}"}
        print(json.dumps({"op": op, **result}), flush=True)


if __name__ == "__main__":
    sys.exit(main())
