"""The demo application: what runs the library end to end, not what a user's code imports.

- ``cli.py``: the command line, ``python -m hybrid_entropy_ext`` / ``hybrid-entropy``
  (schedule tables, collapse reports, benchmarks, training runs).
- ``ppo.py``: a compact PPO trainer for hybrid actions, with the regularizer as its
  entropy term.
- ``envs/``: the hybrid-action Gymnasium environment it trains on.

The top layer: it imports the regularization layer, the ops and the benchmarking code,
and nothing below imports it. The trainer and the environment need the ``demo`` extra
(gymnasium, tqdm, matplotlib), so ``import hybrid_entropy_ext`` does not import this
package.
"""
