"""The import graph reader on a tree of its own: circles found, imports inside functions
counted, relative imports resolved."""

from __future__ import annotations

from pathlib import Path

from tools.architecture import problems, read_graph, svg


def tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_a_circle_hidden_in_a_function_is_found(tmp_path: Path) -> None:
    root = tree(
        tmp_path,
        {
            "low/__init__.py": "",
            "low/a.py": "def f():\n    from high.b import g\n    return g\n",
            "high/__init__.py": "",
            "high/b.py": "from low import a\n\ndef g():\n    return a\n",
        },
    )
    graph = read_graph(root, ("low", "high"))
    assert graph.imports["low.a"] == {"high.b"} and ("low.a", "high.b") in graph.local
    assert problems(graph) == [
        "packages import each other: high <-> low",
        "modules import each other: high.b <-> low.a",
    ]


def test_a_tree_in_one_direction_has_no_problem(tmp_path: Path) -> None:
    root = tree(
        tmp_path,
        {
            "low/__init__.py": "from .a import x\n",
            "low/a.py": "x = 1\n",
            "high/__init__.py": "",
            "high/b.py": "import low.a\nfrom . import c\n",
            "high/c.py": "import json\n",
        },
    )
    graph = read_graph(root, ("low", "high"))
    assert graph.imports["low"] == {"low.a"}
    assert graph.imports["high.b"] == {"low.a", "high.c"}
    assert problems(graph) == [] and graph.packages() == {"low": set(), "high": {"low"}}
    assert svg(graph).startswith("<svg") and "low/" in svg(graph)
