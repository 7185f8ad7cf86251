"""The offline end-to-end demo: a pre-trained small policy, synthetic grounding, GRPO, before/after evaluation.

``vlm-grpo demo`` runs public commands in order, with their real options:
  1. policy  the starting policy: the small Qwen2.5-VL shipped in ``vlm_grpo/assets/demo_policy``
  2. prep    synthetic REC data (``--task det|point``: detection or click data on the same
             scenes), split by image into train and val
  3. eval    the starting policy on val (mean IoU, acc@0.5, format rate; det: mAP; point: clicks)
  4. train   GRPO with the format and the task's reward (iou, det_f1, point_in_box)
  5. eval    the trained policy on the same val set
Then it prints a before/after table and writes summary.json (metric, before, after,
stage times), the two eval reports (HTML with boxes) and rewards.png.

``vlm-grpo demo --make-policy`` regenerates the shipped policy, also through public
commands: ``tiny`` (random weights), ``prep`` (the same data), ``sft`` (the cold start:
format and grounding), ``eval``, then a bf16 copy of the weights.

Why it looks the way it does (measured; see README "Demo"):
- One shape of 12 to 24 px per 112x112 image, centred in one of 16 cells of 28 px
  (one image token each), on a ``tiles`` background whose colour codes the cell's
  column and row. Neither the vision tower nor the LM puts a token's position into
  its features, so a small policy trained for minutes cannot otherwise read
  coordinates off the image.
- From random weights the SFT needs 1,000 to 2,000 steps (10+ minutes) before it
  localises at all, and at a few hundred steps it either fails or solves the task
  depending on the seed. So the cold start is done once (``--make-policy``) and
  shipped; the demo evaluates it, runs GRPO, and evaluates again.
- The demo prepares exactly the pre-training's data (same seed and sizes), so its
  val split is held out from the SFT as well as from GRPO.
- The vision tower stays frozen (``freeze_vision``): trained from random weights at
  these learning rates its output collapsed to a near-constant vector.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import time
from pathlib import Path

from vlm_grpo.files import atomic_write_text

#: The policy ``vlm-grpo demo`` starts from (made by ``vlm-grpo demo --make-policy``).
SHIPPED_POLICY = Path(__file__).resolve().parent.parent / "assets" / "demo_policy"


@dataclasses.dataclass(frozen=True)
class DemoPlan:
    """Sizes of one demo run."""

    train_records: int
    val_records: int
    grpo_steps: int
    num_generations: int
    prompts_per_step: int


@dataclasses.dataclass(frozen=True)
class PolicyPlan:
    """Sizes of the one-time pre-training of the demo's starting policy."""

    train_records: int
    val_records: int
    sft_steps: int  # length of the SFT schedule (cosine learning rate)
    export_step: int  # the checkpoint shipped: half-way, so that the policy localises only partly


FULL = DemoPlan(train_records=4000, val_records=200, grpo_steps=300, num_generations=8, prompts_per_step=8)
QUICK = DemoPlan(train_records=200, val_records=24, grpo_steps=4, num_generations=4, prompts_per_step=2)
MAKE_POLICY = PolicyPlan(train_records=4000, val_records=200, sft_steps=2000, export_step=1000)
MAKE_POLICY_QUICK = PolicyPlan(train_records=200, val_records=24, sft_steps=20, export_step=10)
#: prep seed of the shipped policy's pre-training data, which the demo prepares again (see the module doc)
DATA_SEED = 1

POLICY = ["--text-hidden", "128", "--text-layers", "4"]
# One shape of 12..24 px per 112x112 image, centred in one of 16 cells of 28 px (one merged image token
# each), on position-coding tiles.
SYNTHETIC = ["--image-size", "112", "--grid", "28", "--num-shapes", "1", "--size-range", "12-24", "--background", "tiles"]
SFT = ["--learning_rate", "1e-3", "--per_device_train_batch_size", "16", "--lr_scheduler_type", "cosine"]
# loss_type dapo: the demo's figures (README "Demo") were measured with it, TRL's default then; the project's
# default is grpo (the published VLM-R1 / R1-V recipes).
GRPO = ["--learning_rate", "5e-5", "--temperature", "1.0", "--beta", "0.04",
        "--max_completion_length", "48", "--loss_type", "dapo"]


