"""Metric names in PromQL expressions, and in a Prometheus text exposition."""

from __future__ import annotations

import re

#: Words of PromQL that are not metric names when not followed by "(".
KEYWORDS = {
    "and",
    "or",
    "unless",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "offset",
    "inf",
    "nan",
}

#: Series Prometheus writes itself for every scrape target; no worker exposes them.
SCRAPE_SERIES = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects.

    >>> sorted(metric_names('sum by (kind) (rate(a_total{kind="x"}[5m])) / b > 0.5 or c'))
    ['a_total', 'b', 'c']
    >>> sorted(metric_names("histogram_quantile(0.95, sum by (le) (rate(d_bucket[5m]))) > 1e3"))
    ['d_bucket']
    """
    s = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    s = re.sub(r"\{[^}]*\}", " ", s)
    s = re.sub(r"\[[^\]]*\]", " ", s)
    s = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)
    names = set()
    for m in re.finditer(r"(?<![\w.])[A-Za-z_:][A-Za-z0-9_:]*", s):
        word = m.group(0)
        if s[m.end() :].lstrip().startswith("(") or word.lower() in KEYWORDS:
            continue
        names.add(word)
    return names


def exposed_names(text: str) -> set[str]:
    """Names of the samples in a Prometheus text exposition.

    >>> sorted(exposed_names('# HELP x_total X\\nx_total{a="1"} 2.0\\ny 1\\n'))
    ['x_total', 'y']
    """
    names = set()
    for line in text.splitlines():
        if line and not line.startswith("#"):
            names.add(re.split(r"[{\s]", line, maxsplit=1)[0])
    return names


#: Labels Prometheus attaches to every series it scrapes; no worker exposes them.
TARGET_LABELS = {"job", "instance"}

_LABEL = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"')


def selectors(expr: str) -> list[tuple[str, list[tuple[str, str, str]]]]:
    """The series selectors of an expression with label matchers: (metric, [(label, op,
    value)]).

    >>> selectors('sum(rate(a_total{kind="x", reason=~"p|q"}[5m])) / b{job!="w"}')
    [('a_total', [('kind', '=', 'x'), ('reason', '=~', 'p|q')]), ('b', [('job', '!=', 'w')])]
    """
    found = re.finditer(r"([A-Za-z_:][A-Za-z0-9_:]*)\s*\{([^}]*)\}", expr)
    return [(m.group(1), _LABEL.findall(m.group(2))) for m in found]


def series(text: str) -> list[tuple[str, dict[str, str]]]:
    """Name and labels of each sample of a Prometheus text exposition (or of a series
    written as ``name{label="value", ...}``).

    >>> series('# TYPE x_total counter\\nx_total{a="1",b="2"} 2.0\\ny 1\\n')
    [('x_total', {'a': '1', 'b': '2'}), ('y', {})]
    """
    out = []
    for line in text.splitlines():
        m = re.match(r"\s*([A-Za-z_:][A-Za-z0-9_:]*)(\{[^}]*\})?", line)
        if m and not line.startswith("#"):
            labels = {k: v for k, op, v in _LABEL.findall(m.group(2) or "") if op == "="}
            out.append((m.group(1), labels))
    return out
