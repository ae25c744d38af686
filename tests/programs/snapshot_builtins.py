"""Subclasses of builtin containers and builtin objects pydeep reads
natively, described in-process, then the main thread blocks in pause(2).

Usage: python snapshot_builtins.py TRUTH_JSON

Module global `root` is a dict from a name to each object. The truth holds,
per name: id, type name, sys.getsizeof, len() where it has one, the
rendering pydeep must give (repr() where pydeep's rendering is Python's,
else its expected start: pydeep names a container subclass and does not
print functions' addresses), the references pydeep must report from it as
[to id, label], and the ids of gc.get_referents (without the type, the
__dict__ replaced by its values) that must all be among its edges.
"""
import asyncio
import collections
import contextvars
import functools
import itertools
import gc
import json
import os
import signal
import sys
import types
import weakref

TRUTH_PATH = sys.argv[1]


class MyList(list):
    pass


class Row(tuple):
    pass


class MySet(set):
    pass


class Meta(type):
    pass


class Model(metaclass=Meta):
    pass


class Target:
    def method(self):
        return self


def func(a, key=None):
    return a


Point = collections.namedtuple("Point", "x y")


def counting(start):
    held = [start]
    total = len(held)
    yield total
    yield held


class Suspend:
    def __await__(self):
        yield "suspended"


async def worker(job):
    note = "note " + str(len(sys.argv))
    await Suspend()
    return note, job

leaf_a = "leaf a " + str(len(sys.argv))
leaf_b = "leaf b " + str(len(sys.argv))
counter = collections.Counter({"home": 3, "about": 1})
counter.note = "visits " + str(len(sys.argv))
ordered = collections.OrderedDict([("x", leaf_a), ("y", leaf_b)])
ordered.move_to_end("x")
factory_dict = collections.defaultdict(list)
factory_dict["k"].append(leaf_a)
my_list = MyList([leaf_a, leaf_b])
my_list.tag = "tagged " + str(len(sys.argv))
row = Row((leaf_a, 7))
row.source = "db " + str(len(sys.argv))
point = Point(leaf_a, leaf_b)
my_set = MySet([leaf_a])
queue = collections.deque(range(100, 170))
queue.appendleft(leaf_b)
bounded = collections.deque([leaf_a], maxlen=5)
frozen = frozenset([leaf_a])
buffer = bytearray(b"hello")
view = memoryview(b"abcdef" + bytes(len(sys.argv)))
span = range(2, 20, 3)
cut = slice(1, None, 2)
bound_partial = functools.partial(func, leaf_a, key=leaf_b)
target = Target()
bound_method = target.method
builtin_function = len
builtin_method = my_list.append
prop = property(func)
static = staticmethod(func)
klass = classmethod(func)
namespace = types.SimpleNamespace(a=1, b="two")
reference = weakref.ref(target)
suspended_generator = counting(leaf_a)
next(suspended_generator)
suspended_coroutine = worker(leaf_b)
suspended_coroutine.send(None)
loop = asyncio.new_event_loop()
pending_task = loop.create_task(worker(leaf_a))
context = contextvars.copy_context()


def raises(value):
    local_list = [value]
    raise ValueError(local_list)


# Frames: the running module's, and one left by a finished call (a
# traceback keeps it; 3.11+ copies its interpreter frame into it).
running_frame = sys._getframe()
try:
    raises(leaf_a)
except ValueError as error:
    finished_frame = error.__traceback__.tb_next.tb_frame
    del error
# Iterators: sized by object.__sizeof__ (their type's basic size).
iterators = {
    "list_iter": iter(my_list),
    "tuple_iter": iter((leaf_a, leaf_b)),
    "dict_iter": iter({"k": leaf_a}),
    "range_iter": iter(range(10)),
    "str_iter": iter("abc"),
    "enumerated": enumerate(my_list),
    "zipped": zip(my_list, my_list),
    "mapped": map(str, my_list),
    "counting_up": itertools.count(5),
    "chained": itertools.chain(my_list),
}

