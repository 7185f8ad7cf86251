"""Tools a policy may call during its rollouts (multi-turn GRPO on TRL's tool loop, and evaluation).

A config names them under ``tools``: a built-in name (``zoom_in``: :mod:`vlm_grpo.tools.zoom`), or a user's
``package.module:name`` / ``path/to/file.py:name``. What a name resolves to decides how TRL gets it:

- a class with a ``reset`` method is an *environment*: TRL's ``environment_factory`` builds one per
  rollout and calls ``reset(**row)``; its public methods are the tools. At most one per run (TRL takes one
  factory for every row); the built-in ``zoom_in`` is the :class:`~vlm_grpo.tools.zoom.ZoomEnvironment`;
- a function is a standalone tool (TRL's ``tools=``), called with the model's arguments.

:func:`resolve_tools` returns a :class:`Toolset` with both, the prompt templates the tools bring (the
zoom task's template that describes ``zoom_in``), and the limits. :func:`prepare_processor` gives the
processor the family's tool-capable chat template and tool-call parser when its own template has none
(:mod:`vlm_grpo.families.tool_calls`).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import logging
from typing import Any, Callable

from vlm_grpo.tools.zoom import ToolError, ZoomCall, ZoomEnvironment, ZoomLimits

logger = logging.getLogger(__name__)

#: Built-in tool names -> (environment class, the prompt templates it brings: task -> template).
BUILTIN_TOOLS: dict[str, tuple[type, str]] = {"zoom_in": (ZoomEnvironment, "rewards.tasks.zoom:TOOL_TEMPLATES")}


@dataclasses.dataclass
class Toolset:
    """What a run's ``tools`` resolve to.

    Fields:
        names: the specs as the config gave them.
        environment: a zero-argument factory of one rollout's environment (TRL's ``environment_factory``), or None.
        functions: standalone tool functions (TRL's ``tools``).
        templates: prompt templates the tools bring (task -> template), applied unless ``task_templates`` sets one.
        limits: the zoom limits (calls and image tokens per rollout).
    """

    names: list[str]
    environment: Callable[[], Any] | None
    functions: list[Callable]
    templates: dict[str, str]
    limits: ZoomLimits

    def schemas(self) -> list[Callable]:
        """The tool callables whose signature and docstring the chat template lists (bound methods)."""
        tools = list(self.functions)
        if self.environment is not None:
            probe = self.environment()
            tools += [getattr(probe, name) for name, _ in inspect.getmembers(type(probe), inspect.isfunction)
                      if name not in ("reset", "get_reward") and not name.startswith("_")]
        return tools


def _load(spec: str) -> Any:
    from rewards.registry import RewardLoadError, _import, _load_file

    module_part, _, attr = spec.rpartition(":")
    if not module_part or not attr:
        raise ValueError(f"tool {spec!r}: name a built-in tool ({', '.join(BUILTIN_TOOLS)}) or "
                         "package.module:name / path/to/file.py:name")
    try:
        module = _load_file(module_part) if module_part.endswith(".py") or "/" in module_part else _import(module_part)
    except RewardLoadError as err:
        raise ValueError(f"tool {spec!r}: {err}") from None
    if not hasattr(module, attr):
        raise ValueError(f"tool {spec!r}: {module_part} has no {attr!r}")
    return getattr(module, attr)


def resolve_tools(specs: list[str] | None, processor, *, max_tool_calls: int = 3,
                  max_image_tokens: int = 1024) -> Toolset | None:
    """The :class:`Toolset` of ``specs`` (None when there are none); errors name the spec."""
    if not specs:
        return None
    limits = ZoomLimits.of(processor, max_calls=max_tool_calls, max_image_tokens=max_image_tokens)
    environments, functions, templates = [], [], {}
    for spec in specs:
        if spec in BUILTIN_TOOLS:
            cls, template_spec = BUILTIN_TOOLS[spec]
            environments.append((spec, functools.partial(cls, limits)))
            templates.update(_load(template_spec))
            continue
        target = _load(spec)
        if inspect.isclass(target):
            if not callable(getattr(target, "reset", None)):
                raise ValueError(f"tool {spec!r} is a class without a reset method; an environment needs "
                                 "reset(**row) and its tools as public methods")
            environments.append((spec, target))
        elif callable(target):
            functions.append(target)
        else:
            raise ValueError(f"tool {spec!r} is neither a function nor an environment class")
    if len(environments) > 1:
        raise ValueError(f"tools names {len(environments)} environments ({', '.join(s for s, _ in environments)}); "
                         "a run takes one (TRL builds one environment per rollout)")
    return Toolset(list(specs), environments[0][1] if environments else None, functions, templates, limits)


def prepare_processor(processor, family) -> None:
    """Make ``processor`` render and parse tool calls: the family's tool template when the processor's own
    cannot render a tool conversation, and the family's tool-call parser when the tokenizer has none."""
    from trl.chat_template_utils import supports_tool_calling

    if not supports_tool_calling(processor):
        if family.tool_chat_template is None:
            raise ValueError(f"the chat template of this {family.display} checkpoint cannot render tool calls and "
                             "the family has no tool template; drop `tools` or use a tool-capable checkpoint")
        processor.chat_template = family.tool_chat_template
        processor.tokenizer.chat_template = family.tool_chat_template
    tokenizer = processor.tokenizer
    if getattr(tokenizer, "response_template", None) is None and family.response_template is not None:
        tokenizer.response_template = family.response_template


def note_tool_rollouts(features) -> None:
    """One console line on what the speed features do under multi-turn rollouts (``tests/test_tools_speed.py``
    shows both exact on groups whose rows diverge): the group image cache encodes a group's shared image once
    and every crop on its own; the group-shared prompt shares a prompt only in calls whose image tokens all
    lie in it, so a batch with a crop in any completion takes the plain forward."""
    if any(f.name == "group_shared_prompt" and f.active for f in features):
        logger.warning("group_shared_prompt steps aside (plain forward, same results) for batches where a rollout "
                       "zoomed in: a crop's image tokens lie after the shared prompt; generation's prefill and "
                       "batches without crops still share it")


__all__ = ["BUILTIN_TOOLS", "ToolError", "Toolset", "ZoomCall", "ZoomEnvironment", "ZoomLimits",
           "note_tool_rollouts", "prepare_processor", "resolve_tools"]
