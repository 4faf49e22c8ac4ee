#!/usr/bin/env python3
"""The lab's EtherNet/IP target: cpppo's EtherNet/IP CIP simulator (a real
encapsulation + CIP + Logix tag stack) with tags Speed (INT[10]) and
Setpoint (REAL[4]), logging as JSON lines (`--log`) every tag read and
write it performs ({"event": "write", "tag": "Speed", "index": 1, "value":
[42]}) and every request the Identity object gets ({"event": "identity",
"service": 5}), so tests can check what the target saw.

    enip_server.py --host 198.19.3.7 --port 44818 --log /run/.../enip.jsonl
"""

import argparse
import json
import sys
import threading

from cpppo.server.enip import device
from cpppo.server.enip.main import main as enip_main

LOG = None
LOCK = threading.Lock()


def note(**fields):
    with LOCK:
        LOG.write(json.dumps(fields) + "\n")
        LOG.flush()


def span(key):
    return key.start if isinstance(key, slice) else key


class LoggingAttribute(device.Attribute):
    def __getitem__(self, key):
        note(event="read", tag=self.name, index=span(key))
        return super().__getitem__(key)

    def __setitem__(self, key, value):
        note(event="write", tag=self.name, index=span(key), value=list(value) if isinstance(value, (list, tuple)) else value)
        super().__setitem__(key, value)


class LoggingIdentity(device.Identity):
    def request(self, data, addr=None):
        note(event="identity", service=int(data.get("service", -1)) if hasattr(data, "get") else -1)
        return super().request(data, addr=addr)


def main():
    global LOG
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=44818)
    ap.add_argument("--log", required=True, help="JSON lines of what the target did")
    args = ap.parse_args()
    LOG = open(args.log, "a", encoding="utf-8")
    note(event="listening", host=args.host, port=args.port)
    argv = ["--address", f"{args.host}:{args.port}", "Speed=INT[10]", "Setpoint=REAL[4]"]
    sys.exit(enip_main(argv=argv, attribute_class=LoggingAttribute, identity_class=LoggingIdentity))


if __name__ == "__main__":
    main()
