"""A small, busy service to show what pydeep records.

Four named threads do different kinds of work for a few seconds:
- "parser" tokenises and parses expressions (recursion, closures),
- "indexer" builds and queries dictionaries (a generator pipeline),
- "matrix" multiplies small matrices (tight numeric loops),
- "waiter" mostly waits on a lock (idle time).

Usage: demo_app.py [SECONDS]
"""
import sys
import threading
import time


def tokenize(text):
    for word in text.replace("(", " ( ").replace(")", " ) ").split():
        yield word


def parse(tokens):
    token = next(tokens)
    if token == "(":
        items = []
        while True:
            item = parse(tokens)
            if item == ")":
                return items
            items.append(item)
    return token


def evaluate(tree, depth=0):
    if isinstance(tree, str):
        return int(tree) if tree.isdigit() else 1
    op, *args = tree
    values = [evaluate(arg, depth + 1) for arg in args]
    return sum(values) if op == "+" else max(values)


def parser_worker(stop):
    expression = "(+ " + "(max 1 2 (+ 3 4 (max 5 6)))" * 20 + ")"
    count = 0
    while not stop.is_set():
        count += evaluate(parse(tokenize(expression)))
    return count


def records(n):
    for i in range(n):
        yield {"id": i, "name": "item%d" % i, "score": (i * 7919) % 101}


def indexer_worker(stop):
    def by(key):
        def index(rows):
            table = {}
            for row in rows:
                table.setdefault(row[key], []).append(row)
            return table
        return index

    while not stop.is_set():
        table = by("score")(records(5000))
        best = max(table)
        _ = len(table[best])


def matmul(a, b):
    n = len(a)
    return [[sum(a[i][k] * b[k][j] for k in range(n)) for j in range(n)] for i in range(n)]


def matrix_worker(stop):
    m = [[float(i + j) for j in range(24)] for i in range(24)]
    while not stop.is_set():
        m = matmul(m, m)
        peak = max(max(row) for row in m)
        m = [[x / peak for x in row] for row in m]


def waiter_worker(stop):
    lock = threading.Lock()
    lock.acquire()
    while not stop.is_set():
        lock.acquire(timeout=0.05)


def main():
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 5.0
    stop = threading.Event()
    workers = [
        threading.Thread(target=parser_worker, args=(stop,), name="parser"),
        threading.Thread(target=indexer_worker, args=(stop,), name="indexer"),
        threading.Thread(target=matrix_worker, args=(stop,), name="matrix"),
        threading.Thread(target=waiter_worker, args=(stop,), name="waiter"),
    ]
    for worker in workers:
        worker.start()
    time.sleep(seconds)
    stop.set()
    for worker in workers:
        worker.join()


if __name__ == "__main__":
    main()
