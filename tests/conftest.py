"""Shared fixtures: the tiny checkpoint is built once per test session."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    """A saved tiny Qwen2.5-VL checkpoint folder (default TinySpec)."""
    from vlm_grpo.tiny import build_tiny

    path = tmp_path_factory.mktemp("tiny") / "model"
    build_tiny(path)
    return path


@pytest.fixture(scope="session")
def tiny_model_and_processor(tiny_dir):
    from vlm_grpo.modeling import load_model, load_processor

    return load_model(str(tiny_dir)), load_processor(str(tiny_dir))
