#!/usr/bin/env python3
"""The lab's S7 PLC: python-snap7's server, a real S7comm stack (TPKT, COTP,
S7comm jobs and userdata), with data block DB1 (100 bytes, byte i = i) and
merkers, inputs and outputs of 64 bytes each.

Every S7 PDU the server receives is logged as one JSON line (`--log`):
{"event": "request", "rosctr": 1, "function": 4, "pdu_ref": 3}, and each
connection as {"event": "connect"}/{"event": "disconnect"}, so tests can
check what the PLC saw (a refused request must never reach it). SIGTERM or
SIGINT stops it.

    s7_server.py --host 198.19.3.7 --port 102 --log /run/.../s7.jsonl
"""

import argparse
import json
import logging
import signal
import sys
import threading

from snap7.server import Server
from snap7.type import SrvArea


class LoggingServer(Server):
    """snap7's server, logging each PDU before it handles it."""

    def __init__(self, log):
        super().__init__(log=False)
        self._log = log
        self._lock = threading.Lock()

    def note(self, **fields):
        with self._lock:
            self._log.write(json.dumps(fields) + "\n")
            self._log.flush()

    def _process_request(self, request_data, client_address):
        pdu = bytes(request_data)
        if len(pdu) >= 10 and pdu[0] == 0x32:
            rosctr = pdu[1]
            header = 12 if rosctr in (2, 3) else 10
            function = pdu[header] if len(pdu) > header else None
            if rosctr == 7 and len(pdu) >= header + 7:
                # userdata: 0x70 | group, as the gate's audit trail names it
                function = 0x70 | (pdu[header + 5] & 0x0F)
            self.note(event="request", rosctr=rosctr, function=function, pdu_ref=int.from_bytes(pdu[4:6], "big"))
        else:
            self.note(event="garbage", bytes=pdu.hex())
        return super()._process_request(request_data, client_address)

    def _handle_client(self, client_socket, address):
        self.note(event="connect", peer=address[0])
        try:
            super()._handle_client(client_socket, address)
        finally:
            self.note(event="disconnect", peer=address[0])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=102)
    ap.add_argument("--log", required=True, help="JSON lines of what the PLC received")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="s7_server: %(message)s")

    log = open(args.log, "a", encoding="utf-8")
    server = LoggingServer(log)
    areas = {
        (SrvArea.DB, 1): bytearray(range(100)),
        (SrvArea.MK, 0): bytearray(64),
        (SrvArea.PE, 0): bytearray(64),
        (SrvArea.PA, 0): bytearray(64),
    }
    for (area, index), data in areas.items():
        server.register_area(area, index, data)
    if server.start_to(args.host, args.port) != 0:
        sys.exit(f"s7_server: cannot listen on {args.host}:{args.port}")
    server.note(event="listening", host=args.host, port=args.port)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    server.stop()


if __name__ == "__main__":
    main()
