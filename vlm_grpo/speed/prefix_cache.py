"""The caches of the group-shared prompt: record each layer's state at the end of the prefix, replay it read-only.

A decoder layer leaves two kinds of state behind a prefix (``text_config.layer_types``):

- full (softmax) attention: the keys and values of every prefix token;
- linear attention (Qwen3.5's Gated DeltaNet): a convolution state, the last ``linear_conv_kernel_dim``
  pre-convolution inputs (zero-padded on the left when the prefix is shorter, as the layer's own causal padding
  is), and a recurrent state, the delta rule's ``(heads, k_dim, v_dim)`` matrix after the last prefix token.

:func:`recording_cache` builds the prefix pass's cache: each layer returns its new states unchanged (the
prefill path of the layer runs, as in the plain forward) and the cache keeps the last ones. Overwriting (not
appending) makes a replay under gradient checkpointing harmless. :func:`gathered` picks each row's group's
states (``index_select``: its backward sums over a group's rows, as the plain path sums over the copies), and
:func:`prefix_cache` hands them to the completion pass read-only: attention layers return prefix + new keys
and values, linear layers start their convolution and recurrence from the prefix's states, and nothing is
written back, so a checkpointed replay sees the same states. :func:`fill` gives generation's cache the gathered
states of its prefill, the way the plain prefill would have left them.
"""

from __future__ import annotations

import torch
from transformers.cache_utils import Cache, DynamicLayer, LinearAttentionLayer

LINEAR = "linear_attention"
ATTENTION_KINDS = ("full_attention",)  # layer kinds whose state is keys/values (sliding windows are not shared)


class RecordingLayer(DynamicLayer):
    """Attention: returns the new keys/values as they are and keeps the last ones."""

    def update(self, key_states, value_states, *args, **kwargs):
        self.keys, self.values = key_states, value_states
        self.dtype, self.device, self.is_initialized = key_states.dtype, key_states.device, True
        return key_states, value_states

    def states(self) -> tuple[torch.Tensor, ...]:
        return self.keys, self.values


class PrefixLayer(DynamicLayer):
    """Attention, read-only: returns prefix + new keys/values and stores nothing."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        super().__init__()
        self.keys, self.values = keys, values
        self.dtype, self.device, self.is_initialized = keys.dtype, keys.device, True

    def update(self, key_states, value_states, *args, **kwargs):
        return torch.cat([self.keys, key_states], dim=-2), torch.cat([self.values, value_states], dim=-2)


class RecordingLinearLayer(LinearAttentionLayer):
    """Linear attention: never reports a previous state (so the layer runs its prefill path), keeps the last
    ``kernel`` convolution inputs (left-padded with zeros) and the final recurrent state."""

    def update_conv_state(self, conv_states, state_idx: int = 0, conv_kernel_size: int | None = None, **kwargs):
        kernel = conv_kernel_size or conv_states.shape[-1]
        self.conv_kernel_size[state_idx] = kernel
        short = kernel - conv_states.shape[-1]
        kept = torch.nn.functional.pad(conv_states, (short, 0)) if short > 0 else conv_states[..., -kernel:]
        self.conv_states[state_idx] = kept
        self.dtype, self.device = conv_states.dtype, conv_states.device
        return conv_states

    def update_recurrent_state(self, recurrent_states, state_idx: int = 0, **kwargs):
        self.recurrent_states[state_idx] = recurrent_states
        return recurrent_states

    def states(self) -> tuple[torch.Tensor, ...]:
        return self.conv_states[0], self.recurrent_states[0]


class PrefixLinearLayer(LinearAttentionLayer):
    """Linear attention, read-only: the prefix's states as the previous ones, nothing written back.

    ``record_past`` keeps a one-token completion pass off the layer's in-place single-step convolution update
    (``causal_conv1d_update``), which would overwrite the shared state: it takes the multi-token path, which
    reads the state through :meth:`update_conv_state`.
    """

    def __init__(self, conv: torch.Tensor, recurrent: torch.Tensor) -> None:
        super().__init__()
        self.conv_states[0], self.recurrent_states[0] = conv, recurrent
        self.conv_kernel_size[0] = conv.shape[-1]
        self.is_conv_states_initialized[0] = self.is_recurrent_states_initialized[0] = True
        self.has_previous_state[0] = True
        self.dtype, self.device = conv.dtype, conv.device
        self.record_past = True

    def update_conv_state(self, conv_states, state_idx: int = 0, **kwargs):
        return torch.cat([self.conv_states[state_idx], conv_states], dim=-1)

    def update_recurrent_state(self, recurrent_states, state_idx: int = 0, **kwargs):
        return recurrent_states


def layer_kinds(text_config) -> list[str]:
    """Each decoder layer's kind (``full_attention`` when the config lists none)."""
    kinds = getattr(text_config, "layer_types", None)
    return list(kinds) if kinds else ["full_attention"] * text_config.num_hidden_layers


def unsupported_kinds(text_config) -> list[str]:
    """The layer kinds whose prefix state this module cannot carry (sliding windows: their cache drops keys)."""
    return sorted({k for k in layer_kinds(text_config) if k not in ATTENTION_KINDS and k != LINEAR})


def recording_cache(kinds: list[str]) -> Cache:
    return Cache(layers=[RecordingLinearLayer() if kind == LINEAR else RecordingLayer() for kind in kinds])


def gathered(recording: Cache, group: torch.Tensor) -> list[tuple[str, tuple[torch.Tensor, ...]]]:
    """Per layer, its kind and its states for every row (each row's group's prefix states)."""
    return [(LINEAR if isinstance(layer, RecordingLinearLayer) else "full_attention",
             tuple(state.index_select(0, group) for state in layer.states())) for layer in recording.layers]


def prefix_cache(states: list[tuple[str, tuple[torch.Tensor, ...]]]) -> Cache:
    return Cache(layers=[PrefixLinearLayer(*s) if kind == LINEAR else PrefixLayer(*s) for kind, s in states])


def fill(cache: Cache, states: list[tuple[str, tuple[torch.Tensor, ...]]]) -> None:
    """Leave generation's (empty) cache as the plain prefill would: keys/values, and convolution and recurrent
    states."""
    for index, (kind, state) in enumerate(states):
        if kind == LINEAR:
            conv, recurrent = state
            cache.update_conv_state(conv, index, conv_kernel_size=conv.shape[-1])
            cache.update_recurrent_state(recurrent, index)
        else:
            cache.update(*state, index)
