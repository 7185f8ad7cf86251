"""Exactness probes: does a speed feature give the plain path's results with the installed transformers?

A speed feature reaches into model internals that a transformers release can
change without notice (5.24 renamed the backbone's cache argument, and the old
name was silently dropped). So before training, each feature is tried on a
*twin* of the policy: a model of the same class, built from a shrunk copy of
its config (two small layers, the family's tiny vision tower, a 512-token
vocabulary, random weights, float32, sdpa attention, on the CPU). The twin runs one GRPO-shaped batch, two
prompts with one image each and two completions per prompt, left padding
included, on the plain path and with the feature on:

- logits and every parameter's gradient must agree within ``TOLERANCE``
  (relative; float32 gives about 1e-7), and the feature must actually have
  taken its fast path on the batch;
- for the group-shared prompt, greedy generation's per-step logits must agree
  too (the prefill hands its cache to the decode loop);
- for the decode cache, greedy and seeded sampled generation must give the
  plain path's logits bit for bit (it changes where the cache is stored, not
  what is computed), and the buffered layers must actually have been used.

A probe returns ``None`` when the feature is exact, else the reason in words
(an exception counts, with its type and message). The probe checks the code
of the installed transformers for this model class (the family's twin overrides,
``Family.probe_vision`` / ``probe_text``, keep its vision tower and experts
small); it cannot check the real
run's attention kernel (flash-attn has no CPU build) or its dtype, which the
feature's own per-call checks and tests cover. It takes well under a second.
"""

from __future__ import annotations

import contextlib
import copy
import traceback

import torch

TOLERANCE = 1e-4
TWIN_VOCAB = 512
TEXT_SIZES = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
              "num_key_value_heads": 2, "head_dim": 16}
MROPE_SECTION = [2, 3, 3]  # halves of head_dim 16, split as Qwen's temporal / height / width sections
IMAGE_GRID = (1, 4, 4)  # one frame of 4x4 patches: 4 language-model tokens after the 2x2 merge
PROMPT_TEXT, COMPLETION = 3, 4  # text tokens around each image, completion tokens per row


def twin_of(model) -> torch.nn.Module:
    """A small random model of ``model``'s class and family (float32, CPU, sdpa)."""
    from vlm_grpo.modeling import family_of
    from vlm_grpo.speed.group_cache import unwrap

    base = unwrap(model)
    base = base.get_base_model() if hasattr(base, "get_base_model") else base
    config = copy.deepcopy(base.config)
    text = config.get_text_config()
    for name, value in TEXT_SIZES.items():
        if hasattr(text, name) or name != "head_dim":
            setattr(text, name, value)
    rope = getattr(text, "rope_parameters", None)
    if isinstance(rope, dict) and "mrope_section" in rope:
        rope["mrope_section"] = list(MROPE_SECTION)
    if getattr(text, "layer_types", None):
        text.layer_types = list(text.layer_types[: TEXT_SIZES["num_hidden_layers"]])
    _small_vocabulary(config, text)
    family = family_of(config)
    for name, value in family.probe_text.items():  # MoE: a few small experts
        setattr(text, name, value)
    vision = config.vision_config
    for name, value in family.probe_vision.items():
        setattr(vision, name, TEXT_SIZES["hidden_size"] if value == "text_hidden" else value)
    state = torch.random.get_rng_state()
    torch.manual_seed(0)
    try:
        with _outside_zero3():
            twin = type(base)._from_config(config, attn_implementation="sdpa", dtype=torch.float32)
    finally:
        torch.random.set_rng_state(state)
    return twin.eval()


@contextlib.contextmanager
def _outside_zero3():
    """Build the twin as a plain module in a DeepSpeed ZeRO-3 run too: there transformers partitions the
    parameters of every model it builds (``deepspeed.zero.Init``) while its DeepSpeed config is set."""
    try:
        from transformers.integrations import deepspeed
    except ImportError:
        yield
        return
    held = getattr(deepspeed, "_hf_deepspeed_config_weak_ref", None)
    config = held() if held is not None else None
    if config is None:
        yield
        return
    deepspeed.unset_hf_deepspeed_config()
    try:
        yield
    finally:
        deepspeed.set_hf_deepspeed_config(config)


def _small_vocabulary(config, text) -> None:
    """A vocabulary of ``TWIN_VOCAB`` tokens, the special token ids moved to its end (a 150k-token embedding
    and LM head would be most of the probe's time; no code path depends on the ids' values)."""
    holders = [config, text]
    names = sorted({n for h in holders for n in vars(h) if n.endswith("_token_id")})
    ids = sorted({i for h in holders for n in names for i in _as_list(getattr(h, n, None))})
    moved = {old: TWIN_VOCAB - len(ids) + k for k, old in enumerate(ids)}
    for holder in holders:
        for name in names:
            value = getattr(holder, name, None)
            if isinstance(value, int):
                setattr(holder, name, moved[value])
            elif isinstance(value, list):
                setattr(holder, name, [moved[v] for v in value])
    text.vocab_size = TWIN_VOCAB


