"""The shared formulas of ``csrc/entropy_math.h``, on the host.

The CUDA kernels reduce a row in parts (per thread, per warp, per block, per column
split) and merge the parts' softmax states; they combine the losses and their backward
on the device. All of that arithmetic lives in ``entropy_math.h``, which this file
compiles for the host (``tests/cpp/entropy_math_host.cpp``, through ctypes) and holds to
the sequential form and to ``torch.distributions``, so that a run without a GPU still
covers what the GPU computes. It also compiles the header for the device with nvcc,
where a toolkit is installed, without ``--expt-relaxed-constexpr`` and with warnings as
errors.
"""

import ctypes
import math
import os
import shutil
import subprocess

import numpy as np
import pytest
import torch
from torch.distributions import Categorical

from common_utils import loss_params_as_doubles
from oracle import OUTPUT_WEIGHTS

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CSRC = os.path.join(REPO, "csrc")
HOST_SOURCE = os.path.join(REPO, "tests", "cpp", "entropy_math_host.cpp")
DEVICE_SOURCE = os.path.join(REPO, "tests", "cpp", "entropy_math_device.cu")

INF = math.inf
MASKED = (-INF, 0.0, 0.0)  # the state of a part with nothing unmasked


@pytest.fixture(scope="module")
def lib(tmp_path_factory):
    out = tmp_path_factory.mktemp("entropy_math") / "entropy_math_host.so"
    compiler = os.environ.get("CXX", "g++")
    subprocess.run(
        [compiler, "-O2", "-std=c++17", "-shared", "-fPIC", "-Wall", "-Werror", f"-I{CSRC}",
         HOST_SOURCE, "-o", str(out)],
        check=True,
    )
    library = ctypes.CDLL(str(out))
    f64p, f32p = ctypes.POINTER(ctypes.c_double), ctypes.POINTER(ctypes.c_float)
    for name, pointer in (("f64", f64p), ("f32", f32p)):
        getattr(library, f"hee_merge_{name}").argtypes = [pointer] * 3
        getattr(library, f"hee_sequential_state_{name}").argtypes = [pointer, ctypes.c_int64, pointer]
        getattr(library, f"hee_finish_row_{name}").argtypes = [pointer, pointer]
    library.hee_entropy_grad_element_f64.argtypes = [ctypes.c_double] * 5
    library.hee_entropy_grad_element_f64.restype = ctypes.c_double
    scalar_args = [ctypes.c_double, ctypes.c_double, ctypes.c_int, ctypes.c_double, ctypes.c_int,
                   ctypes.c_double, f64p]
    library.hee_combine_losses.argtypes = scalar_args + [f64p]
    library.hee_combine_losses_backward.argtypes = scalar_args + [f64p, f64p]
    return library


class Formulas:
    """NumPy-facing wrappers of the C interface."""

    def __init__(self, library, dtype):
        self.lib = library
        self.dtype = np.dtype(dtype)
        self.suffix = "f64" if self.dtype == np.float64 else "f32"

    def _ptr(self, array):
        ctype = ctypes.c_double if self.dtype == np.float64 else ctypes.c_float
        return array.ctypes.data_as(ctypes.POINTER(ctype))

    def _array(self, values):
        return np.ascontiguousarray(values, dtype=self.dtype)

    def merge(self, a, b):
        a, b, out = self._array(a), self._array(b), np.empty(3, self.dtype)
        getattr(self.lib, f"hee_merge_{self.suffix}")(self._ptr(a), self._ptr(b), self._ptr(out))
        return out

    def sequential(self, z):
        z, out = self._array(z), np.empty(3, self.dtype)
        getattr(self.lib, f"hee_sequential_state_{self.suffix}")(self._ptr(z), len(z), self._ptr(out))
        return out

    def finish(self, state):
        state, out = self._array(state), np.empty(3, self.dtype)
        getattr(self.lib, f"hee_finish_row_{self.suffix}")(self._ptr(state), self._ptr(out))
        return out

    def merged_over_parts(self, z, cuts):
        state = np.array(MASKED, self.dtype)
        for part in np.split(self._array(z), cuts):
            state = self.merge(state, self.sequential(part)) if len(part) else state
        return state


