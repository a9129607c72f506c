"""GPUNodePool disruption: emptiness, consolidation, expiration, budgets, drain."""