@dataclasses.dataclass(frozen=True)
class DemoTask:
    """What ``--task`` changes: the synthetic data, the task reward GRPO adds to ``format``, and the figures shown."""

    reward: str
    metric: str  # what summary.json's ``metric`` names (the eval headline)
    figures: tuple[tuple[str, str], ...]  # (label, key of the task's metrics) printed before and after
    synthetic: tuple[str, ...] = ()
    note: str = ""
    template_from_rec: bool = False  # prompt with the rec template, the one the shipped policy knows


#: ``--task``: rec (the default, what the shipped policy was pre-trained on), det and point, from the same policy.
DEMO_TASKS = {
    "rec": DemoTask("iou", "mean_iou", (("mean IoU", "mean_iou"), ("acc@0.5", "acc@0.5"), ("format rate", "format_rate"))),
    "det": DemoTask("det_f1", "mAP", (("mAP@[.5:.95]", "mAP"), ("AP50", "AP50"), ("mean det F1", "mean_det_f1"),
                                      ("format rate", "format_rate")),
                    synthetic=("--num-shapes", "1-2"), template_from_rec=True,
                    note="det starts from the shipped rec policy, prompted with the rec template it was pre-trained "
                         "on (the det template is new to it): it keeps the answer format but does not answer boxes to "
                         "'Locate every circle' (mAP 0 before GRPO); the run shows the det pipeline end to end (prep, "
                         "det_f1 reward, COCO mAP, the report's labelled boxes), not a trained detector"),
    "point": DemoTask("point_in_box", "accuracy", (("click accuracy", "accuracy"), ("format rate", "format_rate")),
                      note="point starts from the shipped rec policy: its box answers count as their centre, so it "
                           "clicks the shape it localises; GRPO then trains on point_in_box"),
}
QUICK_NOTE = ("quick run: {steps} GRPO steps are a smoke test of the pipeline, not a measure of learning (before and "
              "after can differ either way); `vlm-grpo demo` runs the real comparison")
