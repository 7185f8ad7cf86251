"""The distributed engines on CPU ranks (gloo): the engine check, the speed features under FSDP2, and
whole runs under DDP, FSDP2 and a two-"node" launch (see README, "Multi-GPU and multi-node").

accelerate 1.15 does not shard with FSDP on the CPU (see ``tests/fsdp_on_cpu.py``): the FSDP2 runs
here go through that launcher, which lifts that one check; everything else is accelerate's, torch's
and TRL's own FSDP2 code. DeepSpeed ZeRO-2/3 run on the CPU as launched (DeepSpeed's CPU accelerator,
gloo) when the optional `deepspeed` extra is installed, else those tests skip saying how to install it;
``scripts/gpu_check_engines.sh`` runs ZeRO-2/3 and FSDP2 on a GPU machine.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from vlm_grpo.engines import engine_mismatch, engine_name

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "scripts" / "configs" / "accelerate"


@dataclasses.dataclass
class FakeState:
    fsdp_plugin: object = None
    deepspeed_plugin: object = None


@dataclasses.dataclass
class FakeAccelerator:
    """What the engine check reads of an ``Accelerator``."""

    distributed_type: object
    num_processes: int = 2
    device: torch.device = torch.device("cpu")
    state: FakeState = dataclasses.field(default_factory=FakeState)


def _accelerator(kind: str, **fields) -> FakeAccelerator:
    from accelerate.utils import DistributedType

    return FakeAccelerator(getattr(DistributedType, kind), **fields)


FSDP2 = FakeState(fsdp_plugin=type("Plugin", (), {"fsdp_version": 2})())
ZERO3 = FakeState(deepspeed_plugin=type("Plugin", (), {"zero_stage": 3})())


@pytest.mark.parametrize(
    "name, accelerator, environ, expected",
    [
        ("ddp as launched", _accelerator("MULTI_CPU"), {"WORLD_SIZE": "2"}, None),
        ("one process", _accelerator("NO", num_processes=1), {}, None),
        ("fsdp2 as launched", _accelerator("FSDP", state=FSDP2), {"ACCELERATE_USE_FSDP": "true", "WORLD_SIZE": "2"},
         None),
        ("zero3 as launched", _accelerator("DEEPSPEED", device=torch.device("cuda"), state=ZERO3),
         {"ACCELERATE_USE_DEEPSPEED": "true", "WORLD_SIZE": "2"}, None),
        ("fsdp dropped on the cpu", _accelerator("MULTI_CPU"), {"ACCELERATE_USE_FSDP": "true", "WORLD_SIZE": "2"},
         "asks for FSDP, but accelerate runs ddp (accelerate 1.15 shards with FSDP only on GPUs"),
        ("deepspeed dropped on the cpu", _accelerator("MULTI_CPU"),
         {"ACCELERATE_USE_DEEPSPEED": "true", "WORLD_SIZE": "2"},
         "asks for DeepSpeed, but accelerate runs ddp"),
        ("processes that train alone", _accelerator("NO", num_processes=1), {"WORLD_SIZE": "2"},
         "2 processes were launched but each trains alone"),
    ],
)
def test_engine_mismatch(name, accelerator, environ, expected):
    reason = engine_mismatch(accelerator, environ)
    assert (reason is None) if expected is None else (expected in reason), (name, reason)


def test_engine_names():
    assert engine_name(_accelerator("FSDP", state=FSDP2)) == "fsdp2"
    assert engine_name(_accelerator("DEEPSPEED", state=ZERO3)) == "deepspeed-zero3"
    assert engine_name(_accelerator("MULTI_CPU")) == "ddp"
    assert engine_name(_accelerator("NO")) == "single"


def test_lora_under_zero3_is_refused_before_training():
    from vlm_grpo.engines import check_engine

    class Peft(torch.nn.Module):
        peft_config = {"default": None}

    zero3 = _accelerator("DEEPSPEED", device=torch.device("cuda"), state=ZERO3)
    with pytest.raises(ValueError, match="LoRA under DeepSpeed ZeRO-3"):
        check_engine(zero3, Peft(), environ={"ACCELERATE_USE_DEEPSPEED": "true"})
    check_engine(zero3, torch.nn.Linear(1, 1), environ={"ACCELERATE_USE_DEEPSPEED": "true"})


# ---- the speed features under FSDP2: gradients after the step, as the DDP tests in test_speed_*.py ----

FSDP2_WORKER = """
import sys
import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor

