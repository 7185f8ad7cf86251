"""Seeded generators of malformed `vlm-grpo prep` inputs (issue #10, slow tier).

Each ``make_*(rng, case_dir, shared)`` writes one input under ``case_dir`` and returns the
prep argv (without ``--output``) and the file names an error message may name. Inputs start
from valid records and get 1-3 mutations: a field replaced by a hostile JSON value
(:data:`EVIL`), the file's bytes truncated, flipped or padded with junk, lines duplicated
(duplicate ids), or the whole file replaced (empty, BOM, UTF-16, random bytes). ``shared``
holds the images the JSON sources point at (good ones and bad ones). Every generator is a
pure function of ``rng``: the same seed gives the same input.
"""

from __future__ import annotations

import functools
import io
import json
import random
import struct
import zlib
from collections import Counter
from pathlib import Path
from typing import Any

from PIL import Image

HOLE = "@@EVIL@@"

#: Hostile JSON values (as JSON text, so NaN, 400-digit integers and deep nesting survive).
EVIL: list[str] = [
    "null", "true", "false", "0", "-1", "3.5", "1e308", "-1e308", "1e999", "NaN", "Infinity", "-Infinity",
    "1" + "0" * 400, "-" + "9" * 5000, '""', '"   "', '"\\ud800"', '"\\udcff.png"', '"\\u0000"', '"a\\u0000b.png"',
    '"\\u202etxt.gnp"', '"<image>"', "[]", "{}", "[1, 2, 3]", "[NaN, 0, 5, 5]", "[0, 0, 1e308, 1e308]",
    "[-5, -5, -1, -1]", "[10, 10, 5, 5]", "[1, 1, 2, 2]", "[1, 1, 33, 33]", '[true, 1, 5, 5]', '["1", 1, 5, 5]',
    '"' + "x" * 100_000 + '"', "[" * 5000 + "]" * 5000, '{"a": ' * 3000 + "1" + "}" * 3000,
    '{"bbox_2d": [1, 1, 9, 9]}', '[{"bbox_2d": [1, 1, 9, 9]}]', '"<answer>[1, 1, 9, 9]</answer>"',
    '"[1, 1, 1e308, 5]"', '"[NaN, 1, 5, 5]"', '"[1, 1, 5]"', '"<answer></answer>"', '"(B)"', '"b"', '"3"', '"-3"',
    '"' + "9" * 5000 + '"', '"NaN"', '"inf"', '"ok.png"', '"ok.jpg"', '"missing.png"', '"../ok.png"', '"/etc/hostname"',
    '"/dev/zero"', '"."', '"bad.jpg"', '"empty.png"', '"cut.jpg"', '"cut.png"', '["ok.png", 3]', '["ok.png", "ok.jpg"]',
    '"How many shapes?"', '"A. x B. y"', '"math"', '"iou"', '"count"', '"mcq"', '"unknown_method"', '{"from": "gpt"}',
    '[{"from": "human"}]', '[{"from": "gpt", "value": "3"}, {"from": "human", "value": "q"}]',
]

JUNK = [b"\x00", b"\xff", b"\xc3", b"\xed\xa0\x80", b'"', b"{", b"}", b"[", b"]", b",", b"\n", b"\\", b"\\u",
        b"NaN", b"1e999", b"\r", b"\xef\xbb\xbf", b":", b"\t"]


# --- shared images ------------------------------------------------------------------------


