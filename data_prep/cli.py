"""``vlm-grpo prep``: convert a source into a packed dataset.

    vlm-grpo prep --format FMT --input … --output DIR [--image-root DIR] [--task T] [options]

:func:`add_arguments` and :func:`run` are what ``vlm_grpo.cli`` wires in as the ``prep``
subcommand; :func:`main` is a standalone entry point (``python -m data_prep.cli``).
``run`` prints the summary to stdout (progress on stderr) and returns 0; on a
:class:`~data_prep.packed.PrepError` or an ``OSError`` (a full disk, an output path that
cannot be made) it prints ``error: <message>`` to stderr and returns 2, leaving no
output directory behind (Ctrl-C: 130, nothing written).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from data_prep.packing import PackOptions, pack
from data_prep.packed import KNOWN_TASKS, PrepError
from data_prep.sources import FORMATS, SourceOptions, SourceSpec, get_reader, read_sources
from data_prep.writer import output_error_message


def _int_range(text: str) -> tuple[int, int]:
    """``"3"`` -> (3, 3); ``"1-4"`` -> (1, 4)."""
    try:
        low, _, high = text.partition("-")
        return int(low), int(high or low)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N or MIN-MAX, got {text!r}") from None


def _size(text: str) -> tuple[int, int]:
    """``"112"`` -> (112, 112); ``"160x120"`` -> (160, 120)."""
    try:
        width, _, height = text.lower().partition("x")
        return int(width), int(height or width)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N or WxH, got {text!r}") from None


def _names(text: str) -> tuple[str, ...]:
    return tuple(name.strip() for name in text.split(",") if name.strip())


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``prep`` options to ``parser``."""
    io = parser.add_argument_group("input and output")
    io.add_argument("--format", required=True, metavar="FMT", help=f"source format: {', '.join(FORMATS)}")
    io.add_argument("--input", nargs="+", action="extend", default=[], type=Path, metavar="PATH",
                    help="input file(s)/dir(s); repeat or list several to mix them (not needed for synthetic)")
    io.add_argument("--image-root", nargs="+", action="extend", default=[], type=Path, metavar="DIR",
                    help="directory that relative image paths resolve against: one for all inputs, or one per "
                         "--input in the same order (default: each input's own directory); source images must "
                         "lie inside it")
    io.add_argument("--allow-images-outside-root", action="store_true",
                    help="also read images that resolve outside the image root (absolute paths, '..', symlinks "
                         "out of it); off by default so that a source file cannot copy any readable file into "
                         "the dataset")
    io.add_argument("--output", required=True, type=Path, metavar="DIR", help="packed dataset directory to create")
    io.add_argument("--overwrite", action="store_true", help="replace an existing output (atomically)")
    io.add_argument("--task", metavar="T",
                    help=f"task for every record ({', '.join(KNOWN_TASKS)} or your own); default: from the "
                         "source's reward method, else inferred from the answer")
    io.add_argument("--task-module", action="append", default=[], metavar="MODULE",
                    help="module that registers tasks (package.module or file.py), so their solutions are checked "
                         "by their own rules; repeatable")
    io.add_argument("--prefix-ids", action="store_true", help="prefix ids with the input file name (stem/id)")
    io.add_argument("--quiet", action="store_true", help="no progress bar")

    packing = parser.add_argument_group("packing")
    packing.add_argument("--skip-invalid", action="store_true",
                         help="skip invalid records (counted by reason in the summary and manifest) instead of failing")
    packing.add_argument("--max-pixels", type=int, metavar="N", help="downscale images to width*height <= N")
    packing.add_argument("--clip-boxes", action="store_true", help="clip boxes overshooting the image by a little")
    packing.add_argument("--clip-tolerance", type=float, default=4.0, metavar="PX",
                         help="largest overshoot --clip-boxes clips, in pixels (default 4)")
    packing.add_argument("--box-tolerance", type=float, default=2.0, metavar="U",
                         help="rec-json: allowed box vs normalized_solution difference in 0..1000 units (default 2)")
    packing.add_argument("--val-fraction", type=float, default=0.0, metavar="F",
                         help="write OUTPUT/train and OUTPUT/val, split by image (e.g. 0.1)")
    packing.add_argument("--seed", type=int, default=0, help="seed of the split and of synthetic data (default 0)")
    packing.add_argument("--limit", type=int, metavar="N", help="keep at most N records")
    packing.add_argument("--dedup", action="store_true", help="drop records duplicating an earlier one")
    packing.add_argument("--workers", type=int, default=0, metavar="N", help="image threads (default: min(4, CPUs))")

    table = parser.add_argument_group("columns (parquet, hf-disk)")
    table.add_argument("--image-column", metavar="COL", help="default: decoded_image, image or images")
    table.add_argument("--problem-column", metavar="COL", help="default: problem or question")
    table.add_argument("--solution-column", metavar="COL", help="default: answer or solution")
    table.add_argument("--id-column", metavar="COL", help="default: id if present, else <file>_<row>")
    table.add_argument("--task-column", metavar="COL", help="column naming each row's task (default: none)")
    table.add_argument("--split", metavar="NAME", help="hf-disk: split of a saved DatasetDict")

    det = parser.add_argument_group("detection and GUI grounding (coco, screenspot)")
    det.add_argument("--coco-records", choices=("category", "image"), default="category",
                     help="coco: one record per image and category, the prompt naming it (default), or one per "
                          "image naming every category")
    det.add_argument("--coco-negatives", type=int, default=0, metavar="N",
                     help="coco, per category: also ask about N categories absent from each image (answer []; default 0)")
    det.add_argument("--screenspot-bbox", choices=("xywh", "xyxy"), default="xywh",
                     help="screenspot: bbox as [x, y, width, height] (the original release, default) or [x1, y1, x2, y2]")

    syn = parser.add_argument_group("synthetic (--format synthetic --task rec|count|math|det|point|zoom)")
    syn.add_argument("--num", type=int, default=1000, metavar="N", help="number of samples (default 1000)")
    syn.add_argument("--image-size", type=_size, default=(112, 112), metavar="WxH", help="default 112")
    syn.add_argument("--num-shapes", type=_int_range, default=(1, 4), metavar="MIN-MAX", help="default 1-4")
    syn.add_argument("--shape-kinds", type=_names, default=None, metavar="LIST", help="default circle,square,triangle")
    syn.add_argument("--colors", type=_names, default=None, metavar="LIST", help="default red,green,blue,yellow")
    syn.add_argument("--size-range", type=_int_range, default=(14, 36), metavar="MIN-MAX", help="shape size, px")
    syn.add_argument("--grid", type=int, metavar="PX", help="snap shapes to cells of PX pixels (e.g. 28)")
    syn.add_argument("--background", default="plain", metavar="KIND",
                     help="plain, noise, or tiles (needs --grid: each cell a position-coding colour)")
    syn.add_argument("--answer-box", default="tight", metavar="KIND",
                     help="rec answer: tight (the shape's box, default) or cell (needs --grid: its grid cell's box)")
    syn.add_argument("--referring", default="color+kind", metavar="STYLE",
                     help="rec phrase: color+kind ('the red circle'), color ('the red shape') or kind ('the circle')")
    syn.add_argument("--zoom-scale", type=int, default=4, metavar="N",
                     help="zoom: enlarge the drawn scene N times (the full resolution a crop reads; default 4)")


