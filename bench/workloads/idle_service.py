"""A mostly idle service: a socket server answering a request every 10 ms.

The server thread waits in select() almost all the time; the work counter
is the number of requests answered.
"""

import selectors
import socket
import threading
import time

from common import Counter, finish, install, parse


def serve(listener, counter, stop):
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    while not stop.is_set():
        for key, _ in selector.select(timeout=0.1):
            if key.fileobj is listener:
                connection, _ = listener.accept()
                selector.register(connection, selectors.EVENT_READ)
            else:
                data = key.fileobj.recv(64)
                if not data:
                    selector.unregister(key.fileobj)
                    key.fileobj.close()
                    continue
                key.fileobj.sendall(data.upper())
                counter.slots[0] += 1


def main():
    args = parse(__doc__)
    counter = Counter()
    stop = threading.Event()
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    server = threading.Thread(target=serve, args=(listener, counter, stop), name="server", daemon=True)
    server.start()
    client = socket.create_connection(listener.getsockname())
    install(counter)
    end = time.monotonic() + args.seconds
    while time.monotonic() < end:
        client.sendall(b"ping")
        client.recv(64)
        time.sleep(0.01)
    stop.set()
    finish(counter)


if __name__ == "__main__":
    main()
