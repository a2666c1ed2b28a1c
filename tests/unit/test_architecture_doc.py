"""The module maps name every module: docs/ARCHITECTURE.md the product's, bench/README.md the
e2e benchmark's."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).parents[2]


def test_every_module_of_the_package_is_in_the_architecture_map() -> None:
    doc = (ROOT / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8")
    unnamed = []
    for path in sorted((ROOT / "etong").rglob("*.py")):
        if path.name == "__init__.py":
            continue
        relative = path.relative_to(ROOT).as_posix()
        # A module is named by its path, or by its file name in its folder's row.
        if relative not in doc and f"`{path.name}`" not in doc:
            unnamed.append(relative)
    assert unnamed == [], f"modules missing from docs/ARCHITECTURE.md: {unnamed}"


def test_every_module_of_the_e2e_benchmark_is_in_the_bench_readme() -> None:
    doc = (ROOT / "bench" / "README.md").read_text(encoding="utf-8")
    unnamed = [
        path.relative_to(ROOT).as_posix()
        for path in sorted((ROOT / "bench" / "e2e").glob("*.py"))
        if path.name != "__init__.py" and f"`{path.name}`" not in doc
    ]
    assert unnamed == [], f"modules missing from bench/README.md's table: {unnamed}"
