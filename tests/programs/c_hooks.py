"""The C-level profile and trace hooks of every thread, for the trace
fixtures (trace_calls.py, trace_lines.py, record_trace.py): sys.getprofile() and
sys.gettrace() return None for a C hook installed without an object
(pydeep's), so each thread's c_profilefunc and c_tracefunc are read
through ctypes. Their place in PyThreadState is found by setting our own:
c_profilefunc, c_tracefunc, c_profileobj, c_traceobj are in that order on
3.9-3.13."""
import ctypes
import sys


def hook_offsets():
    """Word indexes of c_profilefunc and c_tracefunc in PyThreadState."""
    api = ctypes.pythonapi
    api.PyThreadState_Get.restype = ctypes.c_void_p
    me = api.PyThreadState_Get()
    word = lambda i: ctypes.c_void_p.from_address(me + 8 * i).value

    def probe(*args):
        return None

    sys.settrace(probe)
    traceobj = next(i for i in range(4, 80) if word(i) == id(probe))
    sys.settrace(None)
    sys.setprofile(probe)
    assert word(traceobj - 1) == id(probe), "unexpected PyThreadState layout"
    assert word(traceobj - 3) not in (None, 0), "unexpected PyThreadState layout"
    sys.setprofile(None)
    return traceobj - 3, traceobj - 2


PROFILE_WORD, TRACE_WORD = hook_offsets()


def c_hooks():
    """[c_profilefunc set, c_tracefunc set] of every thread."""
    api = ctypes.pythonapi
    api.PyInterpreterState_Main.restype = ctypes.c_void_p
    api.PyInterpreterState_ThreadHead.restype = ctypes.c_void_p
    api.PyInterpreterState_ThreadHead.argtypes = [ctypes.c_void_p]
    api.PyThreadState_Next.restype = ctypes.c_void_p
    api.PyThreadState_Next.argtypes = [ctypes.c_void_p]
    hooks = []
    ts = api.PyInterpreterState_ThreadHead(api.PyInterpreterState_Main())
    while ts:
        word = lambda i: ctypes.c_void_p.from_address(ts + 8 * i).value
        hooks.append([bool(word(PROFILE_WORD)), bool(word(TRACE_WORD))])
        ts = api.PyThreadState_Next(ts)
    return hooks


def c_profile_hooks():
    """c_profilefunc set, per thread."""
    return [profile for profile, _ in c_hooks()]


def eval_frame():
    """The main interpreter's eval-frame function (PEP 523), as an address:
    CPython's own `_PyEval_EvalFrameDefault` unless a tool installed one
    (pydeep's window does, on the versions where it records calls with it:
    tracer/src/lib.rs, calls_by)."""
    api = ctypes.pythonapi
    api.PyInterpreterState_Main.restype = ctypes.c_void_p
    get = api._PyInterpreterState_GetEvalFrameFunc
    get.restype = ctypes.c_void_p
    get.argtypes = [ctypes.c_void_p]
    return get(api.PyInterpreterState_Main())


def default_eval_frame():
    """The address of CPython's `_PyEval_EvalFrameDefault`."""
    return ctypes.cast(ctypes.pythonapi._PyEval_EvalFrameDefault, ctypes.c_void_p).value
