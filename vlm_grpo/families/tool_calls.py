"""Tool calling for the Qwen-VL families: a tool-capable chat template and the parser of tool calls.

The released Qwen2.5-VL template has no tool support, and the tiny models' templates
(:func:`vlm_grpo.families.qwen_chat_template`) render none either. Qwen2.5 and Qwen3(-VL) were trained
on the Hermes format, which :func:`qwen_tool_chat_template` renders:

- with ``tools``: a system turn that lists each tool's JSON schema inside ``<tools></tools>`` and asks
  for calls as ``<tool_call>{"name": ..., "arguments": ...}</tool_call>``;
- an assistant turn with ``tool_calls``: its text, then one ``<tool_call>`` block per call;
- a ``tool`` turn: a user turn of ``<tool_response>`` blocks whose images are rendered as
  vision_start/image_pad/vision_end like a user's (so a crop reaches the processor; TRL issue 5663 is a
  template that drops them);
- without tools and without tool turns: exactly :func:`~vlm_grpo.families.qwen_chat_template`'s text, so a
  policy prompted without tools sees what it was trained on.

It is prefix-preserving (a conversation renders the same whatever follows it), which TRL's multi-turn loop
needs. :data:`HERMES_RESPONSE_TEMPLATE` is the matching parser for ``tokenizer.parse_response``: the
assistant text stays whole in ``content`` (``<think>`` included: the format reward reads it), the
``<tool_call>`` blocks become ``tool_calls``.
"""

from __future__ import annotations

from vlm_grpo.families import CONTENT_PART

# A newline right after a block tag is dropped (transformers renders with trim_blocks), so those are expressions.
_NL = "{{ '\\n' }}"

_CONTENT = (
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% elif message['content'] %}{% for content in message['content'] %}" + CONTENT_PART + "{% endfor %}{% endif %}"
)
_TOOLS_HEADER = (
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>"
    "{% for tool in tools %}" + _NL + "{{ tool | tojson }}{% endfor %}" + _NL + "</tools>\n\n"
    "For each function call, return a json object with function name and arguments within "
    "<tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": "
    "<args-json-object>}\n</tool_call>"
)
_TOOL_CALLS = (
    "{% for tool_call in message['tool_calls'] %}"
    "{% if tool_call['function'] is defined %}{% set tool_call = tool_call['function'] %}{% endif %}"
    "{% if not loop.first or message['content'] %}" + _NL + "{% endif %}"
    "<tool_call>\n{\"name\": \"{{ tool_call['name'] }}\", \"arguments\": "
    "{% if tool_call['arguments'] is string %}{{ tool_call['arguments'] }}"
    "{% else %}{{ tool_call['arguments'] | tojson }}{% endif %}}\n</tool_call>"
    "{% endfor %}"
)


def qwen_tool_chat_template(default_system: str | None) -> str:
    """The Hermes-format tool template of a Qwen-VL family (see the module doc); ``default_system`` as in
    :func:`~vlm_grpo.families.qwen_chat_template` (the system turn added when a conversation has none)."""
    system_text = (
        "{% if messages[0]['role'] == 'system' %}"
        "{% if messages[0]['content'] is string %}{{ messages[0]['content'] }}"
        "{% else %}{% for content in messages[0]['content'] %}{% if 'text' in content %}{{ content['text'] }}"
        "{% endif %}{% endfor %}{% endif %}"
        "{% else %}" + (default_system or "") + "{% endif %}"
    )
    tools_system = (
        "{% if tools %}<|im_start|>system\n" + system_text
        + "{% if messages[0]['role'] == 'system' or " + ("true" if default_system else "false") + " %}" + _NL + _NL + "{% endif %}"
        + _TOOLS_HEADER + "<|im_end|>\n{% endif %}"
    )
    default = (
        "{% if not tools and loop.first and message['role'] != 'system' %}"
        f"<|im_start|>system\n{default_system}<|im_end|>\n"
        "{% endif %}"
    ) if default_system else ""
    return (
        "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
        + tools_system
        + "{% for message in messages %}"
        + default
        + "{% if message['role'] == 'system' and tools %}"  # already rendered in the tools' system turn
        "{% elif message['role'] == 'tool' %}"
        "{% if loop.first or messages[loop.index0 - 1]['role'] != 'tool' %}<|im_start|>user{% endif %}"
        + _NL + "<tool_response>\n" + _CONTENT + _NL + "</tool_response>"
        "{% if loop.last or messages[loop.index0 + 1]['role'] != 'tool' %}<|im_end|>\n{% endif %}"
        "{% else %}<|im_start|>{{ message['role'] }}\n" + _CONTENT
        + "{% if message['role'] == 'assistant' and message['tool_calls'] %}" + _TOOL_CALLS + "{% endif %}"
        "<|im_end|>\n{% endif %}"
        "{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )


#: ``tokenizer.response_template`` for the Hermes format (transformers >= 5.13): the whole assistant text is
#: ``content`` (a ``<think>`` block stays in it), each ``<tool_call>`` JSON block one entry of ``tool_calls``.
HERMES_RESPONSE_TEMPLATE = {
    "defaults": {"role": "assistant"},
    "start_anchor": "<|im_start|>assistant\n",
    "fields": {
        "tool_calls": {
            "open": "<tool_call>",
            "close_pattern": r"</tool_call>\s*",
            "repeats": True,
            "content": "json",
            "transform": {"type": "function", "function": "{content}"},
        },
        "content": {
            "close_pattern": r"<\|im_end\|>\s*",
            "content": "text",
        },
    },
}
