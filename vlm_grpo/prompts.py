"""Prompt templates, one per task, shared by training, SFT and evaluation.

A template is a ``str.format`` string with ``{question}``; each task's module in
:mod:`rewards.tasks` holds its own (``Task.template``). Box tasks' templates also
take ``{frame}``, the sentence that says which coordinate frame the box is in
(it depends on the model family, see DESIGN.md "Box coordinate frames").
Users override templates per task with the ``task_templates`` config key.
"""

from __future__ import annotations

import string
from collections.abc import Mapping

from data_prep.model_limits import special_token_in
from rewards.tasks import BUILTIN_TASKS, REASONING, TASKS  # noqa: F401  (REASONING re-exported)


def task_templates() -> dict[str, str]:
    """Each registered task's own template (:attr:`rewards.tasks.Task.template`), read now, so a
    task registered by a plugin module has its template too."""
    return {name: task.template for name, task in TASKS.items()}


TEMPLATES: dict[str, str] = task_templates()
"""The built-in tasks' templates (each task's module owns its own)."""

FRAME_SENTENCES: dict[str, str] = {
    "model_pixels": "in pixels of the image as you see it",
    "norm1000": "with coordinates scaled to 0-1000 relative to the image width and height",
    "original_pixels": "in pixels of the original image",
}

FIELDS = {"question", "frame"}


def check_template(task: str, template: str) -> None:
    """Reject a template that lacks ``{question}``, uses unknown fields or holds a special
    token of the chat template (:data:`data_prep.model_limits.TEMPLATE_SPECIAL_TOKENS`), naming the task."""
    fields = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    if "question" not in fields:
        raise ValueError(f"task_templates[{task!r}] must contain {{question}}; got {template!r}")
    unknown = fields - FIELDS
    if unknown:
        raise ValueError(
            f"task_templates[{task!r}] uses unknown field(s) {sorted(unknown)}; "
            f"the fields a template can use are {sorted(FIELDS)}"
        )
    token = special_token_in(template)
    if token:
        raise ValueError(
            f"task_templates[{task!r}] contains {token!r}, a special token of the chat template; the processor "
            "adds the template's tokens itself, so remove it from the template"
        )


def merged_templates(overrides: Mapping[str, str] | None) -> dict[str, str]:
    """The registered tasks' templates with the user's overrides applied; overrides and a
    user task's own template are checked."""
    templates = task_templates()
    for task, template in templates.items():
        if task not in BUILTIN_TASKS:
            check_template(task, template)
    for task, template in (overrides or {}).items():
        check_template(task, template)
        templates[task] = template
    return templates


def render_prompt(task: str, question: str, box_frame: str, templates: Mapping[str, str] | None = None) -> str:
    """The user-turn text for one record (``templates``: default, the registered tasks' own)."""
    templates = task_templates() if templates is None else templates
    if task not in templates:
        raise ValueError(
            f"no prompt template for task {task!r}; known tasks: {sorted(templates)}. "
            "Add one under task_templates in the config."
        )
    return templates[task].format(question=question.strip(), frame=FRAME_SENTENCES[box_frame])


def opens_think(processor) -> bool:
    """Whether the processor's chat template leaves a ``<think>`` open at the end of its generation prompt
    (Qwen3.5's "think" flavour), so that completions start inside the thinking block.

    Read off the rendered prompt of a one-image question (:func:`rewards.parsing.inside_open_think`), never
    assumed from the family: the format reward, the answer parser, SFT's targets and evaluation all consult
    the row column it sets (``open_think``).
    """
    from rewards.parsing import inside_open_think
    from vlm_grpo.generation import user_message

    rendered = processor.apply_chat_template(user_message("?", 1), add_generation_prompt=True, tokenize=False)
    return inside_open_think(rendered)
