"""Group image cache: on and off give the same results (tiny model, fp32, CPU)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from PIL import Image

from vlm_grpo.speed import (
    cache_stats,
    disable_group_image_cache,
    enable_group_image_cache,
    group_image_cache,
    vision_tower,
)
from vlm_grpo.speed.processor_cache import content_owners
from vlm_grpo.speed.vision_cache import image_owners, plan_dedup

RTOL = 1e-5


def _noise(width: int, height: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def images():
    """A GRPO-like batch: repeated images (same object and equal copies), distinct ones, two sizes sharing a grid."""
    a, b, c = _noise(112, 84, 0), _noise(140, 140, 1), _noise(112, 84, 2)  # a and c: same size, other pixels
    return [a, a, b, a.copy(), c, b, a, _noise(56, 112, 3)]


def _messages(batch):
    content = [[{"type": "image", "image": im}, {"type": "text", "text": f"where is shape {i}?"}] for i, im in enumerate(batch)]
    return [[{"role": "user", "content": c}] for c in content]


def _process(processor, batch, **kwargs):
    return processor.apply_chat_template(
        _messages(batch), tokenize=True, return_dict=True, add_generation_prompt=True,
        processor_kwargs={"padding": True, "return_tensors": "pt", **kwargs},
    )


@pytest.fixture()
def model_and_processor(tiny_dir):
    from vlm_grpo.modeling import load_model, load_processor

    return load_model(str(tiny_dir), device="cpu"), load_processor(str(tiny_dir))


@pytest.fixture()
def inputs(model_and_processor, images):
    return _process(model_and_processor[1], images)


def _token_logps(model, inputs) -> torch.Tensor:
    logits = model(**inputs).logits[:, :-1].float()
    targets = inputs["input_ids"][:, 1:, None]
    return logits.log_softmax(-1).gather(-1, targets).squeeze(-1) * inputs["attention_mask"][:, 1:]


def _assert_close(on: torch.Tensor, off: torch.Tensor) -> None:
    assert on.shape == off.shape
    assert ((on - off).abs() <= RTOL * off.abs() + 1e-7).all(), float((on - off).abs().max())


# ---- the pure parts -------------------------------------------------------------------------------------------


def _patches(*grids_and_seeds):
    rows, grids = [], []
    for (t, h, w), seed in grids_and_seeds:
        rows.append(torch.randn(t * h * w, 12, generator=torch.Generator().manual_seed(seed)))
        grids.append([t, h, w])
    return torch.cat(rows), grids


@pytest.mark.parametrize(
    "name, images, expected",
    [
        ("all distinct", [((1, 2, 2), 0), ((1, 2, 2), 1), ((1, 4, 2), 2)], [0, 1, 2]),
        ("repeats", [((1, 2, 2), 0), ((1, 4, 2), 1), ((1, 2, 2), 0), ((1, 4, 2), 1)], [0, 1, 0, 1]),
        ("same pixels, other grid", [((1, 2, 4), 0), ((1, 4, 2), 0)], [0, 1]),
        ("one image", [((1, 2, 2), 0)], [0]),
    ],
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_image_owners(name, images, expected, dtype):
    pixels, grids = _patches(*images)
    assert image_owners(pixels.to(dtype), grids) == expected, name


def test_image_owners_is_exact_when_the_fingerprint_collides(monkeypatch):
    import vlm_grpo.speed.vision_cache as vc

    monkeypatch.setattr(vc, "SAMPLES_PER_IMAGE", 2)  # samples only the first and last value of each image
    a = torch.zeros(4, 12)
    b = a.clone()
    b[1, 5] = 1.0  # differs from `a` between the sampled values
    pixels = torch.cat([a, b, a, b])
    assert image_owners(pixels, [[1, 2, 2]] * 4) == [0, 1, 0, 1]


def test_plan_gathers_every_image_from_its_first_copy():
    pixels, grids = _patches(((1, 2, 2), 0), ((1, 4, 2), 1), ((1, 2, 2), 0))
    plan = plan_dedup(pixels, torch.tensor(grids), merge_unit=4)
    assert plan.unique == [0, 1]
    assert torch.equal(pixels[plan.source_rows][plan.patch_index], pixels)
    assert plan.token_index.tolist() == [0, 1, 2, 0]
    assert plan_dedup(*_patches(((1, 2, 2), 0), ((1, 2, 2), 1))[:1], torch.tensor([[1, 2, 2]] * 2), 4) is None


def test_content_owners_compares_pixels_mode_and_palette():
    a = _noise(28, 28, 0)
    grey = a.convert("L")
    p1 = a.convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    p2 = p1.copy()
    p2.putpalette([255 - v for v in p1.getpalette()])  # same indices, other colours
    assert content_owners([a, a.copy(), grey, a, p1, p2, p1.copy(), np.asarray(a), np.asarray(a).copy()]) == [
        0, 0, 2, 0, 4, 5, 4, 7, 7,
    ]


# ---- processor ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("return_tensors", ["pt", None])
def test_processor_outputs_are_identical(model_and_processor, images, return_tensors):
    _, processor = model_and_processor
    off = _process(processor, images, return_tensors=return_tensors)
    with group_image_cache(processor=processor):
        on = _process(processor, images, return_tensors=return_tensors)
        stats = cache_stats(processor)
    assert stats.requested == 8 and stats.encoded == 4  # a (3x and an equal copy), b (2x), c, d
    assert on.keys() == off.keys()
    for key in off:
        if isinstance(off[key], torch.Tensor):
            assert on[key].dtype == off[key].dtype and torch.equal(on[key], off[key]), key
        else:
            assert np.array_equal(np.asarray(on[key]), np.asarray(off[key])), key
    assert cache_stats(processor) is None  # the context manager restored the plain path


def test_processor_plain_call_with_images_and_text(model_and_processor, images):
    """TRL's second processor call: ``processor(images=..., text=...)`` with one image list per prompt."""
    _, processor = model_and_processor
    texts = [processor.apply_chat_template(m, add_generation_prompt=True, tokenize=False) for m in _messages(images)]
    nested = [[im] for im in images]
    off = processor(images=nested, text=texts, padding=True, return_tensors="pt")
    with group_image_cache(processor=processor):
        on = processor(images=nested, text=texts, padding=True, return_tensors="pt")
    assert all(torch.equal(on[k], off[k]) for k in off)


