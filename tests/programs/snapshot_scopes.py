"""A thread that stops inside a closure three levels deep and writes the
truth about its own variables, then blocks forever.

Usage: python snapshot_scopes.py TRUTH_JSON

The "scene" thread runs outer(p) -> middle(q) -> inner(r). inner binds
locals of every kind pydeep renders (every compact str kind, small and big
ints, float, complex, bytes, containers, instances of plain, slotted and
inherited classes, a cycle, a function), records for each: id(), the type
name, sys.getsizeof(), the reference count and repr(); middle records the
cells of inner's closure. Reference counts are measured through describe()
calibrated on a fresh object whose true count is 1, so the measurement's
own temporary references (argument, call) cancel out on every version.
Truth is written atomically, then the thread waits on an Event that is
never set; the main thread joins it. Nothing else runs Python code.
"""
import json
import os
import sys
import threading

TRUTH_PATH = sys.argv[1]
TRUTH = {"frames": {}, "globals": {}}
NEVER = threading.Event()

G_BIG = 12345678901234567890123456789
G_TEXT = "global text"


class Plain:
    def __init__(self, n):
        self.a = n
        self.b = "two"


class Child(Plain):
    def __init__(self, n):
        super().__init__(n)
        self.c = [n]


class Meta(type):
    """A metaclass, as pydantic's ModelMetaclass: its classes are named by
    their own name."""


class Model(metaclass=Meta):
    pass


class Slotted:
    __slots__ = ("x", "y")

    def __init__(self, x, y):
        self.x = x
        self.y = y


class SlotChild(Slotted):
    __slots__ = ("z",)

    def __init__(self, n):
        super().__init__(n, "why")
        self.z = 3.5


def describe(x):
    """The truth about x; refcount is raw and corrected by the caller."""
    attributes = None
    if type(x) in (Plain, Child, Slotted, SlotChild):
        attributes = {}
        for name in getattr(x, "__dict__", {}):
            attributes[name] = repr(getattr(x, name))
        for klass in type(x).__mro__:
            for name in klass.__dict__.get("__slots__", ()):
                attributes[name] = repr(getattr(x, name))
    return {
        "id": id(x),
        "type": type(x).__name__,
        "size": sys.getsizeof(x),
        "refcount": sys.getrefcount(x),
        "repr": repr(x),
        "attributes": attributes,
    }


def calibrate():
    probe = object()  # exactly one reference: this local
    return describe(probe)["refcount"] - 1


EXTRA = calibrate()


def outer(p):
    level1 = ["level", "one", p]

    def middle(q):
        level2 = {"level": 2, "q": q}

        def inner(r):
            n = r
            s_ascii = "plain ascii " + str(n)
            s_latin1 = "caf\xe9 " + str(n)
            s_ucs2 = "\u20ac uro " + str(n)
            s_ucs4 = "\U0001F600 smile " + str(n)
            small = 7
            big = 2 ** 100 + n
            negative = -(2 ** 70) - n
            medium = 10 ** 12 + n
            zero = n - n
            flt = 3.25 * n
            cpx = complex(1.5, -2.0 * n)
            bys = b"by\x00tes'" + bytes([n])
            tup = (1, "two", 3.0 + n)
            lst = [1, 2, [3, 4], n]
            dct = {"k": 1, "n": n}
            st = {1, 2, 3, n + 10}
            fst = frozenset({"a", "b"})
            empty_set = set()
            plain = Plain(n)
            child = Child(n)
            slotted = Slotted(n, "y")
            slot_child = SlotChild(n)
            cycle = []
            cycle.append(cycle)
            function = describe
            klass = Plain
            model_class = Model
            nothing = None
            flag = True
            seen = {}
            # Free variables: from middle and from outer (through middle).
            seen["level1"] = describe(level1)
            seen["level2"] = describe(level2)
            seen["p"] = describe(p)
            seen["q"] = describe(q)
            seen["r"] = describe(r)
            seen["n"] = describe(n)
            seen["s_ascii"] = describe(s_ascii)
            seen["s_latin1"] = describe(s_latin1)
            seen["s_ucs2"] = describe(s_ucs2)
            seen["s_ucs4"] = describe(s_ucs4)
            seen["small"] = describe(small)
            seen["big"] = describe(big)
            seen["negative"] = describe(negative)
            seen["medium"] = describe(medium)
            seen["zero"] = describe(zero)
            seen["flt"] = describe(flt)
            seen["cpx"] = describe(cpx)
            seen["bys"] = describe(bys)
            seen["tup"] = describe(tup)
            seen["lst"] = describe(lst)
            seen["dct"] = describe(dct)
            seen["st"] = describe(st)
            seen["fst"] = describe(fst)
            seen["empty_set"] = describe(empty_set)
            seen["plain"] = describe(plain)
            seen["child"] = describe(child)
            seen["slotted"] = describe(slotted)
            seen["slot_child"] = describe(slot_child)
            seen["cycle"] = describe(cycle)
            seen["function"] = describe(function)
            seen["klass"] = describe(klass)
            seen["model_class"] = describe(model_class)
            seen["nothing"] = describe(nothing)
            seen["flag"] = describe(flag)
            for entry in seen.values():
                entry["refcount"] -= EXTRA
            frame = sys._getframe()
            TRUTH["frames"]["inner"] = {
                "variables": seen,
                "varnames": list(frame.f_code.co_varnames),
                "freevars": list(frame.f_code.co_freevars),
                "argcount": frame.f_code.co_argcount,
            }
            TRUTH["frames"]["middle"]["line"] = frame.f_back.f_lineno
            TRUTH["frames"]["outer"] = {"line": frame.f_back.f_back.f_lineno}
            TRUTH["thread"] = {"name": threading.current_thread().name,
                               "native_id": threading.get_native_id()}
            del frame, entry
            TRUTH["frames"]["inner"]["line"] = sys._getframe().f_lineno + 2
            write_truth()
            NEVER.wait()

        cells = {}
        for name, cell in zip(inner.__code__.co_freevars, inner.__closure__):
            cells[name] = {"cell": id(cell), "contents": id(cell.cell_contents)}
        TRUTH["frames"]["middle"] = {"inner_closure": cells}
        del name, cell
        inner(q + 1)

    middle(p + 1)


def write_truth():
    for name in ("G_BIG", "G_TEXT", "Plain", "describe", "NEVER"):
        value = globals()[name]
        TRUTH["globals"][name] = {"id": id(value), "type": type(value).__name__}
    tmp = TRUTH_PATH + ".tmp"
    with open(tmp, "w") as f:
        json.dump(TRUTH, f)
    os.rename(tmp, TRUTH_PATH)


scene = threading.Thread(target=outer, args=(3,), name="scene", daemon=True)
scene.start()
scene.join()
