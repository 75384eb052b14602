#!/usr/bin/env python3
"""Writes a reproducible newc cpio archive (the initramfs format) from a manifest.

Manifest lines (sorted by path in the output regardless of input order):
  dir  PATH MODE
  file PATH MODE SOURCE
  link PATH TARGET
  nod  PATH MODE c|b MAJOR MINOR
Every entry is owned by root with a fixed mtime (SOURCE_DATE_EPOCH, default 0), so the same
inputs always give the same bytes. No root privileges are needed for device nodes.
"""
import os
import stat
import sys


def header(ino, mode, nlink, size, mtime, rdevmajor, rdevminor, name):
    fields = [ino, mode, 0, 0, nlink, mtime, size, 0, 0, rdevmajor, rdevminor, len(name) + 1, 0]
    return b"070701" + b"".join(b"%08X" % f for f in fields)


def pad(n):
    return b"\0" * ((4 - n % 4) % 4)


def main(manifest, out):
    mtime = int(os.environ.get("SOURCE_DATE_EPOCH", "0"))
    entries = []
    with open(manifest) as f:
        for line in f:
            parts = line.split()
            if parts:
                entries.append(parts)
    entries.sort(key=lambda e: e[1])
    buf = bytearray()
    for ino, e in enumerate(entries, start=1):
        kind, path = e[0], e[1].lstrip("/")
        name = path.encode()
        data, rmaj, rmin = b"", 0, 0
        if kind == "dir":
            mode = stat.S_IFDIR | int(e[2], 8)
            nlink = 2
        elif kind == "file":
            mode = stat.S_IFREG | int(e[2], 8)
            with open(e[3], "rb") as src:
                data = src.read()
            nlink = 1
        elif kind == "link":
            mode = stat.S_IFLNK | 0o777
            data = e[2].encode()
            nlink = 1
        elif kind == "nod":
            mode = (stat.S_IFCHR if e[3] == "c" else stat.S_IFBLK) | int(e[2], 8)
            rmaj, rmin = int(e[4]), int(e[5])
            nlink = 1
        else:
            sys.exit(f"mkcpio: unknown entry {e}")
        h = header(ino, mode, nlink, len(data), mtime, rmaj, rmin, name)
        buf += h + name + b"\0" + pad(len(h) + len(name) + 1) + data + pad(len(data))
    trailer = b"TRAILER!!!"
    h = header(0, 0, 1, 0, 0, 0, 0, trailer)
    buf += h + trailer + b"\0" + pad(len(h) + len(trailer) + 1)
    buf += b"\0" * ((512 - len(buf) % 512) % 512)
    tmp = out + ".tmp"
    # Only replace the output when the bytes change, so its mtime tracks real changes.
    if os.path.exists(out):
        with open(out, "rb") as f:
            if f.read() == bytes(buf):
                return
    with open(tmp, "wb") as f:
        f.write(buf)
    os.replace(tmp, out)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
