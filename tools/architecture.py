"""``warmcast architecture``: the import graph of warmcast's packages, read from the source.

Every ``import`` and ``from ... import`` of every module counts, those inside functions
too (an import hidden in a function to dodge a circle is still a circle). The packages
(``engine``, ``schemas``, ``streams``, ``agents``, ``tools``, ``warmcast``) must form a
graph without a circle, and so must their modules; ``--check`` says which ones do not.
``--svg PATH`` draws the packages, their modules and what each is for.
"""

from __future__ import annotations

import argparse
import ast
import html
import sys
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PACKAGES = ("engine", "schemas", "streams", "agents", "tools", "warmcast")
ROOT = Path(__file__).resolve().parent.parent

#: What lives in each package, and where to start reading it.
CONCERNS = {
    "warmcast": ("the public API: version, contracts, UsageReporter", "warmcast/__init__.py"),
    "tools": ("the command line: demo, replay, backtest, bench, executor ...", "tools/cli.py"),
    "agents": (
        "Faust agents, thin: decode, partition step, publish; build_app wires them",
        "agents/__init__.py, agents/usage.py",
    ),
    "streams": (
        "the app from settings, partitions, Kafka, sending, Prometheus",
        "streams/app.py, streams/runtime.py",
    ),
    "schemas": ("the contracts: usage, metric, warmup, alert, control", "schemas/__init__.py"),
    "engine": (
        "pure decisions: the partition step, engine, policies, learners",
        "engine/partition.py, engine/warmcast.py",
    ),
}


@dataclass
class ImportGraph:
    """Modules (dotted names) and the modules each imports, within the packages read."""

    imports: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    #: imports made inside a function body: (module, imported)
    local: set[tuple[str, str]] = field(default_factory=set)

    @property
    def modules(self) -> list[str]:
        names = set(self.imports)
        for targets in self.imports.values():
            names |= targets
        return sorted(names)

    def packages(self) -> dict[str, set[str]]:
        """Package -> the other packages its modules import."""
        out: dict[str, set[str]] = {m.split(".")[0]: set() for m in self.modules}
        for source, targets in self.imports.items():
            for target in targets:
                a, b = source.split(".")[0], target.split(".")[0]
                if a != b:
                    out[a].add(b)
        return out


