"""Functions whose bytecode pydeep's disassembler is checked against `dis`.

Each shape the compiler treats specially appears at least once: loops,
comprehensions, closures, generators, try/except/finally, with, match,
async, f-strings, lambdas, super(), and a generated function big enough to
need EXTENDED_ARG. `exercise()` runs everything, so that on 3.11+ the
adaptive interpreter specializes the instructions (called many times by
dump_code.py).
"""

import asyncio
import sys

GLOBAL_LIST = list(range(50))


def loops(n=30):
    total = 0
    for i in range(n):
        if i % 3 == 0:
            continue
        total += i * 2
    j = 0
    while j < n:
        j += 1
        if j > 20:
            break
    else:
        total -= 1
    return total + j


def comprehensions(data=GLOBAL_LIST):
    squares = [x * x for x in data if x % 2]
    table = {x: str(x) for x in data[:5]}
    unique = {x % 7 for x in data}
    lazy = sum(x for x in data if x > 10)
    nested = [[y for y in range(x)] for x in range(4)]
    return len(squares) + len(table) + len(unique) + lazy + len(nested)


def closures(base=3):
    counter = 0

    def bump(step=1):
        nonlocal counter
        counter += step + base
        return counter

    def read():
        return counter

    bump()
    bump(2)
    return read()


def generator(limit=10):
    for i in range(limit):
        received = yield i
        if received:
            limit += 1
    yield from range(3)
    return limit


def run_generator():
    total = 0
    for value in generator():
        total += value
    return total