sys.path.insert(0, sys.argv[2])
from test_speed_prompt import _grpo_batch, _logps_and_grads
from vlm_grpo.modeling import load_model, load_processor
from vlm_grpo.speed import cache_stats, enable_group_image_cache, enable_shared_prompt, shared_prompt_stats

dist.init_process_group("gloo")
rank = dist.get_rank()
model, processor = load_model(sys.argv[1], device="cpu"), load_processor(sys.argv[1])
processor.tokenizer.padding_side = "left"
# What accelerate's fsdp2.yaml does: each decoder layer and vision block its own FSDP unit, then the root.
mesh = init_device_mesh("cpu", (dist.get_world_size(),))
for module in model.modules():
    if type(module).__name__ in ("Qwen2_5_VLDecoderLayer", "Qwen2_5_VLVisionBlock"):
        fully_shard(module, mesh=mesh)
fully_shard(model, mesh=mesh)
model.train()
inputs, completion, mask = _grpo_batch(processor, seed=rank)  # each rank its own completions

def whole(result):
    logps, grads = result
    return logps, {n: g.full_tensor() if isinstance(g, DTensor) else g for n, g in grads.items()}

def worst(on, off):
    (logps_on, grads_on), (logps_off, grads_off) = on, off
    assert torch.allclose(logps_on, logps_off, rtol=1e-5, atol=1e-6)
    assert set(grads_on) == set(grads_off) and len(grads_off) == len(list(model.parameters()))
    return max(float((grads_on[n] - g).norm() / g.norm().clamp_min(1e-12)) for n, g in grads_off.items())

off = whole(_logps_and_grads(model, inputs, completion, mask))
enable_group_image_cache(model)
cache = whole(_logps_and_grads(model, inputs, completion, mask))
enable_shared_prompt(model)
both = whole(_logps_and_grads(model, inputs, completion, mask))
stats, shared = cache_stats(model), shared_prompt_stats(model)
assert stats.saved > 0 and shared.shared == 1, (stats, shared)
a, b = worst(cache, off), worst(both, off)
assert a <= 1e-5 and b <= 1e-5, (a, b)
print(f"rank {rank} ok image cache {a:.1e}, both {b:.1e}", flush=True)
dist.destroy_process_group()
"""


def test_speed_features_stay_exact_under_fsdp2(tiny_dir, tmp_path):
    """Sharded parameters (DTensor), all-gathered per layer: each feature gives the plain path's gradients
    after FSDP2's reduce-scatter, within float32 rounding (relative 1e-5, as the DDP tests)."""
    from speed_helpers import run_two_ranks

    out = run_two_ranks(tmp_path, FSDP2_WORKER, str(tiny_dir), str(Path(__file__).parent))
    assert "image cache" in out


# ---- whole runs through `accelerate launch` (slow tier: each launch is two processes starting up) ----

TRAIN = [
    "--config", "scripts/configs/tiny_cpu.yaml", "--max_steps", "2", "--save_steps", "1",
    "--max_completion_length", "8", "--per_device_train_batch_size", "4", "--num_generations", "4",
    "--report_to", "none", "--reward_funcs", "tests/speed_helpers.py:variety",  # reward variance: a real update
    "--optim", "sgd", "--learning_rate", "0.01", "--seed", "0",  # SGD: the update is -lr * gradient
]
# FSDP2 vs DDP: the same samples (identical weights give identical logits), gradients reduced in another
# order (DDP's all-reduce buckets, FSDP2's reduce-scatter) and the float32 rounding of w + update: the
# difference stays at a few float32 ulps of the weights (|w| <= 0.1, ulp 7e-9; measured 7.5e-9).
ATOL = 1e-7


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _launch_argv(config: str, script: list[str], *launch_args: str, port: int | None = None) -> list[str]:
    return [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CONFIGS / config),
            "--num_processes", "2", "--mixed_precision", "no", "--main_process_port", str(port or _free_port()),
            *launch_args, *script]


