"""Fixture of tests/tests/trace.rs's test of every way CPython enters a
Python frame: the entries a PEP 523 eval-frame hook could miss where the
eval loop inlines a call (3.11+: BINARY_SUBSCR_GETITEM, properties,
__getattribute__, FOR_ITER_GEN, SEND_GEN, CALL_ALLOC_AND_ENTER_INIT,
CALL_FUNCTION_EX ...), and generators, coroutines, throw, exceptions.

__init__ comes in every way 3.13's CALL_ALLOC_AND_ENTER_INIT can take:
a class specialised before the window (Box), a subclass inheriting it,
super().__init__() chains, a class defined by each work() (so during the
window too), a class made by type() with a function named __init__, an
__init__ that raises.

work() runs 200 times first, so its instructions are specialised before
any window (Box's __getitem__ among them). Each work() also makes a class
(Late, with a __getitem__) and subscribes it 300 times in subscribe(),
whose BINARY_SUBSCR was specialised for the Late of the work() before: the
class body runs during the window, and 3.11 specialises the instruction
again for the new class after ~70 misses. Each work() also subscribes, 300
times each, __getitem__ functions the window's start cannot have tagged:
that of a class made by type() (a fresh function), a fresh function
attached to an existing class (Swapped, its site specialised before), and
a function whose __defaults__ it sets (Defaults: CPython resets the
version the window's start gave it). The truth: one work() under a
sys.setprofile counter of this file's functions ("call" events).
argv[1]: the ready file (the truth, work()'s value); argv[2] "monitor":
the program is a sys.monitoring user itself (tool 1, coverage.py's id:
local PY_START events on some functions, __init__s among them, counted by
a callback compiled outside this file). Files in its folder: go -> one
work() between time.monotonic_ns() readings, round1.json; after (the
window is over) -> work() again and what the program sees of itself,
round2.json; end -> final.json (the sys.monitoring tool ids in use, the
local events any other tool left on this file's __init__ code objects,
3.12+), exit 0. Between work() and round1.json,
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


class Sub(Box):
    pass


class Base:
    def __init__(self, v):
        self.v = v


class Derived(Base):
    def __init__(self, v):
        super().__init__(v)


class Raises:
    def __init__(self, v):
        if v % 2:
            raise ValueError(v)
        self.v = v


def make_init():
    def __init__(self, v):
        self.v = v
    return __init__


made_init = make_init()


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


class Swapped:
    """Its __getitem__ is replaced by each work() (a fresh function: the
    class walk at the window's start cannot have seen it)."""

    def __getitem__(self, i):
        return i


class Defaults:
    """Its __getitem__'s __defaults__ are set by each work(): CPython
    resets the function's version, which the window had tagged."""

    def __getitem__(self, i=0):
        # Two arguments: 3.11 specialises a subscription only for those.
        return i


def make_getitem():
    def __getitem__(self, i):
        return i + 1
    return __getitem__


# subscribe_made, subscribe_swapped and subscribe_defaults are the same
# loop on purpose: each is a subscription site of its own, which 3.11
# specialises for its one class alone (a shared site would flip between
# classes and stay generic), and whose specialisation round2.json reads.
def subscribe_made(obj, n):
    t = 0
    for i in range(n):
        t += obj[i]
    return t


def subscribe_swapped(obj, n):
    t = 0
    for i in range(n):
        t += obj[i]
    return t


def subscribe_defaults(obj, n):
    t = 0
    for i in range(n):
        t += obj[i]
    return t


def work():
    class Local:
        def __init__(self, v):
            self.v = v

    Made = type("Made", (), {"__init__": made_init})
    t = subscribe(define_late()(), 300)
    # __getitem__ functions the window's start cannot have tagged: a
    # class made by type(), a function attached to a class specialised
    # before, a tagged function whose version a setter resets (each site
    # runs 300 times after, enough for 3.11 to specialise it again).
    t += subscribe_made(type("TypeMade", (), {"__getitem__": make_getitem()})(), 300)
    Swapped.__getitem__ = make_getitem()
    t += subscribe_swapped(Swapped(), 300)
    Defaults.__getitem__.__defaults__ = (1,)
    t += subscribe_defaults(Defaults(), 300)
    b = Box(3)
    for i in range(20):
        t += b[i]
        t += b.prop
        t += Over().anything
        t += kw(1, b=3)
        t += kw(*[1, 2])
        t += leaf(i)
        Box(i)
        Sub(i)
        Derived(i)
        Local(i)
        Made(i)
        try:
            Raises(i)
        except ValueError:
            pass
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


def specialised_subscribers():
    """The specialised subscriptions of subscribe() and of the sites of the
    __getitem__ functions made during work() (3.11+)."""
    return {f.__name__: specialised(f)
            for f in (subscribe, subscribe_made, subscribe_swapped, subscribe_defaults)}


def specialised(function):
    """The specialised instructions of function's code (3.11+)."""
    if sys.version_info < (3, 11):
        return []
    return sorted({i.opname for i in dis.get_instructions(function, adaptive=True)
                   if i.opname.startswith("BINARY_SUBSCR")})


MONITOR = len(sys.argv) > 2 and sys.argv[2] == "monitor"
seen = {}
if MONITOR:
    mon = sys.monitoring
    mon.use_tool_id(1, "fixture")
    # Compiled outside this file: neither the truth nor pydeep's count
    # (functions of this file) includes the callback.
    space = {"seen": seen}
    exec(compile("def started(code, offset):\n"
                 "    seen[code.co_name] = seen.get(code.co_name, 0) + 1\n",
                 "<monitor>", "exec"), space)
    mon.register_callback(1, mon.events.PY_START, space["started"])
    for f in (leaf, Box.__init__, Derived.__init__, Raises.__init__):
        mon.set_local_events(1, f.__code__, mon.events.PY_START)


def monitored_work():
    seen.clear()
    work()
    return dict(seen)


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
               "reset_version": getitem_version(Reset), "specialised": specialised_subscribers(),
               "monitor_truth": monitored_work()})
