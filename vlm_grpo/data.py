"""Packed datasets -> rows for TRL's trainers (and for evaluation).

A row carries the conversational ``prompt`` (image placeholders + the task's
template), the record's ``images`` as PIL (decoded lazily, when the trainer
reads the row), and the columns rewards need: ``problem`` (the record's question,
before templating), ``solution``, ``task``, ``id``, ``source``, ``image_sizes``,
``model_image_sizes`` (each image's size after the processor's own resize),
``box_frame`` and ``open_think`` (the chat template's generation prompt leaves a
``<think>`` open, :func:`vlm_grpo.prompts.opens_think`). ``ROW_COLUMNS`` lists
them; TRL hands every one but ``prompt`` to each reward.
"""

from __future__ import annotations

import dataclasses
import logging
import random
from collections.abc import Sequence

from data_prep.packed import PackedDataset, Record, load_packed
from vlm_grpo.generation import user_message
from vlm_grpo.prompts import merged_templates, opens_think, render_prompt

logger = logging.getLogger(__name__)

# The columns of a trainer row, in order (README "Rewards" promises every one of them to rewards, but prompt).
ROW_COLUMNS = ("prompt", "images", "problem", "solution", "task", "id", "image_sizes", "model_image_sizes",
               "box_frame", "source", "open_think")


@dataclasses.dataclass(frozen=True)
class Resize:
    """The processor's resize rule (smart_resize): sizes snap to ``factor`` within [min, max] pixels."""

    factor: int
    min_pixels: int
    max_pixels: int

    @classmethod
    def of(cls, processor) -> Resize:
        from vlm_grpo.processing import pixel_bounds

        image_processor = processor.image_processor
        low, high = pixel_bounds(processor)
        return cls(factor=image_processor.patch_size * image_processor.merge_size, min_pixels=low, max_pixels=high)

    def model_size(self, width: int, height: int) -> list[int]:
        """``[width, height]`` of the image the model sees."""
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

        h, w = smart_resize(height, width, factor=self.factor, min_pixels=self.min_pixels, max_pixels=self.max_pixels)
        return [w, h]

    def image_tokens(self, width: int, height: int) -> int:
        w, h = self.model_size(width, height)
        return (w // self.factor) * (h // self.factor)


@dataclasses.dataclass
class RowSet:
    """Rows built from one or more packed datasets, plus what was dropped and why."""

    datasets: list[PackedDataset]
    refs: list[tuple[int, int]]  # (dataset index, record index) per row
    prompts: list[str]
    model_image_sizes: list[list[list[int]]]
    box_frame: str
    dropped_too_long: int = 0
    open_think: bool = False  # the generation prompt opens the <think>: completions start inside it

    def __len__(self) -> int:
        return len(self.refs)

    def record(self, row: int) -> Record:
        d, r = self.refs[row]
        return self.datasets[d].records[r]

    def image(self, row: int, k: int = 0):
        """The ``k``-th image of a row, decoded as PIL RGB (an error names the record id)."""
        d, r = self.refs[row]
        return self.datasets[d].open_image(self.datasets[d].records[r], k)

    def row(self, i: int, *, with_images: bool = True) -> dict:
        """One row as the trainer and rewards see it."""
        d, r = self.refs[i]
        record = self.datasets[d].records[r]
        images = [self.image(i, k) for k in range(len(record.images))] if with_images else None
        return {
            "prompt": user_message(self.prompts[i], len(record.images)),
            "images": images,
            "problem": record.problem,
            "solution": record.solution,
            "task": record.task,
            "id": record.id,
            "image_sizes": record.image_sizes,
            "model_image_sizes": self.model_image_sizes[i],
            "box_frame": self.box_frame,
            "source": record.meta.get("source", self.datasets[d].path.name),
            "open_think": self.open_think,
        }

    def to_hf(self, make_row=None):
        """A ``datasets.Dataset`` whose rows are built on access (images decoded then).

        ``make_row(i)`` builds row ``i``; the default is :meth:`row`, what GRPO and rewards see.
        """
        from datasets import Dataset

        make_row = make_row or self.row
        table = Dataset.from_dict({"row": list(range(len(self)))})

        def materialise(batch: dict) -> dict:
            rows = [make_row(i) for i in batch["row"]]
            return {key: [row[key] for row in rows] for key in rows[0]} if rows else {}

        return table.with_transform(materialise)


def mix(sizes: Sequence[int], weights: Sequence[float] | None, seed: int) -> list[tuple[int, int]]:
    """(dataset, record) pairs; with ``weights``, each dataset's share of the total follows its weight.

    The total stays the sum of the sizes. A dataset asked for more rows than it has is
    repeated whole and topped up with a seeded random subset; one asked for fewer is subsampled.
    """
    if weights is None:
        return [(d, r) for d, n in enumerate(sizes) for r in range(n)]
    if len(weights) != len(sizes):
        raise ValueError(f"train_data_weights has {len(weights)} values for {len(sizes)} train_data dirs; give one per dir")
    if any(w < 0 for w in weights) or sum(weights) <= 0:
        raise ValueError(f"train_data_weights must be non-negative with a positive sum; got {list(weights)}")
    rng = random.Random(seed)
    total, weight_sum = sum(sizes), sum(weights)
    pairs = []
    for d, (n, w) in enumerate(zip(sizes, weights)):
        want = round(total * w / weight_sum)
        full, rest = divmod(want, n) if n else (0, 0)
        pairs += [(d, r) for _ in range(full) for r in range(n)]
        pairs += [(d, r) for r in sorted(rng.sample(range(n), rest))]
    return pairs


def prompt_length(processor, text: str, image_sizes: Sequence[Sequence[int]], resize: Resize) -> int:
    """Tokens of the templated prompt, image tokens included, without decoding any image."""
    conversation = user_message(text, len(image_sizes))
    rendered = processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)
    text_tokens = len(processor.tokenizer(rendered, add_special_tokens=False)["input_ids"])
    # Each image is one <|image_pad|> in the rendered text, expanded to its grid by the processor.
    return text_tokens + sum(resize.image_tokens(w, h) - 1 for w, h in image_sizes)


