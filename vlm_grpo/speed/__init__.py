"""Speed features that act at the model level, so they work under TRL's generation and every forward pass.

The group image cache (:mod:`vlm_grpo.speed.group_cache`): with GRPO each image
appears ``num_generations`` times in a batch; it is preprocessed and encoded
once, exactly.
"""

from vlm_grpo.speed.group_cache import (
    cache_stats,
    disable_group_image_cache,
    enable_group_image_cache,
    group_image_cache,
    vision_tower,
)
from vlm_grpo.speed.vision_cache import CacheStats

__all__ = [
    "CacheStats",
    "cache_stats",
    "disable_group_image_cache",
    "enable_group_image_cache",
    "group_image_cache",
    "vision_tower",
]
