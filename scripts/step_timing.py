"""Timing TRL's GRPO steps with speed features switched between steps (``scripts/bench_step.py``, ``gpu_check.py``).

:func:`timed_run` trains with TRL's ``GRPOTrainer`` and switches a feature on or off at each step's start in the
order :func:`schedule` gives (warm-up steps, then off,on,on,off,... pairs: ABBA, so a linear drift in machine load
cancels, and one profiled step per mode for memory); each pair samples with one seed. :class:`Result` keeps each
mode's step times (wall and process CPU time), ``generate`` times, completion lengths and peak memory, and
:meth:`Result.row` gives the medians and speedups the benchmarks print and write.
"""

from __future__ import annotations

import dataclasses
import statistics
import sys
import time
from pathlib import Path

import torch

from vlm_grpo.speed import (
    cache_stats,
    disable_group_image_cache,
    disable_shared_prompt,
    enable_group_image_cache,
    enable_shared_prompt,
    shared_prompt_stats,
)
from vlm_grpo.speed.decode_cache import decode_cache_stats, disable_decode_cache, enable_decode_cache

SPEED_FEATURES = ("image_cache", "shared_prompt", "decode_cache")
# "sampled": EOS made e^1.5 = 4.5x as likely as the random model makes it, so completions end anywhere in 0..256
# (about a quarter run to the limit), as a policy's do; the same seed in both modes of a pair
EOS_BIAS = 1.5


def switch_feature(feature: str, on: bool, targets) -> None:
    """Turn ``feature`` on or off on (model, processor) pairs; ``all`` switches every feature, the others keep
    the features before them in :data:`SPEED_FEATURES` on (their baseline)."""
    wanted = SPEED_FEATURES if feature == "all" else SPEED_FEATURES[: SPEED_FEATURES.index(feature) + 1]
    for model, processor in targets:
        if model is None:
            continue
        for name in wanted:
            state = on if feature in ("all", name) else True
            if name == "image_cache":
                (enable_group_image_cache if state else disable_group_image_cache)(model, processor)
            elif name == "shared_prompt":
                (enable_shared_prompt if state else disable_shared_prompt)(model)
            elif processor is not None:  # the decode cache: only the policy generates
                (enable_decode_cache if state else disable_decode_cache)(model)


def feature_counts(feature: str, model) -> tuple[int, int]:
    """(requested, computed) since the step began: images (image cache), language-model tokens (shared prompt,
    all), or generation caches (decode cache: generate calls, buffered ones)."""
    if feature == "image_cache":
        stats = cache_stats(model)
        return stats.requested, stats.encoded
    if feature == "decode_cache":
        return 1, decode_cache_stats(model).calls
    stats = shared_prompt_stats(model)
    return stats.requested_tokens, stats.computed_tokens


def reset_counts(feature: str, model) -> None:
    if feature == "decode_cache":
        stats = decode_cache_stats(model)
        if stats is not None:
            stats.calls = 0
        return
    stats = cache_stats(model) if feature == "image_cache" else shared_prompt_stats(model)
    if stats is not None:
        stats.reset()


