#!/usr/bin/env python3
"""A small recvtty (runc's contrib/cmd/recvtty) for husk's end-to-end tests.

usage: recvtty.py SOCKET [--size ROWSxCOLS] [--input TEXT] [--name-file PATH]

Listens on the Unix socket SOCKET, accepts one connection, receives the pty master that
`husk create/run/exec --console-socket SOCKET` sends (SCM_RIGHTS), optionally sets its window
size and types TEXT into it, then copies everything the terminal prints to stdout until the
other side goes away (EIO on the master). With --name-file, writes the name sent along with
the fd there.
"""
import argparse
import fcntl
import os
import socket
import struct
import sys
import termios


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("socket")
    ap.add_argument("--size", help="ROWSxCOLS set on the master once received")
    ap.add_argument("--input", help="typed into the terminal once received")
    ap.add_argument("--name-file")
    a = ap.parse_args()

    if os.path.exists(a.socket):
        os.unlink(a.socket)
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(a.socket)
    srv.listen(1)
    conn, _ = srv.accept()
    name, fds, _, _ = socket.recv_fds(conn, 1024, 1)
    conn.close()
    srv.close()
    if not fds:
        print("recvtty: no fd received", file=sys.stderr)
        return 1
    master = fds[0]
    if a.name_file:
        with open(a.name_file, "w") as f:
            f.write(name.decode(errors="replace"))
    if a.size:
        rows, cols = (int(x) for x in a.size.split("x"))
        fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    if a.input:
        os.write(master, a.input.encode())
    out = sys.stdout.buffer
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: every slave is closed
            break
        if not data:
            break
        out.write(data)
        out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
