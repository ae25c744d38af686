"""Works until a go file appears, then ends the way argv[3] says.

Usage: ends_by.py READY_FILE GO_FILE HOW [ARG]
  exit N      sys.exit(N) after returning from work()
  exception   an uncaught exception (the interpreter exits with status 1)
  os_exit N   os._exit(N): no cleanup, no atexit
  sigkill     SIGKILL sent to itself
  exec SECS   os.execv('/bin/sleep', ['sleep', SECS]): no longer Python

READY_FILE is created once the program is in work(); the test starts or
finds the recording, then creates GO_FILE, so the end always comes while
the program is being recorded.
"""
import os
import signal
import sys

from fixture_support import work

ready, go, how = sys.argv[1], sys.argv[2], sys.argv[3]
arg = sys.argv[4] if len(sys.argv) > 4 else "0"


def end():
    if how == "exit":
        sys.exit(int(arg))
    if how == "exception":
        raise RuntimeError("ends_by.py: the uncaught exception this test asked for")
    if how == "os_exit":
        os._exit(int(arg))
    if how == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    if how == "exec":
        os.execv("/bin/sleep", ["sleep", arg])
    raise SystemExit("ends_by.py: unknown way to end: " + how)


work(ready, go)
end()