while not os.path.exists(os.path.join(folder, "go")):
    time.sleep(0.005)
seen.clear()
before = time.monotonic_ns()
during = work()
after = time.monotonic_ns()
Reset.__getitem__.__defaults__ = None
subscribe_reset()


def pydeep_local_events():
    """3.12+, during the window: the local events pydeep's sys.monitoring
    tool has on the __init__ of a class whose body ran just now (before any
    call), and on a fresh function named __init__ of a type()-made class
    after its first call (3.13: both get them, see tracer/src/evalframe.rs).
    Code compiled outside this file: no function of it is counted."""
    if not hasattr(sys, "monitoring"):
        return None
    mon = sys.monitoring
    tool = next((i for i in range(6) if mon.get_tool(i) == "pydeep"), None)
    if tool is None:
        return None
    space = {}
    exec(compile("class Fresh:\n"
                 "    def __init__(self, v):\n"
                 "        self.v = v\n"
                 "def __init__(self, v):\n"
                 "    self.v = v\n"
                 "Made = type('Made', (), {'__init__': __init__})\n",
                 "<fresh>", "exec"), space)
    body = mon.get_local_events(tool, space["Fresh"].__init__.__code__)
    made = space["Made"].__init__.__code__
    unseen = mon.get_local_events(tool, made)
    exec("Made(1)", space)
    return {"class_body": body, "type_before_call": unseen,
            "type_after_call": mon.get_local_events(tool, made)}


publish(os.path.join(folder, "round1.json"),
        {"thread": threading.get_native_id(), "before": before, "after": after,
         "value": during, "version": getitem_version(),
         "monitor": dict(seen), "pydeep_local_events": pydeep_local_events()})
while not os.path.exists(os.path.join(folder, "after")):
    time.sleep(0.005)
for _ in range(50):
    later = work()
publish(os.path.join(folder, "round2.json"),
        {"value": later, "version": getitem_version(), "specialised": specialised_subscribers(),
         "reset_version": getitem_version(Reset), "reset_value": subscribe_reset()})
while not os.path.exists(os.path.join(folder, "end")):
    time.sleep(0.005)
final = {"monitor_after": monitored_work()}
if hasattr(sys, "monitoring"):
    mon = sys.monitoring
    final["tools"] = [mon.get_tool(i) for i in range(6)]
    # Local events left by any free tool id on the __init__ code objects.
    left = 0
    codes = [c.__init__.__code__ for c in (Box, Base, Derived, Raises)] + [made_init.__code__]
    for i in range(6):
        if mon.get_tool(i) is None:
            mon.use_tool_id(i, "check")
            left += sum(mon.get_local_events(i, code) for code in codes)
            mon.free_tool_id(i)
    final["left"] = left
publish(os.path.join(folder, "final.json"), final)
