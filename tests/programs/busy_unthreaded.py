"""Loops in Python forever and never imports `threading` itself (on some
builds start-up does, and the main thread is then named); prints "ready"
once running."""


def work():
    return sum(range(1000))


print("ready", flush=True)
while True:
    work()
