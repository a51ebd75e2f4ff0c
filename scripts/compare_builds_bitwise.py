"""The CPU op's outputs and gradients of two builds, compared bit for bit.

    PYTHONPATH=<old tree> python scripts/compare_builds_bitwise.py dump old.pt
    PYTHONPATH=<new tree> python scripts/compare_builds_bitwise.py dump new.pt
    python scripts/compare_builds_bitwise.py compare old.pt new.pt

``dump`` runs the op over a grid (four dtypes, shapes from 1x1 to 4096x16 and 3x5000,
per-sample and shared log_std, 0-dim and per-head coefficients, both heads or one) on every
CPU kernel build this machine supports, and saves the seven outputs and every gradient.
``compare`` reports the tensors whose dtype, shape, strides or bit patterns differ, and
exits 1 if any does. For a change that must leave the op's numbers as they are.
"""

import sys

import torch

ISAS = ("generic", "avx2", "avx512")
SHAPES = [(1, 1, 1), (7, 3, 2), (64, 16, 4), (300, 33, 3), (65, 1000, 2), (3, 5000, 1), (4096, 16, 8)]
BITS_OF = {torch.float64: torch.int64, torch.float32: torch.int32, torch.float16: torch.int16,
           torch.bfloat16: torch.int16}


def dump(path):
    import hybrid_entropy_ext as hee

    cases = [(dtype, shape, shared, coeff_shape)
             for dtype in (torch.float32, torch.float64, torch.bfloat16, torch.float16)
             for shape in SHAPES for shared in (False, True) for coeff_shape in ((), (2,))]
    out = {}
    for isa in ISAS:
        try:
            torch.ops.hybrid_entropy_ext._set_cpu_isa(isa)
        except (ValueError, RuntimeError):
            continue  # this CPU lacks it
        for n, (dtype, (b, k, d), shared, coeff_shape) in enumerate(cases):
            g = torch.Generator().manual_seed(n)
            logits = (3 * torch.randn(b, k, generator=g)).to(dtype)
            if k > 2:
                logits[0, 1] = -float("inf")
            log_std = 0.3 * torch.randn(d if shared else b, d, generator=g)
            log_std = (log_std[0] if shared else log_std).to(dtype)
            logits.requires_grad_(True)
            log_std.requires_grad_(True)
            coeff = torch.full(coeff_shape, 0.05, requires_grad=True)
            for heads in ((logits, log_std), (logits, None), (None, log_std)):
                res = hee.hybrid_entropy_loss(heads[0], heads[1], coeff, 1.0, 0.5, 10.0, 10.0, 3.0)
                loss = sum(w * v for w, v in zip(range(1, 8), res.values()))
                grads = torch.autograd.grad(loss, [t for t in (*heads, coeff) if t is not None])
                key = f"{isa}/{n}/{heads[0] is not None}{heads[1] is not None}"
                out[key] = [v.detach().clone() for v in res.values()] + [g.clone() for g in grads]
    torch.save(out, path)
    print(f"{len(out)} cases")


def compare(old_path, new_path):
    old, new = torch.load(old_path), torch.load(new_path)
    if old.keys() != new.keys():
        sys.exit("the two dumps hold different cases (another machine's CPU builds?)")
    differ = []
    for key in old:
        for i, (x, y) in enumerate(zip(old[key], new[key])):
            same = (x.dtype == y.dtype and x.shape == y.shape and x.stride() == y.stride()
                    and torch.equal(x.contiguous().view(BITS_OF[x.dtype]), y.contiguous().view(BITS_OF[y.dtype])))
            if not same:
                differ.append(f"{key}[{i}]")
    tensors = sum(len(v) for v in old.values())
    print(f"{len(old)} cases, {tensors} tensors, {len(differ)} differ", *differ[:10])
    return 1 if differ else 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "dump":
        dump(sys.argv[2])
    elif len(sys.argv) == 4 and sys.argv[1] == "compare":
        sys.exit(compare(sys.argv[2], sys.argv[3]))
    else:
        sys.exit(__doc__)
