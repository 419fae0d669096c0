"""The fixed files of an exported folder: test vectors, the test program, the Makefile and the README."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import numpy.typing as npt

__all__ = ["makefile", "readme", "test_program", "vectors_header"]


def _rows(ctype: str, name: str, runs: Sequence[npt.NDArray[Any]]) -> str:
    """``static const <ctype> name[runs][count]``, one run per brace."""
    count = int(runs[0].size)
    blocks = []
    for r in runs:
        values = [str(int(v)) for v in r.reshape(-1)]
        lines = ["        " + ", ".join(values[i : i + 24]) for i in range(0, len(values), 24)]
        blocks.append("    {\n" + ",\n".join(lines) + "\n    }")
    return f"static const {ctype} {name}[{len(runs)}][{count}] = {{\n" + ",\n".join(blocks) + "\n};"


def vectors_header(
    name: str,
    provenance: str,
    inputs: Sequence[tuple[str, list[npt.NDArray[Any]]]],
    outputs: Sequence[tuple[str, list[npt.NDArray[Any]]]],
    intermediates: Sequence[tuple[str, list[npt.NDArray[Any]]]],
) -> str:
    """``<name>_vectors.h``: per run, the input codes, the expected output codes and (optionally) every op's."""
    upper = name.upper()
    runs = len(inputs[0][1])
    parts = [provenance, f"#ifndef {upper}_VECTORS_H\n#define {upper}_VECTORS_H", "#include <stdint.h>",
             f"#define {upper}_RUNS {runs}\n#define {upper}_HAS_INTERMEDIATES {int(bool(intermediates))}"]  # fmt: skip
    for i, (ctype, rows) in enumerate(inputs):
        parts.append(_rows(ctype, f"{name}__vector_in{i}", rows))
    for j, (ctype, rows) in enumerate(outputs):
        parts.append(_rows(ctype, f"{name}__vector_out{j}", rows))
    if intermediates:
        for k, (ctype, rows) in enumerate(intermediates):
            parts.append(_rows(ctype, f"{name}__vector_op{k}", rows))
        table = ",\n    ".join(f"(const void *){name}__vector_op{k}" for k in range(len(intermediates)))
        parts.append(f"static const void *const {name}__vector_ops[{len(intermediates)}] = {{\n    {table}\n}};")
        parts.append(f"static const int {name}__vector_op_signed[{len(intermediates)}] = {{"
                     + ", ".join(str(int(c == "int8_t")) for c, _ in intermediates) + "};")  # fmt: skip
    parts.append(f"#endif /* {upper}_VECTORS_H */\n")
    return "\n\n".join(parts)


def test_program(name: str, provenance: str, n_inputs: int, out_types: Sequence[str]) -> str:
    """``<name>_test.c``: runs every vector and compares every output code (and, with intermediates, every op's)."""
    upper = name.upper()
    outs = "\n".join(f"    static {t} out{j}[{upper}_OUT{j}_COUNT];" for j, t in enumerate(out_types))
    args = ", ".join([*(f"{name}__vector_in{i}[r]" for i in range(n_inputs)), *(f"out{j}" for j in range(len(out_types)))])
    compares = "\n".join(f"""        for (i = 0; i < {upper}_OUT{j}_COUNT; ++i) {{
            if (out{j}[i] != {name}__vector_out{j}[r][i]) {{
                printf("run %lu, output {j}, element %lu: got %d, expected %d\\n", (unsigned long)r, (unsigned long)i,
                       (int)out{j}[i], (int){name}__vector_out{j}[r][i]);
                return 1;
            }}
        }}
        codes += {upper}_OUT{j}_COUNT;""" for j in range(len(out_types)))
    return f"""{provenance}
/* Runs {name}_run on every test vector of {name}_vectors.h and checks every output code bit for bit
 * (with intermediates: every op's codes too, naming the first op and element that differ). */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "{name}.h"
#include "{name}_vectors.h"

static unsigned char scratch_raw[{upper}_SCRATCH_BYTES + 64];

struct check {{
    unsigned long run;
    int first_op;
    unsigned long element;
    int got, expected;
}};

static void observe(int op, const void *codes, size_t count, void *context)
{{
#if {upper}_HAS_INTERMEDIATES
    struct check *c = (struct check *)context;
    size_t i;
    const int is_signed = {name}__vector_op_signed[op];
    if (c->first_op >= 0) {{
        return;
    }}
    for (i = 0; i < count; ++i) {{
        int got = is_signed ? ((const int8_t *)codes)[i] : ((const uint8_t *)codes)[i];
        int want = is_signed ? ((const int8_t *){name}__vector_ops[op])[c->run * count + i]
                             : ((const uint8_t *){name}__vector_ops[op])[c->run * count + i];
        if (got != want) {{
            c->first_op = op;
            c->element = (unsigned long)i;
            c->got = got;
            c->expected = want;
            return;
        }}
    }}
#else
    (void)op;
    (void)codes;
    (void)count;
    (void)context;
#endif
}}

int main(void)
{{
    unsigned char *scratch = scratch_raw + (64 - (size_t)((uintptr_t)scratch_raw % 64)) % 64;
{outs}
    unsigned long r, i, codes = 0;
    for (r = 0; r < {upper}_RUNS; ++r) {{
        struct check c;
        int status;
        memset(&c, 0, sizeof c);
        c.run = r;
        c.first_op = -1;
        status = {name}_run_observed({args}, scratch, {upper}_HAS_INTERMEDIATES ? observe : NULL, &c);
        if (status != 0) {{
            printf("run %lu: {name}_run returned %d\\n", r, status);
            return 1;
        }}
        if (c.first_op >= 0) {{
            printf("run %lu, op %d, element %lu: got %d, expected %d\\n", r, c.first_op, c.element, c.got, c.expected);
            return 1;
        }}
{compares}
    }}
    printf("{name}: %lu runs, %lu output codes, all equal\\n", (unsigned long){upper}_RUNS, codes);
    return 0;
}}
"""