def _train(config, tiny_dir, data, out, *extra, fsdp_on_cpu=False, check=True):
    """``vlm-grpo train`` on 2 CPU processes (gloo) with an accelerate config of scripts/configs/accelerate."""
    script = [str(ROOT / "tests" / "fsdp_on_cpu.py")] if fsdp_on_cpu else ["-m", "vlm_grpo.cli"]
    argv = _launch_argv(config, [*script, "train", *TRAIN, "--model_name_or_path", str(tiny_dir),
                                 "--train_data", str(data), "--output_dir", str(out), *extra])
    run = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=400,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    if check:
        assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-5000:]
    return run


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


def _run_record(folder: Path) -> dict:
    return json.loads((folder / "training_log.json").read_text())[0]["run"]


@pytest.mark.slow
def test_fsdp2_equals_ddp_checkpoints_resumes_and_saves_a_loadable_model(tiny_dir, rec_data, tmp_path):
    from transformers import AutoModelForImageTextToText

    ddp, fsdp, resumed = tmp_path / "ddp", tmp_path / "fsdp2", tmp_path / "resumed"
    _train("ddp.yaml", tiny_dir, rec_data, ddp)
    _train("fsdp2.yaml", tiny_dir, rec_data, fsdp, fsdp_on_cpu=True)
    for folder, engine in ((ddp, "ddp"), (fsdp, "fsdp2")):
        run = _run_record(folder)
        assert run["engine"] == {"name": engine, "processes": 2, "device": "cpu"}
        assert all(f["active"] for f in run["speed_features"].values()), run["speed_features"]  # both on, exact
    # sharded checkpoints (torch.distributed.checkpoint, one file per rank), each marked complete with the run id
    run_ids = set()
    for step in (1, 2):
        marker = json.loads((fsdp / f"checkpoint-{step}" / "checkpoint_complete.json").read_text())
        assert {"pytorch_model_fsdp_0/__0_0.distcp", "pytorch_model_fsdp_0/__1_0.distcp",
                "optimizer_0/__0_0.distcp"} <= set(marker["files"])
        run_ids.add(marker["run_id"])
    assert len(run_ids) == 1
    # per parameter, FSDP2 == DDP within float32 rounding; and the step really moved the weights
    start, after_ddp, after_fsdp = _weights(tiny_dir), _weights(ddp), _weights(fsdp)
    assert set(after_fsdp) == set(after_ddp) == set(start)  # the tied lm_head is not saved twice
    moved = sum(bool((after_ddp[n] - start[n]).abs().max() > 1e-6) for n in start)
    assert moved > len(start) // 2
    worst = max(float((after_fsdp[n] - after_ddp[n]).abs().max()) for n in start)
    assert worst <= ATOL, worst
    # resume the sharded checkpoint-1 (a copy, in an output_dir of its own): the same run id, the same weights
    resumed.mkdir()
    subprocess.run(["cp", "-r", str(fsdp / "checkpoint-1"), str(resumed)], check=True)
    run = _train("fsdp2.yaml", tiny_dir, rec_data, resumed, "--resume_from_checkpoint", "true", fsdp_on_cpu=True)
    assert "resuming from" in run.stdout + run.stderr
    marker = json.loads((resumed / "checkpoint-2" / "checkpoint_complete.json").read_text())
    assert marker["run_id"] in run_ids
    after_resume = _weights(resumed)
    assert max(float((after_resume[n] - after_fsdp[n]).abs().max()) for n in start) <= ATOL
    # the final model loads in `vlm-grpo eval` and in plain transformers (tied weights tied again)
    from vlm_grpo.cli import main as cli_main

    assert cli_main(["eval", "--model", str(fsdp), "--data", str(rec_data), "--output", str(tmp_path / "eval"),
                     "--max-samples", "4"]) == 0
    model = AutoModelForImageTextToText.from_pretrained(str(fsdp))
    assert model.lm_head.weight.data_ptr() == model.model.language_model.embed_tokens.weight.data_ptr()
    assert torch.equal(model.lm_head.weight, after_fsdp["model.embed_tokens.weight"])


