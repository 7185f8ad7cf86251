"""GRPO and SFT training on the tiny model and synthetic data (CPU, a few steps each)."""

from __future__ import annotations

import json
import math
import textwrap

import pytest
import torch

from vlm_grpo.cli import main as cli_main

BASE = [
    "--config", "scripts/configs/tiny_cpu.yaml",
    "--max_completion_length", "12",
    "--per_device_train_batch_size", "4",
    "--num_generations", "4",
    "--report_to", "none",
    "--dataloader_num_workers", "0",
]

PLUGIN = textwrap.dedent(
    '''
    def short_answer(completions, **columns):
        """Prefers shorter completions: gives the group reward variance even for a random policy."""
        texts = [c if isinstance(c, str) else c[0]["content"] for c in completions]
        return [1.0 / (1.0 + len(t)) for t in texts]
    '''
)


@pytest.fixture()
def plugin_file(tmp_path):
    path = tmp_path / "my_rewards.py"
    path.write_text(PLUGIN)
    return path


def _grpo_argv(tiny_dir, data, out, *extra):
    return [*BASE, "--model_name_or_path", str(tiny_dir), "--train_data", str(data), "--output_dir", str(out), *extra]


def _build(argv):
    from trl import GRPOConfig

    from vlm_grpo.config import GRPO_DEFAULTS, parse
    from vlm_grpo.train import build_grpo_trainer

    return build_grpo_trainer(*parse(GRPOConfig, GRPO_DEFAULTS, argv))


def test_train_updates_parameters_and_logs_each_reward(tiny_dir, rec_data, tmp_path, plugin_file):
    from vlm_grpo.train import run_training

    out = tmp_path / "run"
    argv = _grpo_argv(
        tiny_dir, rec_data, out, "--max_steps", "2", "--save_steps", "100",
        "--reward_funcs", "format", "iou", f"{plugin_file}:short_answer", "--rollout_log_steps", "1",
    )
    trainer, _ = _build(argv)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    summary = run_training(trainer, None)
    assert summary["steps"] == 2
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert losses and all(math.isfinite(v) for v in losses)
    changed = [n for n, p in trainer.model.named_parameters() if n in before and not torch.equal(p, before[n])]
    assert changed, "no parameter changed"
    logged = set().union(*(h.keys() for h in trainer.state.log_history))
    for name in ("format", "iou", "short_answer"):
        assert f"rewards/{name}/mean" in logged and f"rewards/{name}/std" in logged
    rollouts = [json.loads(line) for line in (out / "rollouts.jsonl").read_text().splitlines()]
    assert rollouts and set(rollouts[0]["rewards"]) == {"format", "iou", "short_answer"}
    # the final folder loads like any checkpoint
    from vlm_grpo.modeling import load_model, load_processor

    assert load_model(str(out)) is not None and load_processor(str(out)) is not None


@pytest.mark.parametrize("switch", ["true", "false"])
def test_group_aware_forward_is_on_by_default_and_can_be_turned_off(tiny_dir, rec_data, tmp_path, switch):
    from vlm_grpo.speed import cache_stats, shared_prompt_stats
    from vlm_grpo.speed.decode_cache import decode_cache_stats

    extra = [] if switch == "true" else ["--group_image_cache", "false", "--group_shared_prompt", "false",
                                         "--decode_cache", "false"]
    trainer, _ = _build(_grpo_argv(tiny_dir, rec_data, tmp_path / "run", *extra))
    on = switch == "true"
    assert (shared_prompt_stats(trainer.model) is not None) is on
    assert (decode_cache_stats(trainer.model) is not None) is on
    assert (cache_stats(trainer.model) is not None) is on and (cache_stats(trainer.processing_class) is not None) is on


def test_sft_then_grpo_from_the_sft_output(tiny_dir, rec_data, tmp_path, capsys):
    sft_out, grpo_out = tmp_path / "sft", tmp_path / "grpo"
    code = cli_main([
        "sft", "--model_name_or_path", str(tiny_dir), "--train_data", str(rec_data), "--output_dir", str(sft_out),
        "--max_steps", "2", "--per_device_train_batch_size", "4", "--report_to", "none", "--use_cpu", "true",
        "--learning_rate", "1e-3",
    ])
    assert code == 0
    assert "SFT done: 2 steps" in capsys.readouterr().out
    code = cli_main(["train", *_grpo_argv(sft_out, rec_data, grpo_out, "--max_steps", "1")])
    assert code == 0
    assert "GRPO done: 1 steps" in capsys.readouterr().out
    assert (grpo_out / "model.safetensors").exists()


