"""Training helpers: gradient caching (:mod:`contrastkit.training.gradcache`)."""

from contrastkit.training.gradcache import GradCache, grad_cache_step

__all__ = ["GradCache", "grad_cache_step"]
