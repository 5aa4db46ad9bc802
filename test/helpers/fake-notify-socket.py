# A stand-in for systemd's NOTIFY_SOCKET: binds a unix datagram socket at argv[1], prints
# "BOUND", then one JSON line per datagram: {"message": ..., "fds": n}. File descriptors that
# come with a message (systemd-notify's BARRIER=1 sends one) are closed, which is how systemd
# answers a barrier. Runs until killed.
import array
import json
import os
import socket
import sys

sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
sock.bind(sys.argv[1])
print("BOUND", flush=True)
while True:
    data, ancillary, _flags, _addr = sock.recvmsg(65536, socket.CMSG_SPACE(64 * 4))
    fds = array.array("i")
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
    for fd in fds:
        os.close(fd)
    print(json.dumps({"message": data.decode("utf-8", "replace"), "fds": len(fds)}), flush=True)