@pytest.fixture(params=[np.float64, np.float32], ids=["float64", "float32"])
def formulas(lib, request):
    return Formulas(lib, request.param)


def tolerance(formulas):
    return dict(rtol=1e-12, atol=1e-12) if formulas.dtype == np.float64 else dict(rtol=2e-6, atol=2e-6)


def assert_same_row(formulas, got_state, want_state):
    """Two states of one row describe the same softmax: same shift, log s and entropy."""
    got, want = formulas.finish(got_state), formulas.finish(want_state)
    np.testing.assert_allclose(got, want, **tolerance(formulas))


# --- merging partial states ---------------------------------------------------------------


@pytest.mark.parametrize("seed", range(20))
def test_merge_over_random_parts_gives_the_sequential_state(formulas, seed):
    rng = np.random.default_rng(seed)
    k = int(rng.integers(2, 300))
    z = rng.normal(0.0, rng.choice([0.1, 3.0, 30.0]), k)
    cuts = np.sort(rng.choice(np.arange(1, k), size=int(rng.integers(1, min(k - 1, 9) + 1)), replace=False))
    assert_same_row(formulas, formulas.merged_over_parts(z, cuts), formulas.sequential(z))


def test_merge_with_masked_logits_in_some_parts_gives_the_sequential_state(formulas):
    rng = np.random.default_rng(7)
    z = rng.normal(0.0, 2.0, 64)
    z[rng.choice(64, 20, replace=False)] = -INF
    z[16:32] = -INF  # one whole part masked
    merged = formulas.merged_over_parts(z, [16, 32, 48])
    assert np.isfinite(merged[1:]).all()
    assert_same_row(formulas, merged, formulas.sequential(z))


def test_merge_with_a_fully_masked_part_returns_the_other_part_unchanged(formulas):
    part = formulas.sequential([0.3, -1.2, 2.5])
    assert np.array_equal(formulas.merge(part, MASKED), part)
    assert np.array_equal(formulas.merge(MASKED, part), part)


def test_merge_of_two_fully_masked_parts_is_empty_not_nan(formulas):
    merged = formulas.merge(MASKED, MASKED)
    assert merged[1] == 0.0 and merged[2] == 0.0
    assert merged[0] == -np.finfo(formulas.dtype).max  # the shift of a row with no choice
    assert formulas.finish(merged)[2] == 0.0


def test_merge_moves_both_parts_to_the_larger_max(formulas):
    # Parts {0} and {2}: relative to max 2, s = e^-2 + 1 and t = e^-2 * (-2).
    merged = formulas.merge(formulas.sequential([0.0]), formulas.sequential([2.0]))
    want = [2.0, math.exp(-2.0) + 1.0, -2.0 * math.exp(-2.0)]
    np.testing.assert_allclose(merged, want, **tolerance(formulas))


def test_merge_with_a_part_of_huge_logits_far_below_is_that_part_dropped_not_nan(formulas):
    # s * (m - to) = 16 * -3e37 overflows float32: the shift difference is clamped first.
    below = formulas.sequential([-1.5e37] * 16)
    above = formulas.sequential([1.5e37])
    merged = formulas.merge(below, above)
    np.testing.assert_array_equal(merged, above)
    assert formulas.finish(merged)[2] == 0.0


def test_merge_is_symmetric(formulas):
    a, b = formulas.sequential([1.0, -3.0, 0.5]), formulas.sequential([4.0, 2.0])
    np.testing.assert_allclose(formulas.merge(a, b), formulas.merge(b, a), **tolerance(formulas))


