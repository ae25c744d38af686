"""The deterministic call-heavy workload of the trace fixtures
(trace_calls.py, record_trace.py), with its own truth: count_calls() runs
work() once under a sys.setprofile counter of this file's functions.
"""
import sys


def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)


class Shape:
    def __init__(self, side):
        self.side = side

    def area(self):
        return square(self.side)


def square(x):
    return x * x


def countdown(n):
    while n > 0:
        yield n
        n -= 1


def make_adder(k):
    def add(x):
        return x + k

    return add


def fails():
    raise ValueError("expected")


def work():
    fib(12)
    total = sum(countdown(20))
    add = make_adder(3)
    for i in range(30):
        total += add(Shape(i).area())
    for _ in range(5):
        try:
            fails()
        except ValueError:
            pass
    return total


WORKLOAD = {"work", "fib", "__init__", "area", "square", "countdown", "make_adder", "add", "fails"}


def count_calls():
    counts = {}

    def profiler(frame, event, arg):
        if event == "call" and frame.f_code.co_filename == __file__:
            name = frame.f_code.co_name
            if name in WORKLOAD:
                counts[name] = counts.get(name, 0) + 1

    sys.setprofile(profiler)
    work()
    sys.setprofile(None)
    return counts