root = {
    "counter": counter,
    "ordered": ordered,
    "factory_dict": factory_dict,
    "my_list": my_list,
    "row": row,
    "point": point,
    "my_set": my_set,
    "queue": queue,
    "bounded": bounded,
    "frozen": frozen,
    "buffer": buffer,
    "view": view,
    "span": span,
    "cut": cut,
    "bound_partial": bound_partial,
    "bound_method": bound_method,
    "builtin_function": builtin_function,
    "builtin_method": builtin_method,
    "prop": prop,
    "static": static,
    "klass": klass,
    "namespace": namespace,
    "reference": reference,
    "Model": Model,
    "suspended_generator": suspended_generator,
    "suspended_coroutine": suspended_coroutine,
    "pending_task": pending_task,
    "context": context,
    **iterators,
    "running_frame": running_frame,
    "finished_frame": finished_frame,
}

edges = {
    "counter": [[id(k), "key"] for k in counter] + [[id(3), "['home']"], [id(counter.note), ".note"]],
    "ordered": [[id(leaf_a), "['x']"], [id(leaf_b), "['y']"]],
    "factory_dict": [[id(list), "default_factory"], [id(factory_dict["k"]), "['k']"]],
    "my_list": [[id(leaf_a), "[0]"], [id(leaf_b), "[1]"], [id(my_list.tag), ".tag"]],
    "row": [[id(leaf_a), "[0]"], [id(7), "[1]"], [id(row.source), ".source"]],
    "point": [[id(leaf_a), "[0]"], [id(leaf_b), "[1]"]],
    "my_set": [[id(leaf_a), "item"]],
    "queue": [[id(queue[0]), "[0]"], [id(queue[1]), "[1]"], [id(queue[70]), "[70]"]],
    "bounded": [[id(leaf_a), "[0]"]],
    "frozen": [[id(leaf_a), "item"]],
    "view": [[id(view.obj), "obj"]],
    "span": [[id(span.start), "start"], [id(span.stop), "stop"], [id(span.step), "step"]],
    "cut": [[id(cut.start), "start"], [id(cut.stop), "stop"], [id(cut.step), "step"]],
    "bound_partial": [[id(func), "func"], [id(bound_partial.args), "args"], [id(bound_partial.keywords), "keywords"]],
    "bound_method": [[id(Target.method), "__func__"], [id(target), "__self__"]],
    "builtin_method": [[id(my_list), "__self__"]],
    "prop": [[id(func), "fget"]],
    "static": [[id(func), "__func__"]],
    "klass": [[id(func), "__func__"]],
    "namespace": [[id(namespace.__dict__), "__dict__"]],
    # A suspended generator's frame holds its variables (and what it
    # awaits): f_locals in-process.
    "suspended_generator": [
        [id(v), "f_locals[%r]" % k] for k, v in suspended_generator.gi_frame.f_locals.items()
    ],
    "suspended_coroutine": [
        [id(v), "f_locals[%r]" % k] for k, v in suspended_coroutine.cr_frame.f_locals.items()
    ] + [[id(suspended_coroutine.cr_await), "cr_await"]],
}

SUBCLASSES = (collections.Counter, MyList, Row, MySet)


def referents(value):
    """gc.get_referents of value, without its type (a node's type, not an
    edge) and, for instances of container subclasses, with their __dict__
    replaced by the dict's values (pydeep shows attributes as `.name`
    edges; a builtin's own dict, as a staticmethod's, is a `__dict__` edge)."""
    out = []
    for r in gc.get_referents(value):
        if r is type(value):
            continue
        if isinstance(value, SUBCLASSES) and r is getattr(value, "__dict__", None):
            out.extend(r.values())
            continue
        out.append(r)
    return [id(r) for r in out]


exact = {"counter", "my_set", "bounded", "frozen", "buffer", "span", "cut",
         "builtin_function", "builtin_method", "namespace"}
