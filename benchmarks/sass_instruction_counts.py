"""Static SASS instruction counts of the CUDA kernels, per kernel and dtype.

Compiles the ``csrc/cuda/*.cu`` files of a source tree for one architecture (a cubin
each, as the extension's build does, with the same flags) and reads their SASS with
``cuobjdump``. For each kernel it reports:

- ``total``: the instructions of the whole kernel;
- ``loop``: the instructions of its main loop: the innermost loop (a backward branch and
  the instructions from its target to it) with the most MUFU (exp, log) instructions;
  every path through it is counted, so a loop with guarded branches is overstated;
- ``per logit``: ``loop`` over the logits one iteration handles, for the kernels that loop
  over columns (row in block: 4 vectors per thread; the backward's: one vector);
- ``per row``: for the rows-in-warps kernels, the warp's instructions per row: the row
  loop's body over the rows a warp handles per iteration, or, for a kernel without a row
  loop, all its instructions (log_std branch and block sum included) over its rows per
  warp.

Static counts, not a profile: no GPU is needed, and the numbers repeat exactly for the
same source and compiler. They say how much work a kernel issues per logit and per row,
which bounds the fraction of the memory bandwidth an instruction-bound kernel can reach.

    python benchmarks/sass_instruction_counts.py [--source DIR] [--arch sm_90] [--json F]

Needs nvcc (CUDA_HOME or the PATH), a CUDA build of torch (its headers) and cuobjdump
(the toolkit's, or the one Triton ships).
"""

import argparse
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KERNEL_SOURCES = os.path.join("csrc", "cuda", "*.cu")

DTYPES = {"float": "float32", "double": "float64", "c10::Half": "float16", "c10::BFloat16": "bfloat16"}
VECTOR_WIDTH = {"float32": 4, "float64": 2, "float16": 8, "bfloat16": 8}
CHUNK_VECTORS = 4  # kVectorsPerChunk of forward_kernels.cuh


def toolkit_root():
    if os.environ.get("CUDA_HOME"):
        return os.environ["CUDA_HOME"]
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        sys.exit("no nvcc: set CUDA_HOME")
    with open(nvcc, "rb") as f:
        match = re.search(rb"(/[^ \"]*/bin/nvcc)", f.read())
    real = match.group(1).decode() if match else os.path.realpath(nvcc)
    return os.path.dirname(os.path.dirname(real))


def cuobjdump(cuda_root):
    candidates = [os.path.join(cuda_root, "bin", "cuobjdump")]
    import triton  # noqa: F401  (its wheel ships cuobjdump)

    candidates += glob.glob(os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump"))
    for path in candidates:
        if os.path.exists(path):
            return path
    sys.exit("no cuobjdump in the toolkit or in Triton's wheel")


def compile_cubins(source_dir, arch, out_dir):
    """(toolkit root, [cubin per .cu file])."""
    from torch.utils import cpp_extension

    cuda_root = toolkit_root()
    includes = [os.path.join(source_dir, "csrc")] + cpp_extension.include_paths(device_type="cuda")
    site = os.path.dirname(os.path.dirname(cpp_extension.__file__))
    includes += glob.glob(os.path.join(os.path.dirname(site), "nvidia", "*", "include"))
    cubins = []
    for source in sorted(glob.glob(os.path.join(source_dir, KERNEL_SOURCES))):
        cubin = os.path.join(out_dir, os.path.basename(source) + ".cubin")
        command = [
            os.path.join(cuda_root, "bin", "nvcc"), "-cubin", f"-arch={arch}", "-O3", "-std=c++20",
            "-DHEE_WITH_CUDA", "-D__CUDA_NO_HALF_OPERATORS__", "-D__CUDA_NO_HALF_CONVERSIONS__",
            "-D__CUDA_NO_BFLOAT16_CONVERSIONS__", "-D__CUDA_NO_HALF2_OPERATORS__", "--expt-relaxed-constexpr",
            "-DTORCH_EXTENSION_NAME=_C", "-DTORCH_API_INCLUDE_EXTENSION_H",
            *[f"-I{p}" for p in includes], source, "-o", cubin,
        ]
        subprocess.run(command, check=True)
        cubins.append(cubin)
    return cuda_root, cubins


def demangle(names):
    out = subprocess.run(["c++filt"], input="\n".join(names), capture_output=True, text=True, check=True)
    return out.stdout.splitlines()


INSTRUCTION = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)([^;]*);")


