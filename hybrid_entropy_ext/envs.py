"""``hybrid_entropy_ext.envs``: the demo's environments, :mod:`hybrid_entropy_ext.app.envs` under the
name the README uses. Importing it registers them with Gymnasium."""

import sys

from .app import envs

sys.modules[__name__] = envs