# ---- model ----------------------------------------------------------------------------------------------------


def test_log_probs_match_and_each_image_is_encoded_once(model_and_processor, inputs):
    model, _ = model_and_processor
    with torch.no_grad():
        off = _token_logps(model, inputs)
        with group_image_cache(model):
            on = _token_logps(model, inputs)
            stats = cache_stats(model)
    assert (stats.calls, stats.requested, stats.encoded) == (1, 8, 4)
    _assert_close(on, off)


def test_distinct_images_take_the_plain_path(model_and_processor, images):
    model, processor = model_and_processor
    distinct = _process(processor, [images[0], images[2], images[4], images[7]])
    enable_group_image_cache(model)
    tower = vision_tower(model)
    seen = []
    tower.register_forward_pre_hook(lambda module, args, kwargs: seen.append(args[0].shape[0]), with_kwargs=True)
    with torch.no_grad():
        model(**distinct)
    assert seen == [distinct["pixel_values"].shape[0]]  # the tower saw every row: nothing was rebuilt
    assert cache_stats(model).encoded == cache_stats(model).requested == 4


@pytest.mark.parametrize(
    "freeze, checkpointing",
    [(False, None), (True, None), (False, {"use_reentrant": False}), (False, {"use_reentrant": True})],
    ids=["vision-trainable", "vision-frozen", "checkpointing", "checkpointing-reentrant"],
)
def test_gradients_match(model_and_processor, inputs, freeze, checkpointing):
    from vlm_grpo.modeling import freeze_vision

    model, _ = model_and_processor
    if freeze:
        freeze_vision(model)
    if checkpointing is not None:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=checkpointing)
    model.train()

    def grads():
        model.zero_grad()
        logps = _token_logps(model, inputs)
        (-logps.sum()).backward()
        return logps.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    logps_off, off = grads()
    with group_image_cache(model):
        logps_on, on = grads()
    _assert_close(logps_on, logps_off)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert set(on) == set(off) == trainable
    assert any(n.startswith("model.visual.") for n in trainable) != freeze
    for name in off:
        error = (on[name] - off[name]).norm() / off[name].norm().clamp_min(1e-12)
        assert error <= RTOL, (name, float(error))


