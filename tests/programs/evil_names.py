"""A target whose names are hostile: a function whose co_name, co_qualname
(3.11+) and co_filename hold a terminal escape, a bell, a line break, XML
specials and a right-to-left override, running on a thread named the same
way. Creates argv[1] once that thread runs."""
import sys
import threading
import time

EVIL = "evil\x1b[31m\n<&>\x07\u202e"


def spin(ready):
    open(ready, "w").close()
    while True:
        sum(range(1000))


changes = {"co_name": EVIL + "name", "co_filename": EVIL + "file.py"}
if sys.version_info >= (3, 11):
    changes["co_qualname"] = EVIL + "qualname"
spin.__code__ = spin.__code__.replace(**changes)
threading.Thread(target=spin, args=(sys.argv[1],), name=EVIL + "thread", daemon=True).start()
while True:
    time.sleep(1)
