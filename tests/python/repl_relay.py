"""A TCP relay run as its own process, standing in for the network between
the two nodes of a replicated pair (used by test_repl_faults.py).

    python3 repl_relay.py LISTEN_HOST:PORT=TARGET_HOST:PORT [...]

Each route accepts on LISTEN and forwards, both ways, to TARGET. Signals
control it:

- SIGUSR1 cuts the link: every relayed connection is closed (both sides)
  and the listeners are closed too, so a node trying its peer is refused,
  as it would be by a host it cannot reach.
- SIGHUP cuts it silently: relayed connections stay open but nothing is
  forwarded any more (what the nodes send piles up unread, as on a path
  that drops packets), and the listeners are closed. Only the nodes'
  timeouts can tell.
- SIGUSR2 restores it: connections left from before are closed, and the
  listeners are opened again on the same ports.

With `--record PATH` first, every byte it forwards (both ways) is also
appended to PATH, so a test can look at what crossed the "network"
(test_repl_tls.py: that the link is encrypted).

It writes one line to stdout when it is ready ("ready"), after each cut
("cut N": N connections closed or frozen) and each restore ("restored"),
so a test
waits on those lines instead of sleeping. One thread, one selector.
"""

import os
import selectors
import signal
import socket
import sys


def parse_addr(text):
    host, port = text.rsplit(":", 1)
    return host, int(port)


class Relay:
    def __init__(self, routes, record=None):
        self.routes = routes  # [(listen_addr, target_addr)]
        self.record = record  # a file every forwarded byte goes to, or None
        self.sel = selectors.DefaultSelector()
        self.listeners = {}  # socket -> target
        self.peers = {}  # socket -> the socket it forwards to
        self.pending = []  # signals to act on
        self.wake_r, self.wake_w = socket.socketpair()
        self.wake_r.setblocking(False)
        self.wake_w.setblocking(False)
        self.sel.register(self.wake_r, selectors.EVENT_READ, "wake")
        signal.set_wakeup_fd(self.wake_w.fileno())
        signal.signal(signal.SIGUSR1, lambda *_: self.pending.append("cut"))
        signal.signal(signal.SIGUSR2, lambda *_: self.pending.append("restore"))
        signal.signal(signal.SIGHUP, lambda *_: self.pending.append("freeze"))
        signal.signal(signal.SIGTERM, lambda *_: self.pending.append("stop"))

    def listen(self):
        for addr, target in self.routes:
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(addr)
            s.listen(16)
            s.setblocking(False)
            self.listeners[s] = target
            self.sel.register(s, selectors.EVENT_READ, "listener")

    def close(self, s):
        try:
            self.sel.unregister(s)
        except (KeyError, ValueError):
            pass
        s.close()

    def drop_pair(self, s):
        other = self.peers.pop(s, None)
        self.close(s)
        if other is not None:
            self.peers.pop(other, None)
            self.close(other)

    def unlisten(self):
        for s in list(self.listeners):
            self.close(s)
        self.listeners.clear()

    def drop_all(self):
        n = 0
        while self.peers:
            s = next(iter(self.peers))
            self.drop_pair(s)
            n += 1
        return n

    def cut(self):
        self.unlisten()
        say(f"cut {self.drop_all()}")

    def freeze(self):
        self.unlisten()
        for s in self.peers:
            try:
                self.sel.unregister(s)
            except (KeyError, ValueError):
                pass
        say(f"cut {len(self.peers) // 2}")

    def accept(self, listener):
        target = self.listeners[listener]
        try:
            client, _ = listener.accept()
        except OSError:
            return
        try:
            upstream = socket.create_connection(target, timeout=5)
        except OSError:
            client.close()
            return
        for s in (client, upstream):
            s.setblocking(False)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.peers[client] = upstream
        self.peers[upstream] = client
        self.sel.register(client, selectors.EVENT_READ, "conn")
        self.sel.register(upstream, selectors.EVENT_READ, "conn")

    def forward(self, s):
        other = self.peers.get(s)
        if other is None:
            return
        try:
            data = s.recv(1 << 16)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            return self.drop_pair(s)
        if self.record is not None:
            self.record.write(data)
            self.record.flush()
        # The nodes keep what they send small (a megabyte at most waits);
        # a blocking send keeps this relay simple and ordered.
        other.setblocking(True)
        try:
            other.sendall(data)
        except OSError:
            return self.drop_pair(s)
        finally:
            if other.fileno() >= 0:
                other.setblocking(False)

    def run(self):
        self.listen()
        say("ready")
        while True:
            for key, _ in self.sel.select(timeout=1.0):
                what = key.data
                if what == "wake":
                    try:
                        while self.wake_r.recv(64):
                            pass
                    except BlockingIOError:
                        pass
                elif what == "listener":
                    if key.fileobj in self.listeners:
                        self.accept(key.fileobj)
                elif key.fileobj in self.peers:
                    self.forward(key.fileobj)
            while self.pending:
                act = self.pending.pop(0)
                if act == "cut":
                    self.cut()
                elif act == "freeze":
                    self.freeze()
                elif act == "restore":
                    self.drop_all()
                    if not self.listeners:
                        self.listen()
                    say("restored")
                else:
                    return


def say(line):
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def main(argv):
    record = None
    if argv and argv[0].startswith("--record="):
        record = open(argv[0].split("=", 1)[1], "ab")
        argv = argv[1:]
    routes = []
    for arg in argv:
        listen, target = arg.split("=")
        routes.append((parse_addr(listen), parse_addr(target)))
    Relay(routes, record).run()
    os._exit(0)


if __name__ == "__main__":
    main(sys.argv[1:])