def test_generation_gives_identical_tokens(model_and_processor, inputs):
    model, _ = model_and_processor

    def sample():
        torch.manual_seed(0)
        with torch.no_grad():
            return model.generate(**inputs, max_new_tokens=12, do_sample=True, temperature=1.0, top_k=0)

    off = sample()
    with group_image_cache(model):
        on = sample()
        assert cache_stats(model).encoded == 4  # one prefill; decoding steps do not see the pixels
    assert torch.equal(on, off)


def test_lora_model(model_and_processor, inputs):
    from peft import LoraConfig, get_peft_model

    from vlm_grpo.modeling import LORA_LM_ONLY

    model, _ = model_and_processor
    peft_model = get_peft_model(model, LoraConfig(r=4, target_modules=LORA_LM_ONLY))
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.02, generator=torch.Generator().manual_seed(0))  # the adapter must matter

    def grads():
        peft_model.zero_grad()
        logps = _token_logps(peft_model, inputs)
        (-logps.sum()).backward()
        return logps.detach(), {n: p.grad.clone() for n, p in peft_model.named_parameters() if p.grad is not None}

    logps_off, off = grads()
    enable_group_image_cache(peft_model)
    logps_on, on = grads()
    assert cache_stats(peft_model).encoded == 4
    _assert_close(logps_on, logps_off)
    assert off and set(on) == set(off) and all("lora_" in n for n in off)
    for name in off:
        assert (on[name] - off[name]).norm() <= RTOL * off[name].norm(), name


# ---- switching, copies, saving ---------------------------------------------------------------------------------


def _hook_counts(module):
    return len(module._forward_pre_hooks), len(module._forward_hooks)


def test_enable_is_idempotent_and_disable_restores_the_plain_model(model_and_processor, inputs):
    model, processor = model_and_processor
    tower = vision_tower(model)
    plain = _hook_counts(tower)
    enable_group_image_cache(model, processor)
    enable_group_image_cache(model, processor)
    assert _hook_counts(tower) == (plain[0] + 1, plain[1] + 1)
    disable_group_image_cache(model, processor)
    disable_group_image_cache(model, processor)
    assert _hook_counts(tower) == plain and cache_stats(model) is None and cache_stats(processor) is None
    assert "_process_images" not in vars(processor) and not hasattr(tower, "_group_image_cache")


def test_a_failing_forward_leaves_nothing_pending(model_and_processor, inputs):
    model, _ = model_and_processor
    enable_group_image_cache(model)
    broken = dict(inputs, pixel_values=inputs["pixel_values"][:, :-1])  # wrong patch width: the tower raises
    with pytest.raises(RuntimeError), torch.no_grad():
        model(**broken)
    assert cache_stats(model).encoded < cache_stats(model).requested  # the plan was made, then the tower raised
    assert vision_tower(model)._group_image_cache._pending == {}


def test_deep_copy_gets_its_own_working_cache(model_and_processor, inputs):
    model, processor = model_and_processor
    enable_group_image_cache(model, processor)
    twin_model, twin_processor = copy.deepcopy(model), copy.deepcopy(processor)
    disable_group_image_cache(model, processor)
    assert cache_stats(model) is None and cache_stats(processor) is None
    assert cache_stats(twin_processor) is not None and twin_processor._process_images.processor is twin_processor
    with torch.no_grad():
        twin_model(**_process(twin_processor, [_noise(56, 56, 9)] * 3))
    assert cache_stats(twin_model).encoded == 1 and cache_stats(twin_processor).encoded == 1


