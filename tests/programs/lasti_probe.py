"""Prints, for this interpreter, the dis offset of a CALL and the f_lasti its
frame reports while the call runs (run: python lasti_probe.py).

Used when adding a CPython version: notes/new-python-version.md step 5.
"""
import dis, sys, threading
ev = threading.Event()
def blocked():
    ev.wait(0.2)
def outer():
    blocked()
result = {}
def probe():
    import time; time.sleep(0.05)
    f = sys._current_frames()[main_ident]
    while f and f.f_code.co_name != "outer":
        f = f.f_back
    result["outer_lasti"] = f.f_lasti
main_ident = threading.get_ident()
t = threading.Thread(target=probe); t.start(); outer(); t.join()
calls = [i for i in dis.get_instructions(outer) if i.opname.startswith("CALL")]
c = calls[0]
print(sys.version_info[:2], "outer f_lasti", result["outer_lasti"], "CALL at", c.offset, c.opname)