def module_name(path: Path, root: Path) -> str:
    """``streams/app.py`` -> ``streams.app``; a package's ``__init__`` is the package."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def read_graph(root: Path = ROOT, packages: Sequence[str] = PACKAGES) -> ImportGraph:
    """The import graph of ``packages`` under ``root``, from their sources."""
    sources = {
        module_name(path, root): path
        for package in packages
        for path in sorted((root / package).rglob("*.py"))
        if "__pycache__" not in path.parts
    }
    graph = ImportGraph()
    for name, path in sources.items():
        graph.imports.setdefault(name, set())
        tree = ast.parse(path.read_text(), filename=str(path))
        for node, in_function in _imports(tree):
            for target in _targets(node, name, path.name == "__init__.py"):
                found = _known(target, sources)
                if found is not None and found != name:
                    graph.imports[name].add(found)
                    if in_function:
                        graph.local.add((name, found))
    return graph


def _imports(tree: ast.AST) -> Iterable[tuple[ast.Import | ast.ImportFrom, bool]]:
    def walk(node: ast.AST, in_function: bool) -> Iterable[tuple[Any, bool]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import | ast.ImportFrom):
                yield child, in_function
            inner = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            yield from walk(child, inner)

    return walk(tree, False)


def _targets(node: ast.Import | ast.ImportFrom, module: str, is_package: bool) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:  # relative: from the module's package
        package = module.split(".") if is_package else module.split(".")[:-1]
        package = package[: len(package) - (node.level - 1)]
        base = ".".join([*package, base] if base else package)
    # a name that is a module of the package is that module; any other is of ``base``
    return [f"{base}.{alias.name}" for alias in node.names]


def _known(target: str, sources: Mapping[str, Path]) -> str | None:
    """The module of ``sources`` an import names (its longest known prefix: ``a.b.name``
    is module ``a.b`` unless ``a.b.name`` is a module itself)."""
    parts = target.split(".")
    while parts:
        name = ".".join(parts)
        if name in sources:
            return name
        parts.pop()
    return None


def cycles(imports: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """Every group of nodes that import each other, around (Tarjan's strongly connected
    components of more than one node, or one importing itself).

    >>> cycles({"a": ["b"], "b": ["c"], "c": ["a"], "d": ["a"]})
    [['a', 'b', 'c']]
    >>> cycles({"a": ["b"], "b": []})
    []
    """
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]
    graph = {k: sorted(set(v)) for k, v in imports.items()}

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1 or v in graph.get(v, ()):
                found.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def problems(graph: ImportGraph) -> list[str]:
    """The circles of the package graph and of the module graph, one line each."""
    out = [f"packages import each other: {' <-> '.join(c)}" for c in cycles(graph.packages())]
    out += [f"modules import each other: {' <-> '.join(c)}" for c in cycles(graph.imports)]
    return out


# -- the picture --------------------------------------------------------------------------

#: Packages from the top (what users run) to the bottom (what decides).
LAYERS = ("warmcast", "tools", "agents", "streams", "schemas", "engine")


def svg(graph: ImportGraph) -> str:
    """The packages as boxes, top to bottom, with their modules, what lives there and
    where to start reading; an arrow for each package that imports another."""
    width, box_w, x0, row_h, box_h = 1100, 760, 300, 150, 118
    tops = {m.split(".")[0] for m in graph.modules}
    present = [p for p in LAYERS if p in tops] + sorted(tops - set(LAYERS))
    height = 70 + row_h * len(present)
    y_of = {p: 50 + i * row_h for i, p in enumerate(present)}
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="Helvetica, Arial, sans-serif">',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#555"/></marker>'
        "</defs>",
        f'<rect width="{width}" height="{height}" fill="#ffffff"/>',
        '<text x="20" y="30" font-size="18" font-weight="bold">warmcast: packages and '
        "what each imports (arrows point at what is imported)</text>",
    ]
    deps = graph.packages()
    for i, (source, targets) in enumerate(sorted(deps.items())):
        for j, target in enumerate(sorted(targets)):
            if source not in y_of or target not in y_of:
                continue
            x = 40 + 22 * i + 5 * j
            y1, y2 = y_of[source] + box_h / 2, y_of[target] + box_h / 2
            out.append(
                f'<path d="M{x0},{y1} C{x + 40},{y1} {x + 40},{y2} {x0},{y2}" fill="none" '
                'stroke="#555" stroke-width="1.2" marker-end="url(#arrow)"/>'
            )
    for package in present:
        y = y_of[package]
        what, start = CONCERNS.get(package, ("", ""))
        modules = sorted(m.split(".", 1)[1] for m in graph.modules if m.startswith(f"{package}."))
        out.append(
            f'<rect x="{x0}" y="{y}" width="{box_w}" height="{box_h}" rx="8" '
            'fill="#eef3fb" stroke="#345" stroke-width="1.5"/>'
        )
        out.append(
            f'<text x="{x0 + 14}" y="{y + 24}" font-size="17" font-weight="bold">'
            f"{html.escape(package)}/</text>"
        )
        out.append(f'<text x="{x0 + 120}" y="{y + 24}" font-size="13">{html.escape(what)}</text>')
        out.append(
            f'<text x="{x0 + 14}" y="{y + 44}" font-size="12" fill="#a33">start reading: '
            f"{html.escape(start)}</text>"
        )
        for k, line in enumerate(_wrap(modules, 118)[:4]):
            out.append(
                f'<text x="{x0 + 14}" y="{y + 64 + 15 * k}" font-size="11" fill="#333">'
                f"{html.escape(line)}</text>"
            )
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _wrap(words: Sequence[str], width: int) -> list[str]:
    lines: list[str] = []
    line = ""
    for word in words:
        candidate = f"{line} · {word}" if line else word
        if len(candidate) > width and line:
            lines.append(line)
            line = word
        else:
            line = candidate
    if line:
        lines.append(line)
    return lines


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``architecture`` subcommand."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "architecture",
        help="the import graph of warmcast's packages: circles, and a picture",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--svg", metavar="PATH", help="draw the packages into an SVG file")
    p.add_argument(
        "--check", action="store_true", help="exit 1 if packages or modules import each other"
    )
    p.set_defaults(func=command)
    return p


def command(args: argparse.Namespace) -> int:
    graph = read_graph()
    found = problems(graph)
    packages = graph.packages()
    for package in LAYERS:
        if package in packages:
            print(f"{package:9} imports {', '.join(sorted(packages[package])) or 'nothing'}")
    print(f"{len(graph.modules)} modules, {len(graph.local)} imports inside functions")
    for line in found:
        print(line)
    if args.svg:
        Path(args.svg).write_text(svg(graph))
        print(f"drawn: {args.svg}")
    return 1 if args.check and found else 0


__all__ = ["ImportGraph", "command", "cycles", "problems", "read_graph", "register", "svg"]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="warmcast")
    register(parser.add_subparsers(dest="command", required=True))
    parsed = parser.parse_args(["architecture", *sys.argv[1:]])
    raise SystemExit(parsed.func(parsed))