@dataclasses.dataclass
class Result:
    feature: str
    shape: str
    setting: str
    completions: str
    prompts_per_step: int
    off: list[float] = dataclasses.field(default_factory=list)
    on: list[float] = dataclasses.field(default_factory=list)
    off_generation: list[float] = dataclasses.field(default_factory=list)
    on_generation: list[float] = dataclasses.field(default_factory=list)
    off_completion_tokens: list[float] = dataclasses.field(default_factory=list)  # mean per row, per step
    on_completion_tokens: list[float] = dataclasses.field(default_factory=list)
    off_cpu: list[float] = dataclasses.field(default_factory=list)  # process CPU seconds (all threads) per step
    on_cpu: list[float] = dataclasses.field(default_factory=list)
    off_generation_cpu: list[float] = dataclasses.field(default_factory=list)
    on_generation_cpu: list[float] = dataclasses.field(default_factory=list)
    off_peak: int | None = None
    on_peak: int | None = None
    requested: int = 0
    encoded: int = 0

    def row(self) -> dict:
        median = statistics.median
        mib = lambda peak: None if peak is None else round(peak / 2**20, 1)  # noqa: E731
        counted = {"image_cache": "vision_images", "decode_cache": "generation_caches"}.get(self.feature, "lm_tokens")
        outside = {mode: median(t - g for t, g in zip(getattr(self, mode), getattr(self, f"{mode}_generation")))
                   for mode in ("off", "on")}
        cpu_outside = {mode: median(t - g for t, g in zip(getattr(self, f"{mode}_cpu"),
                                                          getattr(self, f"{mode}_generation_cpu")))
                       for mode in ("off", "on")}
        return {
            "feature": self.feature,
            "shape": self.shape,
            "setting": self.setting,
            "completions": self.completions,
            "prompts_per_step": self.prompts_per_step,
            "steps_each": len(self.on),
            "off_median_s": round(median(self.off), 3),
            "on_median_s": round(median(self.on), 3),
            "speedup": round(median(self.off) / median(self.on), 3),
            # the fastest step of each mode: the least disturbed by other work on a shared machine
            "speedup_of_fastest": round(min(self.off) / min(self.on), 3),
            # generation (transformers generate: prefill + decode loop) and the rest of the step (the reference
            # log-prob pass, the training forward and backward, the optimizer step)
            "off_generation_median_s": round(median(self.off_generation), 3),
            "on_generation_median_s": round(median(self.on_generation), 3),
            "speedup_generation": round(median(self.off_generation) / median(self.on_generation), 3),
            "speedup_outside_generation": round(outside["off"] / outside["on"], 3),
            # CPU seconds of this process (all its threads): less disturbed than wall time by other work on the
            # machine, which stretches wall time but not the work done (threads waiting for a core use none)
            "speedup_cpu_time": round(median(self.off_cpu) / median(self.on_cpu), 3),
            "speedup_generation_cpu_time": round(median(self.off_generation_cpu) / median(self.on_generation_cpu), 3),
            "speedup_outside_generation_cpu_time": round(cpu_outside["off"] / cpu_outside["on"], 3),
            "off_mean_completion_tokens": round(statistics.mean(self.off_completion_tokens), 1),
            "on_mean_completion_tokens": round(statistics.mean(self.on_completion_tokens), 1),
            "off_peak_mib": mib(self.off_peak),
            "on_peak_mib": mib(self.on_peak),
            f"{counted}_requested": self.requested,
            f"{counted}_{'encoded' if counted == 'vision_images' else 'computed'}": self.encoded,
            "off_times_s": [round(x, 3) for x in self.off],
            "on_times_s": [round(x, 3) for x in self.on],
        }


# ---- memory -----------------------------------------------------------------------------------------------------


def peak_tensor_bytes(prof) -> int:
    """The highest running sum of CPU allocations minus frees recorded by a memory-profiling ``torch.profiler``."""
    events = [
        e for e in prof.profiler.kineto_results.events()
        if e.name() == "[memory]" and e.device_type() == torch.autograd.DeviceType.CPU
    ]
    running = peak = 0
    for event in sorted(events, key=lambda e: e.start_ns()):
        running += event.nbytes()
        peak = max(peak, running)
    return peak


def _variety(completions, **columns):
    """Distinct characters per character: a reward with variance inside every group."""
    texts = [c if isinstance(c, str) else c[0]["content"] for c in completions]
    return [len(set(t)) / (1.0 + len(t)) for t in texts]


class GenerationTimer:
    """Seconds spent in the model's ``generate`` (TRL calls it on the unwrapped model) and the mean completion
    length (tokens up to and including the first EOS), summed until reset."""

    def __init__(self, model) -> None:
        self.seconds, self.cpu_seconds, self.tokens, self.rows = 0.0, 0.0, 0, 0
        self._generate = model.generate
        eos = model.generation_config.eos_token_id
        self.eos = torch.tensor(eos if isinstance(eos, list) else [eos])
        model.generate = self

    def reset(self) -> None:
        self.seconds, self.cpu_seconds, self.tokens, self.rows = 0.0, 0.0, 0, 0

    def __call__(self, *args, **kwargs):
        start, cpu = time.perf_counter(), time.process_time()
        try:
            out = self._generate(*args, **kwargs)
            if out.is_cuda:
                torch.cuda.synchronize()
        finally:
            self.seconds += time.perf_counter() - start
            self.cpu_seconds += time.process_time() - cpu
        completion = out[:, kwargs["input_ids"].shape[1]:]
        ended = torch.isin(completion, self.eos)
        lengths = torch.where(ended.any(1), ended.int().argmax(1) + 1, completion.shape[1])
        self.tokens += int(lengths.sum())
        self.rows += completion.shape[0]
        return out

    @property
    def mean_tokens(self) -> float:
        return self.tokens / max(self.rows, 1)