def build_rows(
    dirs: Sequence[str],
    processor,
    *,
    box_frame: str,
    templates: dict[str, str] | None = None,
    weights: Sequence[float] | None = None,
    max_prompt_tokens: int | None = None,
    seed: int = 0,
) -> RowSet:
    """Load packed datasets and build trainer rows; drops (and counts) over-long prompts, never truncates."""
    if not dirs:
        raise ValueError("no dataset given: set train_data (a list of packed dataset dirs made by `vlm-grpo prep`)")
    datasets = [load_packed(d) for d in dirs]
    templates = merged_templates(None) if templates is None else templates
    for ds in datasets:
        missing = sorted({r.task for r in ds.records} - set(templates))
        if missing:
            raise ValueError(f"{ds.path}: no prompt template for task(s) {missing}; add them under task_templates")
    resize = Resize.of(processor)
    refs, prompts, sizes = [], [], []
    dropped = 0
    for d, r in mix([len(ds) for ds in datasets], weights, seed):
        record = datasets[d].records[r]
        text = render_prompt(record.task, record.problem, box_frame, templates)
        if max_prompt_tokens is not None and prompt_length(processor, text, record.image_sizes, resize) > max_prompt_tokens:
            dropped += 1
            continue
        refs.append((d, r))
        prompts.append(text)
        sizes.append([resize.model_size(w, h) for w, h in record.image_sizes])
    if dropped:
        logger.warning("dropped %d record(s) whose prompt is longer than max_prompt_tokens=%d", dropped, max_prompt_tokens)
    if not refs:
        raise ValueError(
            f"no records left in {list(dirs)} after filtering ({dropped} longer than max_prompt_tokens="
            f"{max_prompt_tokens}); raise max_prompt_tokens or lower max_pixels"
        )
    return RowSet(datasets, refs, prompts, sizes, box_frame, dropped, open_think=opens_think(processor))
