"""Benchmarking: the fused op timed against what a user could use instead.

- ``runner.py``: the cases, the implementations (the fused op, ``torch.distributions``,
  the pure-PyTorch reference eager and compiled, memory-roofline proxies), timing in
  interleaved rounds, tables, JSON and plots; CPU and the shared machinery.
- ``cuda.py``: the GPU suite on that machinery: CUDA-event timing, bandwidth against a
  device copy, peak memory, kernel counts.
- ``token_terms.py``: the per-token terms suite: ``log_prob_and_entropy`` against the
  eager two-pass PyTorch, its compiled form, TRL and ``Categorical``, with peak memory;
  ``token_terms_cuda.py`` runs it on a GPU.
- ``cpu_memory.py``: the peak bytes one call allocates through torch's CPU allocator.

Part of the application layer, below :mod:`hybrid_entropy_ext.app` (whose ``bench``
command runs it): it imports the ops (the reference is its baseline) and never the app.
Not imported by ``import hybrid_entropy_ext``.
"""