def _specs(args: argparse.Namespace) -> list[SourceSpec]:
    inputs, roots = list(args.input), list(args.image_root)
    if args.format == "synthetic":
        return [SourceSpec(input=None)]
    if not inputs:
        raise PrepError(f"--format {args.format} needs --input")
    if len(roots) not in (0, 1, len(inputs)):
        raise PrepError(
            f"got {len(inputs)} --input and {len(roots)} --image-root; give one --image-root for all inputs "
            "or one per input, in the same order"
        )
    if len(roots) == 1:
        roots = roots * len(inputs)
    output = args.output.absolute()
    for path in [*inputs, *roots]:
        if path.absolute() == output or path.absolute().is_relative_to(output):
            raise PrepError(f"--output {args.output} contains the input {path}; choose an output outside the sources")
    return [SourceSpec(input=path, image_root=roots[i] if roots else None) for i, path in enumerate(inputs)]


def _source_options(args: argparse.Namespace) -> SourceOptions:
    if not 0 <= args.coco_negatives <= 1000:
        raise PrepError(f"--coco-negatives must be 0..1000 (absent categories asked per image), got {args.coco_negatives}")
    if not args.box_tolerance >= 0:  # NaN too
        raise PrepError(f"--box-tolerance must be a number >= 0 (0..1000 units), got {args.box_tolerance}")
    synthetic_config = None
    if args.format == "synthetic":
        from data_prep.synthetic import SyntheticConfig

        extra = {key: getattr(args, key) for key in ("shape_kinds", "colors") if getattr(args, key)}
        synthetic_config = SyntheticConfig(
            image_size=args.image_size, num_shapes=args.num_shapes, size_range=args.size_range, grid=args.grid,
            background=args.background, referring=args.referring, answer_box=args.answer_box,
            zoom_scale=args.zoom_scale, **extra,
        )
    return SourceOptions(
        task=args.task, prefix_ids=args.prefix_ids, box_tolerance=args.box_tolerance,
        image_column=args.image_column, problem_column=args.problem_column, solution_column=args.solution_column,
        id_column=args.id_column, task_column=args.task_column, split=args.split,
        num=args.num, seed=args.seed, synthetic=synthetic_config,
        allow_images_outside_root=args.allow_images_outside_root,
        coco_records=args.coco_records, coco_negatives=args.coco_negatives, screenspot_bbox=args.screenspot_bbox,
    )


