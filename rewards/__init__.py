"""Reward functions for vlm-grpo and the reward registry.

Every reward follows TRL's convention ``reward(completions, **columns) ->
list[float | None]`` (see DESIGN.md, "Reward contract"). Importing this
package only defines functions and fills the registry.

Public API:

- registry: :func:`register`, :func:`get`, :func:`names`, :func:`load`,
  :class:`RewardLoadError`; :func:`guard`, :class:`RewardError`.
- built-ins (registry names): ``format``, ``format_box``, ``iou``, ``rec_acc``, ``det_f1``,
  ``det_ap``, ``det_odlength``, ``point_in_box``,
  ``math``, ``exact_match``, ``mcq``, ``count``, ``accuracy``, ``length``,
  ``repetition``, ``tool_bonus`` (:mod:`rewards.tool_rewards`); factories :func:`make_math_reward`,
  :func:`make_length_reward`, :func:`make_repetition_reward`.
- modules other packages import: :mod:`rewards.parsing` (the answer rule and
  parsers), :mod:`rewards.boxes` (IoU and box frames), :mod:`rewards.tasks`
  (``TASKS``, ``judge``, ``Judgement``) and :mod:`rewards.mathcheck`.
"""

from rewards import accuracy, format_rewards, shaping, tool_rewards  # noqa: F401  (fill the registry)
from rewards.accuracy import make_math_reward
from rewards.guard import RewardError, guard
from rewards.registry import RewardLoadError, get, load, names, register
from rewards.shaping import make_length_reward, make_repetition_reward
from rewards.tasks import TASKS, Judgement, Task, judge

__all__ = [
    "TASKS",
    "Judgement",
    "RewardError",
    "RewardLoadError",
    "Task",
    "get",
    "guard",
    "judge",
    "load",
    "make_length_reward",
    "make_math_reward",
    "make_repetition_reward",
    "names",
    "register",
]