def _as_list(value) -> list[int]:
    if isinstance(value, int) and not isinstance(value, bool):
        return [value]
    return [v for v in value if isinstance(v, int)] if isinstance(value, list) else []


def probe_batch(config, *, completions: bool = True) -> dict:
    """Two prompts (one image each, the second left-padded) times two rows, as TRL hands them to the model."""
    generator = torch.Generator().manual_seed(0)
    merge = config.vision_config.spatial_merge_size
    t, h, w = IMAGE_GRID
    image_tokens = t * h * w // merge**2
    special = {config.image_token_id, config.vision_start_token_id, config.vision_end_token_id,
               getattr(config, "video_token_id", None)}
    vocab = config.get_text_config().vocab_size

    def text(n: int) -> list[int]:
        ids = torch.randint(0, vocab - 32, (n,), generator=generator).tolist()  # the special ids are at the end
        return [i if i not in special else 0 for i in ids]

    def prompt(before: int) -> list[int]:
        return (text(before) + [config.vision_start_token_id] + [config.image_token_id] * image_tokens
                + [config.vision_end_token_id] + text(PROMPT_TEXT))

    prompts = [prompt(PROMPT_TEXT), prompt(PROMPT_TEXT - 2)]
    width = max(len(p) for p in prompts)
    rows, masks = [], []
    for p in prompts:
        for _ in range(2):
            tail = text(COMPLETION) if completions else []
            rows.append([0] * (width - len(p)) + p + tail)
            masks.append([0] * (width - len(p)) + [1] * (len(p) + len(tail)))
    input_ids = torch.tensor(rows)
    patch_dim = _patch_dim(config.vision_config)
    images = [torch.randn(t * h * w, patch_dim, generator=generator) for _ in prompts]
    return {
        "input_ids": input_ids,
        "attention_mask": torch.tensor(masks),
        "pixel_values": torch.cat([images[0], images[0], images[1], images[1]]),
        "image_grid_thw": torch.tensor([IMAGE_GRID] * 4),
        "mm_token_type_ids": (input_ids == config.image_token_id).int(),
    }


def _patch_dim(vision_config) -> int:
    channels = getattr(vision_config, "in_channels", getattr(vision_config, "in_chans", 3))
    return channels * vision_config.temporal_patch_size * vision_config.patch_size**2


