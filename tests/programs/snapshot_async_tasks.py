"""An asyncio task tree for tests/tests/snapshot_async.rs.

Usage: snapshot_async_tasks.py TRUTH_PATH

Tasks: "leaf-awaits-future" awaits a bare future; "waits-for-leaf" awaits
that task; "gatherer" awaits gather() of two worker tasks; "python-task" is
a pure-Python asyncio.tasks._PyTask; on 3.11+ "group-parent" waits for the
two children of its TaskGroup; on 3.12+ "eager" started eagerly; main
awaits a future that is never set. A second thread runs its own loop, whose
main task blocks that thread in a lock wait (so it is running) with a child
task suspended. Once every task of the main loop is suspended, a plain
callback (not a task) writes asyncio's own view of every task of both loops
(all_tasks(), names, states, coroutine chains with f_lineno, _fut_waiter,
gather children, the running task, id()s) to TRUTH_PATH; the main loop then
blocks in its selector for an hour.
"""
import asyncio
import inspect
import json
import os
import sys
import threading

TRUTH_PATH = sys.argv[1]


async def leaf(fut):
    await fut


async def worker(n):
    await asyncio.sleep(3600 + n)


async def gatherer():
    await asyncio.gather(worker(1), worker(2))


async def waiter(task):
    await task


GROUPS = []


async def group_parent():
    # 3.11+: the parent waits in TaskGroup.__aexit__ for its children.
    async with asyncio.TaskGroup() as group:
        GROUPS.append(group)
        group.create_task(worker(5), name="group-child-1")
        group.create_task(worker(6), name="group-child-2")


def coroutine_stack(task):
    stack = []
    link = task.get_coro()
    while link is not None and (inspect.iscoroutine(link) or inspect.isgenerator(link)):
        frame = link.cr_frame if inspect.iscoroutine(link) else link.gi_frame
        stack.append({"id": id(link), "qualname": link.__qualname__,
                      "line": frame.f_lineno if frame else None})
        link = link.cr_await if inspect.iscoroutine(link) else link.gi_yieldfrom
    return stack


def describe_tasks(loop, running=None, running_line=None):
    """asyncio's view of the pending tasks of `loop`; `running` is the
    task executing now, whose coroutine will be at `running_line`."""
    tasks = {}
    for task in asyncio.all_tasks(loop):
        waiter_object = task._fut_waiter
        awaiting_tasks = []
        if isinstance(waiter_object, asyncio.Task) or isinstance(waiter_object, asyncio.tasks._PyTask):
            awaiting_tasks = [id(waiter_object)]
        elif type(waiter_object).__name__ == "_GatheringFuture":
            awaiting_tasks = [id(c) for c in waiter_object._children
                              if isinstance(c, (asyncio.Task, asyncio.tasks._PyTask))]
        elif GROUPS and task is GROUPS[0]._parent_task:
            awaiting_tasks = [id(c) for c in GROUPS[0]._tasks]
        stack = coroutine_stack(task)
        if task is running:
            stack[0]["line"] = running_line
        tasks[str(id(task))] = {
            "id": id(task),
            "name": task.get_name(),
            "state": task._state.lower(),
            "type": type(task).__name__,
            "implementation": "python" if isinstance(task, asyncio.tasks._PyTask) else "c",
            "coroutine": id(task.get_coro()),
            "coroutine_stack": stack,
            "awaiting": id(waiter_object) if waiter_object is not None else None,
            "awaiting_type": type(waiter_object).__name__ if waiter_object is not None else None,
            "awaiting_tasks": awaiting_tasks,
            "running": task is running,
        }
    return tasks


def write_truth(loop):
    tasks = describe_tasks(loop)
    tasks.update(OTHER)
    for task in tasks.values():
        task["awaited_by"] = sorted(t["id"] for t in tasks.values()
                                    if task["id"] in t["awaiting_tasks"])
    truth = {"tasks": tasks, "thread": {"native_id": threading.get_native_id()}}
    tmp = TRUTH_PATH + ".tmp"
    with open(tmp, "w") as f:
        f.write(json.dumps(truth))
    os.rename(tmp, TRUTH_PATH)


# A second event loop in its own thread, whose task blocks the thread (so
# it is that loop's current task while the dump is taken).
OTHER = {}
OTHER_READY = threading.Event()
BLOCK = threading.Event()


async def other_main():
    loop = asyncio.get_running_loop()
    asyncio.create_task(worker(8), name="other-loop-child")
    await asyncio.sleep(0)
    me = asyncio.current_task()
    OTHER.update(describe_tasks(loop, running=me, running_line=sys._getframe().f_lineno + 2))
    OTHER_READY.set()
    BLOCK.wait()


async def main():
    loop = asyncio.get_running_loop()
    never = loop.create_future()
    fut = loop.create_future()
    t_leaf = asyncio.create_task(leaf(fut), name="leaf-awaits-future")
    asyncio.create_task(gatherer(), name="gatherer")
    asyncio.create_task(waiter(t_leaf), name="waits-for-leaf")
    asyncio.tasks._PyTask(worker(3), name="python-task")
    asyncio.create_task(worker(4))  # default name Task-N
    if sys.version_info >= (3, 11):
        asyncio.create_task(group_parent(), name="group-parent")
    if sys.version_info >= (3, 12):
        # Runs its first step inside this call (eager), then suspends.
        asyncio.Task(worker(7), loop=loop, name="eager", eager_start=True)
    for _ in range(5):
        await asyncio.sleep(0)
    # Runs on a later iteration, when main too is suspended on `never`.
    loop.call_soon(write_truth, loop)
    await never


threading.Thread(target=asyncio.run, args=(other_main(),), name="other-loop", daemon=True).start()
OTHER_READY.wait()
asyncio.run(main())