def parse_sass(text):
    """{mangled kernel name: [(address, opcode, operands)]}."""
    kernels, current = {}, None
    for line in text.splitlines():
        header = re.match(r"\s*Function : (\S+)", line)
        if header:
            current = kernels.setdefault(header.group(1), [])
            continue
        match = INSTRUCTION.search(line)
        if match and current is not None:
            current.append((int(match.group(1), 16), match.group(3), match.group(4)))
    return kernels


def main_loop(instructions):
    """Instructions of the innermost loop (a backward branch and what lies from its target
    to it) that holds the most MUFU (exp, log) instructions, or (0, 0) without such a loop."""
    loops = []
    for address, opcode, operands in instructions:
        if opcode.startswith("BRA"):
            target = re.search(r"0x([0-9a-f]+)", operands)
            if target and int(target.group(1), 16) < address:
                loops.append((int(target.group(1), 16), address))
    innermost = [b for b in loops if not any(o != b and b[0] <= o[0] and o[1] <= b[1] for o in loops)]
    best = (0, 0)
    for lo, hi in innermost:
        body = [op for a, op, _ in instructions if lo <= a <= hi and op != "NOP"]
        mufu = sum(op.startswith("MUFU") for op in body)
        if mufu > best[1]:
            best = (len(body), mufu)
    return best

def describe(name):
    """(kernel, dtype, template details) of a demangled kernel name."""
    kernel = re.search(r"hee::cuda::(\w+)<", name) or re.search(r"hee::cuda::(\w+)\(", name)
    args = re.search(r"<(.*)>\(", name)
    targs = [a.strip() for a in args.group(1).split(",")] if args else []
    dtype = next((DTYPES[a] for a in targs if a in DTYPES), "")
    return (kernel.group(1) if kernel else name), dtype, targs


def rows_in_warps_rows_per_warp(log2_cols, vec):
    padded = 1 << log2_cols
    width = min(vec, padded)
    threads_per_row = min(padded // width, 32)
    return 32 // threads_per_row


def count(source_dir, arch):
    kernels = {}
    with tempfile.TemporaryDirectory() as tmp:
        cuda_root, cubins = compile_cubins(source_dir, arch, tmp)
        for cubin in cubins:
            sass = subprocess.run([cuobjdump(cuda_root), "-sass", cubin], capture_output=True, text=True,
                                  check=True).stdout
            for name, instructions in parse_sass(sass).items():
                kernels.setdefault(name, instructions)  # a kernel two files instantiate, once
    names = dict(zip(kernels, demangle(list(kernels))))
    rows = []
    for mangled, instructions in kernels.items():
        kernel, dtype, targs = describe(names[mangled])
        total = sum(1 for _, op, _ in instructions if op != "NOP")
        loop, _ = main_loop(instructions)
        row = dict(kernel=kernel, dtype=dtype, template=", ".join(targs), total=total, loop=loop)
        if kernel == "forward_row_in_block":
            vec = int(targs[1])
            row["per_logit"] = round(loop / (CHUNK_VECTORS * vec), 2)
        elif kernel in ("backward_logits", "backward_logit_rows"):
            row["per_logit"] = round(loop / int(targs[1]), 2)
        elif kernel == "forward_rows_in_warps":
            log2_cols = int(targs[1])
            vec = int(targs[2]) if len(targs) > 2 else 1  # an older tree: one lane per logit
            row["K"] = 1 << log2_cols
            # A kernel with a row loop: its body; one without (a row per warp group and
            # block): the whole kernel, its log_std branch and block sum included.
            row["per_row"] = round((loop or total) / rows_in_warps_rows_per_warp(log2_cols, vec), 1)
        rows.append(row)
    return sorted(rows, key=lambda r: (r["kernel"], r["dtype"], r.get("K", 0), r["template"]))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--source", default=REPO, help="source tree (default: this one)")
    parser.add_argument("--arch", default="sm_90")
    parser.add_argument("--json", help="write the rows as JSON here")
    args = parser.parse_args()
    rows = count(args.source, args.arch)
    print(f"| kernel | dtype | template | total | loop | per logit | per row |")
    print("|---|---|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['kernel']} | {r['dtype']} | {r['template']} | {r['total']} | {r['loop']} | "
              f"{r.get('per_logit', '')} | {r.get('per_row', '')} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
