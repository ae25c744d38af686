"""Generators, coroutines and async generators in every state, for
tests/tests/snapshot_async.rs.

Usage: snapshot_async_generators.py TRUTH_PATH

`scene()` holds, in its locals, a generator, a coroutine and an async
generator in each of the states inspect names (created, suspended inside a
`yield from` / `await` chain, closed), one generator only inside a list,
and runs a coroutine that runs a generator (both RUNNING) which writes, in
process, inspect's view of every one of them (state, f_lineno, f_lasti,
gi_yieldfrom / cr_await / ag_await, id()) to TRUTH_PATH and blocks in a
lock wait forever. `HEAP_ONLY` is referenced by a module global only: found
with --all, not from the stacks.
"""
import inspect
import json
import os
import sys
import threading

TRUTH_PATH = sys.argv[1]
NEVER = threading.Event()


def leaf_gen():
    yield "leaf 1"
    yield "leaf 2"


def middle_gen():
    yield from leaf_gen()


def outer_gen():
    yield from middle_gen()


class Suspend:
    """An awaitable whose __await__ generator yields once to the driver."""

    def __await__(self):
        yield "suspended"


async def leaf_coro():
    await Suspend()


async def middle_coro():
    await leaf_coro()


async def outer_coro():
    await middle_coro()


async def agen():
    yield "agen 1"
    await Suspend()
    yield "agen 2"


def state_name(state):
    # GEN_CREATED, CORO_SUSPENDED, AGEN_RUNNING... -> created, suspended, running
    return state.split("_", 1)[1].lower()


def agen_state(ag):
    """inspect.getasyncgenstate (3.12+), or the same rules before it."""
    if hasattr(inspect, "getasyncgenstate"):
        return state_name(inspect.getasyncgenstate(ag))
    if ag.ag_running:
        return "running"
    if ag.ag_frame is None:
        return "closed"
    if sys.version_info >= (3, 11):
        # 3.11 has no ag_suspended; a frame that ran has f_lasti past the
        # RETURN_GENERATOR prologue.
        return "suspended" if ag.ag_frame.f_lasti > created_lasti(ag) else "created"
    return "created" if ag.ag_frame.f_lasti == -1 else "suspended"


def created_lasti(ag):
    return CREATED_AGEN_LASTI


def describe(obj, running_line=None):
    if inspect.isgenerator(obj):
        kind, state = "generator", state_name(inspect.getgeneratorstate(obj))
        frame, awaiting = obj.gi_frame, obj.gi_yieldfrom
    elif inspect.iscoroutine(obj):
        kind, state = "coroutine", state_name(inspect.getcoroutinestate(obj))
        frame, awaiting = obj.cr_frame, obj.cr_await
    else:
        kind, state = "async_generator", agen_state(obj)
        frame, awaiting = obj.ag_frame, obj.ag_await
    return {
        "id": id(obj),
        "kind": kind,
        "state": state,
        "name": obj.__name__,
        "qualname": obj.__qualname__,
        "line": running_line if running_line else (frame.f_lineno if frame else None),
        "lasti": None if running_line else (frame.f_lasti if frame else None),
        "awaiting": id(awaiting) if awaiting is not None else None,
        "awaiting_type": type(awaiting).__name__ if awaiting is not None else None,
    }


def runner_gen(scene_locals):
    truth = {}
    for name, obj in scene_locals.items():
        if name == "in_list":
            obj = obj[0]
        truth[name] = describe(obj)
    # Down the delegation chains, as inspect sees them.
    for name in ("suspended_gen", "suspended_coro"):
        obj = scene_locals[name]
        link = truth[name]
        hops = 0
        while True:
            obj = getattr(obj, "gi_yieldfrom", None) or getattr(obj, "cr_await", None)
            if obj is None or not (inspect.isgenerator(obj) or inspect.iscoroutine(obj)):
                break
            hops += 1
            truth[f"{name}.{hops}"] = describe(obj)
    truth["heap_only"] = describe(HEAP_ONLY)
    truth["running_coro"] = describe(RUNNING[0])
    truth["running_gen"] = describe(RUNNING[1], running_line=sys._getframe().f_lineno + 7)
    truth["thread"] = {"native_id": threading.get_native_id()}
    tmp = TRUTH_PATH + ".tmp"
    with open(tmp, "w") as f:
        f.write(json.dumps(truth))
    os.rename(tmp, TRUTH_PATH)
    del obj, link, scene_locals, truth
    NEVER.wait()
    yield


async def running_coro_fn(scene_locals):
    for _ in runner_gen(scene_locals):
        pass


RUNNING = []
CREATED_AGEN_LASTI = agen().ag_frame.f_lasti
HEAP_ONLY = outer_gen()


def scene():
    created_gen = outer_gen()
    suspended_gen = outer_gen()
    next(suspended_gen)
    closed_gen = leaf_gen()
    next(closed_gen)
    closed_gen.close()
    finished_gen = leaf_gen()
    for _ in finished_gen:
        pass
    in_list = [leaf_gen()]
    next(in_list[0])

    created_coro = outer_coro()
    suspended_coro = outer_coro()
    suspended_coro.send(None)
    closed_coro = outer_coro()
    closed_coro.close()

    created_agen = agen()
    suspended_agen = agen()
    try:
        suspended_agen.asend(None).send(None)
    except StopIteration:
        pass
    # Inside an `await` while its asend() is pending: ag_running is true.
    awaiting_agen = agen()
    try:
        awaiting_agen.asend(None).send(None)
    except StopIteration:
        pass
    pending_asend = awaiting_agen.asend(None)
    pending_asend.send(None)
    closed_agen = agen()
    try:
        closed_agen.aclose().send(None)
    except StopIteration:
        pass

    scene_locals = {
        name: value
        for name, value in locals().items()
        if name == "in_list"
        or inspect.isgenerator(value)
        or inspect.iscoroutine(value)
        or inspect.isasyncgen(value)
    }
    coro = running_coro_fn(scene_locals)
    RUNNING.append(coro)
    RUNNING.append(None)
    # The generator object is created inside running_coro_fn; find it there.
    original = runner_gen

    def capture(scene_locals):
        gen = original(scene_locals)
        RUNNING[1] = gen
        return gen

    globals()["runner_gen"] = capture
    coro.send(None)


scene()
