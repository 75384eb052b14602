#!/usr/bin/env python3
"""Writes the seed inputs of the runtime fuzz targets into corpus/<target>/seed-*.

control: byte streams of length-prefixed JSON frames (4-byte big-endian length + JSON).
agent_reply: one byte picking the RPC, then a ttrpc `Response` {status = 1, payload = 2}.
"""

import json
import os
import struct


def frame(obj):
    body = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
    return struct.pack(">I", len(body)) + body


CONTROL = {
    "start": frame({"op": "start"}),
    "kill": frame({"op": "kill", "signal": 9, "all": True}),
    "exec": frame({"op": "exec", "process_json": json.dumps({"args": ["sh"], "terminal": True})}),
    "ps": frame({"op": "ps"}),
    "stats": frame({"op": "stats"}),
    "pause": frame({"op": "pause"}),
    "resume": frame({"op": "resume"}),
    "update": frame({"op": "update", "resources_json": '{"pids":{"limit":10}}'}),
    "oom": frame({"op": "oom", "after": 3}),
    "oom-null": frame({"op": "oom", "after": None}),
    "exec-answers": frame({"started": True}) + frame({"status": 137}),
    "error": frame({"error": "container not running"}),
    "answer-full": frame({"pids": [1, 7], "oom_count": 2, "stopped": True,
                          "stats": {"cpu": {"usage": {"total": 1}}, "f": 1.5e300}}),
    "cut": frame({"op": "kill", "signal": 15, "all": False})[:9],
    "huge-len": struct.pack(">I", 5 << 20) + b"{}",
    "bad-json": frame(b'{"op":"kill","signal":-1}'),
}


def varint(n):
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def field(num, value):
    if isinstance(value, int):
        return varint(num << 3) + varint(value)
    return varint(num << 3 | 2) + varint(len(value)) + value


def msg(*fields):
    return b"".join(field(n, v) for n, v in fields)


def reply(which, payload=b"", code=0, message=b""):
    status = msg((1, code), (2, message)) if code else b""
    body = (field(1, status) if code else b"") + field(2, payload)
    return bytes([which]) + body


STATS = msg(
    (1, msg((1, 123456), (2, 100000), (3, 23456), (4, 2), (5, 777))),
    (2, msg((1, 1 << 20), (2, 1 << 30), (3, 2 << 20), (4, 1),
            (5, msg((1, b"anon"), (2, 4096))), (5, msg((1, b"file"), (2, 8192))))),
    (3, msg((1, 3), (2, 100))),
    (4, msg((1, 4096), (2, 8192), (3, 1), (4, 2))),
)
MAX = (1 << 64) - 1
AGENT_REPLY = {
    "stats": reply(0, STATS),
    "stats-empty": reply(0),
    "stats-max": reply(0, msg((1, msg((1, MAX), (2, MAX), (3, MAX), (5, MAX))))),
    "ps": reply(1, field(1, b"".join(varint(p) for p in (1, 12, 345)))),
    "ps-unpacked": reply(1, msg((1, 1), (1, 2))),
    "wait": reply(2, msg((1, 137))),
    "wait-negative": reply(2, msg((1, -1))),
    "read": reply(3, msg((1, b"hello\n"))),
    "read-eof": reply(3, msg((2, 1))),
    "oom": reply(4, msg((1, b"c"))),
    "details": reply(5, msg((1, b"0.1.0"), (2, b"6.12.0"), (3, 1 << 30), (4, 2))),
    "empty-ok": reply(6),
    "not-found": reply(6, code=5, message=b"container c: not found"),
    "invalid-argument": reply(0, code=3, message=b"linux.resources: bad"),
    "bad-payload": reply(0, b"\xff\xff\xff"),
}


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    for target, inputs in (("control", CONTROL), ("agent_reply", AGENT_REPLY)):
        d = os.path.join(here, "corpus", target)
        os.makedirs(d, exist_ok=True)
        for name, data in inputs.items():
            with open(os.path.join(d, "seed-" + name), "wb") as f:
                f.write(data)


if __name__ == "__main__":
    main()