@pytest.mark.parametrize("where", ["sum_exp", "sum_exp_times_shift"])
@pytest.mark.parametrize("side", ["first", "second"])
def test_nan_in_either_part_makes_the_merge_nan(formulas, where, side):
    # A part's max is never NaN (a NaN logit is carried by its moments), so a NaN in the
    # moments is what must propagate.
    bad = formulas.sequential([0.5, 1.0])
    bad[["max", "sum_exp", "sum_exp_times_shift"].index(where)] = math.nan
    good = formulas.sequential([0.0, 3.0])
    merged = formulas.merge(bad, good) if side == "first" else formulas.merge(good, bad)
    assert np.isnan(formulas.finish(merged)[2])


# --- finishing a row ------------------------------------------------------------------------


@pytest.mark.parametrize("k", [1, 2, 7, 100])
def test_finished_row_entropy_is_that_of_categorical(formulas, k):
    z = np.random.default_rng(k).normal(0.0, 2.0, k)
    shift, log_sum_exp, entropy = formulas.finish(formulas.sequential(z))
    want = Categorical(logits=torch.tensor(z, dtype=torch.float64)).entropy().item()
    assert shift == np.asarray(z, formulas.dtype).max()
    np.testing.assert_allclose(entropy, want, **tolerance(formulas))
    z_acc = np.asarray(z, formulas.dtype).astype(np.float64)
    np.testing.assert_allclose(log_sum_exp, math.log(np.exp(z_acc - z_acc.max()).sum()), **tolerance(formulas))


def test_fully_masked_row_finishes_with_entropy_zero_and_log_sum_exp_zero(formulas):
    shift, log_sum_exp, entropy = formulas.finish(formulas.sequential([-INF, -INF, -INF]))
    assert shift == np.finfo(formulas.dtype).min
    assert log_sum_exp == 0.0 and entropy == 0.0


def test_nan_logit_finishes_with_a_nan_entropy(formulas):
    assert np.isnan(formulas.finish(formulas.sequential([0.0, math.nan, 1.0]))[2])


def test_gradient_element_of_a_fully_masked_row_is_zero(lib):
    shift, log_sum_exp, entropy = Formulas(lib, np.float64).finish(MASKED)
    assert lib.hee_entropy_grad_element_f64(-INF, shift, log_sum_exp, entropy, 1e30) == 0.0


def test_gradient_element_is_minus_p_times_log_p_plus_h(lib):
    f = Formulas(lib, np.float64)
    z = np.array([0.2, -1.0, 1.7])
    shift, log_sum_exp, entropy = f.finish(f.sequential(z))
    log_p = z - shift - log_sum_exp
    for k in range(3):
        want = 0.5 * -math.exp(log_p[k]) * (log_p[k] + entropy)
        got = lib.hee_entropy_grad_element_f64(z[k], shift, log_sum_exp, entropy, 0.5)
        assert got == pytest.approx(want, rel=1e-14)


# --- combining the losses -------------------------------------------------------------------


def combine_written_out(c_d, c_c, has_d, h_d, has_c, h_c, w_d, w_c, tau_d, tau_c, m):
    """docs/design.md's formulas, written out."""
    discrete = -c_d * w_d * h_d
    continuous = -c_c * w_c * h_c
    discrete_penalty = m * max(0.0, tau_d - h_d) if (has_d and tau_d is not None) else 0.0
    continuous_penalty = m * max(0.0, tau_c - h_c) if (has_c and tau_c is not None) else 0.0
    total = discrete + continuous + discrete_penalty + continuous_penalty
    return [total, discrete, continuous, discrete_penalty, continuous_penalty, h_d, h_c]


def call_combine(lib, c_d, c_c, has_d, h_d, has_c, h_c, w_d, w_c, tau_d, tau_c, m, grads=None):
    params = np.array(loss_params_as_doubles(w_d, w_c, tau_d, tau_c, m))
    ptr = lambda a: a.ctypes.data_as(ctypes.POINTER(ctypes.c_double))  # noqa: E731
    if grads is None:
        out = np.empty(7)
        lib.hee_combine_losses(c_d, c_c, has_d, h_d, has_c, h_c, ptr(params), ptr(out))
    else:
        out, grads = np.empty(4), np.asarray(grads, dtype=np.float64)
        lib.hee_combine_losses_backward(c_d, c_c, has_d, h_d, has_c, h_c, ptr(params), ptr(grads), ptr(out))
    return out


