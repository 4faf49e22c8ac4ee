#!/usr/bin/env python3
"""Modbus/TCP command-line client (pymodbus sync client) for the demo and tests.

Usage:
    modbus_client.py --host H [--port 502] [--unit 1] [--timeout 3] [--json] CMD ...

Commands (addresses are 0-based protocol addresses):
    read-holding ADDR COUNT          fc 3
    read-input ADDR COUNT            fc 4
    read-coils ADDR COUNT            fc 1
    read-discrete ADDR COUNT         fc 2
    write-register ADDR VALUE        fc 6
    write-registers ADDR V1 [V2 ...] fc 16
    write-coil ADDR 0|1              fc 5
    poll [--interval-ms N] [--count N] [--kind holding|input|coils|discrete] ADDR COUNT
         repeated reads on one connection (reconnects after failures); prints a
         one-line summary (successes, failures, latency percentiles)
    script                           demo sequence: read holding 0..9, write 100=1234,
                                     read back 100, read coils 0..7

Global options may also be given after the command name.

Output: human-readable lines by default.  With --json, one JSON object per
operation on stdout:
    {"ok": true, "function": "read-holding", "unit": 1, "address": 0, "count": 10,
     "values": [0, 1, ...], "latency_ms": 0.84}
    {"ok": false, "function": "write-register", "unit": 1, "address": 100,
     "exception_code": 1, "exception": "illegal function", "error": "exception 01 (illegal function)",
     "latency_ms": 1.1}
    {"ok": false, "function": "read-holding", ..., "error": "timeout: no response ...",
     "latency_ms": 3001.2}
`poll` with --json prints one object per read plus a final summary object with
"function": "poll-summary".

Exit status:
    0  every operation succeeded
    1  a Modbus exception response was received (and no connection error)
    2  connection failure / timeout / no or undecodable response
    3  `script` only: the read-back value did not match what was written
   64  usage error
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import socket
import sys
import time

from pymodbus.client import ModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException
from pymodbus.pdu import ExceptionResponse

EXC_NAMES = {
    0x01: "illegal function",
    0x02: "illegal data address",
    0x03: "illegal data value",
    0x04: "server device failure",
    0x05: "acknowledge",
    0x06: "server device busy",
    0x07: "negative acknowledge",
    0x08: "memory parity error",
    0x0A: "gateway path unavailable",
    0x0B: "gateway target device failed to respond",
}

EXIT_OK, EXIT_EXCEPTION, EXIT_CONN, EXIT_MISMATCH, EXIT_USAGE = 0, 1, 2, 3, 64


def exc_text(code: int) -> str:
    return f"exception {code:02X} ({EXC_NAMES.get(code, 'unknown exception')})"


class Session:
    """One TCP connection plus result bookkeeping."""

    def __init__(self, args):
        self.args = args
        self.client = ModbusTcpClient(
            args.host, port=args.port, timeout=args.timeout, retries=0
        )
        self.worst = EXIT_OK

    # -- status -------------------------------------------------------------
    def _mark(self, code: int) -> None:
        # 2 (connection) dominates 1 (exception); 3 is set explicitly.
        if code == EXIT_CONN or (code == EXIT_EXCEPTION and self.worst == EXIT_OK):
            self.worst = code

    def connect(self) -> dict | None:
        """Connect if needed; return an error record on failure."""
        if self.client.connected:
            return None
        t0 = time.perf_counter()
        try:
            ok = self.client.connect()
        except Exception as exc:  # pylint: disable=broad-except
            ok, err = False, str(exc)
        else:
            err = "connect failed"
        latency = round((time.perf_counter() - t0) * 1000, 3)
        if ok:
            return None
        # pymodbus only says "False"; redo the connect to learn why.
        try:
            with socket.create_connection((self.args.host, self.args.port),
                                          timeout=self.args.timeout):
                pass
        except OSError as exc:
            err = str(exc) or exc.__class__.__name__
        return {
            "ok": False,
            "function": "connect",
            "host": self.args.host,
            "port": self.args.port,
            "error": f"connection failed to {self.args.host}:{self.args.port}: {err}",
            "latency_ms": latency,
        }

    # -- one operation --------------------------------------------------------
    def op(self, name: str, address: int, call, *, count: int | None = None,
           written=None, bits: bool = False, reads: bool = False,
           emit: bool = True) -> dict:
        rec: dict = {"ok": False, "function": name, "unit": self.args.unit, "address": address}
        if count is not None:
            rec["count"] = count
        if written is not None:
            rec["written"] = written
        conn_err = self.connect()
        if conn_err is not None:
            rec["error"] = conn_err["error"]
            rec["latency_ms"] = conn_err["latency_ms"]
            self._mark(EXIT_CONN)
            if emit:
                self.emit(rec)
            return rec
        t0 = time.perf_counter()
        try:
            resp = call()
            err = None
        except ConnectionException as exc:
            resp, err = None, f"connection error: {exc}"
        except ModbusException as exc:
            resp, err = None, f"modbus i/o error: {exc}"
        except OSError as exc:
            resp, err = None, f"socket error: {exc}"
        rec["latency_ms"] = round((time.perf_counter() - t0) * 1000, 3)
        if err is None and isinstance(resp, ExceptionResponse):
            rec["exception_code"] = resp.exception_code
            rec["exception"] = EXC_NAMES.get(resp.exception_code, "unknown exception")
            rec["error"] = exc_text(resp.exception_code)
            self._mark(EXIT_EXCEPTION)
        elif err is None and (resp is None or resp.isError()):
            text = str(resp) if resp is not None else "no response"
            if "No Response" in text or "no response" in text.lower():
                text = f"timeout: no response within {self.args.timeout}s ({text})"
            rec["error"] = text
            self._mark(EXIT_CONN)
            self.client.close()
        elif err is not None:
            rec["error"] = err
            self._mark(EXIT_CONN)
            self.client.close()
        else:
            rec["ok"] = True
            if reads and bits:
                rec["values"] = [int(b) for b in resp.bits][:count]
            elif reads:
                rec["values"] = list(resp.registers)
        if emit:
            self.emit(rec)
        return rec

    def emit(self, rec: dict) -> None:
        if self.args.json:
            print(json.dumps(rec), flush=True)
            return
        what = f"{rec['function']} unit={rec.get('unit', self.args.unit)} addr={rec.get('address')}"
        if "count" in rec:
            what += f" count={rec['count']}"
        if "written" in rec:
            what += f" value={rec['written']}"
        if rec["ok"]:
            vals = rec.get("values")
            body = "ok" if vals is None else f"ok {vals}"
        else:
            body = rec["error"]
        print(f"{what}: {body} ({rec['latency_ms']:.2f} ms)", flush=True)

    # -- commands -------------------------------------------------------------
    def read(self, kind: str, address: int, count: int, emit: bool = True) -> dict:
        unit = self.args.unit
        c = self.client
        if kind == "holding":
            return self.op("read-holding", address,
                           lambda: c.read_holding_registers(address, count, slave=unit),
                           count=count, reads=True, emit=emit)
        if kind == "input":
            return self.op("read-input", address,
                           lambda: c.read_input_registers(address, count, slave=unit),
                           count=count, reads=True, emit=emit)
        if kind == "coils":
            return self.op("read-coils", address,
                           lambda: c.read_coils(address, count, slave=unit),
                           count=count, bits=True, reads=True, emit=emit)
        if kind == "discrete":
            return self.op("read-discrete", address,
                           lambda: c.read_discrete_inputs(address, count, slave=unit),
                           count=count, bits=True, reads=True, emit=emit)
        raise ValueError(kind)

    def write_register(self, address: int, value: int) -> dict:
        return self.op("write-register", address,
                       lambda: self.client.write_register(address, value, slave=self.args.unit),
                       written=value)

    def write_registers(self, address: int, values: list[int]) -> dict:
        return self.op("write-registers", address,
                       lambda: self.client.write_registers(address, values, slave=self.args.unit),
                       count=len(values), written=values)

    def write_coil(self, address: int, value: int) -> dict:
        return self.op("write-coil", address,
                       lambda: self.client.write_coil(address, bool(value), slave=self.args.unit),
                       written=value)

    def close(self) -> None:
        try:
            self.client.close()
        except Exception:  # pylint: disable=broad-except
            pass


def percentile(sorted_vals: list[float], pct: float) -> float | None:
    """Nearest-rank percentile."""
    if not sorted_vals:
        return None
    rank = max(1, math.ceil(pct / 100.0 * len(sorted_vals)))
    return sorted_vals[min(rank, len(sorted_vals)) - 1]


def cmd_poll(s: Session, a) -> int:
    interval = a.interval_ms / 1000.0
    lat: list[float] = []
    ok = exc = err = 0
    start = time.monotonic()
    for i in range(a.count):
        if i:
            delay = start + i * interval - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        rec = s.read(a.kind, a.address, a.qty, emit=False)
        rec["seq"] = i + 1
        if a.json:
            print(json.dumps(rec), flush=True)
        elif not rec["ok"] and a.verbose_failures:
            s.emit(rec)
        if rec["ok"]:
            ok += 1
            lat.append(rec["latency_ms"])
        elif "exception_code" in rec:
            exc += 1
        else:
            err += 1
    elapsed = time.monotonic() - start
    lat.sort()
    stats = {
        "min": lat[0] if lat else None,
        "p50": percentile(lat, 50),
        "p90": percentile(lat, 90),
        "p99": percentile(lat, 99),
        "max": lat[-1] if lat else None,
        "mean": round(sum(lat) / len(lat), 3) if lat else None,
    }
    summary = {
        "ok": ok == a.count,
        "function": "poll-summary",
        "kind": a.kind,
        "unit": a.unit,
        "address": a.address,
        "count": a.qty,
        "requests": a.count,
        "successes": ok,
        "failures": exc + err,
        "exceptions": exc,
        "errors": err,
        "elapsed_s": round(elapsed, 3),
        "latency_ms": stats,
    }
    if a.json:
        print(json.dumps(summary), flush=True)
    else:
        def f(v):
            return "-" if v is None else f"{v:.2f}"
        print(
            f"poll {a.kind} addr={a.address} count={a.qty}: {a.count} requests, "
            f"{ok} ok, {exc + err} failed ({exc} exceptions, {err} errors) in {elapsed:.2f} s; "
            f"latency ms min={f(stats['min'])} p50={f(stats['p50'])} p90={f(stats['p90'])} "
            f"p99={f(stats['p99'])} max={f(stats['max'])}",
            flush=True,
        )
    return s.worst


def cmd_script(s: Session, a) -> int:
    steps_ok = True
    if not a.json:
        print(f"# demo script against {a.host}:{a.port} unit {a.unit}", flush=True)

    def step(title: str) -> None:
        if not a.json:
            print(f"## {title}", flush=True)

    step("read holding registers 0..9")
    r = s.read("holding", 0, 10)
    if not r["ok"] and s.worst == EXIT_CONN:
        return s.worst
    step("write holding register 100 = 1234")
    r = s.write_register(100, 1234)
    if not r["ok"] and s.worst == EXIT_CONN:
        return s.worst
    step("read back holding register 100")
    r = s.read("holding", 100, 1)
    if r["ok"]:
        match = r.get("values") == [1234]
        if a.json:
            print(json.dumps({"ok": match, "function": "check", "address": 100,
                              "expected": [1234], "values": r.get("values")}), flush=True)
        else:
            got = r.get("values")
            verdict = "== 1234, ok" if match else f"!= 1234 (got {got}), MISMATCH"
            print(f"check: register 100 {verdict}", flush=True)
        steps_ok = steps_ok and match
    elif s.worst == EXIT_CONN:
        return s.worst
    step("read coils 0..7")
    s.read("coils", 0, 8)
    if s.worst == EXIT_OK and not steps_ok:
        return EXIT_MISMATCH
    return s.worst


def u16(text: str) -> int:
    v = int(text, 0)
    if not 0 <= v <= 0xFFFF:
        raise argparse.ArgumentTypeError(f"{text}: must be 0..65535")
    return v


def qty(text: str) -> int:
    v = int(text, 0)
    if not 1 <= v <= 2000:
        raise argparse.ArgumentTypeError(f"{text}: count must be 1..2000")
    return v


def bit(text: str) -> int:
    if text not in ("0", "1"):
        raise argparse.ArgumentTypeError(f"{text}: must be 0 or 1")
    return int(text)


class Parser(argparse.ArgumentParser):
    def error(self, message):
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    # Common options, accepted before or after the command.  In the
    # sub-parsers the defaults are SUPPRESS so they do not clobber values
    # given before the command.
    def add_common(p, suppress: bool):
        d = (lambda v: argparse.SUPPRESS) if suppress else (lambda v: v)
        p.add_argument("--host", default=d(None), help="server address (required)")
        p.add_argument("--port", type=int, default=d(502), help="TCP port (default 502)")
        p.add_argument("--unit", type=int, default=d(1), help="unit id (default 1)")
        p.add_argument("--timeout", type=float, default=d(3.0),
                       help="connect/response timeout in seconds (default 3)")
        p.add_argument("--json", action="store_true", default=d(False),
                       help="one JSON object per operation")
        p.add_argument("--verbose", "-v", action="store_true", default=d(False),
                       help="pymodbus debug logging to stderr")

    common = Parser(add_help=False)
    add_common(common, suppress=True)

    p = Parser(
        prog="modbus_client.py",
        description="Modbus/TCP client for the Access Gate lab.",
        epilog="exit status: 0 ok, 1 Modbus exception, 2 connection failure/timeout, "
               "3 script read-back mismatch, 64 usage",
    )
    add_common(p, suppress=False)
    sub = p.add_subparsers(dest="cmd", metavar="CMD", parser_class=Parser)
    sub.required = True

    for name, hlp in (("read-holding", "fc 3"), ("read-input", "fc 4"),
                      ("read-coils", "fc 1"), ("read-discrete", "fc 2")):
        sp = sub.add_parser(name, parents=[common], help=hlp)
        sp.add_argument("address", type=u16, metavar="ADDR")
        sp.add_argument("qty", type=qty, metavar="COUNT")

    sp = sub.add_parser("write-register", parents=[common], help="fc 6")
    sp.add_argument("address", type=u16, metavar="ADDR")
    sp.add_argument("value", type=u16, metavar="VALUE")

    sp = sub.add_parser("write-registers", parents=[common], help="fc 16")
    sp.add_argument("address", type=u16, metavar="ADDR")
    sp.add_argument("values", type=u16, nargs="+", metavar="V")

    sp = sub.add_parser("write-coil", parents=[common], help="fc 5")
    sp.add_argument("address", type=u16, metavar="ADDR")
    sp.add_argument("value", type=bit, metavar="0|1")

    sp = sub.add_parser("poll", parents=[common], help="repeated reads with a summary")
    sp.add_argument("--interval-ms", type=float, default=100.0,
                    help="time between request starts (default 100)")
    sp.add_argument("--count", type=int, default=10, help="number of requests (default 10)")
    sp.add_argument("--kind", choices=("holding", "input", "coils", "discrete"),
                    default="holding", help="what to read (default holding)")
    sp.add_argument("--verbose-failures", action="store_true",
                    help="print each failed request (human mode)")
    sp.add_argument("address", type=u16, metavar="ADDR")
    sp.add_argument("qty", type=qty, metavar="COUNT")

    sub.add_parser("script", parents=[common], help="fixed demo sequence")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if not args.host:
        build_parser().error("--host is required")
    if args.cmd == "poll" and args.count < 1:
        build_parser().error("poll --count must be >= 1")
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.CRITICAL,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("pymodbus").setLevel(logging.DEBUG if args.verbose else logging.CRITICAL)

    s = Session(args)
    try:
        if args.cmd in ("read-holding", "read-input", "read-coils", "read-discrete"):
            s.read(args.cmd.split("-", 1)[1], args.address, args.qty)
        elif args.cmd == "write-register":
            s.write_register(args.address, args.value)
        elif args.cmd == "write-registers":
            if len(args.values) > 123:
                build_parser().error("write-registers: at most 123 values")
            s.write_registers(args.address, args.values)
        elif args.cmd == "write-coil":
            s.write_coil(args.address, args.value)
        elif args.cmd == "poll":
            return cmd_poll(s, args)
        elif args.cmd == "script":
            return cmd_script(s, args)
        return s.worst
    except KeyboardInterrupt:
        return EXIT_CONN
    finally:
        s.close()


if __name__ == "__main__":
    sys.exit(main())
