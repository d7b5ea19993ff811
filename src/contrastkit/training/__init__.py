"""Training helpers around a contrastive loss.

- :mod:`contrastkit.training.gradcache`: gradient caching (GradCache), big-batch steps in
  chunk-sized memory;
- :mod:`contrastkit.training.miners`: negative miners (top-k, semi-hard, neighbours) and
  false-negative filters (threshold, guided, shared id), k-means;
- :mod:`contrastkit.training.samplers`: batch samplers (m per class, pseudo-class exclusive,
  batch binding, neighbour batches, per-task batches).
"""

from contrastkit.training.gradcache import GradCache, grad_cache_step

__all__ = ["GradCache", "grad_cache_step"]
