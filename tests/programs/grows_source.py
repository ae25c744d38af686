"""Works until a go file appears, then writes, imports and runs a module
whose one function holds 64 KiB of incompressible comment, so that a recorder that
embeds source files must write that much more at once.

Usage: grows_source.py READY_FILE GO_FILE MODULE_DIR
"""
import base64
import os
import sys

from fixture_support import work

ready, go, module_dir = sys.argv[1], sys.argv[2], sys.argv[3]


def big_module():
    noise = base64.b64encode(os.urandom(48 * 1024)).decode()
    # Inside spin(), between its first and last lines: a recorder that
    # embeds only the lines of the functions it records embeds them too.
    lines = ["    # " + noise[i:i + 76] for i in range(0, len(noise), 76)]
    source = "def spin():\n" + "\n".join(lines) + "\n    while True:\n        sum(range(1000))\n"
    with open(os.path.join(module_dir, "big_blob.py"), "w") as f:
        f.write(source)
    sys.path.insert(0, module_dir)
    import big_blob
    return big_blob


work(ready, go)
big_module().spin()