def exceptions(value=1):
    result = []
    try:
        result.append(10 // value)
        try:
            {}["missing"]
        except KeyError as error:
            result.append(type(error).__name__)
        finally:
            result.append("inner finally")
    except (ZeroDivisionError, TypeError):
        result.append("caught")
    else:
        result.append("else")
    finally:
        result.append("finally")
    return result


class Context:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def with_statements():
    with Context() as first, Context():
        value = first is not None
    return value


def fstrings(name="world", width=8, value=3.14159):
    return (
        f"hello {name!r:>{width}} {value:.2f} {name!s} {name!a}"
        f"{value=}"
    )


def lambdas():
    key = lambda item: (item % 5, -item)  # noqa: E731
    adder = lambda a, b=2, *rest, c, **kw: a + b + c + len(rest) + len(kw)  # noqa: E731
    ordered = sorted(GLOBAL_LIST, key=key)
    return ordered[0] + adder(1, c=3)


class Base:
    def __init__(self):
        self.items = []

    def add(self, item):
        self.items.append(item)
        return len(self.items)


class Derived(Base):
    def __init__(self):
        super().__init__()
        self.extra = 1

    def add(self, item):
        size = super().add(item)
        return size + self.extra

    @property
    def count(self):
        return len(self.items)


def methods_and_attributes():
    obj = Derived()
    for i in range(20):
        obj.add(i)
    return obj.count + obj.extra


def arithmetic(a=7, b=3):
    values = [a + b, a - b, a * b, a / b, a // b, a % b, a ** b, a << b,
              a >> b, a & b, a | b, a ^ b, -a, +a, ~a, not a]
    values[0] += 1
    values[1] -= 1
    comparisons = (a < b, a <= b, a == b, a != b, a > b, a >= b,
                   a is b, a is not b, a in values, a not in values)
    return sum(values) + sum(comparisons)


def unpacking(pairs=((1, 2), (3, 4))):
    first, *rest = [1, 2, 3, 4]
    (a, b), (c, d) = pairs
    merged = {**{"x": 1}, **{"y": 2}}
    combined = [*rest, *pairs]
    return first + a + b + c + d + len(merged) + len(combined)


def global_and_builtins():
    global GLOBAL_COUNTER
    GLOBAL_COUNTER = len(GLOBAL_LIST) + max(GLOBAL_LIST)
    return isinstance(GLOBAL_COUNTER, int)


def slicing(data=GLOBAL_LIST):
    data = list(data)
    data[1:3] = [0, 0]
    del data[0]
    return data[::2][-1] + data[2:10:3][0]


def keyword_calls():
    return dict(a=1, b=2), sorted([3, 1, 2], reverse=True), print.__name__


async def coroutine_inner(n):
    await asyncio.sleep(0)
    return n * 2


async def coroutine_outer():
    total = 0
    for i in range(3):
        total += await coroutine_inner(i)
    async with AsyncContext():
        pass
    async for value in async_generator():
        total += value
    return total


class AsyncContext:
    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        return False


async def async_generator():
    for i in range(3):
        yield i


def run_async():
    """Drives coroutine_outer by hand instead of with asyncio.run: its only
    suspension is asyncio.sleep(0), which yields None, and Pyodide's
    WebAssembly CPython (used for 3.14/3.15) has no event loop that can run
    synchronously under Node."""
    coroutine = coroutine_outer()
    while True:
        try:
            coroutine.send(None)
        except StopIteration as done:
            return done.value


MATCH_SOURCE = '''
def matching(command=("go", "north")):
    match command:
        case ("go", direction) if direction in ("north", "south"):
            return direction
        case {"action": action, **rest}:
            return action
        case [first, *others]:
            return first
        case str() | bytes():
            return "text"
        case Point(x=0, y=yy):
            return yy
        case 1 | 2 | 3:
            return "small"
        case _:
            return None


class Point:
    __match_args__ = ("x", "y")

    def __init__(self, x, y):
        self.x = x
        self.y = y


def run_matching():
    results = []
    for value in [("go", "north"), {"action": "x"}, [1, 2], "s", Point(0, 5), 2, 9.5]:
        results.append(matching(value))
    return results
'''


NEW_SYNTAX_SOURCE = '''
def exception_groups():
    caught = []
    try:
        raise ExceptionGroup("many", [ValueError(1), KeyError(2)])
    except* ValueError as group:
        caught.append(len(group.exceptions))
    except* KeyError:
        caught.append("key")
    return caught
'''

GENERIC_SOURCE = '''
def identity[T](value: T) -> T:
    return value


class Box[T]:
    def __init__(self, item: T):
        self.item = item


type Pair[K] = tuple[K, K]


def run_generics():
    return identity(Box(3)).item
'''


def _make_big_function():
    """A function with over 256 constants, names and locals and a jump over
    more than 256 code units, so EXTENDED_ARG prefixes appear."""
    lines = ["def big_function(flag=True):"]
    lines.append("    total = 0")
    lines.append("    if flag:")
    for i in range(300):
        lines.append(f"        v{i} = {i * 1000 + 7} + total")
        lines.append(f"        total += v{i} + len(name_{i % 3}_list)")
    lines.append("    return total")
    source = "\n".join(lines)
    namespace = {f"name_{i}_list": [i] * (i + 1) for i in range(3)}
    exec(compile(source, __file__ + ":big_function", "exec"), namespace)
    return namespace["big_function"]


big_function = _make_big_function()

ROOTS = [
    loops, comprehensions, closures, generator, run_generator, exceptions,
    Context.__enter__, Context.__exit__, with_statements, fstrings, lambdas,
    Base.__init__, Base.add, Derived.__init__, Derived.add, Derived.count.fget,
    methods_and_attributes, arithmetic, unpacking, global_and_builtins, slicing,
    keyword_calls, coroutine_inner, coroutine_outer, AsyncContext.__aenter__,
    AsyncContext.__aexit__, async_generator, run_async, big_function,
]

if sys.version_info >= (3, 10):
    _match_namespace = {}
    exec(compile(MATCH_SOURCE, __file__ + ":match", "exec"), _match_namespace)
    ROOTS += [_match_namespace["matching"], _match_namespace["Point"].__init__,
              _match_namespace["run_matching"]]

if sys.version_info >= (3, 11):
    exec(compile(NEW_SYNTAX_SOURCE, __file__ + ":except_star", "exec"), _match_namespace)
    ROOTS.append(_match_namespace["exception_groups"])
if sys.version_info >= (3, 12):
    exec(compile(GENERIC_SOURCE, __file__ + ":generics", "exec"), _match_namespace)
    ROOTS += [_match_namespace["identity"], _match_namespace["run_generics"],
              _match_namespace["Box"].__init__]


def exercise():
    """Run every function once."""
    results = [
        loops(), comprehensions(), closures(), run_generator(), exceptions(),
        exceptions(0), with_statements(), fstrings(), lambdas(),
        methods_and_attributes(), arithmetic(), unpacking(),
        global_and_builtins(), slicing(), keyword_calls(), run_async(),
        big_function(),
    ]
    gen = generator(3)
    next(gen)
    gen.send(True)
    gen.close()
    if sys.version_info >= (3, 10):
        results.append(_match_namespace["run_matching"]())
    if sys.version_info >= (3, 11):
        results.append(_match_namespace["exception_groups"]())
    if sys.version_info >= (3, 12):
        results.append(_match_namespace["run_generics"]())
    return results


if __name__ == "__main__":
    # `python bytecode_corpus.py` runs everything three times and prints ok;
    # `python bytecode_corpus.py --loop SECONDS` keeps running for a sampler
    # to record (prints "ready" once warmed up, for the test to attach).
    if len(sys.argv) == 3 and sys.argv[1] == "--loop":
        import time
        deadline = time.monotonic() + float(sys.argv[2])
        for _ in range(10):
            exercise()
        print("ready", flush=True)
        while time.monotonic() < deadline:
            exercise()
            loops(3000)
    else:
        for _ in range(3):
            exercise()
        print("ok")
