"""The lock file and the two ends of pyproject.toml's ranges (used by the Makefile).

    python scripts/lock.py --write requirements.lock   # exact versions of the running environment
    python scripts/lock.py --lowest                    # constraints: each direct dependency at its lower bound
    python scripts/lock.py --show-versions             # the versions that matter most, one line

``--write`` records every distribution installed in the running environment
except the project itself and torch, which the Makefile installs first and pins
on its own (``TORCH``) so that a CPU machine never pulls CUDA wheels. Run it in
a venv made from the ranges alone (``make lock`` does), then run the suite.

``--lowest`` reads the runtime and ``dev`` dependencies of pyproject.toml and
prints ``name==X`` for each ``name>=X``; dependencies without a lower bound, and
torch (see above), are left to the resolver. It needs no installed package, so
the system Python can run it before a venv exists.
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PINNED_ELSEWHERE = {"torch", "vlm-grpo"}  # the Makefile's TORCH, and the project itself
INSTALLERS = {"pip", "setuptools", "wheel"}  # the venv's own tools, upgraded by the Makefile
SHOWN = ("torch", "transformers", "trl", "accelerate", "peft", "datasets", "tokenizers", "huggingface-hub")
HEADER = """\
# The exact versions the test suite passed with: `make demo`, `make test` and CI install from this file
# (pip --constraint). torch is pinned in the Makefile (TORCH). Refresh: `make lock`, then `make test`.
"""


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def lower_bound(requirement: str) -> tuple[str, str | None]:
    """``("transformers", "5.23")`` for ``"transformers>=5.23,<6"``; the bound is None when there is none."""
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*(.*)", requirement)
    if match is None:
        raise ValueError(f"pyproject.toml: cannot read the requirement {requirement!r}")
    name, spec = match.groups()
    bound = re.search(r">=\s*([0-9][^,;\s]*)", spec)
    return canonical(name), bound.group(1) if bound else None


def direct_requirements(pyproject: Path = ROOT / "pyproject.toml") -> list[str]:
    project = tomllib.loads(pyproject.read_text())["project"]
    return list(project["dependencies"]) + list(project["optional-dependencies"].get("dev", []))


def lowest_constraints() -> list[str]:
    lines = []
    for requirement in direct_requirements():
        name, bound = lower_bound(requirement)
        if bound is not None and name not in PINNED_ELSEWHERE:
            lines.append(f"{name}=={bound}")
    return lines


def installed() -> dict[str, str]:
    return {canonical(d.metadata["Name"]): d.version for d in metadata.distributions()}


def read_lock(path: Path = ROOT / "requirements.lock") -> dict[str, str]:
    """The pinned versions of a lock file this script wrote, by canonical name."""
    pins = {}
    for line in path.read_text().splitlines():
        name, sep, version = line.partition("==")
        if sep and not line.startswith("#"):
            pins[canonical(name)] = version.strip()
    return pins


def lock_lines() -> list[str]:
    return [f"{name}=={version}" for name, version in sorted(installed().items()) if name not in PINNED_ELSEWHERE | INSTALLERS]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--write", metavar="FILE", help="write the running environment's versions as a lock file")
    group.add_argument("--lowest", action="store_true", help="print each direct dependency's lower bound as name==X")
    group.add_argument("--show-versions", action="store_true", help="print the main dependencies' installed versions")
    args = parser.parse_args(argv)
    if args.write:
        Path(args.write).write_text(HEADER + "\n".join(lock_lines()) + "\n")
        print(f"wrote {args.write}: {len(lock_lines())} pinned distributions")
    elif args.lowest:
        print("\n".join(lowest_constraints()))
    else:
        versions = installed()
        print(" ".join(f"{name}=={versions.get(name, 'absent')}" for name in SHOWN))
    return 0


if __name__ == "__main__":
    sys.exit(main())
