"""Fixture of tests/tests/trace_real_library.rs: `pydeep trace --calls` on
real third-party code, pyparsing and jinja2 (pip-installed into a venv by
the test), against the program's own count of its calls.

work() drives both libraries through many kinds of Python call:
pyparsing parses arithmetic with infix_notation (a Forward grammar, so
recursion; ParserElement subclasses with __init__; parse actions through
pyparsing's arity-trimming closures; ParseResults.__getitem__, __iter__,
as_list/as_dict; scan_string, a generator; ParseException raised and
caught for input that does not parse, and its __str__), then evaluates the
parse with classes of its own; jinja2 compiles a template from source each
time (lexer generators, the parser, the code generator's visit_*
dispatch, then exec of the module code it generated: fresh code objects
every work()) and renders it (the generated root, macro and block
functions are generators; filters, loops, a macro call, attribute and item
lookups), and renders another template in its async mode on an asyncio
event loop (coroutines, async generators, a loop over an async generator
of ours, the event loop's tasks and handles).

The truth: one work() under a C-level profile function's counter of every
Python function's "call" events (generator resumptions included, as a
profile function sees them; PyEval_SetProfile through ctypes, see truth()),
keyed "co_filename:co_firstlineno:co_name", taken
after warm-up runs (caches filled, arity probes done) with the garbage
collector off (a __del__ or weakref callback run by a collection would be
a call the next work() need not make). work() must be deterministic for
that truth to say what the window's work() called: the program takes it
again after the windows, and the test requires the two equal.

argv[1]: the ready file ({"truth", "value", the libraries' versions}).
Files in its folder, for rounds N = 1, 2, ...: warmN -> work() five times
(the truth's profile function, sys.monitoring on 3.12+, and a window
recording by sys.monitoring leave the code unspecialised), then
warmedN.json: how many of the libraries' instructions are specialised
into the forms that push a Python frame inside the eval loop (3.11+; the
window's work() runs through them); goN -> one work() between
time.monotonic_ns() readings, roundN.json (the readings, the thread, the
value). end -> the truth again, final.json (the rounds, sys.getprofile and
gettrace, the sys.monitoring tools, every thread's C-level profile and
trace functions and the interpreter's eval-frame function, each before
and after), exit 0.
"""
import asyncio
import ctypes
import dis
import gc
import json
import os
import sys
import threading
import time

from c_hooks import c_hooks, eval_frame

# This folder holds fixtures named like stdlib modules (secrets.py): the
# libraries must import the standard library's.
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != HERE]

import jinja2  # noqa: E402
import pyparsing as pp  # noqa: E402

ready = sys.argv[1]
folder = os.path.dirname(ready)


# pyparsing: arithmetic with variables, evaluated through classes of ours.
class Operand:
    def __init__(self, tokens):
        self.value = tokens[0]

    def eval(self, env):
        if isinstance(self.value, str):
            return env[self.value]
        return self.value


class BinOp:
    def __init__(self, tokens):
        self.items = tokens[0]

    def operands(self):
        items = self.items
        yield items[0]
        for i in range(1, len(items), 2):
            yield items[i], items[i + 1]

    def eval(self, env):
        parts = self.operands()
        total = next(parts).eval(env)
        for op, operand in parts:
            total = OPS[op](total, operand.eval(env))
        return total


class Sign:
    def __init__(self, tokens):
        self.sign, self.operand = tokens[0]

    def eval(self, env):
        v = self.operand.eval(env)
        return -v if self.sign == "-" else v


OPS = {
    "+": lambda a, b: a + b,
    "-": lambda a, b: a - b,
    "*": lambda a, b: a * b,
    "/": lambda a, b: a // b if b else 0,
}


def grammar():
    # infix_notation backtracks exponentially in the nesting without
    # pyparsing's packrat cache (a dict of parse results, reset by each
    # parse_string: deterministic per parse).
    pp.ParserElement.enable_packrat()
    number = pp.pyparsing_common.integer
    name = pp.Word(pp.alphas, pp.alphanums + "_")
    operand = (number | name).set_parse_action(Operand)
    return pp.infix_notation(
        operand,
        [
            (pp.one_of("+ -"), 1, pp.OpAssoc.RIGHT, Sign),
            (pp.one_of("* /"), 2, pp.OpAssoc.LEFT, BinOp),
            (pp.one_of("+ -"), 2, pp.OpAssoc.LEFT, BinOp),
        ],
    )