def _logits_and_grads(model, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Logits and gradients of a random projection of them; a Mixture of Experts adds its router's
    load-balancing loss, as TRL's training forward does (``output_router_logits``)."""
    model.zero_grad(set_to_none=True)
    moe = hasattr(model.config.get_text_config(), "output_router_logits")
    out = model(**batch, **({"output_router_logits": True} if moe else {}))
    logits = out.logits
    weights = torch.randn(logits.shape, generator=torch.Generator().manual_seed(1))
    loss = (logits * weights).sum()
    if moe:
        loss = loss + 10.0 * out.aux_loss
        logits = torch.cat([logits.flatten(), out.aux_loss.detach().reshape(1)])
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    return logits.detach(), grads


def _close(on: torch.Tensor, off: torch.Tensor) -> bool:
    """Equal within ``TOLERANCE``, relative to each value and to the largest plain value."""
    return torch.allclose(on, off, rtol=TOLERANCE, atol=TOLERANCE * float(off.abs().max()))


def _mismatch(on, off, what: str) -> str | None:
    (logits_on, grads_on), (logits_off, grads_off) = on, off
    if not _close(logits_on, logits_off):
        return f"{what}: logits differ from the plain path by {float((logits_on - logits_off).abs().max()):.3g}"
    if grads_on.keys() != grads_off.keys():
        return f"{what}: gradients reach other parameters than on the plain path"
    for name, grad in grads_off.items():
        if float((grads_on[name] - grad).norm()) > TOLERANCE * float(grad.norm()) + 1e-12:
            return f"{what}: the gradient of {name} differs from the plain path"
    return None


def _generation_logits(model, batch: dict, **sampling) -> torch.Tensor:
    """Per-step logits of 3 generated tokens: greedy unless ``sampling`` says otherwise."""
    sampling = {"do_sample": False, **sampling}
    out = model.generate(**batch, max_new_tokens=3, output_logits=True, return_dict_in_generate=True, use_cache=True,
                         pad_token_id=0, eos_token_id=None, **sampling)
    return torch.stack(out.logits)


def _sampled_logits(model, batch: dict) -> torch.Tensor:
    """Sampled generation's logits under a fixed seed (each step's logits depend on the tokens sampled before)."""
    state = torch.random.get_rng_state()
    torch.manual_seed(0)
    try:
        return _generation_logits(model, batch, do_sample=True, top_k=0, top_p=1.0, temperature=1.0)
    finally:
        torch.random.set_rng_state(state)


def _guarded(check):
    """Run a probe; an exception is a reason (the feature steps aside), never a crash."""
    try:
        return check()
    except Exception as err:  # noqa: BLE001 - whatever the release changed, the run goes on without the feature
        where = traceback.extract_tb(err.__traceback__)[-1]
        return f"{type(err).__name__}: {err} (at {where.filename.rsplit('/', 1)[-1]}:{where.lineno})"


def check_shared_prompt(model) -> str | None:
    """``None`` when the group-shared prompt is exact on a twin of ``model``, else why not (first: the family's
    own reason for not vouching for it, ``Family.not_vouched``)."""
    from vlm_grpo.speed.shared_prompt import disable_shared_prompt, enable_shared_prompt, shared_prompt_stats

    def check():
        from vlm_grpo.speed.group_cache import model_family

        blocker = model_family(model).not_vouched.get("group_shared_prompt")
        if blocker:
            return blocker
        twin = twin_of(model)
        batch = probe_batch(twin.config)
        prompts = probe_batch(twin.config, completions=False)
        off = _logits_and_grads(twin, batch)
        greedy_off = _generation_logits(twin, prompts)
        enable_shared_prompt(twin)
        try:
            on = _logits_and_grads(twin, batch)
            if shared_prompt_stats(twin).shared == 0:
                return "the probe batch took the plain path (nothing was shared)"
            greedy_on = _generation_logits(twin, prompts)
        finally:
            disable_shared_prompt(twin)
        if not _close(greedy_on, greedy_off):
            return "generation: the decode steps after the shared prefill differ from the plain path"
        return _mismatch(on, off, "forward and backward")

    return _guarded(check)


def check_decode_cache(model) -> str | None:
    """``None`` when buffered decoding gives the plain path's logits bit for bit on a twin of ``model``, else why."""
    from vlm_grpo.speed.decode_cache import decode_cache_stats, disable_decode_cache, enable_decode_cache

    def check():
        twin = twin_of(model)
        prompts = probe_batch(twin.config, completions=False)
        plain = [_generation_logits(twin, prompts), _sampled_logits(twin, prompts)]
        enable_decode_cache(twin)
        try:
            buffered = [_generation_logits(twin, prompts), _sampled_logits(twin, prompts)]
            stats = decode_cache_stats(twin)
            if stats.calls == 0:
                return f"generation kept its own cache ({'; '.join(stats.plain_reasons) or 'the hook was not reached'})"
        finally:
            disable_decode_cache(twin)
        for kind, on, off in zip(("greedy", "sampled"), buffered, plain):
            if not torch.equal(on, off):
                return f"{kind} generation: logits differ from the plain path by {float((on - off).abs().max()):.3g}"
        return None

    return _guarded(check)


def check_image_cache(model, processor=None) -> str | None:
    """``None`` when the group image cache is exact on a twin of ``model`` (and on ``processor``), else why not."""
    from vlm_grpo.speed.group_cache import cache_stats, disable_group_image_cache, enable_group_image_cache

    def check():
        twin = twin_of(model)
        batch = probe_batch(twin.config)
        off = _logits_and_grads(twin, batch)
        enable_group_image_cache(twin)
        try:
            on = _logits_and_grads(twin, batch)
            if cache_stats(twin).saved == 0:
                return "the probe batch took the plain path (no image was encoded once for its copies)"
        finally:
            disable_group_image_cache(twin)
        return _mismatch(on, off, "vision tower") or (None if processor is None else _processor_mismatch(processor))

    return _guarded(check)


def _processor_mismatch(processor) -> str | None:
    """The processor half: the same ``pixel_values`` and grids with and without the cache, bit for bit."""
    from PIL import Image

    from vlm_grpo.speed.group_cache import group_image_cache

    colours = [(200, 30, 30), (200, 30, 30), (20, 90, 200)]
    images = [Image.new("RGB", (64, 48), c) for c in colours]
    token = processor.image_token
    text = [f"{token} a", f"{token} a", f"{token} b"]
    plain = processor(images=images, text=text, return_tensors="pt", padding=True)
    with group_image_cache(processor=processor):
        cached = processor(images=images, text=text, return_tensors="pt", padding=True)
    for key in ("pixel_values", "image_grid_thw", "input_ids"):
        if not torch.equal(plain[key], cached[key]):
            return f"processor: {key} differs from the plain path"
    return None
