"""Functions stay short: none in tools/, streams/, agents/ or engine/ has more than
:data:`LIMIT` lines of code, read from the source.

A function's lines of code are the lines from its first statement to its end that are not
blank, not only a comment and not its docstring (a nested function counts in the function
that holds it). ``python -m tests.test_function_length`` lists every function over
:data:`LISTED` lines, longest first.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("tools", "streams", "agents", "engine")
#: The most lines of code a function may have.
LIMIT = 60
#: What ``python -m tests.test_function_length`` lists.
LISTED = 40

#: Functions allowed over :data:`LIMIT`, each with why: ``package:qualified name``.
ALLOWED: dict[str, str] = {
    "streams:WorkerMetrics.__init__": "declares the worker's Prometheus series, one each",
    "streams:WorkerMetrics._health_metrics": "declares the health series, one statement each",
    "streams:ExecutorMetrics.__init__": "declares the executor's Prometheus series, one each",
    "tools:register@tools/backtest_cli.py": "declares the backtest's options, one each",
}


@dataclass(frozen=True, slots=True)
class Function:
    path: str  # relative to the repository
    qualname: str
    line: int
    code_lines: int

    @property
    def package(self) -> str:
        return self.path.split("/", 1)[0]

    def names(self) -> set[str]:
        """How :data:`ALLOWED` may name it: by package and qualified name, or with its file
        too (for names that more than one module of the package has)."""
        return {f"{self.package}:{self.qualname}", f"{self.package}:{self.qualname}@{self.path}"}


def code_lines(node: ast.FunctionDef | ast.AsyncFunctionDef, lines: list[str]) -> int:
    """Lines of code of a function: its body without blank lines, comments or docstring.

    >>> lines = ["def f():", "    '''Doc.", "", "    More.'''", "    # why", "    x = 1", ""]
    >>> lines.append("    return x")
    >>> code_lines(ast.parse("\\n".join(lines)).body[0], lines)
    2
    """
    docstring: range = range(0)
    first = node.body[0]
    value = first.value if isinstance(first, ast.Expr) else None
    if isinstance(value, ast.Constant) and isinstance(value.value, str):
        docstring = range(first.lineno, (first.end_lineno or first.lineno) + 1)
    count = 0
    for number in range(first.lineno, (node.end_lineno or node.lineno) + 1):
        text = lines[number - 1].strip()
        if number not in docstring and text and not text.startswith("#"):
            count += 1
    return count


def functions(root: Path = ROOT, packages: tuple[str, ...] = PACKAGES) -> list[Function]:
    """Every function and method of the packages, nested ones included."""
    out: list[Function] = []
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            source = path.read_text()
            lines = source.splitlines()
            relative = path.relative_to(root).as_posix()
            out.extend(_functions(ast.parse(source), lines, relative, ""))
    return out


def _functions(node: ast.AST, lines: list[str], path: str, prefix: str) -> list[Function]:
    out: list[Function] = []
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
            name = prefix + child.name
            out.append(Function(path, name, child.lineno, code_lines(child, lines)))
            out.extend(_functions(child, lines, path, name + ".<locals>."))
        elif isinstance(child, ast.ClassDef):
            out.extend(_functions(child, lines, path, prefix + child.name + "."))
        else:
            out.extend(_functions(child, lines, path, prefix))
    return out


def too_long(found: list[Function], limit: int = LIMIT) -> list[Function]:
    return sorted((f for f in found if f.code_lines > limit), key=lambda f: -f.code_lines)


def test_no_function_is_longer_than_the_limit() -> None:
    over = [f for f in too_long(functions()) if not f.names() & ALLOWED.keys()]
    assert over == [], "\n".join(f"{f.path}:{f.line} {f.qualname}: {f.code_lines}" for f in over)


def test_every_allowed_function_is_still_there_and_still_long() -> None:
    named = {key for f in too_long(functions()) for key in f.names()}
    assert sorted(ALLOWED.keys() - named) == []


def test_a_long_function_is_found_with_its_class_and_length(tmp_path: Path) -> None:
    body = "".join(f"        x{i} = {i}\n" for i in range(LIMIT + 1))
    source = f'class C:\n    def long(self):\n        """Doc."""\n        # a comment\n\n{body}'
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "m.py").write_text(source + "\n\ndef short():\n    return 1\n")
    found = functions(tmp_path, ("pkg",))
    assert [(f.qualname, f.code_lines) for f in found] == [("C.long", LIMIT + 1), ("short", 1)]
    assert [f.qualname for f in too_long(found)] == ["C.long"]


def main() -> int:
    for f in too_long(functions(), LISTED):
        mark = (
            "  (allowed: " + ALLOWED[min(f.names() & ALLOWED.keys())] + ")"
            if (f.names() & ALLOWED.keys())
            else ""
        )
        print(f"{f.code_lines:4d}  {f.path}:{f.line}  {f.qualname}{mark}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
