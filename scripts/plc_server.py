#!/usr/bin/env python3
"""Lab PLC: a real Modbus/TCP server (pymodbus, pinned in requirements.txt).

Used by scripts/lab inside the ``${P}plc`` namespace, and usable standalone:

    plc_server.py --host 198.19.3.7 --port 502 --log /run/.../plc-requests.jsonl

Data model (one device context, answers to ANY unit id, addresses are 0-based
protocol addresses, i.e. "zero mode": request address N is cell N):

    holding registers  0..9999   HR[i] = i
    input registers    0..9999   IR[i] = 1000 + i
    coils              0..9999   CO[i] = 1 if i is odd, else 0
    discrete inputs    0..9999   DI[i] = 1 if i is even, else 0

Anything outside 0..9999 is answered with exception 02 (illegal data address);
an unknown function code is answered with exception 01 (illegal function).
Writes change the in-memory state (not persisted across restarts).

Request log (``--log FILE``): one JSON object per received request, written and
flushed before the request is executed, so tests can prove what the PLC saw:

    {"ts": 1732870000.123456, "seq": 1, "event": "request",
     "peer": "198.19.3.1:40312", "transaction_id": 7, "unit_id": 1,
     "function_code": 3, "function": "read_holding_registers",
     "address": 0, "count": 10}

Field rules:
  * ``address``/``count`` for reads; writes add ``value`` (fc 5/6, coil value as
    0/1) or ``values`` (fc 15/16; coil values as 0/1, trimmed to ``count``).
  * fc 23 (read/write multiple) logs ``read_address``, ``read_count``,
    ``write_address``, ``values``.
  * fields a request type does not have are omitted; ``peer`` is null if
    unknown.
  * with ``--log-connections`` extra lines ``{"event": "connect"|"disconnect",
    "peer": ...}`` are written as well (off by default so that every line of the
    log is a request).

SIGTERM / SIGINT stop the server cleanly (exit status 0).  A failure to bind
exits with status 1.

Pipelining note: pymodbus is pinned to 3.6.9 because it is the last release
whose server answers every Modbus/TCP ADU when several arrive in one TCP
segment; 3.7+ only answer the first one until more data arrives.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
import time

from pymodbus import __version__ as PYMODBUS_VERSION
from pymodbus.datastore import (
    ModbusSequentialDataBlock,
    ModbusServerContext,
    ModbusSlaveContext,
)
from pymodbus.server.async_io import ModbusServerRequestHandler, ModbusTcpServer

SIZE = 10000

FUNCTION_NAMES = {
    1: "read_coils",
    2: "read_discrete_inputs",
    3: "read_holding_registers",
    4: "read_input_registers",
    5: "write_single_coil",
    6: "write_single_register",
    7: "read_exception_status",
    8: "diagnostics",
    11: "get_comm_event_counter",
    12: "get_comm_event_log",
    15: "write_multiple_coils",
    16: "write_multiple_registers",
    17: "report_server_id",
    20: "read_file_record",
    21: "write_file_record",
    22: "mask_write_register",
    23: "read_write_multiple_registers",
    24: "read_fifo_queue",
    43: "encapsulated_interface_transport",
}


def build_context() -> ModbusServerContext:
    """Deterministic data blocks, see module docstring."""
    device = ModbusSlaveContext(
        di=ModbusSequentialDataBlock(0, [1 if i % 2 == 0 else 0 for i in range(SIZE)]),
        co=ModbusSequentialDataBlock(0, [1 if i % 2 == 1 else 0 for i in range(SIZE)]),
        hr=ModbusSequentialDataBlock(0, list(range(SIZE))),
        ir=ModbusSequentialDataBlock(0, [1000 + i for i in range(SIZE)]),
        zero_mode=True,
    )
    # single=True: the one device context answers every unit id.
    return ModbusServerContext(slaves=device, single=True)


class RequestLog:
    """Append-only JSON-lines log, flushed per line."""

    def __init__(self, path: str | None):
        self.seq = 0
        self.fh = None
        if path:
            directory = os.path.dirname(os.path.abspath(path))
            os.makedirs(directory, exist_ok=True)
            self.fh = open(path, "a", encoding="utf-8", buffering=1)

    def write(self, record: dict) -> None:
        line = json.dumps(record, separators=(", ", ": "))
        if self.fh is not None:
            self.fh.write(line + "\n")
            self.fh.flush()

    def request(self, request, peer: str | None) -> None:
        self.seq += 1
        fc = int(getattr(request, "function_code", 0) or 0) & 0x7F
        rec: dict = {
            "ts": round(time.time(), 6),
            "seq": self.seq,
            "event": "request",
            "peer": peer,
            "transaction_id": getattr(request, "transaction_id", None),
            "unit_id": getattr(request, "slave_id", None),
            "function_code": fc,
            "function": FUNCTION_NAMES.get(fc, "unknown"),
        }
        if fc == 23:
            rec["read_address"] = getattr(request, "read_address", None)
            rec["read_count"] = getattr(request, "read_count", None)
            rec["write_address"] = getattr(request, "write_address", None)
            rec["values"] = [int(v) for v in getattr(request, "write_registers", []) or []]
        else:
            if hasattr(request, "address"):
                rec["address"] = request.address
            count = getattr(request, "count", None)
            if count is not None:
                rec["count"] = count
            if fc in (5, 6) and hasattr(request, "value"):
                rec["value"] = int(bool(request.value)) if fc == 5 else int(request.value)
            elif fc in (15, 16) and getattr(request, "values", None) is not None:
                vals = [int(v) for v in request.values]
                if count is not None:
                    vals = vals[:count]
                else:
                    rec["count"] = len(vals)
                rec["values"] = vals
            elif fc == 22:
                rec["and_mask"] = getattr(request, "and_mask", None)
                rec["or_mask"] = getattr(request, "or_mask", None)
        self.write(rec)

    def connection(self, event: str, peer: str | None) -> None:
        self.write({"ts": round(time.time(), 6), "event": event, "peer": peer})


def _peer(transport) -> str | None:
    try:
        info = transport.get_extra_info("peername") if transport else None
    except Exception:  # pylint: disable=broad-except
        info = None
    if not info:
        return None
    return f"{info[0]}:{info[1]}"


class LoggingHandler(ModbusServerRequestHandler):
    """Per-connection handler that logs every decoded request with its peer."""

    def __init__(self, owner):
        super().__init__(owner)
        self.peer: str | None = None

    def callback_connected(self) -> None:
        self.peer = _peer(self.transport)
        if self.server.reqlog_connections:
            self.server.reqlog.connection("connect", self.peer)
        logging.getLogger("plc").info("connect from %s", self.peer)
        super().callback_connected()

    def callback_disconnected(self, call_exc) -> None:
        if self.server.reqlog_connections:
            self.server.reqlog.connection("disconnect", self.peer)
        logging.getLogger("plc").info("disconnect %s", self.peer)
        super().callback_disconnected(call_exc)

    def execute(self, request, *addr):
        try:
            self.server.reqlog.request(request, self.peer)
        except Exception as exc:  # pylint: disable=broad-except
            logging.getLogger("plc").error("request log failed: %s", exc)
        super().execute(request, *addr)


class LoggingTcpServer(ModbusTcpServer):
    """ModbusTcpServer whose connections use LoggingHandler."""

    def __init__(self, *args, reqlog: RequestLog, log_connections: bool, **kwargs):
        super().__init__(*args, **kwargs)
        self.reqlog = reqlog
        self.reqlog_connections = log_connections

    def callback_new_connection(self):
        return LoggingHandler(self)


async def serve(args) -> int:
    reqlog = RequestLog(args.log)
    server = LoggingTcpServer(
        build_context(),
        address=(args.host, args.port),
        reqlog=reqlog,
        log_connections=args.log_connections,
    )
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    if not await server.listen():
        print(f"plc_server: cannot listen on {args.host}:{args.port}", file=sys.stderr)
        return 1
    print(
        f"plc_server: pymodbus {PYMODBUS_VERSION} listening on {args.host}:{args.port}"
        f" (log: {args.log or '-'})",
        file=sys.stderr,
        flush=True,
    )
    await stop.wait()
    print("plc_server: stopping", file=sys.stderr, flush=True)
    await server.shutdown()
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description="Lab Modbus/TCP PLC (pymodbus).")
    parser.add_argument("--host", default="0.0.0.0", help="address to bind (default 0.0.0.0)")
    parser.add_argument("--port", type=int, default=502, help="TCP port (default 502)")
    parser.add_argument("--log", help="JSON-lines request log file (appended, flushed per line)")
    parser.add_argument(
        "--log-connections", action="store_true", help="also log connect/disconnect events"
    )
    parser.add_argument("--verbose", "-v", action="store_true", help="debug logging to stderr")
    args = parser.parse_args()
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    if not args.verbose:
        # pymodbus logs every exception response (e.g. illegal address) at ERROR;
        # those are normal lab traffic, keep stderr quiet unless --verbose.
        logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    try:
        return asyncio.run(serve(args))
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
