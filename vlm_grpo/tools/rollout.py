"""Multi-turn generation with tools for evaluation: the loop of TRL's ``GRPOTrainer`` (``_tool_call_loop``),
batched, with the same environment, limits, template and parser.

Per batch: every row gets its own environment (``reset(**row)``); the rows generate a turn together; each
reply is parsed with TRL's ``parse_response`` (a ``<tool_call>`` whose JSON does not parse is plain text,
as in training); each call runs (an exception becomes ``{'error': '...'}``, TRL's text); the rows that
called a tool get their tool turn (a crop as a new image) and generate again, up to ``max_calls + 1``
turns (the turn after the limit gets the error text and may still answer). The final answer is the last
assistant turn.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

from vlm_grpo.generation import generate


@dataclasses.dataclass
class ToolRollout:
    """One row's multi-turn completion: the messages after the prompt, the final text, the crops it got."""

    messages: list[dict]
    text: str
    regions: list[list[int]]  # each successful crop, original pixels


def _tool_dict(environment, functions) -> dict[str, Any]:
    tools = {f.__name__: f for f in functions}
    if environment is not None:
        for name, _ in inspect.getmembers(type(environment), inspect.isfunction):
            if name not in ("reset", "get_reward") and not name.startswith("_"):
                tools[name] = getattr(environment, name)
    return tools


def _run_call(tools: dict, call: dict):
    function = call.get("function", {}) if isinstance(call, dict) else {}
    name = function.get("name", "unknown")
    try:
        if name not in tools:
            raise ValueError(f"Tool {name} not found.")
        return name, tools[name](**function.get("arguments", {}))
    except Exception as err:  # what TRL does: the model reads the error, the rollout goes on
        return name, {"error": str(err)}


def _parse(tokenizer, text: str, schemas) -> dict:
    from trl.chat_template_utils import parse_response

    ids = tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    prefix = tokenizer("<|im_start|>assistant\n", add_special_tokens=False)["input_ids"]
    return parse_response(tokenizer, ids, prefix=prefix, tools=schemas)


def generate_with_tools(model, processor, rows: list[dict], toolset, *, max_new_tokens: int, do_sample: bool = False,
                        temperature: float = 1.0, seed: int | None = None) -> list[ToolRollout]:
    """Multi-turn completions of ``rows`` (trainer rows: ``prompt``, ``images`` …) with ``toolset``'s tools."""
    schemas = toolset.schemas()
    environments = [toolset.environment() if toolset.environment is not None else None for _ in rows]
    for environment, row in zip(environments, rows):
        if environment is not None:
            environment.reset(**row)
    tool_dicts = [_tool_dict(env, toolset.functions) for env in environments]
    conversations = [[dict(m) for m in row["prompt"]] for row in rows]
    images = [list(row["images"] or []) for row in rows]
    messages: list[list[dict]] = [[] for _ in rows]
    active = list(range(len(rows)))
    for turn in range(toolset.limits.max_calls + 2):
        if not active:
            break
        out = generate(model, processor, [conversations[i] + messages[i] for i in active], [images[i] for i in active],
                       max_new_tokens=max_new_tokens, do_sample=do_sample, temperature=temperature,
                       seed=None if seed is None else seed + turn, tools=schemas)
        still = []
        for i, text in zip(active, out.texts):
            reply = _parse(processor.tokenizer, text, schemas)
            messages[i].append(reply)
            if not reply.get("tool_calls") or turn > toolset.limits.max_calls:
                continue
            for call in reply["tool_calls"]:
                name, result = _run_call(tool_dicts[i], call)
                content = result if isinstance(result, list) else str(result)
                if isinstance(content, list):
                    for part in content:
                        if isinstance(part, dict) and part.get("type") == "image":
                            images[i].append(part["image"])
                    content = [{"type": "image"} if p.get("type") == "image" else p for p in content]
                messages[i].append({"role": "tool", "name": name, "content": content})
            still.append(i)
        active = still
    results = []
    for environment, turns in zip(environments, messages):
        regions = [c.region for c in getattr(environment, "calls", []) if c.ok]
        results.append(ToolRollout(turns, turns[-1].get("content", "") if turns else "", regions))
    return results
