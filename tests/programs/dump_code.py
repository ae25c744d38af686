"""Dump every code object of bytecode_corpus.py as JSON, with the truth
`dis` and the code object itself give for it, for pydeep's disassembler
and line-table tests.

Usage: python dump_code.py > dump.json

Each code object (functions of the corpus and, recursively, the code
objects among their constants) is dumped with the fields the agent records
in a CodeObjectDef, read the way the agent reads them:

* bytecode: `_co_code_adaptive` on 3.11+ (after exercising the corpus so
  the adaptive interpreter has specialized it; a free-threaded 3.13 never
  does, and leaves it equal to `co_code`), else `co_code`;
* bytecode_deoptimized: `co_code`;
* consts: the bounded repr rule of pydeep (see `bounded_repr`);
* localspluskinds: rebuilt from the name tuples, since CPython exposes no
  attribute for it (CO_FAST_LOCAL 0x20, CO_FAST_CELL 0x40, CO_FAST_FREE 0x80).

and the truth: `dis.get_instructions` (adaptive=False and, on 3.11+,
adaptive=True), `co_lines()` (3.10+), `co_positions()` (3.11+) and
`dis.findlinestarts`.
"""

import dis
import json
import sys
import types

import bytecode_corpus

REPR_LIMIT = 200
CO_FAST_LOCAL = 0x20
CO_FAST_CELL = 0x40
CO_FAST_FREE = 0x80


def bounded_repr(value):
    """pydeep's rule for constants: a nested code object is "<code NAME>";
    anything else is repr(), cut to REPR_LIMIT characters (the last three
    of them "...") when longer."""
    if isinstance(value, types.CodeType):
        return "<code %s>" % value.co_name
    text = repr(value)
    if len(text) > REPR_LIMIT:
        text = text[: REPR_LIMIT - 3] + "..."
    return text


def line_table_kind(version):
    if version < (3, 10):
        return 1
    if version < (3, 11):
        return 2
    return 3


def localsplus(code):
    """co_localsplusnames and co_localspluskinds as CPython lays them out:
    locals (arguments first), then cells that are not arguments, then
    free variables."""
    names, kinds = [], []
    for name in code.co_varnames:
        names.append(name)
        kinds.append(CO_FAST_LOCAL | (CO_FAST_CELL if name in code.co_cellvars else 0))
    for name in code.co_cellvars:
        if name not in code.co_varnames:
            names.append(name)
            kinds.append(CO_FAST_CELL)
    for name in code.co_freevars:
        names.append(name)
        kinds.append(CO_FAST_FREE)
    return names, kinds


def truth_instructions(code, adaptive):
    kwargs = {"adaptive": True} if adaptive else {}
    out = []
    for instruction in dis.get_instructions(code, **kwargs):
        argrepr = instruction.argrepr
        if isinstance(instruction.argval, types.CodeType) or len(argrepr) > REPR_LIMIT:
            # The recording keeps bounded reprs only; compare against those.
            argrepr = bounded_repr(instruction.argval)
        out.append([instruction.offset, instruction.opname, instruction.arg, argrepr])
    return out


def truth_caches(code, version):
    """[offset, "name: value"] of every inline cache field dis shows with
    show_caches=True on the adaptive code (3.11 only for quickened
    instructions, as its dis does). 3.13's dis reads every field of an
    instruction from the first cache unit (`code[offset + 2: ...]` in
    `_get_instructions_bytes`), so only the first field of each is right
    there and only that one is kept."""
    out = []
    if version >= (3, 13):
        for instruction in dis.get_instructions(code, adaptive=True):
            for name, size, data in (instruction.cache_info or ())[:1]:
                value = int.from_bytes(data, sys.byteorder)
                out.append([instruction.offset + 2, "%s: %d" % (name, value)])
    else:
        for instruction in dis.get_instructions(code, adaptive=True, show_caches=True):
            if instruction.opname == "CACHE" and instruction.argrepr:
                out.append([instruction.offset, instruction.argrepr])
    return out


def dump(code, version):
    record = {
        "name": code.co_name,
        "qualname": getattr(code, "co_qualname", code.co_name),
        "first_line": code.co_firstlineno,
        "bytecode_deoptimized": code.co_code.hex(),
        "names": list(code.co_names),
        "consts": [bounded_repr(c) for c in code.co_consts],
        "varnames": list(code.co_varnames),
        "cellvars": list(code.co_cellvars),
        "freevars": list(code.co_freevars),
        "line_table_kind": line_table_kind(version),
        "linestarts": [list(p) for p in dis.findlinestarts(code)],
        "instructions": truth_instructions(code, adaptive=False),
    }
    if version >= (3, 10):
        record["line_table"] = code.co_linetable.hex()
        record["lines"] = [list(r) for r in code.co_lines()]
    else:
        record["line_table"] = code.co_lnotab.hex()
    if version >= (3, 11):
        record["bytecode"] = code._co_code_adaptive.hex()
        names, kinds = localsplus(code)
        truth_names = [code._varname_from_oparg(i) for i in range(len(names))]
        if truth_names != names:
            raise SystemExit("localsplus layout differs for %s: %r != %r"
                             % (code.co_qualname, names, truth_names))
        record["localsplusnames"] = names
        record["localspluskinds"] = bytes(kinds).hex()
        record["positions"] = [list(p) for p in code.co_positions()]
        record["adaptive_instructions"] = truth_instructions(code, adaptive=True)
        record["caches"] = truth_caches(code, version)
    else:
        record["bytecode"] = code.co_code.hex()
        record["localspluskinds"] = ""
    return record


def walk(code, seen, out, version):
    if id(code) in seen:
        return
    seen.add(id(code))
    out.append(dump(code, version))
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            walk(const, seen, out, version)


def instrumented(version):
    """3.12+: the adaptive bytes of two functions while sys.monitoring has
    CALL, JUMP and BRANCH events on them, so INSTRUMENTED_* opcodes replace
    their base opcodes in place (Python/instrumentation.c), with co_code,
    which CPython de-instruments."""
    if version < (3, 12):
        return []
    monitoring = sys.monitoring
    tool = monitoring.PROFILER_ID
    monitoring.use_tool_id(tool, "pydeep-dump")
    events = monitoring.events
    wanted = events.CALL | events.JUMP
    wanted |= getattr(events, "BRANCH", 0) or (events.BRANCH_LEFT | events.BRANCH_RIGHT)
    for event in (events.CALL, events.JUMP):
        monitoring.register_callback(tool, event, lambda *args: None)
    out = []
    try:
        for function in (bytecode_corpus.loops, bytecode_corpus.methods_and_attributes):
            code = function.__code__
            monitoring.set_local_events(tool, code, wanted)
            function()
            out.append({
                "qualname": code.co_qualname,
                "bytecode": code._co_code_adaptive.hex(),
                "bytecode_deoptimized": code.co_code.hex(),
            })
            monitoring.set_local_events(tool, code, 0)
    finally:
        monitoring.free_tool_id(tool)
    return out


def main():
    version = sys.version_info[:2]
    # Enough runs for 3.11's warm-up (8 calls) and the adaptive counters.
    for _ in range(60):
        bytecode_corpus.exercise()
    codes, seen = [], set()
    for function in bytecode_corpus.ROOTS:
        walk(function.__code__, seen, codes, version)
    json.dump({"python_version": list(sys.version_info[:3]), "code_objects": codes,
               "instrumented": instrumented(version)},
              sys.stdout)


if __name__ == "__main__":
    main()