prefixes = {
    "ordered": "OrderedDict({'y': 'leaf b 2', 'x': 'leaf a 2'})",
    "factory_dict": "defaultdict(<class 'list'>, {'k': ",
    "my_list": "MyList(['leaf a 2', 'leaf b 2'])",
    "row": "Row('leaf a 2', 7)",
    "point": "Point('leaf a 2', 'leaf b 2')",
    "queue": "deque(['leaf b 2', 100, 101",
    "view": "<memory at 0x%x>" % id(view),
    "bound_partial": "functools.partial(<function func>, 'leaf a 2', key='leaf b 2')",
    "bound_method": "<bound method Target.method of <Target object at 0x%x>>" % id(target),
    "prop": "<property object at 0x%x>" % id(prop),
    "static": "<staticmethod(<function func>)>",
    "klass": "<classmethod(<function func>)>",
    "namespace": "namespace(a=1, b='two')",
    "reference": "<weakref at 0x%x; to 'Target' at 0x%x>" % (id(reference), id(target)),
    "Model": "<class 'Model'>",
    "suspended_generator": "<generator counting suspended at snapshot_builtins.py:%d>"
    % suspended_generator.gi_frame.f_lineno,
    "suspended_coroutine": "<coroutine worker suspended at snapshot_builtins.py:%d>"
    % suspended_coroutine.cr_frame.f_lineno,
    "pending_task": "<Task object at 0x%x>" % id(pending_task),
    "context": "<Context object at 0x%x>" % id(context),
    **{name: "<%s object at 0x%x>" % (type(value).__name__, id(value))
       for name, value in iterators.items()},
    "running_frame": "<frame",
    "finished_frame": "<frame",
}
objects = {}
for name, value in root.items():
    entry = {
        "id": id(value),
        "type": type(value).__name__,
        "size": sys.getsizeof(value),
        "repr": repr(value) if name in exact else prefixes[name],
        "edges": edges.get(name, []),
        "referents": [] if name in ("Model", "builtin_function") or name.startswith("suspended")
        or name in ("pending_task", "context") or name in iterators or name.endswith("_frame")
        else referents(value),
    }
    try:
        entry["len"] = len(value)
    except TypeError:
        pass
    objects[name] = entry



class Attributes:
    pass


def make_attributes():
    made = Attributes()
    made.first = None
    made.second = None
    return made


def make_target():
    made = Target()
    made.payload = None
    return made


def traced_beyond_getsizeof(make):
    """An instance `make` makes (its attributes set, no __dict__ asked
    for), and the bytes tracemalloc saw allocated while it was made less
    its sys.getsizeof: its values array where getsizeof leaves it out
    (3.11/3.12 kept apart, 3.13+ inline in the object). None on 3.9/3.10,
    which make a dict that may come from a free list (untraced)."""
    import tracemalloc
    make()  # the class's shared keys settle first
    tracemalloc.start()
    made = make()
    snapshot = tracemalloc.take_snapshot()
    tracemalloc.stop()
    first = make.__code__.co_firstlineno
    lines = range(first, first + 6)
    traced = sum(t.size for t in snapshot.traces
                 if t.traceback[0].filename == __file__ and t.traceback[0].lineno in lines)
    if sys.version_info < (3, 11):
        return made, None
    return made, traced - sys.getsizeof(made)


def build_private(shared):
    """A list holding objects only it reaches (a list of fresh strings, a
    dict with a fresh key and a big int, an instance with a __dict__) and
    one object also held by a global: its retained size is the sum of
    sys.getsizeof of the private ones (the instance's __dict__ included)."""
    suffix = str(len(sys.argv))
    strings = ["private string %d %s" % (i, suffix) for i in range(3)]
    table = {"key " + suffix: 10 ** 30 + len(sys.argv)}
    holder, holder_beyond = traced_beyond_getsizeof(make_target)
    holder.payload = "payload " + suffix
    private = [strings, table, holder]
    return [private, shared], private, strings, table, holder, holder_beyond


shared_object = ["shared " + str(len(sys.argv))]
private_root, private, strings, table, holder, holder_beyond = build_private(shared_object)
owned = [private_root, private, strings, table, holder, holder.payload]
owned += strings + list(table) + list(table.values())
# The instance's attribute values are its own; its __dict__ (3.9/3.10:
# a dict object; 3.11+: made by vars() below, so the same everywhere;
# 3.13+ adds the inline values below).
retained = sum(sys.getsizeof(o) for o in owned) + sys.getsizeof(vars(holder))
del owned, private, strings, table, holder
objects_retained = {"id": id(private_root), "retained_size": retained}

# 3.13+: the holder's attribute values are inline in it, and freed with
# it, though neither its getsizeof nor its __dict__'s counts them (3.11/
# 3.12 moved them into the dict vars() made, which counts them).
if sys.version_info >= (3, 13):
    objects_retained["retained_size"] += holder_beyond
attributes, attributes_beyond = traced_beyond_getsizeof(make_attributes)
objects_retained["attributes"] = {
    "id": id(attributes),
    "size": sys.getsizeof(attributes),
    "beyond_getsizeof": attributes_beyond,
}

text = json.dumps({"objects": objects, "retained": objects_retained})
with open(TRUTH_PATH + ".tmp", "w") as f:
    f.write(text)
os.rename(TRUTH_PATH + ".tmp", TRUTH_PATH)
signal.pause()
