"""Dataset and checkpoint sandboxing (issue #10): nothing is read, unpickled or run that was not asked for.

`tests/test_prep_packed.py` checks `load_packed` itself on `../`, absolute and symlinked
image paths. Here the same attacks go through the consumers (`vlm_grpo.data.build_rows`,
which training and `vlm-grpo eval` use): each is refused at load time naming the record id,
before any model is loaded. Then the things that would *run* code: a pickle in a packed
dataset (never unpickled: images decode as PNG or JPEG only), a checkpoint folder with
remote code in `auto_map` (not imported unless `trust_remote_code=True`), a crafted
`rng_state.pth` on resume (refused by `torch.load(weights_only=True)`), and a scan of the
project's own sources for unsafe loaders.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import pickle
import shutil
from pathlib import Path

import pytest
from PIL import Image
from prep_helpers import rec_record, write_dataset

from data_prep.packed import PrepError, load_packed

REPO = Path(__file__).resolve().parents[1]


class _Touch:
    """Unpickling this creates ``path``: the canary for "something was unpickled"."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def _ok_image() -> Image.Image:
    return Image.new("RGB", (32, 24), (5, 6, 7))


def _escaping(tmp: Path, how: str) -> Path:
    """A packed dataset (valid checksum) whose record 'evil' names an image outside it."""
    secret = tmp / "secret.png"
    _ok_image().save(secret)
    image = {"parent": "../secret.png", "absolute": str(secret), "backslash": "images\\..\\..\\secret.png",
             "drive": "C:/secret.png", "symlink": "images/link.png", "dir symlink": "pics/secret.png",
             "device symlink": "images/zero.png"}[how]
    ds = write_dataset(tmp / "ds", [rec_record("fine", image="images/a.png"), rec_record("evil", image=image)],
                       {"images/a.png": _ok_image()})
    if how == "symlink":
        os.symlink(secret, ds / "images" / "link.png")
    if how == "dir symlink":
        os.symlink(tmp, ds / "pics")
    if how == "device symlink":
        os.symlink("/dev/zero", ds / "images" / "zero.png")
    return ds


ESCAPES = ["parent", "absolute", "backslash", "drive", "symlink", "dir symlink", "device symlink"]


@pytest.mark.parametrize("how", ESCAPES)
def test_escaping_image_is_refused_where_training_and_eval_load_data(tmp_path, how):
    from vlm_grpo.data import build_rows

    ds = _escaping(tmp_path, how)
    with pytest.raises(PrepError, match=r"records\.jsonl:2: record 'evil': image path .*") as info:
        build_rows([str(ds)], processor=None, box_frame="model_pixels")  # fails in load_packed, first
    assert info.value.reason == "unsafe_path"


@pytest.mark.parametrize(
    "rel, message",
    [  # found by the slow tier: these raised ValueError / OSError out of load_packed
        ("images/a.png\x00../../secret.png", "contains a NUL character"),
        ("images/" + "x" * 5000 + ".png", "is missing"),
        ("images/loop.png", "cannot be resolved"),
    ],
    ids=["NUL", "name too long", "symlink loop"],
)
def test_odd_image_paths_are_clean_errors(tmp_path, rel, message):
    root = tmp_path / "ds"
    (root / "images").mkdir(parents=True)
    os.symlink("loop.png", root / "images" / "loop.png")
    _write_record(root, rel)
    with pytest.raises(PrepError, match=f"record 'r': .*{message}"):
        load_packed(root)


