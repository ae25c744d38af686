"""A pydantic model (a class with a metaclass, instances with a __dict__
and slots) and the containers a real program keeps beside it (a Counter of
its tags, an OrderedDict cache, a deque of recent models), described
in-process, then the main thread blocks in pause(2).

Usage: python real_pydantic.py TRUTH_JSON (pydantic must be importable:
the test installs it into a venv per interpreter).

The truth: per global name, id, type name, sys.getsizeof, and the edges
pydeep must report from it as [to id, label].
"""
import collections
import json
import os
import signal
import sys

# This folder holds fixtures named like stdlib modules (secrets.py) that
# pydantic imports: the library must see the standard library's.
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != HERE]

import pydantic  # noqa: E402


class User(pydantic.BaseModel):
    name: str
    tags: list


suffix = str(len(sys.argv))
user = User(name="ada " + suffix, tags=["home " + suffix, "about " + suffix])
tag_counts = collections.Counter(user.tags + [user.tags[0]])
cache = collections.OrderedDict([(user.name, user)])
recent = collections.deque([user], maxlen=10)

instance_edges = [[id(v), "." + k] for k, v in vars(user).items()]
objects = {
    "user": {"edges": instance_edges},
    "User": {"edges": []},
    "tag_counts": {"edges": [[id(k), "key"] for k in tag_counts]},
    "cache": {"edges": [[id(user), "[%r]" % user.name]]},
    "recent": {"edges": [[id(user), "[0]"]]},
}
for name, entry in objects.items():
    value = globals()[name]
    entry.update(id=id(value), type=type(value).__name__, size=sys.getsizeof(value))
objects["User"]["repr"] = "<class 'User'>"
objects["tag_counts"]["repr"] = repr(tag_counts)
objects["recent"]["repr"] = "deque([<User>], maxlen=10)"

text = json.dumps({"objects": objects, "pydantic": pydantic.VERSION})
with open(sys.argv[1] + ".tmp", "w") as f:
    f.write(text)
os.rename(sys.argv[1] + ".tmp", sys.argv[1])
signal.pause()