EXPR = grammar()
ASSIGN = pp.Group(
    pp.Word(pp.alphas)("target") + pp.Suppress("=") + pp.QuotedString('"')("text")
)
EXPRESSIONS = [
    "1 + 2 * 3",
    "(a + b) * (c - 4) / 2",
    "-(x * (y + (z - (1 + (2 * (3 - a)))))) + b",
    "a * b * c * x * y * z - 7",
]
ENV = {"a": 3, "b": 5, "c": 11, "x": 2, "y": 7, "z": 13}
BROKEN = ["1 + ", "(a * ", "* 3"]
ASSIGNMENTS = 'name = "pydeep"  kind = "tracer" junk  lang = "rust"'


def parse_all():
    total = 0
    for text in EXPRESSIONS:
        tree = EXPR.parse_string(text, parse_all=True)[0]
        total += tree.eval(ENV)
    failures = []
    for text in BROKEN:
        try:
            EXPR.parse_string(text, parse_all=True)
        except pp.ParseException as e:
            failures.append(str(e))
    found = {}
    for tokens, start, end in ASSIGN.scan_string(ASSIGNMENTS):
        group = tokens[0]
        found[group["target"]] = group["text"]
        found[group["target"] + "_span"] = end - start
    return total, len(failures), found


# jinja2: a template compiled from source in every work(), then rendered.
TEMPLATE = """\
{% macro row(item, loop) -%}
<tr class="{{ loop.cycle('odd', 'even') }}"><td>{{ loop.index }}</td>
<td>{{ item.name | title }}</td><td>{{ item.tags | join(', ') }}</td>
<td>{{ '%.1f' | format(item.score) }}</td></tr>
{%- endmacro %}
{% block table %}<table>
{% for item in items | sort(attribute='score', reverse=True) if item.score > 1 %}
{{ row(item, loop) }}
{% else %}<tr><td>none</td></tr>
{% endfor %}</table>{% endblock %}
{% set total = items | map(attribute='score') | sum %}
total {{ total | round(2) }} over {{ items | length }}; {{ meta['title'] | upper }}
{% if meta.draft is defined and meta.draft %}draft{% else %}final{% endif %}
"""


class Item:
    def __init__(self, name, tags, score):
        self.name = name
        self.tags = tags
        self.score = score


ITEMS = [Item("item %d" % i, ["t%d" % (i % 3), "u%d" % (i % 5)], i * 1.5) for i in range(12)]
ENVIRONMENT = jinja2.Environment(autoescape=True)


def render():
    template = ENVIRONMENT.from_string(TEMPLATE)
    return template.render(items=ITEMS, meta={"title": "calls", "draft": False})


# jinja2's async mode: the template compiled to coroutines and async
# generators, its for loop over an async generator of ours, run on an
# asyncio event loop (tasks, handles, the loop's own Python code).
ASYNC_TEMPLATE = """\
{% for name in names %}{{ loop.index }}:{{ name | upper }}\
{% if not loop.last %}, {% endif %}{% endfor %}
{% macro tag(x) %}<{{ x }}>{% endmacro %}{{ tag(words | map('title') | join('-')) }}
"""
ASYNC_ENVIRONMENT = jinja2.Environment(enable_async=True, autoescape=True)
LOOP = asyncio.new_event_loop()


async def names(n):
    for i in range(n):
        yield "name%d" % i


def render_async():
    template = ASYNC_ENVIRONMENT.from_string(ASYNC_TEMPLATE)
    coroutine = template.render_async(names=names(6), words=["alpha", "beta", "gamma"])
    return LOOP.run_until_complete(coroutine)


def work():
    parsed = parse_all()
    page = render()
    text = render_async()
    return [parsed[0], parsed[1], sorted(parsed[2].items()), len(page), page.count("<tr"), text]


