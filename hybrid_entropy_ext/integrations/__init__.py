"""The layer of the integrations with RL and RLHF libraries; it holds none yet.

An integration adapts :class:`~hybrid_entropy_ext.HybridEntropyRegularizer` (or the ops)
to one library's policy and loss interfaces, in a module of its own that imports that
library. Those libraries are optional, so nothing imports an integration module until it
is used: this package's ``__init__`` imports nothing, and ``import hybrid_entropy_ext``
does not import this package.

The layer sits between the application and the regularization layer: its modules import
:mod:`hybrid_entropy_ext.regularization` and :mod:`hybrid_entropy_ext.ops`, never the
application (:mod:`hybrid_entropy_ext.app`, :mod:`hybrid_entropy_ext.benchmarking`).
"""