COMBINE_CASES = {
    "both penalties active": (0.1, 0.3, True, 0.05, True, 0.2, 1.0, 0.5, 0.1, 0.4, 3.0),
    "no penalty active": (0.1, 0.1, True, 1.5, True, 4.0, 1.5, 0.3, 0.1, 0.1, 3.0),
    "thresholds disabled": (0.2, 0.2, True, 0.01, True, 0.01, 1.0, 1.0, None, None, 2.0),
    "discrete head missing": (0.1, 0.1, False, 0.0, True, 0.01, 1.0, 0.5, 0.5, 0.5, 3.0),
    "at the threshold": (0.1, 0.1, True, 0.25, True, 0.5, 1.0, 0.5, 0.25, 0.5, 3.0),
}


@pytest.mark.parametrize("case", list(COMBINE_CASES), ids=list(COMBINE_CASES))
def test_combine_losses_follows_the_written_out_formulas(lib, case):
    args = COMBINE_CASES[case]
    np.testing.assert_allclose(call_combine(lib, *args), combine_written_out(*args), rtol=1e-15, atol=0)


@pytest.mark.parametrize("case", list(COMBINE_CASES), ids=list(COMBINE_CASES))
def test_combine_losses_backward_is_the_vjp_of_the_written_out_formulas(lib, case):
    c_d, c_c, has_d, h_d, has_c, h_c, w_d, w_c, tau_d, tau_c, m = COMBINE_CASES[case]
    grads = list(OUTPUT_WEIGHTS.values())
    leaves = [torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in (h_d, h_c, c_d, c_c)]
    t_h_d, t_h_c, t_c_d, t_c_c = leaves

    def penalty(tau, h, present):
        if tau is None or not present:
            return torch.zeros((), dtype=torch.float64)
        gap = tau - h
        return m * torch.where(gap > 0, gap, torch.zeros_like(gap))  # zero gradient at equality

    discrete, continuous = -t_c_d * w_d * t_h_d, -t_c_c * w_c * t_h_c
    dp, cp = penalty(tau_d, t_h_d, has_d), penalty(tau_c, t_h_c, has_c)
    outputs = [discrete + continuous + dp + cp, discrete, continuous, dp, cp, t_h_d, t_h_c]
    weighted = sum(g * o for g, o in zip(grads, outputs))
    want = [g.item() for g in torch.autograd.grad(weighted, leaves)]
    got = call_combine(lib, c_d, c_c, has_d, h_d, has_c, h_c, w_d, w_c, tau_d, tau_c, m, grads=grads)
    np.testing.assert_allclose(got, want, rtol=1e-14, atol=1e-15)


def test_nan_entropy_gives_a_nan_penalty_not_zero(lib):
    out = call_combine(lib, 0.1, 0.1, True, math.nan, True, 1.0, 1.0, 0.5, 0.1, 0.1, 3.0)
    assert math.isnan(out[3]) and math.isnan(out[0])


# --- the header in device code --------------------------------------------------------------


def nvcc():
    home = os.environ.get("CUDA_HOME")
    candidate = os.path.join(home, "bin", "nvcc") if home else shutil.which("nvcc")
    return candidate if candidate and os.path.exists(candidate) else None


@pytest.mark.skipif(nvcc() is None, reason="no CUDA toolkit (nvcc) on this machine")
def test_header_compiles_for_the_device_without_relaxed_constexpr(tmp_path):
    result = subprocess.run(
        [nvcc(), "-std=c++17", "-arch=sm_80", "-Werror", "all-warnings", f"-I{CSRC}", "-c", DEVICE_SOURCE,
         "-o", str(tmp_path / "entropy_math_device.o")],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr
