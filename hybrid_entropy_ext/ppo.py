"""``hybrid_entropy_ext.ppo``: the demo's PPO trainer, :mod:`hybrid_entropy_ext.app.ppo` under the name the README uses."""

import sys

from .app import ppo

sys.modules[__name__] = ppo