def makefile(name: str, provenance: str, sources: Sequence[str], headers: Sequence[str]) -> str:
    """A Makefile whose ``test`` target builds strictly (honouring ``CC``, ``CFLAGS``, ``LDFLAGS``) and runs the vectors:
    one object per source (POSIX suffix rule, so ``make -j`` compiles them in parallel), each depending on every
    header of the folder."""
    prov = "\n".join("# " + line.strip(" */").rstrip() if line.strip() not in ("/*", "*/") else "#"
                     for line in provenance.splitlines())  # fmt: skip
    srcs = " \\\n\t".join(sources)
    hdrs = " \\\n\t".join(headers)
    return f"""{prov}

CC ?= cc
CFLAGS ?= -O2
STRICT = -std=c99 -Wall -Wextra -Werror -pedantic
# No fused multiply-add contraction: the float32/float64 requantization must round each product.
FPFLAGS = -ffp-contract=off
SOURCES = {name}.c \\
\t{srcs}
HEADERS = {name}.h {name}_vectors.h \\
\t{hdrs}
OBJECTS = $(SOURCES:.c=.o) {name}_test.o

all: {name}_test

{name}_test: $(OBJECTS)
\t$(CC) $(CFLAGS) -o $@ $(OBJECTS) $(LDFLAGS)

$(OBJECTS): $(HEADERS)

.SUFFIXES: .c .o
.c.o:
\t$(CC) $(STRICT) $(FPFLAGS) $(CFLAGS) -Iqk/include -c -o $@ $<

test: {name}_test
\t./{name}_test

clean:
\trm -f {name}_test $(OBJECTS)

.PHONY: all test clean
"""


def readme(name: str, program_text: str, datapath_lines: Sequence[str], sizes: dict[str, int], files: Sequence[str],
           signature: str, batch: int) -> str:  # fmt: skip
    """The receiving team's README: the files, the datapath in words, building, calling, memory."""
    upper = name.upper()
    knobs = "\n".join(f"- {line}" for line in datapath_lines)
    listing = "\n".join(f"- `{f}`" for f in files)
    return f"""# `{name}`: a bit-exact C reference of an integer program

This folder is generated (see the header of `{name}.c` for the generator, the program's SHA-256 and
the datapath). It depends on nothing but a C99 compiler and its standard headers: the kernel
sources under `qk/` are copied unchanged from the kernel library that produced the expected codes.

## Files

{listing}

## The datapath

{knobs}

## Build and check

    make test                      # cc -std=c99 -Wall -Wextra -Werror -pedantic $(CFLAGS), then run the vectors
    make -j4 test                  # the same, compiling the sources in parallel
    make test CC=clang CFLAGS=-O0  # any compiler and flags

`{name}_test` runs every test vector and compares every output code bit for bit; on a difference
it prints the run, the output, the element, the code it got and the one expected, and exits 1.

## Calling it

    #include "{name}.h"
    static unsigned char scratch[{upper}_SCRATCH_BYTES];   /* align to 64 bytes for speed (8 required) */
    int status = {signature.split('(')[0].split()[-1]}(in, out, scratch);         /* 0 on success */

`{signature}` runs {batch} sample(s) per call; it allocates nothing and writes no globals, so
calls with distinct scratch buffers may run concurrently. A nonzero status is `1000 * (op + 1) +
the qk_status` of the op that failed (`qk/include/qk_types.h`), or 1 for a NULL or misaligned
scratch. `{name}_run_observed` calls an observer with every op's output codes.

## Memory

| what | bytes |
|---|---|
| constant weights, biases and tables (`{upper}_WEIGHT_BYTES`) | {sizes['weights']} |
| scratch: every intermediate tensor and op workspace (`{upper}_SCRATCH_BYTES`) | {sizes['scratch']} |
| generated code and data (`{name}.c`, source text) | {sizes['source']} |

## The program

```
{program_text}
```
"""
