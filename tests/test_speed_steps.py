"""Speed features against the plain path over several real GRPO steps, where the ratio and KL act.

At the first step of a generation batch the policy ratio is 1 and the KL is 0, so a loss check
there cannot see a wrong gradient (the loss stayed equal with the vision gradients scaled by 2).
Here each run takes 3 steps: with ``num_iterations=2`` step 2 re-scores step 1's generations with
the updated policy (ratio != 1, tokens clipped, KL > 0) and step 3 generates again from the
updated weights. Every parameter's update (SGD: the sum of ``-lr * grad``) must match the plain
path's at ``RTOL`` of its norm, and every logged loss, KL and reward too.

The runs are in float64: the two paths then agree to ~1e-7 relative after 3 steps (not to 1e-15:
TRL takes the log-probs in float32), so RTOL = 1e-5, the unit tests' tolerance, has a margin of
~80, while a real error (a gradient scaled by 2, a missing image's gradient) is off by 1e-1 or more.
In float32 the batched and per-row paths round differently and the ratio and softmax amplify it to
~4e-5 relative after 3 steps (measured); ``test_float32_runs_agree_at_float32_rounding`` holds that
case at FP32_RTOL.
"""

from __future__ import annotations

import pytest
import torch
from speed_helpers import one_grpo_step

from vlm_grpo.speed import cache_stats, enable_group_image_cache, enable_shared_prompt, shared_prompt_stats

RTOL = 1e-5
FP32_RTOL = 3e-4  # float32 rounding of batched vs per-row ops, amplified by the ratio: 3.5e-5 measured, ~8x margin
# lr 0.3 with SGD: large enough that step 2 clips part of its tokens (the ratio left 1 +- epsilon), small
# enough that most tokens still carry the ratio's gradient.
STEPS = {"per_device_train_batch_size": 8, "learning_rate": 0.3, "optim": "sgd", "max_steps": 3,
         "num_iterations": 2, "lr_scheduler_type": "constant"}
LOGGED = ("loss", "kl", "reward", "clip_ratio/region_mean", "grad_norm")


def image_cache(trainer):
    enable_group_image_cache(trainer.model, trainer.processing_class)
    enable_group_image_cache(trainer.ref_model)


def image_cache_and_shared_prompt(trainer):
    image_cache(trainer)
    enable_shared_prompt(trainer.model)
    enable_shared_prompt(trainer.ref_model)


def _start(tiny_dir, dtype):
    from vlm_grpo.modeling import load_model

    return {n: p.detach() for n, p in load_model(str(tiny_dir), device="cpu", dtype=dtype).named_parameters()}


def _worst_update_error(start, off, on):
    """max over parameters of |update_on - update_off| / |update_off|; every parameter must have moved."""
    assert off.keys() == on.keys() == start.keys()
    worst = 0.0
    for name in off:
        update_off, update_on = off[name] - start[name], on[name] - start[name]
        assert float(update_off.norm()) > 0, f"{name} did not move"
        worst = max(worst, float((update_on - update_off).norm() / update_off.norm()))
    return worst


def _history(trainer):
    return [{k: h[k] for k in LOGGED if k in h} for h in trainer.state.log_history if "loss" in h]


@pytest.mark.parametrize("switch_on", [image_cache, image_cache_and_shared_prompt], ids=lambda f: f.__name__)
def test_three_steps_with_ratio_and_kl_match_the_plain_path(tiny_dir, rec_data, tmp_path, switch_on):
    _, off, plain = one_grpo_step(tiny_dir, rec_data, tmp_path / "off", dtype=torch.float64, **STEPS)
    _, on, fast = one_grpo_step(tiny_dir, rec_data, tmp_path / "on", switch_on, dtype=torch.float64, **STEPS)
    steps_off, steps_on = _history(plain), _history(fast)
    assert [h["kl"] > 0 for h in steps_off] == [False, True, True]  # step 1: ratio 1, KL 0; then both act
    assert steps_off[1]["clip_ratio/region_mean"] > 0  # step 2's ratio moved past 1 +- epsilon
    for h_off, h_on in zip(steps_off, steps_on, strict=True):
        assert h_on == pytest.approx(h_off, rel=RTOL, abs=1e-9)
    assert _worst_update_error(_start(tiny_dir, torch.float64), off, on) <= RTOL
    assert cache_stats(fast.model).encoded < cache_stats(fast.model).requested  # the feature did run
    if switch_on is image_cache_and_shared_prompt:
        assert shared_prompt_stats(fast.model).shared > 0


def test_float32_runs_agree_at_float32_rounding(tiny_dir, rec_data, tmp_path):
    _, off, plain = one_grpo_step(tiny_dir, rec_data, tmp_path / "off", **STEPS)
    _, on, fast = one_grpo_step(tiny_dir, rec_data, tmp_path / "on", image_cache_and_shared_prompt, **STEPS)
    for h_off, h_on in zip(_history(plain), _history(fast), strict=True):
        assert h_on == pytest.approx(h_off, rel=FP32_RTOL, abs=1e-7)
    assert _worst_update_error(_start(tiny_dir, None), off, on) <= FP32_RTOL
