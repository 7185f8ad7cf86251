"""Run the doctest examples of every package (the documented behaviour): vlm_grpo, data_prep, rewards."""

import doctest
import importlib
import pkgutil

import pytest

import data_prep
import rewards
import vlm_grpo

PACKAGES = (vlm_grpo, data_prep, rewards)
MODULES = sorted(
    name
    for package in PACKAGES
    for name in [package.__name__, *(m.name for m in pkgutil.walk_packages(package.__path__, package.__name__ + "."))]
)


def _examples(name: str) -> int:
    return sum(len(t.examples) for t in doctest.DocTestFinder().find(importlib.import_module(name)))


def test_every_package_and_module_is_collected():
    assert {"vlm_grpo.data", "data_prep.boxes", "rewards.guard", "vlm_grpo.speed.shared_prompt"} <= set(MODULES)
    for package in PACKAGES:  # each package has examples that run, not only empty docstrings
        assert sum(_examples(n) for n in MODULES if n.split(".")[0] == package.__name__) > 0, package.__name__


@pytest.mark.parametrize("name", MODULES)
def test_doctests(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