def schedule(warmup: int, pairs: int) -> list[tuple[str, int]]:
    """Uncounted warm-up steps, timed steps off,on,on,off,... (ABBA: linear drift cancels), one profiled step each;
    each with its sampling seed (the two modes of a pair sample with the same seed)."""
    warm = [(("warm-off", "warm-on")[i % 2], i) for i in range(warmup)]
    timed = [pair for p in range(pairs)
             for pair in ((("off", 100 + p), ("on", 100 + p)) if p % 2 == 0 else (("on", 100 + p), ("off", 100 + p)))]
    return warm + timed + [("memory-off", 999), ("memory-on", 999)]


def timed_run(feature, model, processor, rows, result: Result, *, completions: str, completion_tokens: int,
              output_dir: Path, args, cuda: bool = False, on_trainer=None) -> None:
    """TRL's ``GRPOTrainer`` on ``rows``, ``feature`` (its ``name`` and ``prompts_per_step``: a
    ``bench_step.Feature``) switched between steps as :func:`schedule` says; the step
    times, generation times, completion lengths and one profiled step's peak memory per mode go to ``result``.

    ``cuda``: bf16 on the GPU, peak memory from ``torch.cuda.max_memory_allocated``; ``on_trainer(trainer)`` runs
    once before training (the GPU check probes the features there)."""
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    modes = schedule(args.warmup, args.pairs)
    if completions == "forced":
        generation = {"min_new_tokens": completion_tokens}
    else:
        eos = model.generation_config.eos_token_id
        generation = {"sequence_bias": {(e,): EOS_BIAS for e in (eos if isinstance(eos, list) else [eos])}}
    config = GRPOConfig(
        output_dir=str(output_dir),
        per_device_train_batch_size=args.num_generations * feature.prompts_per_step,
        num_generations=args.num_generations, max_completion_length=completion_tokens,
        generation_kwargs=generation, max_steps=len(modes), learning_rate=1e-6,
        beta=0.04, use_cpu=not cuda, bf16=cuda, report_to="none", save_strategy="no", logging_steps=10_000,
        dataloader_num_workers=0, seed=0, disable_tqdm=True,
    )
    trainer = GRPOTrainer(model=model, reward_funcs=[_variety], args=config, train_dataset=rows.to_hf(),
                          processing_class=processor)
    if on_trainer is not None:
        on_trainer(trainer)
    timer = GenerationTimer(trainer.model)
    targets = [(trainer.model, trainer.processing_class), (trainer.ref_model, None)]

    class Switch(TrainerCallback):
        def on_step_begin(self, _args, state, control, **kwargs):
            self.mode, seed = modes[state.global_step]
            switch_feature(feature.name, self.mode.endswith("on"), targets)
            reset_counts(feature.name, trainer.model)
            timer.reset()
            torch.manual_seed(seed)
            self.profiler = None
            if self.mode.startswith("memory"):
                if cuda:
                    torch.cuda.synchronize()
                    torch.cuda.reset_peak_memory_stats()
                    self.live = torch.cuda.memory_allocated()
                else:
                    cpu = [torch.profiler.ProfilerActivity.CPU]
                    self.profiler = torch.profiler.profile(activities=cpu, profile_memory=True)
                    self.profiler.__enter__()
            self.start, self.cpu = time.perf_counter(), time.process_time()

        def on_step_end(self, _args, state, control, **kwargs):
            if cuda:
                torch.cuda.synchronize()
            elapsed, cpu = time.perf_counter() - self.start, time.process_time() - self.cpu
            if self.mode.startswith("memory"):
                if cuda:
                    peak = torch.cuda.max_memory_allocated() - self.live
                else:
                    self.profiler.__exit__(None, None, None)
                    peak = peak_tensor_bytes(self.profiler)
                setattr(result, f"{self.mode.removeprefix('memory-')}_peak", peak)
                return
            if self.mode.startswith("warm"):
                return
            getattr(result, self.mode).append(elapsed)
            getattr(result, f"{self.mode}_generation").append(timer.seconds)
            getattr(result, f"{self.mode}_completion_tokens").append(timer.mean_tokens)
            getattr(result, f"{self.mode}_cpu").append(cpu)
            getattr(result, f"{self.mode}_generation_cpu").append(timer.cpu_seconds)
            if self.mode == "on":
                requested, computed = feature_counts(feature.name, trainer.model)
                result.requested += requested
                result.encoded += computed
            step = (f"step {state.global_step:>2} {self.mode:<3} {elapsed:6.2f}s (generate {timer.seconds:5.2f}s; "
                    f"CPU {cpu:6.2f}s, generate {timer.cpu_seconds:5.2f}s)")
            print(f"  {feature.name:<13} {result.shape:<6} {result.setting:<16} {completions:<7} {step}",
                  file=sys.stderr, flush=True)

    trainer.add_callback(Switch())
    trainer.train()
