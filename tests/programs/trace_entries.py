"""Fixture of tests/tests/trace.rs's test of every way CPython enters a
Python frame: the entries a PEP 523 eval-frame hook could miss where the
eval loop inlines a call (3.11+: BINARY_SUBSCR_GETITEM, properties,
__getattribute__, FOR_ITER_GEN, SEND_GEN, CALL_ALLOC_AND_ENTER_INIT,
CALL_FUNCTION_EX ...), and generators, coroutines, throw, exceptions.

work() runs 200 times first, so its instructions are specialised before
any window (Box's __getitem__ among them). Each work() also makes a class
(Late, with a __getitem__) and subscribes it 300 times in subscribe(),
whose BINARY_SUBSCR was specialised for the Late of the work() before: the
class body runs during the window, and 3.11 specialises the instruction
again for the new class after ~70 misses. The truth: one work() under a
sys.setprofile counter of this file's functions ("call" events).
argv[1]: the ready file (the truth, work()'s value). Files in its folder:
go -> one work() between time.monotonic_ns() readings, round1.json;
after (the window is over) -> work() again and what the program sees of
itself, round2.json; end -> exit 0. Between work() and round1.json,
Reset.__getitem__.__defaults__ is set (CPython resets its version).
"""
import ctypes
import dis
import json
import os
import sys
import threading
import time


class Box:
    def __init__(self, v):
        self.v = v

    def __getitem__(self, i):
        return self.v + i

    @property
    def prop(self):
        return self.v


class Reset:
    """Its __getitem__'s __defaults__ are set during the window (after the
    work() counted): CPython resets the function's version then, and
    pydeep must not give it back its version from before."""

    def __getitem__(self, i):
        return i


class Over:
    def __getattribute__(self, name):
        return 1


def gen(n):
    for i in range(n):
        yield i


def gen_from(n):
    yield from gen(n)


def sender():
    total = 0
    while True:
        x = yield total
        total += x


def thrower():
    try:
        yield 1
    except ValueError:
        yield 2


async def coro(n):
    return n


async def main_coro():
    t = 0
    for i in range(5):
        t += await coro(i)
    return t


def fails():
    raise KeyError


def kw(a, b=2, *args, **kwargs):
    return a


def leaf(x):
    return x


def define_late():
    class Late:
        def __getitem__(self, i):
            return 2 * i

    return Late


def subscribe(obj, n):
    t = 0
    for i in range(n):
        t += obj[i]
    return t


def work():
    t = subscribe(define_late()(), 300)
    b = Box(3)
    for i in range(20):
        t += b[i]
        t += b.prop
        t += Over().anything
        t += kw(1, b=3)
        t += kw(*[1, 2])
        t += leaf(i)
        Box(i)
    t += sum(gen(10))
    for x in gen_from(5):
        t += x
    s = sender()
    next(s)
    for i in range(5):
        s.send(i)
    th = thrower()
    next(th)
    th.throw(ValueError)
    t += sum([leaf(i) for i in range(5)])
    for _ in range(3):
        try:
            fails()
        except KeyError:
            pass
    c = main_coro()
    try:
        c.send(None)
    except StopIteration:
        pass
    return t


def truth():
    counts = {}

    def profiler(frame, event, arg):
        if event == "call" and frame.f_code.co_filename == __file__:
            name = frame.f_code.co_name
            if name not in ("truth", "profiler"):
                counts[name] = counts.get(name, 0) + 1

    sys.setprofile(profiler)
    work()
    sys.setprofile(None)
    return counts


def getitem_version(cls=Box):
    """cls.__getitem__'s func_version (3.11's PyFunctionObject: offset
    128), or None elsewhere: what pydeep changes on 3.11.0-3.11.3 during a
    window and must give back."""
    if sys.version_info[:2] != (3, 11):
        return None
    return ctypes.c_uint32.from_address(id(cls.__getitem__) + 128).value


def subscribe_reset():
    r = Reset()
    return sum(r[i] for i in range(100))


def specialised(function):
    """The specialised instructions of function's code (3.11+)."""
    if sys.version_info < (3, 11):
        return []
    return sorted({i.opname for i in dis.get_instructions(function, adaptive=True)
                   if i.opname.startswith("BINARY_SUBSCR")})


for _ in range(200):
    value = work()
    subscribe_reset()
ready = sys.argv[1]
folder = os.path.dirname(ready)


def publish(name, value):
    with open(name + ".tmp", "w") as f:
        json.dump(value, f)
    os.rename(name + ".tmp", name)


publish(ready, {"truth": truth(), "value": value, "version": getitem_version(),
               "reset_version": getitem_version(Reset), "specialised": specialised(subscribe)})
while not os.path.exists(os.path.join(folder, "go")):
    time.sleep(0.005)
before = time.monotonic_ns()
during = work()
after = time.monotonic_ns()
Reset.__getitem__.__defaults__ = None
subscribe_reset()
publish(os.path.join(folder, "round1.json"),
        {"thread": threading.get_native_id(), "before": before, "after": after,
         "value": during, "version": getitem_version()})
while not os.path.exists(os.path.join(folder, "after")):
    time.sleep(0.005)
for _ in range(50):
    later = work()
publish(os.path.join(folder, "round2.json"),
        {"value": later, "version": getitem_version(), "specialised": specialised(subscribe),
         "reset_version": getitem_version(Reset), "reset_value": subscribe_reset()})
while not os.path.exists(os.path.join(folder, "end")):
    time.sleep(0.005)
