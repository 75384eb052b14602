#!/usr/bin/env python3
"""Writes the seed inputs of the vmm fuzz targets into corpus/<target>/seed-*.

Each input is guest memory from address 0 (see fuzz_targets/common.rs): a 16-entry
descriptor table at 0x0, the available ring at 0x100, the used ring at 0x200, buffers from
0x300. The mmio target reads the same bytes as 8-byte register operations.
"""

import os
import struct

NEXT, WRITE = 1, 2
BUF = 0x300


def queue(chains, payloads):
    """chains: list of lists of (len, flags); payloads: bytes per descriptor (or None)."""
    mem = bytearray(0x300)
    addr, i, heads, bufs = BUF, 0, [], bytearray()
    for chain in chains:
        heads.append(i)
        for j, (ln, flags) in enumerate(chain):
            nxt = i + 1 if j + 1 < len(chain) else 0
            f = flags | (NEXT if j + 1 < len(chain) else 0)
            struct.pack_into("<QIHH", mem, i * 16, addr, ln, f, nxt)
            data = payloads.get(i, b"")
            bufs += data.ljust(ln, b"\0")
            addr += ln
            i += 1
    struct.pack_into("<HH", mem, 0x100, 0, len(heads))
    for k, h in enumerate(heads):
        struct.pack_into("<H", mem, 0x104 + 2 * k, h)
    return bytes(mem + bufs)


def blk_hdr(typ, sector):
    return struct.pack("<IIQ", typ, 0, sector)


def vsock_hdr(op, length=0, flags=0, src_port=5000, dst_port=1024, dst_cid=2):
    return struct.pack("<QQIIIHHIII", 3, dst_cid, src_port, dst_port, length, 1, op, flags,
                       65536, 0)


def eth_frame(n=60):
    return b"\xff" * 6 + b"\x02\x00\x00\x00\x00\x01" + b"\x08\x06" + bytes(range(n - 14))


SEEDS = {
    "block": {
        "in": queue([[(16, 0), (512, WRITE), (1, WRITE)]], {0: blk_hdr(0, 1)}),
        "out": queue([[(16, 0), (512, 0), (1, WRITE)]], {0: blk_hdr(1, 2), 1: b"x" * 512}),
        "flush": queue([[(16, 0), (1, WRITE)]], {0: blk_hdr(4, 0)}),
        "get-id": queue([[(16, 0), (20, WRITE), (1, WRITE)]], {0: blk_hdr(8, 0)}),
        "in-past-end": queue([[(16, 0), (512, WRITE), (1, WRITE)]], {0: blk_hdr(0, 127)}),
        "two": queue([[(16, 0), (1024, WRITE), (1, WRITE)], [(16, 0), (1, WRITE)]],
                     {0: blk_hdr(0, 0), 3: blk_hdr(4, 0)}),
    },
    "rng": {
        "one": queue([[(64, WRITE)]], {}),
        "chain": queue([[(16, WRITE), (32, WRITE)], [(8, 0)]], {}),
    },
    "vsock": {
        "request": queue([[(44, 0)], [(44 + 256, WRITE)]], {0: vsock_hdr(1)}),
        "request-rw": queue([[(44, 0)], [(44, 0), (5, 0)]],
                            {0: vsock_hdr(1), 1: vsock_hdr(5, 5), 2: b"hello"}),
        "shutdown": queue([[(44, 0)], [(44, 0)]], {0: vsock_hdr(1), 1: vsock_hdr(4, flags=3)}),
        "rst": queue([[(44, 0)]], {0: vsock_hdr(3)}),
        "credit": queue([[(44, 0)], [(44, 0)]], {0: vsock_hdr(1), 1: vsock_hdr(7)}),
        "other-port": queue([[(44, 0)], [(44 + 64, WRITE)]], {0: vsock_hdr(1, dst_port=9)}),
    },
    "net": {
        "tx": queue([[(12 + 60, 0)]], {0: bytes(12) + eth_frame()}),
        "tx-split": queue([[(12, 0), (60, 0)], [(1526, WRITE)]],
                          {0: bytes(12), 1: eth_frame()}),
        "rx": queue([[(1526, WRITE)]], {}),
    },
}


def mmio_ops():
    ops = []

    def rd(off, w=4):
        ops.append(struct.pack("<HB5s", off, {1: 0, 2: 1, 4: 2, 8: 3}[w], b""))

    def wr(off, val, w=4):
        ops.append(struct.pack("<HBI1s", off, 4 | {1: 0, 2: 1, 4: 2, 8: 3}[w], val, b""))

    for off in (0x0, 0x4, 0x8, 0xC):
        rd(off)
    wr(0x70, 0)
    wr(0x70, 1)
    wr(0x70, 3)
    wr(0x14, 0)
    rd(0x10)
    wr(0x14, 1)
    rd(0x10)
    wr(0x24, 1)
    wr(0x20, 1)
    wr(0x70, 0xB)
    rd(0x70)
    wr(0x30, 0)
    rd(0x34)
    wr(0x38, 16)
    wr(0x80, 0x0)
    wr(0x84, 0)
    wr(0x90, 0x100)
    wr(0x94, 0)
    wr(0xA0, 0x200)
    wr(0xA4, 0)
    wr(0x44, 1)
    wr(0x70, 0xF)
    wr(0x50, 0)
    rd(0x60)
    wr(0x64, 1)
    rd(0xFC)
    rd(0x100, 1)
    wr(0x70, 0)
    return b"".join(ops)


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    seeds = dict(SEEDS)
    ops = mmio_ops()
    seeds["mmio"] = {"init": ops, "init-then-rng": ops + queue([[(64, WRITE)]], {})[len(ops):]}
    for target, inputs in seeds.items():
        d = os.path.join(here, "corpus", target)
        os.makedirs(d, exist_ok=True)
        for name, data in inputs.items():
            with open(os.path.join(d, "seed-" + name), "wb") as f:
                f.write(data)


if __name__ == "__main__":
    main()
