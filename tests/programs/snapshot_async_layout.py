"""What agent/src/reading/cpython/tasks.rs and the generator state table assume,
observed through ctypes on live objects; prints JSON for
agent/tests/asyncio_layout_truth.rs. Runs natively and on the WebAssembly
(Pyodide) builds of 3.14/3.15, where pydeep cannot attach.

* `states`: the byte of a generator that takes a different small value in
  each state (gi_frame_state, 3.11+): created, suspended at a yield,
  suspended in `yield from`, running, closed by close(), exhausted.
* `running_async`: the byte before gi_frame_state in an async generator
  whose asend() is pending (ag_running true) and in one suspended at a
  yield (false).
* `yield_from_depth`: in a generator suspended in `yield from`, how many
  words below the frame's stack pointer the delegate lies (3.14+ keep a
  pointer; before, an index, and nothing is reported).
* `task`: offsets of a C task's loop, result, state, _fut_waiter, coroutine
  and name, found by their values.
"""
import asyncio
import ctypes
import json
import sys

POINTER = ctypes.sizeof(ctypes.c_void_p)
SCAN = 512


def words(address, count):
    raw = ctypes.string_at(address, count * POINTER)
    return [int.from_bytes(raw[i:i + POINTER], sys.byteorder) for i in range(0, len(raw), POINTER)]


def leaf():
    yield 1


def outer():
    yield from leaf()


def running():
    """Yields its own bytes, copied while it runs."""
    yield ctypes.string_at(id(RUNNING.pop()), 160)


RUNNING = []
INSTANCES = 3


def one_sample_of_each_state():
    created = leaf()
    suspended = leaf()
    next(suspended)
    in_yield_from = outer()
    next(in_yield_from)
    closed = leaf()
    next(closed)
    closed.close()
    exhausted = leaf()
    list(exhausted)
    runner = running()
    RUNNING.append(runner)
    samples = {
        "created": ctypes.string_at(id(created), 160),
        "suspended": ctypes.string_at(id(suspended), 160),
        "yield_from": ctypes.string_at(id(in_yield_from), 160),
        "running": next(runner),
        "closed": ctypes.string_at(id(closed), 160),
        "exhausted": ctypes.string_at(id(exhausted), 160),
    }
    keep = [created, suspended, in_yield_from, closed, exhausted, runner]
    return samples, keep


def generator_states():
    """The state byte: the same value in every instance of a state (a
    pointer's or hash's byte differs between instances: on 32-bit
    WebAssembly one once passed a weaker test), and ordered as every
    version numbers them: created < suspended <= in yield from < running <
    finished (closed or exhausted)."""
    samples, alive = [], []
    for _ in range(INSTANCES):
        sample, keep = one_sample_of_each_state()
        samples.append(sample)
        alive.append(keep)
    for offset in range(2 * POINTER, 160):
        seen = [{k: int.from_bytes(v[offset:offset + 1], "little", signed=True)
                 for k, v in sample.items()} for sample in samples]
        if any(values != seen[0] for values in seen[1:]):
            continue
        v = seen[0]
        ordered = (v["created"] < v["suspended"] <= v["yield_from"] < v["running"]
                   < min(v["closed"], v["exhausted"]))
        if ordered and all(-8 <= x <= 8 for x in v.values()):
            return {"offset": offset, **v}
    return None


class Suspend:
    def __await__(self):
        yield "suspended"


async def agen():
    yield 1
    await Suspend()


def running_async(offset):
    """The byte before gi_frame_state: (ag_running true, false)."""
    awaiting = agen()
    try:
        awaiting.asend(None).send(None)
    except StopIteration:
        pass
    pending = awaiting.asend(None)
    pending.send(None)
    idle = agen()
    try:
        idle.asend(None).send(None)
    except StopIteration:
        pass
    assert awaiting.ag_running and not idle.ag_running
    return [ctypes.string_at(id(g) + offset - 1, 1)[0] for g in (awaiting, idle)]


def yield_from_depth():
    generator = outer()
    next(generator)
    delegate = id(generator.gi_yieldfrom)
    found = words(id(generator), SCAN // POINTER)
    for slot, word in enumerate(found):
        if word & ~3 != delegate:
            continue
        slot_address = id(generator) + slot * POINTER
        for pointer in found[:slot]:
            if slot_address < pointer <= slot_address + 4 * POINTER:
                return (pointer - slot_address) // POINTER
    return None


class MinimalLoop:
    """Enough of an event loop for a C task to run its first step
    (Pyodide cannot asyncio.run)."""

    def __init__(self):
        self.ready = []

    def get_debug(self):
        return False

    def call_soon(self, callback, *args, context=None):
        self.ready.append((callback, args, context))

    def run_ready(self):
        asyncio.events._set_running_loop(self)
        ready, self.ready = self.ready, []
        for callback, args, context in ready:
            context.run(callback, *args) if context is not None else callback(*args)
        asyncio.events._set_running_loop(None)


async def child(future):
    await future


def task_offsets():
    loop = MinimalLoop()
    future = asyncio.Future(loop=loop)
    task = asyncio.Task(child(future), loop=loop, name="probe")
    loop.run_ready()
    assert task._fut_waiter is future
    marks = {id(loop): "loop", id(task.get_coro()): "coro", id(future): "fut_waiter",
             id(task.get_name()): "name"}
    found = {marks[w]: i * POINTER
             for i, w in enumerate(words(id(task), type(task).__basicsize__ // POINTER))
             if w in marks}
    plain = asyncio.Future(loop=loop)
    count = type(plain).__basicsize__ // 4
    before = list((ctypes.c_uint32 * count).from_address(id(plain)))
    plain.set_result(12345)
    after = list((ctypes.c_uint32 * count).from_address(id(plain)))
    found["state"] = [i * 4 for i in range(count) if before[i] == 0 and after[i] == 2]
    result = id(plain.result())
    found["result"] = [i * POINTER for i, w in enumerate(words(id(plain), count * 4 // POINTER))
                       if w == result]
    return found


STATES = generator_states() if sys.version_info >= (3, 11) else None
print(json.dumps({
    "version": list(sys.version_info[:3]),
    "pointer": POINTER,
    "states": STATES,
    "running_async": running_async(STATES["offset"]) if STATES else None,
    "yield_from_depth": yield_from_depth(),
    "task": task_offsets(),
}))