# A C-level profile function (PyEval_SetProfile through ctypes), not
# sys.setprofile: on 3.9 and 3.10 sys.setprofile's trampoline copies the
# frame's fast locals into its f_locals dict at every event, inside the
# interpreter's guard against tracing the profile function itself
# (call_trampoline in Python/sysmodule.c; 3.11+ does it only for a frame
# whose f_locals were written), so a deallocation that copy triggers runs
# its Python code unseen: here a WeakSet's _remove (an asyncio loop's
# async generators, called 6 times per work()) was counted 5 times.
# Py_tracefunc: int (PyObject *obj, PyFrameObject *frame, int what, PyObject *arg)
PROFILE = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p
)
PY_TRACE_CALL = 0
set_profile = ctypes.pythonapi.PyEval_SetProfile
set_profile.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
set_profile.restype = None


def truth():
    counts = {}

    def profiler(obj, frame, what, arg):
        if what == PY_TRACE_CALL:
            code = ctypes.cast(frame, ctypes.py_object).value.f_code
            key = "%s:%d:%s" % (code.co_filename, code.co_firstlineno, code.co_name)
            counts[key] = counts.get(key, 0) + 1
        return 0

    callback = PROFILE(profiler)
    set_profile(ctypes.cast(callback, ctypes.c_void_p), None)
    value = work()
    set_profile(None, None)
    return counts, value


INLINED = (
    "BINARY_SUBSCR_GETITEM",
    "CALL_ALLOC_AND_ENTER_INIT",
    "FOR_ITER_GEN",
    "SEND_GEN",
    "LOAD_ATTR_PROPERTY",
)


def inlined_sites():
    """How many instructions of the libraries' functions are specialised
    (3.11+) into one of the forms that push a Python frame inside the eval
    loop, past a PEP 523 hook (notes/tracing.md), after the warm-up: the
    window's work() runs through them."""
    sites = {}
    if sys.version_info < (3, 11):
        return sites
    roots = (os.path.dirname(pp.__file__), os.path.dirname(jinja2.__file__))
    codes = {
        id(f.__code__): f.__code__
        for f in gc.get_objects()
        if type(f).__name__ == "function" and f.__code__.co_filename.startswith(roots)
    }
    for code in codes.values():
        for ins in dis.get_instructions(code, adaptive=True):
            if ins.opname in INLINED:
                sites[ins.opname] = sites.get(ins.opname, 0) + 1
    return sites


def monitoring_tools():
    mon = getattr(sys, "monitoring", None)
    if mon is None:
        return []
    return [[mon.get_tool(t), mon.get_events(t)] for t in range(6)]


def publish(name, value):
    path = os.path.join(folder, name)
    with open(path + ".tmp", "w") as f:
        json.dump(value, f)
    os.rename(path + ".tmp", path)


def wait_for(*names):
    """The first of the files `names` (in the program's folder) to exist."""
    while True:
        for name in names:
            if os.path.exists(os.path.join(folder, name)):
                return name
        time.sleep(0.005)


gc.collect()
gc.disable()
for _ in range(5):
    work()
counts, value = truth()
hooks_before = {
    "profile": repr(sys.getprofile()),
    "trace": repr(sys.gettrace()),
    "tools": monitoring_tools(),
    "c_hooks": c_hooks(),
    "eval_frame": eval_frame(),
}
publish(
    os.path.basename(ready),
    {
        "truth": counts,
        "value": value,
        "pyparsing": pp.__version__,
        "jinja2": jinja2.__version__,
    },
)

n = 1
while wait_for("warm%d" % n, "end") != "end":
    # The profile function (sys.monitoring on 3.12+) and a window recording
    # by sys.monitoring leave the code unspecialised: specialise it again.
    for _ in range(5):
        work()
    publish("warmed%d.json" % n, {"inlined": inlined_sites()})
    wait_for("go%d" % n)
    before = time.monotonic_ns()
    during = work()
    after = time.monotonic_ns()
    publish(
        "round%d.json" % n,
        {"thread": threading.get_native_id(), "before": before, "after": after, "value": during},
    )
    n += 1

counts_after, value_after = truth()
publish(
    "final.json",
    {
        "truth": counts_after,
        "value": value_after,
        "rounds": n - 1,
        "before": hooks_before,
        "after": {
            "profile": repr(sys.getprofile()),
            "trace": repr(sys.gettrace()),
            "tools": monitoring_tools(),
            "c_hooks": c_hooks(),
            "eval_frame": eval_frame(),
        },
    },
)
