"""User rewards through `vlm-grpo train`: async rewards train and are logged, a hanging reward stops the run."""

from __future__ import annotations

import json
import textwrap

import pytest

from vlm_grpo.cli import main as cli_main

BASE = [
    "--config", "scripts/configs/tiny_cpu.yaml", "--max_completion_length", "8", "--per_device_train_batch_size", "4",
    "--num_generations", "4", "--report_to", "none", "--dataloader_num_workers", "0", "--save_strategy", "no",
]

PLUGIN = textwrap.dedent(
    '''
    import asyncio
    import time


    async def async_length(completions, **columns):
        """An async reward with variance inside each group (TRL awaits it on its event loop)."""
        await asyncio.sleep(0)
        texts = [c if isinstance(c, str) else c[0]["content"] for c in completions]
        return [1.0 / (1.0 + len(t)) for t in texts]


    def sync_ids(completions, id, **columns):
        return [float(len(i)) for i in id]


    def never_returns(completions, **columns):
        while True:
            time.sleep(0.01)
    '''
)


@pytest.fixture()
def plugin(tmp_path):
    path = tmp_path / "user_rewards.py"
    path.write_text(PLUGIN)
    return path


def _argv(tiny_dir, data, out, *extra):
    return ["train", *BASE, "--model_name_or_path", str(tiny_dir), "--train_data", str(data),
            "--output_dir", str(out), *extra]


def test_an_async_reward_trains_and_its_mean_is_logged(tiny_dir, rec_data, tmp_path, plugin):
    out = tmp_path / "run"
    # the async reward first: TRL runs it after the synchronous one, the rollout log must still hold both
    argv = _argv(tiny_dir, rec_data, out, "--max_steps", "1", "--rollout_log_steps", "1",
                 "--reward_funcs", f"{plugin}:async_length", f"{plugin}:sync_ids")
    assert cli_main(argv) == 0
    history = json.loads((out / "training_log.json").read_text())
    logged = next(h for h in history if "rewards/async_length/mean" in h)
    rollouts = [json.loads(line) for line in (out / "rollouts.jsonl").read_text().splitlines()]
    assert len(rollouts) == 4 and all(set(r["rewards"]) == {"async_length", "sync_ids"} for r in rollouts)
    values = [r["rewards"]["async_length"] for r in rollouts]
    assert all(v == pytest.approx(1.0 / (1.0 + len(r["completion"]))) for v, r in zip(values, rollouts))
    assert logged["rewards/async_length/mean"] == pytest.approx(sum(values) / len(values))
    assert [r["rewards"]["sync_ids"] for r in rollouts] == [float(len(r["id"])) for r in rollouts]


def test_a_reward_past_reward_timeout_stops_training_naming_it(tiny_dir, rec_data, tmp_path, plugin, capsys):
    argv = _argv(tiny_dir, rec_data, tmp_path / "run", "--max_steps", "1", "--reward_timeout", "0.5",
                 "--reward_funcs", "format", f"{plugin}:never_returns")
    assert cli_main(argv) == 2
    err = capsys.readouterr().err
    assert "reward 'never_returns' did not return within 0.5 s (reward_timeout)" in err and "Traceback" not in err
