"""Mixed Python work: generators, closures, dict/list churn and classes."""

import time

from common import Counter, finish, install, parse


class Point:
    __slots__ = ("x", "y")

    def __init__(self, x, y):
        self.x = x
        self.y = y

    def norm(self):
        return self.x * self.x + self.y * self.y


class Shape:
    def __init__(self, points):
        self.points = points

    def area(self):
        return sum(p.norm() for p in self.points) % 1009


def scaled(factor):
    def scale(value):
        return value * factor % 997

    return scale


def numbers(n):
    for i in range(n):
        yield i * 3 % 101


def one_round(round_number):
    table = {}
    for i in numbers(200):
        table[i] = table.get(i, 0) + 1
    items = [scaled(k)(v) for k, v in table.items()]
    items.sort()
    shape = Shape([Point(i, round_number % 13) for i in items[:50]])
    text = ",".join(str(v) for v in items[:20])
    return shape.area() + len(text)


def main():
    args = parse(__doc__)
    counter = Counter()
    install(counter)
    end = time.monotonic() + args.seconds
    while time.monotonic() < end:
        one_round(counter.slots[0])
        counter.slots[0] += 1
    finish(counter)


if __name__ == "__main__":
    main()
