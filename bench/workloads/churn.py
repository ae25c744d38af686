"""Call-heavy Python: many short calls, the kind of code most programs are.

Three shapes (--shape):

* `chain`: a chain of --depth `descend` frames whose innermost one runs
  `work`, a loop of its own (about a fifth of the time) and `fib(12)`
  (465 calls, each a few tens of ns): the top of the stack changes every
  few hundred nanoseconds, its base never.
* `methods`: a walk over a tree of small objects through short methods
  (`Tree.walk` -> `Node.visit` -> `Node.weight` -> `leaf_cost`), under
  --depth `descend` frames.
* `generators`: a pipeline of generators (`numbers` -> `squares` ->
  `evens`) consumed by `consume`, under --depth `descend` frames.

No profiler can be exact here unless it stops the target: the harness
compares each tool's own and total shares of every function with pydeep's
blocking profile of the same workload (notes/benchmarks.md, "Call churn").
"""

import sys
import time
from time import perf_counter_ns

from common import Counter, finish, install, parse


def fib(n):
    if n < 2:
        return n
    return fib(n - 1) + fib(n - 2)


def leaf_cost(value):
    return value & 7


class Node:
    __slots__ = ("value", "children")

    def __init__(self, value, children):
        self.value = value
        self.children = children

    def weight(self):
        cost = leaf_cost(self.value)
        return cost + 1

    def visit(self):
        total = self.weight()
        for child in self.children:
            total += child.visit()
        return total


class Tree:
    def __init__(self, depth, fanout):
        self.root = self.build(depth, fanout, 0)

    def build(self, depth, fanout, value):
        if depth == 0:
            return Node(value, ())
        return Node(value, tuple(self.build(depth - 1, fanout, value * fanout + i) for i in range(fanout)))

    def walk(self):
        return self.root.visit()


def numbers(n):
    for i in range(n):
        yield i


def squares(source):
    for value in source:
        yield value * value


def evens(source):
    for value in source:
        if not value & 1:
            yield value


def consume(n):
    total = 0
    for value in evens(squares(numbers(n))):
        total += value
    return total


TREE = Tree(6, 3)


def work(shape, counter):
    if shape == "chain":
        # About a fifth of the time in this frame's own loop, the rest in
        # fib's churn. The program measures its own time in fib and in the
        # whole of work (clocks fib_ns, work_ns, printed with each mark):
        # the in-process truth profiles of this shape are held to. Wall
        # time, as a sampler sees it (a thread preempted on a loaded
        # machine stands still in its frame), read through the vDSO: a
        # thread CPU clock is a system call, and a return from one is where
        # a loaded machine preempts the thread, which then stood still in
        # `work`, taking 5 points of fib's share in every profiler.
        start = perf_counter_ns()
        total = 0
        for i in range(1500):
            total += i & 3
        before_fib = perf_counter_ns()
        fib(12)
        end = perf_counter_ns()
        clocks = counter.clocks
        clocks["fib_ns"] = clocks.get("fib_ns", 0) + (end - before_fib)
        clocks["work_ns"] = clocks.get("work_ns", 0) + (end - start)
    elif shape == "methods":
        TREE.walk()
    else:
        consume(2000)
    counter.slots[0] += 1


def descend(k, depth, shape, counter, end):
    if k < depth:
        descend(k + 1, depth, shape, counter, end)
        return
    while time.monotonic() < end:
        work(shape, counter)


def main():
    args = parse(__doc__, depth=30, shape="chain")
    sys.setrecursionlimit(args.depth + 1000)
    counter = Counter()
    install(counter)
    end = time.monotonic() + args.seconds
    descend(1, args.depth, args.shape, counter, end)
    finish(counter)


if __name__ == "__main__":
    main()
