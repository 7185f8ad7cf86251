"""Run the doctest examples in the rewards package (the documented behaviour)."""

import doctest
import importlib
import pkgutil

import pytest

import rewards

MODULES = sorted(m.name for m in pkgutil.walk_packages(rewards.__path__, "rewards."))


@pytest.mark.parametrize("name", MODULES)
def test_doctests(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