def test_save_pretrained_writes_the_same_files(model_and_processor, tmp_path):
    model, processor = model_and_processor
    plain_keys = list(model.state_dict())
    model.save_pretrained(tmp_path / "off")
    processor.save_pretrained(tmp_path / "off")
    enable_group_image_cache(model, processor)
    assert list(model.state_dict()) == plain_keys
    model.save_pretrained(tmp_path / "on")
    processor.save_pretrained(tmp_path / "on")
    off_files = sorted(p.relative_to(tmp_path / "off") for p in (tmp_path / "off").rglob("*") if p.is_file())
    on_files = sorted(p.relative_to(tmp_path / "on") for p in (tmp_path / "on").rglob("*") if p.is_file())
    assert on_files == off_files
    for name in off_files:
        assert (tmp_path / "on" / name).read_bytes() == (tmp_path / "off" / name).read_bytes(), name
    from vlm_grpo.modeling import load_model

    reloaded = load_model(str(tmp_path / "on"), device="cpu")
    assert cache_stats(reloaded) is None  # a loaded checkpoint starts plain


# ---- under TRL -------------------------------------------------------------------------------------------------


def _with_cache(trainer):
    enable_group_image_cache(trainer.model, trainer.processing_class)
    enable_group_image_cache(trainer.ref_model)


def test_one_grpo_step_is_the_same_with_the_cache(tiny_dir, rec_data, tmp_path):
    from speed_helpers import one_grpo_step

    loss_off, params_off, _ = one_grpo_step(tiny_dir, rec_data, tmp_path / "off")
    loss_on, params_on, trainer = one_grpo_step(tiny_dir, rec_data, tmp_path / "on", _with_cache)
    # generation prefill + training forward on the policy, one pass on the reference model: 4 copies -> 1
    policy, ref, processor = (cache_stats(x) for x in (trainer.model, trainer.ref_model, trainer.processing_class))
    assert (policy.requested, policy.encoded) == (8, 2) and (ref.requested, ref.encoded) == (4, 1)
    assert (processor.requested, processor.encoded) == (8, 2)
    assert loss_on == pytest.approx(loss_off, rel=RTOL, abs=1e-7)
    for name in params_off:
        assert torch.allclose(params_on[name], params_off[name], rtol=1e-4, atol=1e-6), name


DDP_WORKER = """
import sys
import numpy as np
import torch
import torch.distributed as dist
from PIL import Image
from torch.nn.parallel import DistributedDataParallel

from vlm_grpo.modeling import load_model, load_processor
from vlm_grpo.speed import cache_stats, enable_group_image_cache

dist.init_process_group("gloo")
rank = dist.get_rank()
model, processor = load_model(sys.argv[1], device="cpu"), load_processor(sys.argv[1])
ddp = DistributedDataParallel(model)
noise = lambda seed: Image.fromarray(np.random.default_rng(seed).integers(0, 256, (84, 112, 3), dtype=np.uint8))
images = [noise(rank)] * 3 + [noise(10 + rank)]
messages = [[{"role": "user", "content": [{"type": "image", "image": im}, {"type": "text", "text": "where?"}]}]
            for im in images]
inputs = processor.apply_chat_template(messages, tokenize=True, return_dict=True, add_generation_prompt=True,
                                       processor_kwargs={"padding": True, "return_tensors": "pt"})

def grads():
    ddp.zero_grad()
    logits = ddp(**inputs).logits[:, :-1]
    logps = logits.log_softmax(-1).gather(-1, inputs["input_ids"][:, 1:, None]).squeeze(-1)
    (-(logps * inputs["attention_mask"][:, 1:]).sum()).backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

off = grads()
enable_group_image_cache(ddp, processor)
on = grads()
stats = cache_stats(ddp)
assert (stats.requested, stats.encoded) == (4, 2), stats
worst = max(float((on[n] - off[n]).norm() / off[n].norm().clamp_min(1e-12)) for n in off)
assert set(on) == set(off) and worst <= 1e-5, worst
print(f"rank {rank} ok {worst:.2e}", flush=True)
dist.destroy_process_group()
import os
os._exit(0)  # skip interpreter teardown: a C++ thread still joinable there aborts the process now and then
"""


def test_ddp_two_processes_gradients_match(tiny_dir, tmp_path):
    from speed_helpers import run_two_ranks

    run_two_ranks(tmp_path, DDP_WORKER, str(tiny_dir))