def encode(image: Image.Image, fmt: str, **params: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def png_with_size(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width x height`` (CRC fixed) but holds 1 pixel of data:
    a decompression bomb that costs nothing to write."""
    data = bytearray(encode(Image.new("RGB", (1, 1), (9, 9, 9)), "PNG"))
    ihdr = 8 + 8  # signature, then length + type of the IHDR chunk
    data[ihdr : ihdr + 8] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[12 : ihdr + 13]))
    data[ihdr + 13 : ihdr + 17] = struct.pack(">I", crc)
    return bytes(data)


def write_shared(root: Path) -> Path:
    """The images the JSON sources may name: good, empty, text, truncated."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "ok.png").write_bytes(encode(Image.new("RGB", (32, 32), (200, 30, 30)), "PNG"))
    (root / "ok.jpg").write_bytes(encode(Image.new("RGB", (32, 32), (30, 30, 200)), "JPEG"))
    (root / "empty.png").write_bytes(b"")
    (root / "bad.jpg").write_text("this is a text file named .jpg\n")
    (root / "cut.jpg").write_bytes(encode(Image.new("RGB", (64, 64), (1, 2, 3)), "JPEG")[:300])
    (root / "cut.png").write_bytes(encode(Image.effect_noise((64, 64), 50).convert("RGB"), "PNG")[:500])
    return root


# --- text-level mutations -----------------------------------------------------------------


def mutate_bytes(rng: random.Random, data: bytes) -> bytes:
    """One byte-level mutation of a whole file."""
    kind = rng.choice(["truncate", "flip", "insert", "delete", "duplicate", "replace"])
    if kind == "truncate":
        return data[: rng.randrange(len(data) + 1)]
    if kind == "flip" and data:
        out = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            out[rng.randrange(len(out))] = rng.randrange(256)
        return bytes(out)
    if kind == "insert":
        at = rng.randrange(len(data) + 1)
        return data[:at] + b"".join(rng.choice(JUNK) for _ in range(rng.randint(1, 4))) + data[at:]
    if kind == "delete" and data:
        start = rng.randrange(len(data))
        return data[:start] + data[start + rng.randint(1, 40) :]
    if kind == "duplicate":
        lines = data.splitlines(keepends=True) or [b""]
        line = rng.choice(lines)
        return data + (b"" if data.endswith(b"\n") else b"\n") + line
    return rng.choice([
        b"", b"\n\n  \n", b"\xef\xbb\xbf" + data, data.decode("utf-8", "replace").encode("utf-16"),
        rng.randbytes(rng.randrange(300)), b"[" * 100_000, b"null", b"{}", b"[]",
    ])


def fill_hole(text: str, rng: random.Random) -> str:
    return text.replace(json.dumps(HOLE), rng.choice(EVIL), 1)


def mutate_object(rng: random.Random, obj: Any, paths: list[tuple]) -> str:
    """The object as JSON text with the value at one of ``paths`` replaced by (or a key dropped for) a hostile one."""
    obj = json.loads(json.dumps(obj))
    path = rng.choice(paths)
    parent = obj
    for key in path[:-1]:
        try:
            parent = parent[key]
        except (KeyError, IndexError, TypeError):
            return json.dumps(obj)
    last = path[-1]
    if isinstance(parent, dict) and rng.random() < 0.15:
        parent.pop(last, None)
        return json.dumps(obj)
    try:
        parent[last] = HOLE
    except (IndexError, TypeError):
        return json.dumps(obj)
    return fill_hole(json.dumps(obj), rng)


# --- vlm-r1 JSONL and rec-json ------------------------------------------------------------


def vlm_records(rng: random.Random) -> list[dict[str, Any]]:
    def line(rid, image, question, answer, method=None):
        row = {"id": rid, "conversations": [{"from": "human", "value": question}, {"from": "gpt", "value": answer}]}
        if image is not None:
            row["image"] = image
        if method:
            row["accu_reward_method"] = method
        return row

    templates = [
        lambda r: line(r, "ok.png", "<image>Please provide the bounding box coordinate of the region this sentence "
                                    "describes: the red square.", "<answer>[1, 1, 10, 10]</answer>"),
        lambda r: line(r, "ok.jpg", "<image>What is 2+1?", "<answer>3</answer>", "math"),
        lambda r: line(r, "ok.png", "<image>How many shapes are there?", "2", "count"),
        lambda r: line(r, ["ok.png", "ok.jpg"], "<image><image>Which is red? A. left B. right", "(A)", "mcq"),
        lambda r: line(r, None, "What colour is the sky?", "blue", "open"),
    ]
    return [rng.choice(templates)(f"r{k}") for k in range(rng.randint(1, 4))]


VLM_PATHS = [("id",), ("image",), ("conversations",), ("conversations", 0), ("conversations", 0, "value"),
             ("conversations", 0, "from"), ("conversations", 1), ("conversations", 1, "value"),
             ("accu_reward_method",), ("extra",)]
REC_PATHS = [("image",), ("problem",), ("normal_caption",), ("solution",), ("normalized_solution",), ("width",),
             ("height",), ("id",), ("image_id",)]


def _json_mutations(rng: random.Random, objects: list[Any], paths: list[tuple]) -> list[str]:
    texts = [json.dumps(obj) for obj in objects]
    for k in rng.sample(range(len(texts)), min(len(texts), rng.randint(0, 2))):
        texts[k] = mutate_object(rng, objects[k], paths)
    return texts


def make_vlm_r1(rng: random.Random, case: Path, shared: Path) -> tuple[list[str], list[str]]:
    case.mkdir(parents=True)
    data = ("\n".join(_json_mutations(rng, vlm_records(rng), VLM_PATHS)) + "\n").encode("utf-8", "surrogatepass")
    for _ in range(rng.choice([0, 0, 1, 1, 2])):
        data = mutate_bytes(rng, data)
    (case / "d.jsonl").write_bytes(data)
    return ["--format", "vlm-r1", "--input", str(case / "d.jsonl"), "--image-root", str(shared)], ["d.jsonl"]


def make_rec_json(rng: random.Random, case: Path, shared: Path) -> tuple[list[str], list[str]]:
    case.mkdir(parents=True)
    objects = []
    for k in range(rng.randint(1, 4)):
        box = [1 + k, 2, 20, 25]
        objects.append({"image": rng.choice(["ok.png", "ok.jpg"]), "problem": f"thing {k}", "solution": box,
                        "normalized_solution": [round(v * 1000 / 32) for v in box], "width": 32, "height": 32,
                        "image_id": 100 + k, "ann_id": 7})
    texts = _json_mutations(rng, objects, REC_PATHS)
    data = ("[\n" + ",\n".join(texts) + "\n]\n").encode("utf-8", "surrogatepass")
    for _ in range(rng.choice([0, 0, 1, 1, 2])):
        data = mutate_bytes(rng, data)
    (case / "refs.json").write_bytes(data)
    return ["--format", "rec-json", "--input", str(case / "refs.json"), "--image-root", str(shared)], ["refs.json"]


# --- images -------------------------------------------------------------------------------

_MODES = ["1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "I;16", "I", "F", "YCbCr", "LAB", "HSV", "PA"]
_FORMATS = ["PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP", "PPM", "TGA", "ICO", "EPS", "PDF", "IM", "SGI"]
_EXT = {"JPEG": "jpg", "TIFF": "tif", "EPS": "eps", "PDF": "pdf"}


def _in_mode(base: Image.Image, mode: str) -> Image.Image:
    if mode == "I;16":
        return base.convert("L").convert("I;16")
    if mode == "PA":
        return base.convert("P").convert("PA")
    return base.convert(mode)


@functools.cache
def encodable_pairs() -> tuple[tuple[str, str], ...]:
    """The (mode, format) pairs of :data:`_MODES` x :data:`_FORMATS` that Pillow writes (98 of the 182
    with Pillow 11: no format stores every mode). The image fuzzer draws from these only, so every
    image it claims to have made in a mode and format was made in that mode and format."""
    pairs = []
    for mode in _MODES:
        for fmt in _FORMATS:
            try:
                encode(_in_mode(Image.new("RGB", (3, 2), (10, 200, 30)), mode), fmt)
            except (OSError, ValueError, KeyError, TypeError):
                continue
            pairs.append((mode, fmt))
    return tuple(pairs)


def random_image(rng: random.Random) -> tuple[bytes, str, tuple[str, str]]:
    """Encoded bytes of a small image in a random writable (mode, format) pair, the format's usual
    extension, and the pair (no silent fallback: an encoder failure raises)."""
    size = (rng.randint(1, 48), rng.randint(1, 48))
    mode, fmt = rng.choice(encodable_pairs())
    base = Image.effect_noise(size, rng.uniform(5, 80)).convert("RGB") if rng.random() < 0.5 else \
        Image.new("RGB", size, tuple(rng.randrange(256) for _ in range(3)))
    return encode(_in_mode(base, mode), fmt), _EXT.get(fmt, fmt.lower()), (mode, fmt)


def make_image_case(rng: random.Random, case: Path, shared: Path, tally: Counter | None = None
                    ) -> tuple[list[str], list[str]]:
    """One image input; ``tally`` counts the (mode, format) pair encoded and what happened to its bytes."""
    case.mkdir(parents=True)
    data, ext, pair = random_image(rng)
    roll = rng.random()
    if roll < 0.35:
        data, damage = mutate_bytes(rng, data), "bytes mutated"
    elif roll < 0.40:
        data, damage = png_with_size(rng.choice([16_000, 20_000, 60_000]), rng.choice([12_000, 16_000, 60_000])), "bomb"
    elif roll < 0.45:
        data, damage = rng.choice([b"", b"not an image\n", "é".encode("latin-1") * 40, rng.randbytes(64)]), "not an image"
    else:
        damage = "intact"
    if rng.random() < 0.2:
        ext = rng.choice(["jpg", "png", "gif", "txt", ""])
    if tally is not None:
        tally[pair] += 1
        tally[damage] += 1
    name = f"img.{ext}" if ext else "img"
    (case / name).write_bytes(data)
    line = {"id": "i0", "image": name, "accu_reward_method": "iou",
            "conversations": [{"from": "human", "value": "<image>the thing"}, {"from": "gpt", "value": "[0, 0, 1, 1]"}]}
    (case / "d.jsonl").write_text(json.dumps(line) + "\n")
    return ["--format", "vlm-r1", "--input", str(case / "d.jsonl")], ["d.jsonl", name]


# --- parquet and hf-disk tables -----------------------------------------------------------


def _column(rng: random.Random, role: str, n: int, shared: Path) -> tuple[str, list[Any]] | None:
    """A random (kind, values) column for ``role``; None drops the column."""
    png = (shared / "ok.png").read_bytes()
    kinds = {
        "image": {
            "binary": [png, png[:200], b"", b"text", None, (shared / "cut.jpg").read_bytes()],
            "string": ["ok.png", "missing.png", "../ok.png", "/etc/hostname", "", None, "bad.jpg", "a\x00b.png"],
            "struct": [{"bytes": png, "path": None}, {"bytes": None, "path": "ok.png"}, {"bytes": None, "path": None},
                       {"bytes": b"junk", "path": "x.png"}, None, {"bytes": None, "path": "../ok.png"}],
            "struct_str": [{"bytes": "not bytes", "path": None}, {"bytes": "", "path": "ok.png"}],
            "int": [1, 0, -1, None],
            "list": [[png, png], [], [b"x"], None, [png]],
        },
        "question": {"string": ["What is 2+1?", "How many shapes?", "", "x" * 100_000, None, "A. x B. y Which?",
                                "the red square"],
                     "int": [1, None]},
        "answer": {"string": ["3", "[1, 1, 9, 9]", "<answer>(B)</answer>", "", "NaN", "9" * 5000, None, "red",
                              "[1, 1, 99, 9]", "<answer>2</answer>"],
                   "float": [float("nan"), float("inf"), float("-inf"), 1e308, 3.0, -1.0, 2.5, None],
                   "int": [2**63 - 1, -(2**63), -3, 0, 4, None],
                   "list": [[1.0, 1.0, 9.0, 9.0], [float("nan"), 1.0, 9.0, 9.0], [1.0], [], None, [1e308, 0, 1, 1]],
                   "bool": [True, False, None]},
        "id": {"int": [None, 1, 2, 2], "string": [None, "a", "a", "", "b\nc", "x" * 1000]},
        "task": {"string": ["math", "rec", "count", "mcq", "open", "iou", "mystery", "", None]},
        "extra": {"float": [1.5, float("nan"), float("inf"), None], "string": ["meta", "x" * 600, None]},
    }[role]
    if role in ("task", "extra") and rng.random() < 0.6:
        return None
    if role not in ("image", "question", "answer") and rng.random() < 0.2:
        return None
    # The first kind and the first value of each kind are valid: favour them, so that about
    # half of the tables pack and the packed path is exercised too.
    names = list(kinds)
    kind = names[0] if rng.random() < 0.6 else rng.choice(names)
    values = kinds[kind]
    return kind, [values[0] if rng.random() < 0.7 else rng.choice(values) for _ in range(n)]


def random_table(rng: random.Random, shared: Path):
    import pyarrow as pa

    n = rng.randint(1, 4)
    columns = {}
    for role, name in (("image", "image"), ("question", "question"), ("answer", "answer"), ("id", "id"),
                       ("task", "kind"), ("extra", "score")):
        made = _column(rng, role, n, shared)
        if made is not None and not (role in ("image", "question", "answer") and rng.random() < 0.03):
            columns[name] = made[1]
    try:
        return pa.table(columns), ("--task-column", "kind") if "kind" in columns else ()
    except (pa.ArrowException, TypeError, ValueError, OverflowError):
        return pa.table({"image": [(shared / "ok.png").read_bytes()], "question": ["q"], "answer": ["3"]}), ()


def make_parquet(rng: random.Random, case: Path, shared: Path) -> tuple[list[str], list[str]]:
    import pyarrow.parquet as pq

    case.mkdir(parents=True)
    table, extra = random_table(rng, shared)
    path = case / "t.parquet"
    pq.write_table(table, path)
    if rng.random() < 0.15:
        path.write_bytes(mutate_bytes(rng, path.read_bytes()))
    return ["--format", "parquet", "--input", str(path), "--image-root", str(shared), *extra], ["t.parquet"]


def make_hf_disk(rng: random.Random, case: Path, shared: Path) -> tuple[list[str], list[str]]:
    import datasets

    case.mkdir(parents=True)
    table, extra = random_table(rng, shared)
    target = case / "hf"
    datasets.Dataset(table).save_to_disk(str(target))
    if rng.random() < 0.15:
        files = sorted(p for p in target.iterdir() if p.is_file())
        victim = rng.choice(files)
        if rng.random() < 0.3:
            victim.unlink()
        else:
            victim.write_bytes(mutate_bytes(rng, victim.read_bytes()))
    return ["--format", "hf-disk", "--input", str(target), "--image-root", str(shared), *extra], ["hf"]


MAKERS = {
    "vlm-r1": make_vlm_r1,
    "rec-json": make_rec_json,
    "parquet": make_parquet,
    "hf-disk": make_hf_disk,
    "images": make_image_case,
}


# --- issue #16: special tokens in text fields, output paths, model folders ------------------

#: Near misses of the chat template's special tokens: text, not tokens (must pack unchanged).
NEAR_TOKENS = ["<|image|>", "<|im_start", "im_end|>", "< |im_end|>", "<|IMAGE_PAD|>", "<image_pad>", "<|>", "<||>",
               "|vision_start|", "<|endoftext |>"]


def with_token(rng: random.Random, text: str, tokens: list[str]) -> str:
    """``text`` with 1-3 tokens (special or near misses) inserted at random places."""
    for _ in range(rng.randint(1, 3)):
        at = rng.randrange(len(text) + 1)
        text = text[:at] + rng.choice(tokens) + text[at:]
    return text


def make_special_tokens(rng: random.Random, case: Path, shared: Path) -> tuple[list[str], list[str]]:
    """A vlm-r1, rec-json or Parquet source whose questions and answers may hold chat-template tokens."""
    from data_prep.model_limits import TEMPLATE_SPECIAL_TOKENS

    case.mkdir(parents=True)
    tokens = list(TEMPLATE_SPECIAL_TOKENS) + NEAR_TOKENS
    questions = ["<image>What is 2+1?", "<image>the red square", "How many shapes?", "<image>Which? A. x B. y"]
    answers = ["3", "[1, 1, 9, 9]", "2", "(B)", "red"]
    rows = []
    for k in range(rng.randint(1, 4)):
        question, answer = rng.choice(questions), rng.choice(answers)
        if rng.random() < 0.6:
            question = with_token(rng, question, tokens)
        if rng.random() < 0.3:
            answer = with_token(rng, answer, tokens)
        rows.append((f"r{k}", question, answer))
    fmt = rng.choice(["vlm-r1", "rec-json", "parquet"])
    if fmt == "vlm-r1":
        lines = [json.dumps({"id": rid, "image": "ok.png", "conversations": [{"from": "human", "value": q},
                                                                           {"from": "gpt", "value": a}]})
                 for rid, q, a in rows]
        (case / "d.jsonl").write_text("\n".join(lines) + "\n")
        return ["--format", "vlm-r1", "--input", str(case / "d.jsonl"), "--image-root", str(shared)], ["d.jsonl"]
    if fmt == "rec-json":
        items = [{"id": rid, "image": "ok.png", "problem": q, "solution": [1, 1, 9, 9]} for rid, q, _ in rows]
        (case / "refs.json").write_text(json.dumps(items, indent=1))
        return ["--format", "rec-json", "--input", str(case / "refs.json"), "--image-root", str(shared)], ["refs.json"]
    import pyarrow as pa
    import pyarrow.parquet as pq

    png = (shared / "ok.png").read_bytes()
    pq.write_table(pa.table({"id": [r[0] for r in rows], "image": [png] * len(rows), "question": [r[1] for r in rows],
                             "answer": [r[2] for r in rows]}), case / "t.parquet")
    return ["--format", "parquet", "--input", str(case / "t.parquet")], ["t.parquet"]


#: Path segments an output path is built from: plain, long, odd characters, and (by name) traps.
_SEGMENTS = ["out", "a b", "ünï", "x" * 200, "y" * 255, "z" * 256, "w" * 300, "dot.", ".hidden", "new\nline", "tab\t",
             "FILE", "LINK_TO_FILE", "LOOP", "..", "."]


def make_output_path(rng: random.Random, case: Path) -> Path:
    """An output path under ``case`` of 1-4 random segments; ``FILE`` is a regular file there,
    ``LINK_TO_FILE`` a symlink to one, ``LOOP`` a symlink to itself."""
    case.mkdir(parents=True)
    (case / "FILE").write_text("a regular file\n")
    (case / "LINK_TO_FILE").symlink_to(case / "FILE")
    (case / "LOOP").symlink_to(case / "LOOP")
    path = case
    for _ in range(rng.randint(1, 4)):
        path = path / rng.choice(_SEGMENTS)
    return path


_JSON_VALUES = [None, True, 0, -1, 3.5, 1e308, "", "x", [], {}, [1, 2, 3], {"a": 1}]
_PROCESSOR_KEYS = {"tokenizer_config.json": ["eos_token", "pad_token", "tokenizer_class", "chat_template"],
                   "preprocessor_config.json": ["patch_size", "merge_size", "size", "image_processor_type"],
                   "processor_config.json": ["image_processor", "processor_class"]}


def damage_model_folder(rng: random.Random, folder: Path) -> list[str]:
    """1-3 file-level damages to a checkpoint folder (and some processor-config values); returns what was done."""
    done = []
    for _ in range(rng.randint(1, 3)):
        files = sorted(p for p in folder.iterdir() if p.is_file())
        if not files:
            break
        victim = rng.choice(files)
        data = victim.read_bytes()
        kind = rng.choice(["delete", "truncate", "empty", "garbage", "folder", "flip", "json value"])
        if kind == "delete":
            victim.unlink()
        elif kind == "truncate":
            victim.write_bytes(data[: rng.randrange(len(data) + 1)])
        elif kind == "empty":
            victim.write_bytes(b"")
        elif kind == "garbage":
            victim.write_bytes(rng.randbytes(rng.randrange(1, 200)))
        elif kind == "folder":
            victim.unlink()
            victim.mkdir()
        elif kind == "flip" and data:
            out = bytearray(data)
            for _ in range(rng.randint(1, 4)):
                out[rng.randrange(min(len(out), 64))] = rng.randrange(256)  # the header, where it matters
            victim.write_bytes(bytes(out))
        elif kind == "json value" and victim.name in _PROCESSOR_KEYS:
            obj = json.loads(data)
            obj[rng.choice(_PROCESSOR_KEYS[victim.name])] = rng.choice(_JSON_VALUES)
            victim.write_text(json.dumps(obj))
        done.append(f"{kind} {victim.name}")
    return done
