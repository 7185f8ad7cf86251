"""Speed features that act at the model level, so they work under TRL's generation and every forward pass.

The group image cache (:mod:`vlm_grpo.speed.group_cache`): with GRPO each image
appears ``num_generations`` times in a batch; it is preprocessed and encoded
once, exactly.

The group-shared prompt (:mod:`vlm_grpo.speed.shared_prompt`): the language
model runs each distinct prompt once per forward and every completion of the
group attends to its keys and values, exactly, in generation's prefill and in
every log-prob and training pass.
"""

from vlm_grpo.speed.group_cache import (
    cache_stats,
    disable_group_image_cache,
    enable_group_image_cache,
    group_image_cache,
    vision_tower,
)
from vlm_grpo.speed.shared_prompt import (
    SharedPromptStats,
    disable_shared_prompt,
    enable_shared_prompt,
    shared_prompt_stats,
)
from vlm_grpo.speed.vision_cache import CacheStats

__all__ = [
    "CacheStats",
    "SharedPromptStats",
    "cache_stats",
    "disable_group_image_cache",
    "disable_shared_prompt",
    "enable_group_image_cache",
    "enable_shared_prompt",
    "group_image_cache",
    "shared_prompt_stats",
    "vision_tower",
]