@pytest.mark.slow
def test_lora_under_fsdp2_merges_at_the_final_save_as_under_ddp(tiny_dir, rec_data, tmp_path):
    """The adapters are merged into the sharded weights on every rank, then gathered: the saved plain model equals
    DDP's merged one, and only the adapted projections changed."""
    lora = ["--use_peft", "true", "--lora_r", "4", "--lora_target_modules", "q_proj", "v_proj"]
    _train("ddp.yaml", tiny_dir, rec_data, tmp_path / "ddp", *lora)
    _train("fsdp2.yaml", tiny_dir, rec_data, tmp_path / "fsdp2", *lora, fsdp_on_cpu=True)
    start, one, two = _weights(tiny_dir), _weights(tmp_path / "ddp"), _weights(tmp_path / "fsdp2")
    assert set(one) == set(two) == set(start)
    changed = {n for n in start if not torch.equal(two[n], start[n])}
    assert changed and all(n.endswith(("q_proj.weight", "v_proj.weight")) for n in changed), changed
    assert max(float((two[n] - one[n]).abs().max()) for n in start) <= ATOL


@pytest.mark.slow
def test_fsdp_on_the_cpu_without_sharding_stops_the_run(tiny_dir, rec_data, tmp_path):
    """accelerate 1.15 with use_cpu trains an FSDP config as plain DDP: refused before training, with the reason."""
    run = _train("fsdp2.yaml", tiny_dir, rec_data, tmp_path / "out", check=False)
    assert run.returncode != 0
    assert "the accelerate config asks for FSDP, but accelerate runs ddp" in run.stderr, run.stderr[-3000:]
    assert not (tmp_path / "out" / "checkpoint-1").exists()


NO_DEEPSPEED = ("DeepSpeed is an optional extra, not in requirements.lock: `DS_BUILD_OPS=0 pip install "
                "deepspeed==0.18.6` (an sdist; its CPU accelerator builds a shared-memory op with the C++ compiler "
                "at first use and talks gloo without oneccl)")


@pytest.mark.slow
def test_deepspeed_zero2_equals_ddp_on_the_cpu(tiny_dir, rec_data, tmp_path):
    pytest.importorskip("deepspeed", reason=NO_DEEPSPEED)
    _train("ddp.yaml", tiny_dir, rec_data, tmp_path / "ddp")
    _train("zero2.yaml", tiny_dir, rec_data, tmp_path / "zero2")
    run = _run_record(tmp_path / "zero2")
    assert run["engine"] == {"name": "deepspeed-zero2", "processes": 2, "device": "cpu"}
    assert all(f["active"] for f in run["speed_features"].values()), run["speed_features"]
    marker = json.loads((tmp_path / "zero2" / "checkpoint-1" / "checkpoint_complete.json").read_text())
    assert any(name.startswith("global_step1/") for name in marker["files"])  # DeepSpeed's own checkpoint
    one, two = _weights(tmp_path / "ddp"), _weights(tmp_path / "zero2")
    assert set(one) == set(two) and max(float((two[n] - one[n]).abs().max()) for n in one) <= ATOL


@pytest.mark.slow
def test_deepspeed_zero3_trains_saves_a_loadable_model_and_the_speed_features_step_aside(tiny_dir, rec_data,
                                                                                          tmp_path):
    pytest.importorskip("deepspeed", reason=NO_DEEPSPEED)
    from transformers import AutoModelForImageTextToText

    _train("zero3.yaml", tiny_dir, rec_data, tmp_path / "zero3")
    run = _run_record(tmp_path / "zero3")
    assert run["engine"] == {"name": "deepspeed-zero3", "processes": 2, "device": "cpu"}
    # Exactness under ZeRO-3 is not shown (its CPU runs are not reproducible): each feature steps aside, saying so.
    for feature in run["speed_features"].values():
        assert not feature["active"] and "ZeRO-3" in feature["reason"], feature
    assert (tmp_path / "zero3" / "checkpoint-2" / "checkpoint_complete.json").is_file()
    model, info = AutoModelForImageTextToText.from_pretrained(str(tmp_path / "zero3"), output_loading_info=True)
    assert not any(info.values()), info  # the gathered 16-bit state dict: every weight found