COMMON = ["--use_cpu", "true", "--report_to", "none", "--activation_checkpointing", "false", "--freeze_vision", "true"]
EVAL = ["--batch-size", "16", "--max-new-tokens", "48"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", default="demo_output", help="folder for everything the demo writes (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed for GRPO's sampling and, with --make-policy, the weights (default: %(default)s)")
    parser.add_argument("--data-seed", type=int, default=DATA_SEED,
                        help="prep seed (default: %(default)s, the shipped policy's pre-training data, whose val split "
                             "it never trained on)")
    parser.add_argument("--task", choices=sorted([*DEMO_TASKS, "zoom"]), default="rec",
                        help="rec (default: the task the shipped policy was pre-trained on), det (several boxes, "
                             "COCO mAP), point (a click in the box), all on synthetic shapes, or zoom (multi-turn "
                             "with the zoom_in tool: vlm_grpo.commands.demo_zoom)")
    parser.add_argument("--quick", action="store_true", help="a reduced run (under 2 minutes), used by the tests")
    parser.add_argument("--policy", type=Path, default=SHIPPED_POLICY,
                        help="starting checkpoint (default: the shipped pre-trained policy, %(default)s)")
    parser.add_argument("--make-policy", action="store_true",
                        help="instead of the demo, regenerate the starting policy: tiny, prep, sft (about 12 minutes "
                             "on 2 CPU cores), eval, and a bf16 copy of the weights in OUTPUT/policy_bf16; copy that "
                             "folder over vlm_grpo/assets/demo_policy to ship it")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default: %(default)s; the tiny model's ops are too small to gain from "
                             "more, and on a busy machine extra threads made steps several times slower)")


class _Stages:
    """Runs public CLI commands one after another, timing each."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def __call__(self, stage: str, argv: list[str]) -> None:
        from vlm_grpo.cli import main as cli

        print(f"\n== {stage}: vlm-grpo {' '.join(argv)}", flush=True)
        start = time.perf_counter()
        code = cli(argv)
        self.seconds[stage] = round(time.perf_counter() - start, 1)
        if code != 0:
            raise RuntimeError(f"demo stage {stage!r} failed (exit code {code}); see the messages above")


def _prep(run: _Stages, out: Path, train: int, val: int, seed: int, task: str = "rec") -> None:
    total = train + val
    run("data", ["prep", "--format", "synthetic", "--task", task, "--num", str(total), "--seed", str(seed),
                 "--val-fraction", f"{val / total:.6f}", "--output", str(out), "--overwrite", "--quiet", *SYNTHETIC,
                 *DEMO_TASKS[task].synthetic])


def _metrics(folder: Path) -> dict:
    return json.loads((folder / "metrics.json").read_text())


def run(args: argparse.Namespace) -> int:
    import torch

    torch.set_num_threads(args.threads)
    from vlm_grpo.files import make_output_dir

    out = make_output_dir(args.output, "--output")
    if args.make_policy:
        if args.task != "rec":
            raise SystemExit("vlm-grpo demo: --make-policy pre-trains the rec policy; drop --task")
        return make_policy(out, args.seed, args.data_seed, MAKE_POLICY_QUICK if args.quick else MAKE_POLICY)
    if not (args.policy / "config.json").is_file():
        raise SystemExit(f"vlm-grpo demo: no checkpoint in {args.policy} (config.json missing); "
                         "regenerate it with `vlm-grpo demo --make-policy` or pass --policy DIR")
    if args.task == "zoom":
        from vlm_grpo.commands.demo_zoom import run_zoom

        return run_zoom(args, out, _Stages())
    plan = QUICK if args.quick else FULL
    stages = _Stages()
    policy, data, grpo = out / "policy", out / "data", out / "grpo"
    start = time.perf_counter()
    print(f"== policy: copying the starting checkpoint {args.policy} to {policy}", flush=True)
    remove_model_folder(policy)
    shutil.copytree(args.policy, policy)
    stages.seconds["policy"] = round(time.perf_counter() - start, 1)
    task = DEMO_TASKS[args.task]
    _prep(stages, data, plan.train_records, plan.val_records, args.data_seed, args.task)
    evaluate = ["--data", str(data / "val"), *EVAL]
    templates: list[str] = []
    if task.template_from_rec:
        from rewards.tasks import TASKS

        templates = [json.dumps({args.task: TASKS["rec"].template})]
        evaluate += ["--task-templates", *templates]
        templates = ["--task_templates", *templates]
    stages("eval_before", ["eval", "--model", str(policy), "--output", str(out / "eval_before"), *evaluate])
    stages("grpo", ["train", "--model_name_or_path", str(policy), "--train_data", str(data / "train"),
                    "--output_dir", str(grpo), "--max_steps", str(plan.grpo_steps),
                    "--num_generations", str(plan.num_generations),
                    "--per_device_train_batch_size", str(plan.prompts_per_step * plan.num_generations),
                    "--logging_steps", "1" if args.quick else "5", "--rollout_log_steps", "50", "--save_strategy", "no",
                    "--seed", str(args.seed), "--overwrite_output_dir", "true",  # a demo run again into the same --output replaces its own
                    "--reward_funcs", "format", task.reward, *templates, *GRPO, *COMMON])
    stages("eval_after", ["eval", "--model", str(grpo), "--output", str(out / "eval_after"), *evaluate])
    before, after = _metrics(out / "eval_before"), _metrics(out / "eval_after")
    plot_rewards(grpo / "training_log.json", out / "rewards.png")
    summary = {"task": args.task, "metric": task.metric, "before": before, "after": after, "seconds": stages.seconds, "seed": args.seed,
               "data_seed": args.data_seed, "quick": args.quick, "policy": str(args.policy), "plan": dataclasses.asdict(plan)}
    notes = [task.note] if task.note else []
    if args.quick:
        notes.append(QUICK_NOTE.format(steps=plan.grpo_steps))
    if notes:
        summary["note"] = "; ".join(notes)
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    print_table(before["metrics"], after["metrics"], stages.seconds, args.task)
    if notes:
        print(f"\n{summary['note']}")
    print(f"\nreports: {out / 'eval_before' / 'report.html'}, {out / 'eval_after' / 'report.html'}")
    print(f"reward curve: {out / 'rewards.png'}; summary: {out / 'summary.json'}")
    return 0


def make_policy(out: Path, seed: int, data_seed: int, plan: PolicyPlan) -> int:
    """Pre-train the demo's starting policy from random weights (the cold start, done once)."""
    stages = _Stages()
    tiny, data, sft, export = out / "tiny", out / "data", out / "sft", out / "policy_bf16"
    check_model_folder(export)  # replaced at the end: refused now, not after the training
    stages("tiny", ["tiny", "--output", str(tiny), "--seed", str(seed), "--overwrite", *POLICY])
    _prep(stages, data, plan.train_records, plan.val_records, data_seed)
    stages("sft", ["sft", "--model_name_or_path", str(tiny), "--train_data", str(data / "train"),
                   "--output_dir", str(sft), "--max_steps", str(plan.sft_steps), "--logging_steps", "50",
                   "--seed", str(seed), *SFT, *COMMON, "--save_strategy", "steps", "--save_steps", str(plan.export_step),
                   "--overwrite_output_dir", "true"])
    shipped = sft / f"checkpoint-{plan.export_step}"
    stages("eval", ["eval", "--model", str(shipped), "--data", str(data / "val"), "--output", str(out / "eval"), *EVAL])
    export_bf16(shipped, export)
    rec = _metrics(out / "eval")["metrics"]["by_task"]["rec"]
    print(f"\nheld-out REC: mean IoU {rec['mean_iou']:.3f}, acc@0.5 {rec['acc@0.5']:.3f}, "
          f"format rate {rec['format_rate']:.3f}")
    print(f"stage times (s): {json.dumps(stages.seconds)}; total {sum(stages.seconds.values()):.0f}s")
    print(f"policy (bf16): {export}; to ship it: rm -r {SHIPPED_POLICY} && cp -r {export} {SHIPPED_POLICY}")
    return 0


#: files of a checkpoint folder that record training, not the model
TRAINING_STATE = ("training_log.json", "trainer_state.json", "checkpoint_complete.json")


def export_bf16(checkpoint: Path, target: Path) -> None:
    """A copy of ``checkpoint`` with bf16 weights and only the files a user needs to load it."""
    import torch

    from vlm_grpo.files import save_pretrained_atomically
    from vlm_grpo.modeling import load_model

    remove_model_folder(target)
    target.mkdir(parents=True)
    for path in checkpoint.iterdir():
        if path.is_file() and path.suffix in (".json", ".jinja") and path.name not in TRAINING_STATE:
            shutil.copy2(path, target / path.name)
    save_pretrained_atomically(target, load_model(str(checkpoint), dtype=torch.bfloat16, device="cpu"))


def check_model_folder(folder: Path) -> None:
    """Refuse to replace ``folder`` unless it is absent or a model folder (an earlier demo run's)."""
    if (folder.exists() or folder.is_symlink()) and not (folder.is_dir() and (folder / "config.json").is_file()):
        raise ValueError(
            f"{folder} exists and is not a model folder from an earlier demo run, and the demo replaces it; "
            "choose another --output, or move that folder away"
        )


def remove_model_folder(folder: Path) -> None:
    check_model_folder(folder)
    shutil.rmtree(folder, ignore_errors=True)


def print_table(before: dict, after: dict, times: dict[str, float], task: str = "rec") -> None:
    task_b, task_a = before["by_task"][task], after["by_task"][task]
    print(f"\n| held-out {task.upper()} | before GRPO | after GRPO |\n|---|---:|---:|")
    shown = lambda value: "–" if value is None else f"{value:.3f}"  # noqa: E731  (det mAP is None without any box)
    for label, key in DEMO_TASKS[task].figures:
        print(f"| {label} | {shown(task_b.get(key))} | {shown(task_a.get(key))} |")
    print(f"\nstage times (s): {json.dumps(times)}; total {sum(times.values()):.0f}s")


def plot_rewards(log_path: Path, png: Path) -> None:
    """Mean reward (and each reward) per GRPO step, from the trainer's log history."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    history = json.loads(log_path.read_text())
    steps = [h for h in history if "reward" in h]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    names = sorted({k for h in steps for k in h if k.startswith("rewards/") and k.endswith("/mean")})
    for key in ["reward", *names]:
        ax.plot([h["step"] for h in steps], [h.get(key) for h in steps], marker="o", markersize=3,
                label=key.removesuffix("/mean"))
    ax.set_xlabel("GRPO step")
    ax.set_ylabel("mean reward")
    ax.legend()
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)