def _load_task_module(spec: str) -> None:
    from rewards.registry import RewardLoadError
    from rewards.tasks import load_task_module

    try:
        load_task_module(spec)
    except RewardLoadError as err:
        raise PrepError(f"--task-module {spec}: {err}", reason="task_module") from None


def run(args: argparse.Namespace) -> int:
    """Run ``prep`` with parsed arguments; 0 on success, 2 (message on stderr) on a PrepError."""
    try:
        for module in args.task_module:
            _load_task_module(module)
        get_reader(args.format)
        specs = _specs(args)
        source_options = _source_options(args)
        options = PackOptions(
            max_pixels=args.max_pixels, clip_boxes=args.clip_boxes, clip_tolerance=args.clip_tolerance,
            skip_invalid=args.skip_invalid, dedup=args.dedup, limit=args.limit, val_fraction=args.val_fraction,
            seed=args.seed, overwrite=args.overwrite, workers=args.workers, progress=not args.quiet,
        )
        settings = {"task": args.task, "prefix_ids": args.prefix_ids}
        if args.allow_images_outside_root:
            settings["allow_images_outside_root"] = True
        if args.format == "coco":
            settings.update(coco_records=args.coco_records, coco_negatives=args.coco_negatives)
        if args.format == "screenspot":
            settings["screenspot_bbox"] = args.screenspot_bbox
        if args.format == "rec-json":
            settings["box_tolerance"] = args.box_tolerance
        if args.format == "synthetic":
            settings.update(num=args.num, synthetic=vars(source_options.synthetic))
        summary = pack(
            read_sources(args.format, specs, source_options),
            args.output,
            options,
            sources=[spec.describe(args.format) for spec in specs],
            settings=settings,
        )
    except PrepError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # a full disk, an output path that cannot be made: the temp dir is already gone
        print(f"error: {output_error_message(err, args.output.absolute())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: nothing was written", file=sys.stderr)
        return 130
    print(summary.format())
    return 0


def build_parser() -> argparse.ArgumentParser:
    """A standalone parser for ``prep`` (the ``vlm-grpo`` CLI adds the same options to its subparser)."""
    parser = argparse.ArgumentParser(prog="vlm-grpo prep", description="Convert a source into a packed dataset.")
    add_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run; returns the exit code (2 with ``error: …`` on stderr on bad input)."""
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
