#!/usr/bin/env python3
"""A DNP3 master for the lab: dnp3py's master (a real IEEE 1815 stack) at
address 1 talking to outstation 10, running a list of operations on one
connection and printing one JSON line per operation:
{"op": ..., "ok": true, "iin": [...], "value": ...} or {"op": ..., "ok": false,
"error": "..."}. "ok" means the outstation (or the gate in front of it)
answered without IIN2 error bits and, for a control, with every echoed
control status SUCCESS; the exit status is 0 when the connection was made,
2 when it was not.

Operations:
    poll               integrity poll (class 0-3 read): analog inputs 0-3
    operate:INDEX      direct operate, latch on, binary output INDEX
    select:INDEX       select then operate, latch on
    cold-restart       cold restart (function 0x0D)
    save-config        save configuration (function 0x13)
    delay-measure      delay measurement (time synchronisation, 0x17)

    dnp3_master.py --host 127.0.0.1 --port 20001 poll operate:0 cold-restart
"""

import argparse
import asyncio
import json
import sys

from dnp3.application.fragment import RequestFragment
from dnp3.application.header import ApplicationControl, RequestHeader
from dnp3.core.enums import CommandStatus, FunctionCode
from dnp3.core.flags import IIN
from dnp3.master import DefaultSOEHandler, Master, MasterConfig, MasterTcpRunner
from dnp3.master.commands import CommandBuilder

IIN2_ERRORS = IIN.NO_FUNC_CODE_SUPPORT | IIN.OBJECT_UNKNOWN | IIN.PARAMETER_ERROR
# Control objects (group, variation) -> size with the status byte last; qualifier -> (count width, index width).
CONTROL_SIZES = {(12, 1): 11, (41, 1): 5, (41, 2): 3, (41, 3): 5, (41, 4): 9}
QUALIFIERS = {0x07: (1, 0), 0x08: (2, 0), 0x17: (1, 1), 0x28: (2, 2)}


def keep_last_response(master):
    """Remembers the last response fragment the master took: dnp3py reports
    a response's IIN, not the statuses of the controls it echoes."""
    seen = {"last": b""}
    process = master.process_response

    def process_and_keep(data):
        seen["last"] = bytes(data)
        return process(data)

    master.process_response = process_and_keep
    return seen


def control_statuses(fragment):
    """The status byte of each control object a response fragment echoes
    (application control, function, IIN1, IIN2, then objects)."""
    out, at = [], 4
    while at + 3 <= len(fragment):
        group, variation, qualifier = fragment[at:at + 3]
        size, widths = CONTROL_SIZES.get((group, variation)), QUALIFIERS.get(qualifier)
        if size is None or widths is None:
            break
        width, prefix = widths
        count = int.from_bytes(fragment[at + 3:at + 3 + width], "little")
        at += 3 + width
        for _ in range(count):
            at += prefix + size
            if at > len(fragment):
                return out
            out.append(fragment[at - 1])
    return out


def raw(master, function):
    seq = master._state.get_next_request_sequence()  # noqa: SLF001 -- dnp3py has no public builder for these
    control = ApplicationControl(fir=True, fin=True, con=False, uns=False, seq=seq)
    return RequestFragment(header=RequestHeader(control=control, function=function))


def status_name(status):
    try:
        return CommandStatus(status).name
    except ValueError:
        return str(status)


async def run(runner, master, handler, seen, op):
    name, *args = op.split(":")
    if name == "poll":
        infos = await runner.integrity_poll()
        value = [handler.analog_inputs[i].value for i in sorted(handler.analog_inputs)]
    elif name in ("operate", "select"):
        builder = CommandBuilder().latch_on(int(args[0]))
        if name == "operate":
            infos = await runner.request(master.build_direct_operate(builder.build_direct_operate()))
        else:
            infos = await runner.request(master.build_select(builder.build_select()))
            if not infos[-1].iin & IIN2_ERRORS and not any(control_statuses(seen["last"])):
                infos = await runner.request(master.build_operate(builder.build_operate()))
        failed = [s for s in control_statuses(seen["last"]) if s != CommandStatus.SUCCESS]
        if failed and not infos[-1].iin & IIN2_ERRORS:
            names = [f.name for f in IIN if f & infos[-1].iin and f.name]
            error = "control status: " + ", ".join(status_name(s) for s in failed)
            return {"op": op, "ok": False, "iin": names, "error": error}
        value = None
    elif name == "cold-restart":
        infos, value = await runner.request(raw(master, FunctionCode.COLD_RESTART)), None
    elif name == "save-config":
        infos, value = await runner.request(raw(master, FunctionCode.SAVE_CONFIGURATION)), None
    elif name == "delay-measure":
        infos, value = await runner.request(master.build_delay_measure()), None
    else:
        raise ValueError(f"unknown operation {op!r}")
    iin = infos[-1].iin
    names = [f.name for f in IIN if f & iin and f.name]
    if iin & IIN2_ERRORS:
        return {"op": op, "ok": False, "iin": names, "error": "IIN2: " + ", ".join(n for n in names if IIN[n] & IIN2_ERRORS)}
    return {"op": op, "ok": True, "iin": names, "value": value}


async def main_async(args):
    handler = DefaultSOEHandler()
    config = MasterConfig(address=1, outstation_address=10, response_timeout=args.timeout,
                          startup_integrity_poll=False, enable_unsolicited_on_startup=False)
    master = Master(handler=handler, config=config)
    seen = keep_last_response(master)
    runner = MasterTcpRunner(master=master, host=args.host, port=args.port)
    try:
        await runner.open()
    except Exception as e:  # noqa: BLE001 -- report any failure as JSON
        print(json.dumps({"op": "connect", "ok": False, "error": str(e)}), flush=True)
        return 2
    print(json.dumps({"op": "connect", "ok": True}), flush=True)
    try:
        for op in args.ops:
            try:
                print(json.dumps(await run(runner, master, handler, seen, op)), flush=True)
            except Exception as e:  # noqa: BLE001 -- a failure is a result here
                print(json.dumps({"op": op, "ok": False, "error": f"{type(e).__name__}: {e}"}), flush=True)
    finally:
        await runner.close()
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=20000)
    ap.add_argument("--timeout", type=float, default=3.0)
    ap.add_argument("ops", nargs="+")
    sys.exit(asyncio.run(main_async(ap.parse_args())))


if __name__ == "__main__":
    main()
