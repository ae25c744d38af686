// Runs a Python script under Pyodide (CPython compiled to WebAssembly) in
// Node, with the command line of `python`: `python.mjs PYODIDE_DIR script.py
// [args...]` or `python.mjs PYODIDE_DIR -c CODE [args...]`.
//
// Why: no native CPython 3.14 or 3.15 can be installed on these machines,
// but Pyodide's npm packages carry those interpreters. pydeep cannot attach
// to them (they run inside Node's WebAssembly sandbox), yet their own `dis`,
// `opcode` and code objects are the ground truth for the viewer's opcode
// tables and disassembler on those versions. tests/src/lib.rs wraps this in
// `wasm_pythons()`; scripts/setup installs the packages.
//
// The script's directory, the current directory and the system temporary
// directory are mounted at the same paths inside the interpreter, so a script
// can import its neighbours and write its outputs where a native run would.
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { pathToFileURL } from "node:url";

const [pyodideDir, ...argv] = process.argv.slice(2);
if (!pyodideDir || argv.length === 0) {
  process.stderr.write("usage: python.mjs PYODIDE_DIR (SCRIPT | -c CODE) [ARGS...]\n");
  process.exit(2);
}
const { loadPyodide } = await import(pathToFileURL(path.join(pyodideDir, "pyodide.mjs")).href);
const py = await loadPyodide({ indexURL: pyodideDir + path.sep });

// Writes all of `bytes`: a pipe can take part of a write, or refuse it with
// EAGAIN while the reader catches up (Node opens pipes non-blocking).
function writeAll(fd, bytes) {
  let done = 0;
  while (done < bytes.length) {
    try {
      done += fs.writeSync(fd, bytes, done, bytes.length - done);
    } catch (error) {
      if (error.code !== "EAGAIN") throw error;
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 1);
    }
  }
}
const write = (fd) => ({
  write: (bytes) => {
    writeAll(fd, bytes);
    return bytes.length;
  },
});
py.setStdout(write(1));
py.setStderr(write(2));

const mounted = new Set();
function mount(dir) {
  const real = fs.realpathSync(dir);
  if ([...mounted].some((m) => real === m || real.startsWith(m + "/"))) return;
  py.FS.mkdirTree(real);
  py.FS.mount(py.FS.filesystems.NODEFS, { root: real }, real);
  mounted.add(real);
}
mount(os.tmpdir());
mount(process.cwd());

let mode, target, rest;
if (argv[0] === "-c") {
  [mode, target, ...rest] = argv;
} else {
  [target, ...rest] = argv;
  mode = "file";
  target = fs.realpathSync(target);
  mount(path.dirname(target));
}
py.globals.set("_pydeep_argv", py.toPy([mode === "-c" ? "-c" : target, ...rest]));
py.globals.set("_pydeep_target", target);
py.globals.set("_pydeep_mode", mode);
py.globals.set("_pydeep_cwd", fs.realpathSync(process.cwd()));
const status = py.runPython(`
def _pydeep_main():
    import os, runpy, sys, traceback
    sys.argv = list(_pydeep_argv)
    os.chdir(_pydeep_cwd)
    try:
        if _pydeep_mode == "-c":
            sys.path.insert(0, "")
            exec(compile(_pydeep_target, "<string>", "exec"), {"__name__": "__main__"})
        else:
            sys.path.insert(0, os.path.dirname(_pydeep_target))
            runpy.run_path(_pydeep_target, run_name="__main__")
    except SystemExit as stop:
        code = stop.code
        if code is None:
            return 0
        if isinstance(code, int):
            return code
        print(code, file=sys.stderr)
        return 1
    except BaseException:
        traceback.print_exc()
        return 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
    return 0
_pydeep_main()
`);
process.exit(status);
