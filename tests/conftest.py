"""Shared fixtures: the tiny checkpoint is built once per test session."""

from __future__ import annotations

import os

# Nothing is downloaded in tests: hub look-ups fail at once instead of retrying the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    """A saved tiny Qwen2.5-VL checkpoint folder (default TinySpec)."""
    from vlm_grpo.tiny import build_tiny

    path = tmp_path_factory.mktemp("tiny") / "model"
    build_tiny(path)
    return path


@pytest.fixture(scope="session")
def family_tiny_dir(tmp_path_factory, tiny_dir):
    """``family_tiny_dir(name, template=None)``: a saved tiny checkpoint of that family (default TinySpec; a named
    chat template flavour, Qwen3.5's ``think`` / ``nothink``), built once per session."""
    from vlm_grpo.tiny import DEFAULT_FAMILY, build_tiny

    built = {(DEFAULT_FAMILY, None): tiny_dir}

    def get(family: str, template: str | None = None):
        if (family, template) not in built:
            path = tmp_path_factory.mktemp(f"tiny_{family}_{template or 'default'}") / "model"
            build_tiny(path, family=family, template=template)
            built[family, template] = path
        return built[family, template]

    return get


@pytest.fixture(scope="session")
def tiny_model_and_processor(tiny_dir):
    from vlm_grpo.modeling import load_model, load_processor

    return load_model(str(tiny_dir)), load_processor(str(tiny_dir))


def _prep(output, task: str, num: int, seed: int = 0, extra: tuple[str, ...] = ()) -> None:
    from data_prep.cli import main as prep_main

    argv = ["--format", "synthetic", "--task", task, "--num", str(num), "--seed", str(seed),
            "--output", str(output), "--quiet", *extra]
    assert prep_main(argv) == 0


@pytest.fixture(scope="session")
def rec_data(tmp_path_factory):
    """A packed synthetic REC dataset (24 records, 112x112 images)."""
    path = tmp_path_factory.mktemp("data") / "rec"
    _prep(path, "rec", 24)
    return path


@pytest.fixture(scope="session")
def math_data(tmp_path_factory):
    """A packed synthetic math dataset (16 records)."""
    path = tmp_path_factory.mktemp("data") / "math"
    _prep(path, "math", 16, seed=1)
    return path


@pytest.fixture(scope="session")
def tiny_processor(tiny_dir):
    """The tiny checkpoint's processor (what build_rows and the trainer use)."""
    from vlm_grpo.modeling import load_processor

    return load_processor(str(tiny_dir))
