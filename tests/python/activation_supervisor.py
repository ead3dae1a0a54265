#!/usr/bin/env python3
"""Plays systemd's part across restarts for test_socket_activation.py.

Run by `systemd-socket-activate` (which opens the sockets and passes them
as LISTEN_FDS), it holds them, as systemd's PID 1 holds a .socket unit's
sockets, and runs the server on them with the sd_listen_fds variables
(LISTEN_PID set to the server's own pid); when the server exits it starts
it again (systemd's Restart=always), once GO_FILE exists, so a test can
hold the gap open and prove a client waits through it instead of being
refused. Each server's pid goes to PID_FILE. SIGTERM stops the server and
this supervisor.

Usage: activation_supervisor.py PID_FILE GO_FILE SERVER [ARGS...]
"""

import os
import signal
import subprocess
import sys
import time


def main():
    pid_file, go_file, command = sys.argv[1], sys.argv[2], sys.argv[3:]
    if int(os.environ.get("LISTEN_PID", "0")) != os.getpid():
        sys.exit("activation_supervisor: no sockets for this process (LISTEN_PID)")
    count = int(os.environ["LISTEN_FDS"])
    fds = list(range(3, 3 + count))
    env = {k: v for k, v in os.environ.items() if k != "LISTEN_PID"}
    # `sh -c` knows its own pid ($$) and keeps it across exec: that is the
    # server's pid, which LISTEN_PID must name.
    launcher = ["sh", "-c", 'LISTEN_PID=$$; export LISTEN_PID; exec "$@"', "sh"]
    state = {"stopping": False, "child": None}

    def stop(_sig, _frame):
        state["stopping"] = True
        if state["child"] is not None and state["child"].poll() is None:
            state["child"].terminate()

    signal.signal(signal.SIGTERM, stop)
    first = True
    while not state["stopping"]:
        if not first:
            while not os.path.exists(go_file) and not state["stopping"]:
                time.sleep(0.01)
            if state["stopping"]:
                break
            os.unlink(go_file)
        first = False
        child = subprocess.Popen(launcher + command, pass_fds=fds, env=env)
        state["child"] = child
        tmp = pid_file + ".tmp"
        with open(tmp, "w") as f:
            f.write(f"{child.pid}\n")
        os.rename(tmp, pid_file)
        child.wait()


if __name__ == "__main__":
    main()