def test_resume_continues_at_the_saved_step(tiny_dir, rec_data, tmp_path):
    from vlm_grpo.train import run_training

    out = tmp_path / "run"
    trainer, _ = _build(_grpo_argv(tiny_dir, rec_data, out, "--max_steps", "2", "--save_steps", "1"))
    run_training(trainer, None)
    assert (out / "checkpoint-1").is_dir() and (out / "checkpoint-2").is_dir()
    resume = str(out / "checkpoint-2")  # in the keys too: a run without it is refused in a used output_dir
    resumed, _ = _build(_grpo_argv(tiny_dir, rec_data, out, "--max_steps", "3", "--save_steps", "1",
                                   "--resume_from_checkpoint", resume))
    summary = run_training(resumed, resume)
    assert summary["steps"] == 3
    state = json.loads((out / "checkpoint-3" / "trainer_state.json").read_text())
    assert state["global_step"] == 3
    assert [h["step"] for h in state["log_history"] if "loss" in h][-1] == 3


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--no_such_key", "1"], "no_such_key"),
        (["--reward_funcs", "format", "no_such_reward"], "no_such_reward"),
        (["--num_generations", "3"], "divisible by num_generations"),
        (["--max_prompt_tokens", "5"], "no records left"),
        (["--reward_weights", "1.0"], "reward_weights has 1 values for 2 reward_funcs"),
    ],
)
def test_bad_config_fails_before_the_model_loads(tiny_dir, rec_data, tmp_path, monkeypatch, capsys, extra, message):
    import vlm_grpo.train

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded before the configuration error was reported")

    monkeypatch.setattr(vlm_grpo.train, "load_model", no_model)
    argv = ["train", *_grpo_argv(tiny_dir, rec_data, tmp_path / "out"), *extra]
    assert cli_main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_a_dir_that_is_not_a_packed_dataset_is_named(tiny_dir, tmp_path, capsys):
    (tmp_path / "notdata").mkdir()
    assert cli_main(["train", *_grpo_argv(tiny_dir, tmp_path / "notdata", tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "notdata" in err and "manifest.json" in err


def test_two_process_data_parallel_run_gathers_rewards_across_processes(tiny_dir, rec_data, tmp_path):
    import os
    import subprocess
    import sys

    plugin = tmp_path / "by_id.py"
    plugin.write_text(
        "def by_id(completions, id, **columns):\n"
        "    return [float(sum(map(ord, i)) % 7) for i in id]\n"
    )
    out = tmp_path / "ddp"
    argv = _grpo_argv(tiny_dir, rec_data, out, "--max_steps", "1", "--save_steps", "1",
                      "--reward_funcs", f"{plugin}:by_id", "format", "--rollout_log_steps", "1")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29519",
         "-m", "vlm_grpo.cli", "train", *argv],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert run.returncode == 0, run.stderr[-4000:]
    rank0 = [json.loads(line) for line in (out / "rollouts.jsonl").read_text().splitlines()]
    rank1 = [json.loads(line) for line in (out / "rollouts.rank1.jsonl").read_text().splitlines()]
    assert rank0 and rank1 and {r["id"] for r in rank0}.isdisjoint({r["id"] for r in rank1})
    state = json.loads((out / "checkpoint-1" / "trainer_state.json").read_text())
    logged = next(h for h in state["log_history"] if "rewards/by_id/mean" in h)["rewards/by_id/mean"]
    both = [r["rewards"]["by_id"] for r in rank0 + rank1]
    assert logged == pytest.approx(sum(both) / len(both))  # the logged mean covers both processes' groups


def test_eval_data_is_evaluated_during_training_with_the_eval_metrics(tiny_dir, rec_data, tmp_path):
    from vlm_grpo.train import run_training

    out = tmp_path / "run"
    trainer, _ = _build(_grpo_argv(tiny_dir, rec_data, out, "--max_steps", "2", "--eval_data", str(rec_data),
                                   "--eval_steps", "1", "--eval_max_samples", "4"))
    run_training(trainer, None)
    logged = [h for h in trainer.state.log_history if "eval_rec/mean_iou" in h]
    assert [h["step"] for h in logged] == [1, 2]
    assert all(0.0 <= h["eval_rec/format_rate"] <= 1.0 for h in logged)
