"""Generate pydeep's opcode table for the CPython running this script.

Usage (from the repository root, once per interpreter):

    python3.X cpython/tools/gen_opcodes.py > cpython/src/opcodes/opcodes_3_X.json

Everything comes from the interpreter's own `opcode` and `dis` modules, so
the viewer decodes a recording exactly as that version's `dis` would. The
output is committed; never edit it by hand, re-run this script instead.
"""

import dis
import json
import opcode
import sys


def below_256(ops):
    return sorted(op for op in ops if op < 256)


def main():
    all_opname = list(getattr(dis, "_all_opname", opcode.opname))
    all_opmap = dict(getattr(dis, "_all_opmap", opcode.opmap))
    have_argument = opcode.HAVE_ARGUMENT
    hasarg = getattr(opcode, "hasarg", None)
    if hasarg is None:
        hasarg = [op for op in range(have_argument, 256)]

    # Inline cache entries per base opcode name (3.11+). 3.11/3.12 keep a
    # list indexed by opcode, 3.13+ a mapping keyed by name (3.15: a
    # frozendict, which is not a dict subclass).
    cache_entries = {}
    raw = getattr(dis, "_inline_cache_entries", getattr(opcode, "_inline_cache_entries", None))
    if hasattr(raw, "items"):
        cache_entries = {name: n for name, n in raw.items() if n}
    elif raw is not None:
        cache_entries = {opcode.opname[op]: n for op, n in enumerate(raw) if n}
    cache_format = {
        name: [[field, size] for field, size in fields.items()]
        for name, fields in getattr(opcode, "_cache_format", {}).items()
    }

    deoptmap = getattr(dis, "deoptmap", {})
    deopt = {str(all_opmap[special]): all_opmap[base] for special, base in deoptmap.items()}

    is_backward = getattr(dis, "_is_backward_jump", None)
    backward_jumps = []
    if is_backward is not None:
        backward_jumps = [op for op in below_256(opcode.hasjrel) if is_backward(op)]

    converters = getattr(dis, "FORMAT_VALUE_CONVERTERS", ((None, ""), (str, "str"), (repr, "repr"), (ascii, "ascii")))
    function_flags = getattr(dis, "MAKE_FUNCTION_FLAGS", getattr(dis, "FUNCTION_ATTR_FLAGS", ()))

    # 3.14+: LOAD_COMMON_CONSTANT and LOAD_SPECIAL index these lists; `dis`
    # prints a type by its __name__ and anything else by repr().
    common_constants = [
        obj.__name__ if isinstance(obj, type) else repr(obj)
        for obj in getattr(opcode, "_common_constants", getattr(dis, "_common_constants", ()))
    ]
    special_method_names = list(
        getattr(opcode, "_special_method_names", getattr(dis, "_special_method_names", ()))
    )

    table = {
        "generated_by": "cpython/tools/gen_opcodes.py",
        "python": sys.version.split()[0],
        "version": list(sys.version_info[:2]),
        "opnames": all_opname[:256],
        "have_argument": have_argument,
        "extended_arg": opcode.EXTENDED_ARG,
        "hasarg": below_256(hasarg),
        "hasconst": below_256(opcode.hasconst),
        "hasname": below_256(opcode.hasname),
        "hasjrel": below_256(opcode.hasjrel),
        "hasjabs": below_256(opcode.hasjabs),
        "hasjump": below_256(getattr(opcode, "hasjump", [])),
        "hasexc": below_256(getattr(opcode, "hasexc", [])),
        "haslocal": below_256(opcode.haslocal),
        "hasfree": below_256(opcode.hasfree),
        "hascompare": below_256(opcode.hascompare),
        "backward_jumps": backward_jumps,
        "cmp_op": list(opcode.cmp_op),
        "nb_ops": [name for _, name in getattr(opcode, "_nb_ops", [])],
        "intrinsic1": list(getattr(opcode, "_intrinsic_1_descs", [])),
        "intrinsic2": list(getattr(opcode, "_intrinsic_2_descs", [])),
        "format_value_converters": [name for _, name in converters],
        "function_flags": list(function_flags),
        "common_constants": common_constants,
        "special_method_names": special_method_names,
        "cache_entries": cache_entries,
        "cache_format": cache_format,
        "specializations": {base: list(family) for base, family in getattr(opcode, "_specializations", {}).items()},
        "deopt": deopt,
        "pseudo_opcodes": {name: op for name, op in opcode.opmap.items() if op >= 256},
        "min_instrumented_opcode": getattr(opcode, "MIN_INSTRUMENTED_OPCODE", None),
    }
    json.dump(table, sys.stdout, indent=1, sort_keys=True)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
