"""The layer of the integrations with RL and LLM-RL libraries.

An integration adapts :class:`~hybrid_entropy_ext.HybridEntropyRegularizer` (or the ops)
to one library's functions, policy and loss interfaces, in a module of its own:

- :mod:`.sb3`: Stable-Baselines3's ``PPO`` with the regularizer as its entropy term
  (``entropy_regularization=``), and the mixin that puts it in an on-policy algorithm;
  :mod:`.sb3_spaces` and :mod:`.sb3_policies`: the hybrid and parameterized action spaces
  SB3 lacks (their flat form, the environment wrappers, the policy and its distribution);
- :mod:`.sb3_contrib`: the same for sb3-contrib's ``MaskablePPO`` (the action masks as
  the op's) and ``RecurrentPPO`` (the padding as the sample mask);
- :mod:`.torchrl`: TorchRL's ``ClipPPOLoss``, ``PPOLoss`` and ``KLPENPPOLoss`` with the
  regularizer as ``loss_entropy`` (composite distributions included);
- :mod:`.entropy_regularization`: the ``entropy_regularization`` argument they all take;
- :mod:`.trl`: drop-ins for TRL's ``selective_log_softmax_and_entropy`` (its fused
  kernel's contract), ``selective_log_softmax`` and ``entropy_from_logits``, and
  ``apply_to_trl()``, which puts them in TRL's place;
- :mod:`.verl`: drop-ins for verl's ``entropy_from_logits`` and ``compute_entropy_loss``,
  and ``apply_to_verl()``;
- :mod:`.patching`: how those ``apply_to_*`` replace a library's functions, undoably.

The libraries are optional extras: each module imports its own library (``trl`` and
``verl`` only in their ``apply_to_*``, the drop-ins needing nothing of them), and nothing
imports an integration module until it is used (this package's ``__init__`` imports
nothing, and ``import hybrid_entropy_ext`` does not import this package).

The layer sits between the application and the regularization layer: its modules import
:mod:`hybrid_entropy_ext.regularization` and :mod:`hybrid_entropy_ext.ops`, never the
application (:mod:`hybrid_entropy_ext.app`, :mod:`hybrid_entropy_ext.benchmarking`).
"""
