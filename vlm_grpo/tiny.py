"""Build a tiny, offline checkpoint of a model family (Qwen2.5-VL by default): real architecture, random weights.

The folder written by :func:`build_tiny` looks like a real checkpoint of the
family (``config.json``, ``model.safetensors``, ``tokenizer.json``,
``preprocessor_config.json``, ``chat_template.jinja`` ...), so every command of
the project loads it through the same code path as ``Qwen/Qwen2.5-VL-3B-Instruct``
or ``Qwen/Qwen3-VL-4B-Instruct``. What is family-specific (the config, the model
and processor classes, the chat template, the image processor's patch size) comes
from the family's record (:mod:`vlm_grpo.families`).

What differs from the published model, on purpose:
- the tokenizer is a byte-level BPE trained here on a small generated corpus
  (same pre-tokenizer as Qwen2: digits are split one per token), with Qwen2.5-VL's
  special tokens appended at the end of the vocabulary; the config's token ids
  are read back from the tokenizer, never hard-coded;
- the sizes are those of :class:`TinySpec` (a few hundred thousand parameters
  by default), with a fixed seed, so two builds give identical weights;
- the image processor's ``min_pixels`` / ``max_pixels`` default to small values
  (56x56 .. 224x224) so that an image is 4 to 64 tokens (28 px tokens; Qwen3-VL's
  32 px tokens: 3 to 49).
"""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import torch

from vlm_grpo.families import QWEN2_CHAT_TEMPLATE, QWEN_SPECIAL_TOKENS, Family, get_family

# Qwen2.5-VL's special tokens, in the order the released tokenizer has them (each family's: Family.special_tokens).
SPECIAL_TOKENS = QWEN_SPECIAL_TOKENS

# Qwen2's pre-tokenisation regex: contractions, letters, single digits, punctuation runs, spaces.
PRETOKENIZE_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)

# The Qwen2.5-VL chat template (kept under its old name; each family's own is ``Family.chat_template``).
CHAT_TEMPLATE = QWEN2_CHAT_TEMPLATE

DEFAULT_FAMILY = "qwen2_5_vl"


@dataclasses.dataclass(frozen=True)
class TinySpec:
    """Sizes of the tiny model. The defaults give ~0.5M parameters and build in seconds.

    ``text_heads`` must divide ``text_hidden`` and the head dim must be a multiple of 16
    (M-RoPE splits half of it into temporal/height/width sections of 1/4, 3/8, 3/8).
    """

    vocab_size: int = 1024  # BPE merges + byte alphabet, before the special tokens
    text_hidden: int = 64
    text_layers: int = 2
    text_heads: int = 4
    text_kv_heads: int = 2
    text_intermediate: int = 128
    vision_hidden: int = 64
    vision_depth: int = 2
    vision_heads: int = 4
    vision_intermediate: int = 128
    min_pixels: int = 56 * 56
    max_pixels: int = 224 * 224
    seed: int = 0

    def __post_init__(self) -> None:
        from data_prep.model_limits import MAX_PROCESSOR_PIXELS, TOKEN_PIXELS

        # The tiny model is for offline tests and demos, built and held in memory on a CPU in seconds.
        for name, low, high in (("text_hidden", 16, 4096), ("text_layers", 1, 64), ("vision_hidden", 16, 4096),
                                ("vision_depth", 1, 64), ("min_pixels", TOKEN_PIXELS, MAX_PROCESSOR_PIXELS),
                                ("max_pixels", TOKEN_PIXELS, MAX_PROCESSOR_PIXELS)):
            value = getattr(self, name)
            if not low <= value <= high:
                raise ValueError(
                    f"{name} must be {low}..{high} (the tiny model is built in memory for offline tests and demos; "
                    f"pixels: one image token to Qwen2.5-VL's own max_pixels), got {value}"
                )
        if not 0 <= self.seed < 2**63:
            raise ValueError(f"seed must be 0..2**63-1 (torch.manual_seed takes a 64-bit integer), got {self.seed}")
        if self.min_pixels > self.max_pixels:
            raise ValueError(f"min_pixels {self.min_pixels} is larger than max_pixels {self.max_pixels}")
        head_dim, rem = divmod(self.text_hidden, self.text_heads)
        if rem or head_dim % 16:
            raise ValueError(
                f"text_hidden={self.text_hidden} / text_heads={self.text_heads} must give a head "
                "dimension that is a multiple of 16 (M-RoPE sections); change one of them"
            )
        if self.vision_hidden % self.vision_heads:
            raise ValueError("vision_hidden must be divisible by vision_heads")