@pytest.mark.slow
@pytest.mark.xfail(strict=False, reason="ZeRO-3 on the CPU is not reproducible run to run: with beta 0 the weights "
                   "were 7.5e-9 from DDP's in one run and 0.076 in another; with a reference model the KL at step 1 "
                   "(0.0 under DDP) was 0.027, 1.9e-4 and 0.0 in three runs. Not found why (README)")
def test_deepspeed_zero3_equals_ddp_on_the_cpu(tiny_dir, rec_data, tmp_path):
    pytest.importorskip("deepspeed", reason=NO_DEEPSPEED)
    from transformers import AutoModelForImageTextToText

    plain = ["--group_image_cache", "off", "--group_shared_prompt", "off", "--beta", "0"]  # features step aside
    _train("ddp.yaml", tiny_dir, rec_data, tmp_path / "ddp", *plain)
    _train("zero3.yaml", tiny_dir, rec_data, tmp_path / "zero3", *plain)
    one, three = (dict(AutoModelForImageTextToText.from_pretrained(str(tmp_path / d)).named_parameters())
                  for d in ("ddp", "zero3"))
    assert max(float((three[n] - one[n]).abs().max()) for n in one) <= ATOL


@pytest.mark.slow
def test_multinode_recipe_on_two_local_nodes_equals_ddp(tiny_dir, rec_data, tmp_path):
    """README's two-machine command, twice on this machine (--machine_rank 0 and 1, 127.0.0.1, gloo)."""
    port = _free_port()
    nodes = []
    for rank in (1, 0):
        argv = _launch_argv("multinode.yaml", ["-m", "vlm_grpo.cli", "train", *TRAIN,
                                               "--model_name_or_path", str(tiny_dir), "--train_data", str(rec_data),
                                               "--output_dir", str(tmp_path / "two_nodes")],
                            "--machine_rank", str(rank), "--main_process_ip", "127.0.0.1", port=port)
        nodes.append(subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                      env={**os.environ, "OMP_NUM_THREADS": "1"}))
    outputs = [node.communicate(timeout=400) for node in nodes]
    assert all(node.returncode == 0 for node in nodes), [err[-3000:] for _, err in outputs]
    assert _run_record(tmp_path / "two_nodes")["engine"] == {"name": "ddp", "processes": 2, "device": "cpu"}
    _train("ddp.yaml", tiny_dir, rec_data, tmp_path / "one_node")
    two, one = _weights(tmp_path / "two_nodes"), _weights(tmp_path / "one_node")
    assert max(float((two[n] - one[n]).abs().max()) for n in one) <= ATOL


# ---- scripts/gpu_check_engines.sh: its commands in the default suite, its CPU mode in the slow tier ----

SCRIPT = ROOT / "scripts" / "gpu_check_engines.sh"


@pytest.mark.parametrize("device", ["cuda", "cpu"])
def test_gpu_check_engines_commands(device, tmp_path):
    run = subprocess.run(["bash", str(SCRIPT), "--dry-run", "--device", device], cwd=ROOT, capture_output=True,
                         text=True, timeout=60, env={**os.environ, "OUT": str(tmp_path)})
    assert run.returncode == 0, run.stderr
    commands = [line for line in run.stderr.splitlines() if line.startswith("+ ")]
    for engine in ("ddp", "fsdp2", "zero2", "zero3"):
        assert any(f"scripts/configs/accelerate/{engine}.yaml" in c for c in commands), engine
    fsdp = [c for c in commands if "fsdp2.yaml" in c]
    assert all(("tests/fsdp_on_cpu.py" in c) == (device == "cpu") for c in fsdp)
    assert all("--resume_from_checkpoint true" not in c or "fsdp2_resumed" in c for c in commands)
    for config in ("ddp", "fsdp2", "zero2", "zero3", "multinode"):  # every engine's config parses in accelerate
        from accelerate.commands.config.config_args import load_config_from_file

        assert load_config_from_file(str(CONFIGS / f"{config}.yaml")).num_processes > 1


@pytest.mark.slow
def test_gpu_check_engines_cpu_mode(tmp_path):
    run = subprocess.run(["bash", str(SCRIPT), "--device", "cpu"], cwd=ROOT, capture_output=True, text=True,
                         timeout=900, env={**os.environ, "OUT": str(tmp_path)})
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-5000:]
    assert "fsdp2: engine" in run.stdout and "engines checked" in run.stderr
