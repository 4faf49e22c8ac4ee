#!/usr/bin/env python3
"""The lab's DNP3 outstation: dnp3py's outstation (a real IEEE 1815 stack:
link layer with CRCs, transport, application) at DNP3 address 10, with
binary inputs 0-3, analog inputs 0-3 (0, 100, 200, 300) and binary outputs
0-3 that accept latch on/off.

Every application fragment it receives is logged as one JSON line
(`--log`): {"event": "request", "function": 1, "seq": 3}, and each control it
executes as {"event": "operate", "index": 0, "code": ...}, so tests can check
what the outstation saw (a refused request must never reach it). SIGTERM
or SIGINT stops it.

    dnp3_outstation.py --host 198.19.3.7 --port 20000 --log /run/.../dnp3.jsonl
"""

import argparse
import asyncio
import json
import logging
import signal
import sys

from dnp3.database import AnalogInputConfig, BinaryInputConfig, BinaryOutputConfig, Database
from dnp3.outstation import Outstation, OutstationConfig, OutstationTcpRunner
from dnp3.outstation.handler import CommandResult, DefaultCommandHandler

LOG = None


def note(**fields):
    LOG.write(json.dumps(fields) + "\n")
    LOG.flush()


class Outputs(DefaultCommandHandler):
    """Binary outputs 0-3: every control is executed and logged."""

    def _run(self, kind, index, code):
        if index > 3:
            return CommandResult.not_supported(f"no binary output {index}")
        note(event=kind, index=index, code=str(code))
        return CommandResult.success()

    def select_binary_output(self, index, code, count, on_time, off_time):
        return CommandResult.success() if index <= 3 else CommandResult.not_supported("no such output")

    def operate_binary_output(self, index, code, count, on_time, off_time, select_sequence):
        return self._run("operate", index, code)

    def direct_operate_binary_output(self, index, code, count, on_time, off_time):
        return self._run("operate", index, code)


class LoggingOutstation(Outstation):
    """dnp3py's outstation, logging each request fragment before it acts."""

    def process_request(self, data, *, peer=None):
        data = bytes(data)
        if len(data) >= 2:
            note(event="request", function=data[1], seq=data[0] & 0x0F)
        return super().process_request(data, peer=peer)


async def serve(args):
    db = Database()
    for i in range(4):
        db.add_binary_input(i, BinaryInputConfig())
        db.add_analog_input(i, AnalogInputConfig())
        db.add_binary_output(i, BinaryOutputConfig())
        db.update_analog_input(i, value=100 * i)
        db.update_binary_input(i, value=bool(i % 2))
    outstation = LoggingOutstation(database=db, config=OutstationConfig(address=10), handler=Outputs())
    runner = OutstationTcpRunner(outstation=outstation, host=args.host, port=args.port)
    task = asyncio.create_task(runner.run())
    note(event="listening", host=args.host, port=args.port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    done, _ = await asyncio.wait({task, asyncio.create_task(stop.wait())}, return_when=asyncio.FIRST_COMPLETED)
    if task in done and task.exception():
        sys.exit(f"dnp3_outstation: {task.exception()}")
    await runner.stop()


def main():
    global LOG
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=20000)
    ap.add_argument("--log", required=True, help="JSON lines of what the outstation received")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="dnp3_outstation: %(message)s")
    LOG = open(args.log, "a", encoding="utf-8")
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()