def _corpus(seed: int, lines: int = 4000) -> list[str]:
    """A small deterministic corpus in the shape of the prompts and answers the project uses."""
    rng = random.Random(seed)
    words = (
        "the a of in on to is what where how many which find locate point region image picture "
        "shape shapes circle square triangle red green blue yellow purple orange black white left "
        "right top bottom middle center small large big man woman person dog cat car with shirt "
        "answer think first then so therefore output box bounding coordinates format json number "
        "count total sum equals question please provide describe sentence this that there are "
        "x y value solve compute angle length area triangle option choose correct"
    ).split()
    out = []
    for _ in range(lines):
        sentence = " ".join(rng.choice(words) for _ in range(rng.randint(3, 12)))
        box = [rng.randint(0, 999) for _ in range(4)]
        out.append(
            f"<think>{sentence}.</think><answer>[{box[0]}, {box[1]}, {box[2]}, {box[3]}]</answer>"
        )
        out.append(f'{{"bbox_2d": [{box[0]}, {box[1]}, {box[2]}, {box[3]}], "label": "{rng.choice(words)}"}}')
        out.append(sentence.capitalize() + "? " + str(rng.randint(0, 100)) + " + " + str(rng.randint(0, 100)))
    out.append("You are a helpful assistant. system user assistant")
    return out


def _family(family: str | Family) -> Family:
    return family if isinstance(family, Family) else get_family(family)


def build_tokenizer(spec: TinySpec = TinySpec(), family: str | Family = DEFAULT_FAMILY, template: str | None = None):
    """Train a byte-level BPE (Qwen2 pre-tokenizer) and wrap it as a ``Qwen2Tokenizer`` with the family's chat
    template (``template``: a named flavour, :meth:`Family.template`) and special tokens (``Family.special_tokens``)."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import AddedToken, Qwen2Tokenizer

    bpe = Tokenizer(models.BPE())
    bpe.normalizer = normalizers.NFC()
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=spec.vocab_size,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(_corpus(spec.seed), trainer=trainer)
    state = bpe.model.__getstate__()
    import json

    model_state = json.loads(state)
    vocab = model_state["vocab"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model_state["merges"]]
    tokenizer = Qwen2Tokenizer(
        vocab=vocab,
        merges=merges,
        unk_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        errors="replace",
        model_max_length=32768,
    )
    family = _family(family)
    tokenizer.add_tokens([AddedToken(t, special=True, normalized=False) for t in family.special_tokens],
                         special_tokens=True)
    tokenizer.chat_template = family.template(template)
    return tokenizer


def build_config(tokenizer, spec: TinySpec = TinySpec(), family: str | Family = DEFAULT_FAMILY):
    """The family's config (``Family.tiny_config``) of the tiny sizes, token ids read from ``tokenizer``."""
    family = _family(family)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in family.special_tokens}
    return family.tiny_config(ids, spec, len(tokenizer))


def build_processor(tokenizer, spec: TinySpec = TinySpec(), family: str | Family = DEFAULT_FAMILY):
    """The family's processor with the PIL image processor (no torchvision needed), with the tokenizer's chat
    template."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    from vlm_grpo.processing import build_image_only

    family = _family(family)
    image_processor = Qwen2VLImageProcessorPil(min_pixels=spec.min_pixels, max_pixels=spec.max_pixels,
                                               **family.image_processor_kwargs)
    return build_image_only(family.transformers_class("processor"), image_processor, tokenizer,
                            tokenizer.chat_template or family.chat_template)


def build_tiny(output: str | Path | None = None, spec: TinySpec = TinySpec(), family: str | Family = DEFAULT_FAMILY,
               template: str | None = None):
    """Build the tiny model and processor of ``family`` (default Qwen2.5-VL); save them to ``output`` when given.

    ``template`` names one of the family's chat template flavours (Qwen3.5: ``think``, ``nothink``); ``None``,
    its default.

    Returns ``(model, processor)``. Deterministic: the same ``spec`` gives the same
    tokenizer and bit-identical weights.
    """
    from transformers import GenerationConfig

    family = _family(family)
    tokenizer = build_tokenizer(spec, family, template)
    config = build_config(tokenizer, spec, family)
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(spec.seed)
    try:
        model = family.transformers_class("model")(config).eval()
    finally:
        torch.random.set_rng_state(generator_state)
    model.generation_config = GenerationConfig(
        bos_token_id=config.text_config.bos_token_id,
        eos_token_id=[config.text_config.eos_token_id, config.text_config.bos_token_id],
        pad_token_id=config.text_config.pad_token_id,
        do_sample=True,
        temperature=1.0,
        top_k=0,
        top_p=1.0,
    )
    processor = build_processor(tokenizer, spec, family)
    if output is not None:
        from vlm_grpo.files import save_pretrained_atomically

        save_pretrained_atomically(output, model, processor)  # `tiny --overwrite` killed: old files stay whole
    return model, processor
