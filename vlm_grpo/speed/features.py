"""Switch the speed features on for a trainer, each only where it is exact (fail closed).

Each feature has a mode, the config key of the same name:

- ``on`` (the default; ``true`` too): probe the feature first (:mod:`vlm_grpo.speed.probe`);
  where it is exact it is enabled on the policy and on TRL's reference model,
  else it steps aside with one WARNING on the console naming the transformers
  version and the reason, and the run goes on the plain path;
- ``require``: the same probe, but a feature that does not fit stops the run before
  training with that reason (for benchmarks and jobs that must not run slower);
- ``off`` (``false`` too): the plain path, nothing probed.

What was decided is returned as :class:`FeatureStatus` records, which training
writes to ``training_log.json``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging

logger = logging.getLogger(__name__)

MODES = ("on", "off", "require")
ALIASES = {True: "on", False: "off", "true": "on", "false": "off", "yes": "on", "no": "off", "1": "on", "0": "off"}


class SpeedFeatureError(ValueError):
    """A feature set to ``require`` that does not fit the installed transformers or the model."""


@dataclasses.dataclass(frozen=True)
class FeatureStatus:
    """One feature's decision. ``reason`` says why it is inactive (``None`` when active)."""

    name: str
    mode: str
    active: bool
    reason: str | None = None


def speed_mode(value, key: str) -> str:
    """``on``, ``off`` or ``require`` from a config value (YAML booleans and their spellings included)."""
    value = value.strip().lower() if isinstance(value, str) else value
    normalised = ALIASES.get(value, value)
    if normalised not in MODES:
        raise ValueError(f"{key}: {value!r} is not one of on, off, require (true/false work too)")
    return normalised


def _transformers_version() -> str:
    import transformers

    return transformers.__version__


@contextlib.contextmanager
def _quiet_features():
    """The probe's own plain-path notes are not the run's: keep them off the console."""
    quiet = logging.getLogger("vlm_grpo.speed")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        yield
    finally:
        quiet.setLevel(level)


def decide(name: str, mode: str, check) -> FeatureStatus:
    """Probe a feature (unless off) and decide; ``check()`` returns ``None`` or the reason it does not fit."""
    if mode == "off":
        return FeatureStatus(name, mode, False, "off in the config")
    with _quiet_features():
        reason = check()
    if reason is None:
        return FeatureStatus(name, mode, True)
    version = _transformers_version()
    if mode == "require":
        raise SpeedFeatureError(
            f"{name}: require, but it is not exact with transformers {version} on this model: {reason}. "
            f"Set {name}: on to run without it (plain path), or install the versions of requirements.lock"
        )
    logger.warning("%s steps aside (plain path, same results; transformers %s): %s", name, version, reason)
    return FeatureStatus(name, mode, False, reason)


def engine_reason() -> str | None:
    """Why no speed feature is vouched for under the running engine, or ``None``: under DeepSpeed ZeRO-3 the
    parameters are partitioned and gathered by hooks of its own, and its CPU results are not reproducible run
    to run (README "Engines"), so exactness there is not shown."""
    try:
        from transformers.integrations.deepspeed import is_deepspeed_zero3_enabled
    except ImportError:
        return None
    if is_deepspeed_zero3_enabled():
        return "DeepSpeed ZeRO-3 (partitioned parameters): exactness under it is not verified yet"
    return None


def enable_speed_features(trainer, *, group_image_cache: str = "on", group_shared_prompt: str = "on",
                          decode_cache: str = "on") -> list[FeatureStatus]:
    """Probe and enable the group image cache, the group-shared prompt and the decode cache on ``trainer``'s
    models."""
    from vlm_grpo.speed.group_cache import enable_group_image_cache
    from vlm_grpo.speed.probe import check_image_cache, check_shared_prompt
    from vlm_grpo.speed.shared_prompt import enable_shared_prompt

    model, processor = trainer.model, trainer.processing_class
    image_cache = decide("group_image_cache", group_image_cache,
                         lambda: engine_reason() or check_image_cache(model, processor))
    if image_cache.active:
        # Each distinct image is resized and encoded once per batch; TRL's own reference model too.
        enable_group_image_cache(model, processor)
        enable_group_image_cache(trainer.ref_model)
    shared_prompt = decide("group_shared_prompt", group_shared_prompt,
                           lambda: engine_reason() or check_shared_prompt(model))
    if shared_prompt.active:
        # Each distinct prompt runs once per forward, in generation's prefill and every log-prob pass.
        enable_shared_prompt(model)
        enable_shared_prompt(trainer.ref_model)
    # Generation writes each new position into a buffer instead of copying the cache (only the policy generates).
    buffered = enable_decode_speed(model, decode_cache)
    return [image_cache, shared_prompt, buffered]


def enable_decode_speed(model, mode: str = "on") -> FeatureStatus:
    """The decode cache on ``model`` (training's policy, evaluation's model): probed, enabled where exact."""
    from vlm_grpo.speed.decode_cache import enable_decode_cache
    from vlm_grpo.speed.probe import check_decode_cache

    status = decide("decode_cache", mode, lambda: engine_reason() or check_decode_cache(model))
    if status.active:
        enable_decode_cache(model)
    return status
