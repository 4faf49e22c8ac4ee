#!/usr/bin/env python3
"""An S7 engineering client for the lab: python-snap7's client (a real
S7comm stack) running a list of operations on one connection and printing
one JSON line per operation: {"op": ..., "ok": true, "value": ...} or
{"op": ..., "ok": false, "error": "..."}. An operation the PLC (or the gate
in front of it) refuses is reported, not fatal; the exit status is 0 when
the connection was made, 2 when it was not.

Operations:
    read:DB:START:SIZE     read SIZE bytes of data block DB (hex value)
    write:DB:START:HEX     write bytes to data block DB
    mb-read:START:SIZE     read merkers (flags)
    cpu-state              python-snap7's get_cpu_state(): a read job with no
                           items, which is not valid S7comm (the gate answers
                           it "wrong frames"; the SZL read below is the real way)
    szl:ID:INDEX           read a system status list (userdata)
    get-clock, set-clock   read the PLC clock, set it to now (userdata)
    list-blocks            count the blocks per type (userdata)
    stop, hot-start        stop the CPU, start it again (jobs)
    download:DB:HEX        download data block DB (request download; the PLC
                           then pulls the block and ends the download)

    s7_client.py --host 127.0.0.1 --port 1102 read:1:0:4 write:1:0:beef stop
"""

import argparse
import datetime
import json
import sys

import snap7


def run(client, op):
    name, *args = op.split(":")
    if name == "read":
        db, start, size = map(int, args)
        return client.db_read(db, start, size).hex()
    if name == "write":
        db, start = int(args[0]), int(args[1])
        client.db_write(db, start, bytearray.fromhex(args[2]))
        return None
    if name == "mb-read":
        start, size = map(int, args)
        return client.mb_read(start, size).hex()
    if name == "cpu-state":
        return client.get_cpu_state()
    if name == "szl":
        szl = client.read_szl(int(args[0], 0), int(args[1], 0))
        return szl.Header.LengthDR
    if name == "get-clock":
        return client.get_plc_datetime().isoformat()
    if name == "set-clock":
        client.set_plc_datetime(datetime.datetime.now())
        return None
    if name == "list-blocks":
        return str(client.list_blocks())
    if name == "download":
        client.download(bytearray.fromhex(args[1]), int(args[0]))
        return None
    if name == "stop":
        client.plc_stop()
        return None
    if name == "hot-start":
        client.plc_hot_start()
        return None
    raise ValueError(f"unknown operation {op!r}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=102)
    ap.add_argument("ops", nargs="+")
    args = ap.parse_args()
    client = snap7.client.Client()
    try:
        client.connect(args.host, 0, 1, tcp_port=args.port)
    except Exception as e:  # noqa: BLE001 -- report any failure as JSON
        print(json.dumps({"op": "connect", "ok": False, "error": str(e)}), flush=True)
        sys.exit(2)
    print(json.dumps({"op": "connect", "ok": True, "value": client.get_pdu_length()}), flush=True)
    for op in args.ops:
        try:
            print(json.dumps({"op": op, "ok": True, "value": run(client, op)}), flush=True)
        except Exception as e:  # noqa: BLE001 -- a refusal is a result here
            print(json.dumps({"op": op, "ok": False, "error": str(e)}), flush=True)
            if not client.get_connected():
                sys.exit(3)
    client.disconnect()


if __name__ == "__main__":
    main()
