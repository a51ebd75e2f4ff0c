"""Fits the exp polynomial of csrc/cpu/simd_math.h (kExpCoeffs).

exp(r) on [-ln2/2, ln2/2] by 1 + c1 r + ... + c5 r^5, minimizing the largest
relative error (Lawson's iteratively reweighted least squares on Chebyshev
nodes, which converges to the minimax fit). Prints the coefficients rounded to
float32, highest degree first, as simd_math.h lists them. The ulp error of the
kernel's exp with them is measured by benchmarks/cpp/simd_math_accuracy.cpp.

    python scripts/fit_exp_polynomial.py [degree]
"""

import sys

import numpy as np


def fit(degree: int, iterations: int = 200):
    half_ln2 = np.log(2.0) / 2
    r = np.cos(np.linspace(0.0, np.pi, 4001)) * half_ln2
    exact = np.exp(r)
    powers = np.vstack([r**i for i in range(1, degree + 1)]).T
    weights = np.ones_like(r)
    for _ in range(iterations):
        scale = weights / exact  # relative error
        coeffs, *_ = np.linalg.lstsq(powers * scale[:, None], (exact - 1.0) * scale, rcond=None)
        error = (powers @ coeffs + 1.0 - exact) / exact
        weights = weights * np.sqrt(np.abs(error)) + 1e-30
        weights /= weights.sum()
    return coeffs, np.abs(error).max()


if __name__ == "__main__":
    degree = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    coeffs, max_relative_error = fit(degree)
    print(f"max relative error {max_relative_error:.3g}")
    print(", ".join(f"{float(np.float32(c)):.10e}f" for c in reversed(coeffs)) + ", 1.0f")