def test_eval_refuses_an_escaping_dataset_before_generating(tiny_dir, tmp_path, capsys):
    from vlm_grpo.cli import main

    ds = _escaping(tmp_path, "symlink")
    code = main(["eval", "--model", str(tiny_dir), "--data", str(ds), "--output", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert "record 'evil': image path 'images/link.png' resolves to" in err and "outside the dataset" in err
    assert not (tmp_path / "out" / "predictions.jsonl").exists()


def test_a_pickle_in_a_packed_dataset_is_never_unpickled(tmp_path):
    canary = tmp_path / "unpickled"
    payload = pickle.dumps(_Touch(canary))
    assert pickle.loads(payload) is not None and canary.exists()  # the canary works
    canary.unlink()
    ds = write_dataset(tmp_path / "ds", [rec_record("p", image="images/p.png")])
    (ds / "images" / "p.png").write_bytes(payload)
    for name in ("records.pkl", "dataset.pickle", "images/p.pt"):
        (ds / name).write_bytes(payload)
    loaded = load_packed(ds)
    with pytest.raises(PrepError, match=r"record 'p': image images/p\.png cannot be decoded as PNG or JPEG"):
        loaded.open_image(loaded.records[0])
    assert not canary.exists()


def test_packed_images_decode_as_png_or_jpeg_only(tmp_path):
    """A file named .png holding another format (EPS would start Ghostscript) is refused, not decoded."""
    ds = write_dataset(tmp_path / "ds", [rec_record("e", image="images/e.png"), rec_record("g", image="images/g.png")])
    Image.new("RGB", (32, 24)).save(ds / "images" / "e.png", format="EPS")
    Image.new("RGB", (32, 24)).save(ds / "images" / "g.png", format="GIF")
    loaded = load_packed(ds)
    for record in loaded:
        with pytest.raises(PrepError, match=f"record '{record.id}': image .* cannot be decoded as PNG or JPEG"):
            loaded.open_image(record)


def _remote_code_checkpoint(tiny_dir: Path, target: Path, canary: Path, *, model_type: str | None) -> Path:
    """A copy of the tiny checkpoint whose config names remote code that creates ``canary`` on import."""
    shutil.copytree(tiny_dir, target)
    config = json.loads((target / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "evil_code.EvilConfig", "AutoModelForImageTextToText": "evil_code.EvilModel",
                          "AutoProcessor": "evil_code.EvilProcessor"}
    if model_type:
        config["model_type"] = model_type
    (target / "config.json").write_text(json.dumps(config))
    (target / "evil_code.py").write_text(
        f"open({str(canary)!r}, 'w').close()\n"
        "from transformers import PretrainedConfig\n"
        "class EvilConfig(PretrainedConfig):\n"
        f"    model_type = {model_type or 'qwen2_5_vl'!r}\n"
    )
    return target


def test_remote_code_in_a_checkpoint_is_not_run(tiny_dir, tmp_path):
    from vlm_grpo.modeling import CheckpointError, load_config, load_model, load_processor

    canary = tmp_path / "remote_code_ran"
    known = _remote_code_checkpoint(tiny_dir, tmp_path / "known", canary, model_type=None)
    load_config(str(known))
    load_processor(str(known))
    load_model(str(known), device="cpu")
    unknown = _remote_code_checkpoint(tiny_dir, tmp_path / "unknown", canary, model_type="evil_vl")
    with pytest.raises(CheckpointError):
        load_config(str(unknown))
    assert not canary.exists()
    # The canary is real: asking for remote code does run it.
    with pytest.raises(Exception):  # noqa: B017 - what EvilConfig fails with does not matter here
        load_config(str(unknown), trust_remote_code=True)
    assert canary.exists()


def test_resume_refuses_a_crafted_rng_state(tmp_path):
    """HF Trainer restores rng_state.pth with torch.load(weights_only=True): a pickle payload is refused."""
    import types

    from transformers import Trainer

    canary = tmp_path / "unpickled"
    checkpoint = tmp_path / "checkpoint-1"
    checkpoint.mkdir()
    with open(checkpoint / "rng_state.pth", "wb") as handle:
        pickle.dump({"python": _Touch(canary)}, handle, protocol=2)
    stub = types.SimpleNamespace(args=types.SimpleNamespace(world_size=1, process_index=0))
    with pytest.raises(pickle.UnpicklingError):
        Trainer._load_rng_state(stub, str(checkpoint))
    assert not canary.exists()


UNSAFE_CALLS = {("pickle", "load"), ("pickle", "loads"), ("dill", "load"), ("dill", "loads"), ("joblib", "load"),
                ("cloudpickle", "load"), ("cloudpickle", "loads"), ("marshal", "loads"), ("shelve", "open")}


def _unsafe(call: ast.Call) -> str | None:
    func = call.func
    name = (func.value.id, func.attr) if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) else None
    keywords = {k.arg: k.value for k in call.keywords}
    if name in UNSAFE_CALLS:
        return f"{name[0]}.{name[1]}"
    if name == ("torch", "load"):
        weights_only = keywords.get("weights_only")
        if not (isinstance(weights_only, ast.Constant) and weights_only.value is True):
            return "torch.load without weights_only=True"
    for key in ("trust_remote_code", "allow_pickle"):
        value = keywords.get(key)
        if isinstance(value, ast.Constant) and value.value is True:
            return f"{key}=True"
    if isinstance(func, ast.Name) and func.id in ("eval", "exec"):
        return func.id
    return None


def test_project_sources_use_no_unsafe_loaders():
    """No unpickling, no torch.load without weights_only=True, no hard-coded trust_remote_code=True."""
    found = []
    for package in ("vlm_grpo", "rewards", "data_prep", "scripts"):
        for path in sorted((REPO / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Call) and (problem := _unsafe(node)):
                    found.append(f"{path.relative_to(REPO)}:{node.lineno}: {problem}")
    assert found == []
    # The scan is real: it flags each pattern it looks for.
    sample = "torch.load(p)\npickle.loads(b)\nf(trust_remote_code=True)\nnp.load(p, allow_pickle=True)\neval(s)"
    assert [_unsafe(n) for n in ast.walk(ast.parse(sample)) if isinstance(n, ast.Call) and _unsafe(n)] == [
        "torch.load without weights_only=True", "pickle.loads", "trust_remote_code=True", "allow_pickle=True", "eval"]


# --- slow tier: generated escape attempts ----------------------------------------------------


def _write_record(root: Path, rel: str) -> None:
    """Make ``root`` a packed dataset of one rec record naming ``rel`` (ASCII escapes: any string fits)."""
    line = (json.dumps({"id": "r", "task": "rec", "images": [rel], "image_sizes": [[32, 24]],
                        "problem": "the thing", "solution": [1, 2, 10, 12], "meta": {}}) + "\n").encode()
    (root / "records.jsonl").write_bytes(line)
    manifest = {"format_version": 1, "num_records": 1, "records_sha256": hashlib.sha256(line).hexdigest()}
    (root / "manifest.json").write_text(json.dumps(manifest))


def _attack(rng, root: Path, outside: Path) -> tuple[str, str]:
    """(kind, image path) of one escape attempt; creates the symlinks it needs under ``root``."""
    kind = rng.choice(["dots", "absolute", "windows", "look-alike", "symlink", "odd name"])
    secret = outside / "secret.png"
    if kind == "dots":
        rel = rng.choice(["../" * rng.randint(1, 12) + "secret.png", "images/../../secret.png", "./images/../a.png",
                          "images/./../../outside/secret.png", "images/..", "..", "images/a.png/../../../secret.png"])
    elif kind == "absolute":
        rel = rng.choice([str(secret), "/etc/hostname", "//etc/hostname", "/dev/zero", "/proc/self/environ", "/"])
    elif kind == "windows":
        rel = rng.choice(["images\\..\\..\\secret.png", "..\\secret.png", "C:secret.png", "c:/secret.png",
                          "\\\\server\\share\\secret.png", "C:\\Windows\\win.ini"])
    elif kind == "look-alike":
        rel = rng.choice(["．．/secret.png", "..\u200b/secret.png", "\u2024\u2024/secret.png", "%2e%2e/secret.png",
                          ". ./secret.png", "images/\u2025/secret.png", "images/a.png\x00../../secret.png"])
    elif kind == "odd name":
        rel = rng.choice(["images/" + "x" * rng.randint(200, 5000) + ".png", "a/" * rng.randint(100, 3000) + "x.png",
                          "manifest.json", "records.jsonl", "images", "images/", "", "images/\udcff.png", " "])
    else:
        name = f"l{rng.randrange(10**6)}"
        target = rng.choice([secret, outside, Path("/"), Path("/dev/zero"), Path("../../outside/secret.png"),
                             Path("a.png"), Path(name), Path("missing.png"), Path("/proc/self/environ")])
        os.symlink(target, root / "images" / name)
        if rng.random() < 0.3:  # a chain: images/m -> images/l... -> target
            os.symlink(name, root / "images" / f"m{name}")
            name = f"m{name}"
        rel = f"images/{name}" + rng.choice(["", "", "/secret.png", "/etc/hostname"])
        if rng.random() < 0.1:  # the images folder itself points outside
            shutil.rmtree(root / "images")
            os.symlink(outside, root / "images")
            rel = "images/secret.png"
    return kind, rel


def _inside(path: Path, root: Path) -> bool:
    real, base = os.path.realpath(path), os.path.realpath(root)
    return os.path.commonpath([real, base]) == base


@pytest.mark.slow
def test_fuzz_escape_attempts(tmp_path):
    import random
    import time
    from collections import Counter, defaultdict

    from reliability_figures import write_area

    n = int(os.environ.get("RELIABILITY_FUZZ_N", "1000"))
    rng, started = random.Random("sandbox"), time.perf_counter()
    outside = tmp_path / "outside"
    outside.mkdir()
    _ok_image().save(outside / "secret.png")
    results: dict[str, Counter] = defaultdict(Counter)
    tried: Counter[str] = Counter()
    escaped: Counter[str] = Counter()  # accepted paths whose real path lies outside the dataset
    broken = []
    for i in range(n):
        root = tmp_path / f"ds{i}"
        (root / "images").mkdir(parents=True)
        _ok_image().save(root / "images" / "a.png")
        kind, rel = _attack(rng, root, outside)
        tried[kind] += 1
        _write_record(root, rel)
        try:
            loaded = load_packed(root)
        except PrepError as err:
            assert "record 'r'" in str(err), str(err)
            results[kind][f"refused at load ({err.reason})"] += 1
            continue
        except Exception as exc:  # noqa: BLE001 - a traceback is a bug
            broken.append(f"#{i} {rel[:80]!r}: {type(exc).__name__}: {exc}")
            continue
        path = loaded.image_path(loaded.records[0])
        if not _inside(path, root):
            escaped[kind] += 1
            broken.append(f"#{i} {rel[:80]!r} was accepted and resolves outside: {path}")
            continue
        try:
            loaded.open_image(loaded.records[0])
            results[kind]["accepted, inside, decoded"] += 1
        except PrepError:
            results[kind]["accepted, inside, refused to decode"] += 1
    assert not broken, "\n".join(broken[:10])
    assert sum(tried.values()) == n and sum(escaped.values()) == 0
    assert all(sum(results[kind].values()) == tried[kind] for kind in tried)  # every attempt has an outcome
    assert len(tried) == 6  # every kind of attack was generated
    rows = [{"case": f"image paths: {kind}", "tried": tried[kind],
             "outcome": ", ".join(f"{k} {v}" for k, v in sorted(results[kind].items())), "escaped": escaped[kind]}
            for kind in sorted(tried)]
    write_area("sandbox_fuzz", "Dataset sandboxing: escape attempts", rows, wall_s=time.perf_counter() - started,
               command="RELIABILITY_FUZZ_N=1000 .venv/bin/python -m pytest -q -m slow tests/test_reliability_sandbox.py",
               notes=("Packed datasets whose record names a hostile image path, from `random.Random('sandbox')`: `../` "
                      "chains, absolute and Windows paths, look-alike dots, huge and odd names, symlinks (to files and "
                      "folders outside, `/`, `/dev/zero`, `/proc`, chains, loops, dangling) and an `images/` folder "
                      "that is itself a link outside. Every accepted path was checked with `os.path.realpath` to lie "
                      "inside the dataset (*escaped* counts those that did not); every refusal names the record id."))
