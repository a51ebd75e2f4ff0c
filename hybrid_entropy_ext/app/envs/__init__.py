"""Hybrid-action environments (Gymnasium API). Importing this package registers them.

    import gymnasium as gym
    import hybrid_entropy_ext.app.envs  # registers HybridNetworkGrowth-v0 and its two variants

    env = gym.make("HybridNetworkGrowth-v0")
    envs = gym.vector.SyncVectorEnv([lambda: gym.make("HybridNetworkGrowth-v0")] * 8)
"""

import gymnasium as gym

from .network_growth import EDGE_KINDS, EDGE_OP, GREEDY_OP, OPERATIONS, QUICK_KIND, TUNED_KIND, NetworkGrowthEnv

__all__ = [
    "NetworkGrowthEnv", "OPERATIONS", "GREEDY_OP", "EDGE_OP", "EDGE_KINDS", "TUNED_KIND", "QUICK_KIND",
    "NETWORK_GROWTH_ID", "PARAMETERIZED_NETWORK_GROWTH_ID", "MULTI_DISCRETE_NETWORK_GROWTH_ID",
]

NETWORK_GROWTH_ID = "HybridNetworkGrowth-v0"
# Each operation with its own spawn parameters (NetworkGrowthEnv's module doc).
PARAMETERIZED_NETWORK_GROWTH_ID = "HybridNetworkGrowthParameterized-v0"
# The discrete part split into (operation, edge kind) sub-decisions (NetworkGrowthEnv's module doc).
MULTI_DISCRETE_NETWORK_GROWTH_ID = "HybridNetworkGrowthMultiDiscrete-v0"

_ENTRY_POINT = "hybrid_entropy_ext.app.envs.network_growth:NetworkGrowthEnv"
if NETWORK_GROWTH_ID not in gym.registry:
    gym.register(id=NETWORK_GROWTH_ID, entry_point=_ENTRY_POINT)
if PARAMETERIZED_NETWORK_GROWTH_ID not in gym.registry:
    gym.register(id=PARAMETERIZED_NETWORK_GROWTH_ID, entry_point=_ENTRY_POINT, kwargs={"parameterized": True})
if MULTI_DISCRETE_NETWORK_GROWTH_ID not in gym.registry:
    gym.register(id=MULTI_DISCRETE_NETWORK_GROWTH_ID, entry_point=_ENTRY_POINT, kwargs={"multi_discrete": True})
