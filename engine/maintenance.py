"""Maintenance windows: when warm-ups are paused or capped, and alerts do not page.

A window is written as comma-separated ``key=value`` pairs (a piece without ``=``
continues the previous value, so cron lists keep their commas)::

    cron=0 2 * * SUN,duration=90m,models=llama-*,mode=pause
    from=2026-12-03T02:00Z,until=2026-12-03T03:30Z,cap=5,id=db-upgrade

- ``cron=M H DOM MON DOW`` and ``duration=`` (``90m``, ``2h``, ``1h30m``, ``1d``): a window
  starts at every minute the cron expression names, in UTC, and lasts ``duration``. The
  fields are minute (0-59), hour (0-23), day of month (1-31), month (1-12 or ``JAN``..``DEC``)
  and day of week (0-7, 0 and 7 are Sunday, or ``SUN``..``SAT``), each ``*``, a number, a
  range ``a-b``, a list ``a,b`` or a step ``*/n`` / ``a-b/n``. As in cron, when both day of
  month and day of week are restricted, a day matching either matches.
- ``from=`` and ``until=`` (ISO 8601, naive is UTC, or epoch seconds): one window.
- ``models=`` a glob over model ids (``*``, ``?``, ``[...]``; default ``*``, every model).
- ``mode=pause`` (the default: no warm lease starts in the window, a renewal of one in
  force neither) or ``cap=N`` (at most ``N`` warm-ups start per minute in the window, per
  engine; the renewal of a lease in force, of a model loaded then, is not counted).
- ``lead=`` how long before the end models expected after the window are warmed (default:
  the policy's predicted load time of the model when it predicts one, else
  :data:`DEFAULT_LEAD_SECONDS`); ``id=`` the window's id (default: derived from the spec);
  ``alerts=kind|kind`` the alert kinds it marks (default :data:`AFFECTED_KINDS`).

Inside a window a warm lease whose warm-up would start there is held back (``pause``, or
past the ``cap``), and considered again at every minute. From ``lead`` before the window's
end, the leases of models expected after it (those whose lease runs past the end) go out,
so that they are warm when the window ends. Release commands are never held.

>>> w = parse_window("cron=0 2 * * SUN,duration=90m,models=llama-*")
>>> w.mode, w.models, w.duration
('pause', 'llama-*', 5400.0)
>>> sunday_2am = 1_796_522_400.0   # 2026-12-06T02:00Z, a Sunday
>>> w.occurrence(sunday_2am + 600) == (sunday_2am, sunday_2am + 5400)
True
>>> w.occurrence(sunday_2am + 5400) is None, w.covers("llama-7b"), w.covers("sdxl")
(True, True, False)
>>> parse_window("cron=0 2 * * FUNDAY,duration=1h")
Traceback (most recent call last):
...
engine.maintenance.WindowSpecError: cron day of week: 'FUNDAY' is not a number or a name (SUN..SAT)
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from fnmatch import fnmatchcase

from engine.lease import Lease
from engine.timebase import MinuteGrid

#: How long before a window's end models expected after it are warmed, when neither the
#: window nor the policy says.
DEFAULT_LEAD_SECONDS = 120.0
#: Alert kinds a window marks as in maintenance: those a model being maintained raises
#: (of a model in its pool), and those of the whole worker the held warm-ups cause (by a
#: window of every model only).
AFFECTED_KINDS: tuple[str, ...] = (
    "metric_anomaly",
    "learner_drift",
    "drift",
    "low_accuracy",
    "health_degraded",
)
#: The longest a window may last.
MAX_DURATION_SECONDS = 31 * 86400.0
_DAY = 86400

_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_DAYS = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")
_KEYS = ("id", "cron", "duration", "from", "until", "models", "mode", "cap", "lead", "alerts")


class WindowSpecError(ValueError):
    """A maintenance window spec that cannot be read; the message says which part."""


# ------------------------------------------------------------------------------ cron


@dataclass(frozen=True, slots=True)
class Cron:
    """A five-field cron expression, in UTC.

    >>> c = Cron.parse("*/15 8-18 * * MON-FRI")
    >>> sorted(c.minutes), min(c.hours), max(c.hours), sorted(c.weekdays)
    ([0, 15, 30, 45], 8, 18, [1, 2, 3, 4, 5])
    >>> Cron.parse("0 2 * *")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    engine.maintenance.WindowSpecError: cron: 5 fields (minute hour ...), not 4: '0 2 * *'
    """

    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 is Sunday
    any_day: bool  # day of month is *
    any_weekday: bool  # day of week is *

    @classmethod
    def parse(cls, text: str) -> Cron:
        fields = text.split()
        if len(fields) != 5:
            raise WindowSpecError(
                "cron: 5 fields (minute hour day-of-month month day-of-week), "
                f"not {len(fields)}: {text!r}"
            )
        minute, hour, day, month, weekday = fields
        weekdays = _field(weekday, "day of week", 0, 7, _DAYS, 0)
        return cls(
            _field(minute, "minute", 0, 59),
            _field(hour, "hour", 0, 23),
            _field(day, "day of month", 1, 31),
            _field(month, "month", 1, 12, _MONTHS, 1),
            frozenset(d % 7 for d in weekdays),
            day == "*",
            weekday == "*",
        )

    def day_matches(self, day: datetime) -> bool:
        if day.month not in self.months:
            return False
        in_month = day.day in self.days
        in_week = (day.isoweekday() % 7) in self.weekdays
        if self.any_day or self.any_weekday:
            return in_month and in_week
        return in_month or in_week

    def starts_of_day(self, day_start: int) -> list[int]:
        """The start times (epoch s) the expression names on the UTC day from ``day_start``."""
        if not self.day_matches(datetime.fromtimestamp(day_start, UTC)):
            return []
        return sorted(day_start + h * 3600 + m * 60 for h in self.hours for m in self.minutes)


def _field(
    text: str, what: str, low: int, high: int, names: tuple[str, ...] = (), base: int = 0
) -> frozenset[int]:
    """One cron field as the values it names.

    >>> sorted(_field("1-10/3,20", "minute", 0, 59))
    [1, 4, 7, 10, 20]
    >>> _field("61", "minute", 0, 59)
    Traceback (most recent call last):
    ...
    engine.maintenance.WindowSpecError: cron minute: 61 is outside 0-59
    """
    values: set[int] = set()
    for part in text.split(","):
        body, _, step_text = part.partition("/")
        step = 1
        if step_text:
            if not step_text.isdigit() or int(step_text) < 1:
                raise WindowSpecError(f"cron {what}: step {step_text!r} is not a positive number")
            step = int(step_text)
        if body == "*":
            first, last = low, high
        else:
            a, dash, b = body.partition("-")
            first = _value(a, what, low, high, names, base)
            last = _value(b, what, low, high, names, base) if dash else first
            if dash and last < first:
                raise WindowSpecError(f"cron {what}: range {body!r} runs backwards")
            if step_text and not dash:
                last = high
        values.update(range(first, last + 1, step))
    return frozenset(values)


def _value(text: str, what: str, low: int, high: int, names: tuple[str, ...], base: int) -> int:
    upper = text.strip().upper()
    if upper in names:
        return names.index(upper) + base
    if not upper.isdigit():
        named = f" or a name ({names[0]}..{names[-1]})" if names else ""
        raise WindowSpecError(f"cron {what}: {text!r} is not a number{named}")
    value = int(upper)
    if not low <= value <= high:
        raise WindowSpecError(f"cron {what}: {value} is outside {low}-{high}")
    return value


# ---------------------------------------------------------------------------- windows


@dataclass(frozen=True, slots=True)
class Window:
    """One maintenance window (see the module docstring for its spec)."""

    id: str
    spec: str
    duration: float
    cron: Cron | None = None
    start: float | None = None  # explicit windows: from, until
    until: float | None = None
    models: str = "*"
    cap: int | None = None  # None: pause
    lead: float | None = None
    alerts: tuple[str, ...] = AFFECTED_KINDS

    @property
    def mode(self) -> str:
        return "pause" if self.cap is None else f"cap={self.cap}"

    @property
    def every_model(self) -> bool:
        return self.models == "*"

    def covers(self, model_id: str) -> bool:
        return self.every_model or fnmatchcase(model_id, self.models)

    def occurrence(self, ts: float) -> tuple[float, float] | None:
        """The occurrence in force at ``ts`` (start, end), if one is."""
        if self.cron is None:
            assert self.start is not None and self.until is not None
            return (self.start, self.until) if self.start <= ts < self.until else None
        day = int(ts // _DAY) * _DAY
        earliest = ts - self.duration
        while day + _DAY > earliest:
            for start in reversed(self.cron.starts_of_day(day)):
                if start <= ts:
                    return (start, start + self.duration) if start > earliest else None
            day -= _DAY
        return None

    def occurrences(self, since: float, until: float) -> Iterator[tuple[float, float]]:
        """Every occurrence that overlaps ``[since, until)``, in order."""
        if self.cron is None:
            assert self.start is not None and self.until is not None
            if self.start < until and self.until > since:
                yield self.start, self.until
            return
        day = int((since - self.duration) // _DAY) * _DAY
        while day < until:
            for start in self.cron.starts_of_day(day):
                if start < until and start + self.duration > since:
                    yield float(start), start + self.duration
            day += _DAY


def parse_window(spec: str) -> Window:
    """A window from its spec; raises :class:`WindowSpecError` saying what is wrong.

    >>> w = parse_window("from=2026-12-03T02:00Z,until=2026-12-03T03:30Z,cap=5,id=db")
    >>> w.id, w.mode, w.until - w.start
    ('db', 'cap=5', 5400.0)
    >>> parse_window("cron=0 2 * * SAT,SUN,duration=2h").cron.weekdays == {0, 6}
    True
    >>> parse_window("from=2026-12-03T02:00Z,duration=1h").until - 1796263200.0
    3600.0
    >>> parse_window("cron=0 2 * * *")
    Traceback (most recent call last):
    ...
    engine.maintenance.WindowSpecError: a cron window needs duration= (e.g. duration=90m)
    >>> parse_window("from=2026-12-03T02:00Z,until=2026-12-03T01:00Z")
    Traceback (most recent call last):
    ...
    engine.maintenance.WindowSpecError: until= must be after from=
    """
    pairs = _pairs(spec)
    unknown = [k for k in pairs if k not in _KEYS]
    if unknown:
        raise WindowSpecError(f"unknown key {unknown[0]!r}: use {', '.join(_KEYS)}")
    duration = _duration(pairs["duration"], "duration") if "duration" in pairs else None
    cron = start = until = None
    if "cron" in pairs:
        if "from" in pairs or "until" in pairs:
            raise WindowSpecError("give cron= and duration=, or from= and until=, not both")
        cron = Cron.parse(pairs["cron"])
        if duration is None:
            raise WindowSpecError("a cron window needs duration= (e.g. duration=90m)")
    elif "from" in pairs:
        start = _time(pairs["from"], "from")
        if "until" in pairs:
            until = _time(pairs["until"], "until")
        elif duration is not None:
            until = start + duration
        else:
            raise WindowSpecError("from= needs until= or duration=")
        if until <= start:
            raise WindowSpecError("until= must be after from=")
        duration = until - start
    else:
        raise WindowSpecError("a window needs cron= and duration=, or from= and until=")
    assert duration is not None
    if duration > MAX_DURATION_SECONDS:
        raise WindowSpecError("a window lasts at most 31 days")
    mode = pairs.get("mode", "pause" if "cap" not in pairs else "cap")
    if mode not in ("pause", "cap"):
        raise WindowSpecError(f"mode={mode!r}: pause or cap (with cap=N)")
    cap = None
    if mode == "cap":
        raw = pairs.get("cap", "")
        if not raw.isdigit():
            raise WindowSpecError(f"cap={raw!r}: a whole number of warm leases per minute")
        cap = int(raw)
    elif "cap" in pairs:
        raise WindowSpecError("mode=pause takes no cap=")
    lead = _duration(pairs["lead"], "lead") if "lead" in pairs else None
    models = pairs.get("models", "*") or "*"
    alerts = AFFECTED_KINDS
    if "alerts" in pairs:
        alerts = tuple(k.strip() for k in pairs["alerts"].split("|") if k.strip())
    text = ",".join(f"{k}={v}" for k, v in pairs.items() if k != "id")
    window_id = pairs.get("id") or hashlib.blake2b(text.encode(), digest_size=4).hexdigest()
    if not re.fullmatch(r"[A-Za-z0-9._-]{1,64}", window_id):
        raise WindowSpecError(f"id={window_id!r}: letters, digits, dot, dash, underscore")
    return Window(window_id, text, duration, cron, start, until, models, cap, lead, alerts)


def parse_windows(text: str) -> list[Window]:
    """``;``-separated specs (``WARMCAST_MAINTENANCE``); an empty text is none.

    >>> [w.id for w in parse_windows("cron=0 3 * * *,duration=1h,id=a; ;"
    ...                              "from=0,until=60,id=b")]
    ['a', 'b']
    >>> parse_windows("cron=0 3 * * *,duration=1h,id=a;from=0,until=60,id=a")
    Traceback (most recent call last):
    ...
    engine.maintenance.WindowSpecError: window 2: id 'a' is used twice
    """
    windows: list[Window] = []
    for n, spec in enumerate((s for s in text.split(";") if s.strip()), 1):
        try:
            window = parse_window(spec)
        except WindowSpecError as exc:
            raise WindowSpecError(f"window {n}: {exc}") from None
        if any(w.id == window.id for w in windows):
            raise WindowSpecError(f"window {n}: id {window.id!r} is used twice")
        windows.append(window)
    return windows


def _pairs(spec: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    last: str | None = None
    for piece in spec.split(","):
        key, eq, value = piece.partition("=")
        if eq:
            last = key.strip().lower()
            if last in pairs:
                raise WindowSpecError(f"{last}= is given twice")
            pairs[last] = value.strip()
        elif last is not None:  # a cron list: 'SAT,SUN'
            pairs[last] += "," + piece.strip()
        elif piece.strip():
            raise WindowSpecError(f"{piece.strip()!r} is not key=value")
    if not pairs:
        raise WindowSpecError("an empty window spec")
    return pairs


def _duration(text: str, what: str) -> float:
    """``90m``, ``1h30m``, ``2h``, ``1d``, ``45s`` in seconds.

    >>> _duration("1h30m", "duration"), _duration("90", "duration")
    (5400.0, 5400.0)
    """
    if text.isdigit():
        seconds = int(text) * 60.0  # plain minutes
    else:
        parts = re.findall(r"(\d+)\s*([smhd])", text.lower())
        if not parts or re.sub(r"\d+\s*[smhd]", "", text.lower()).strip():
            raise WindowSpecError(f"{what}={text!r}: e.g. 90m, 1h30m, 2h, 1d")
        unit = {"s": 1, "m": 60, "h": 3600, "d": 86400}
        seconds = float(sum(int(n) * unit[u] for n, u in parts))
    if seconds <= 0:
        raise WindowSpecError(f"{what}={text!r} must be positive")
    return seconds


def _time(text: str, what: str) -> float:
    try:
        return float(text)
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise WindowSpecError(
            f"{what}={text!r}: an ISO 8601 time (2026-12-03T02:00Z) or epoch seconds"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


# --------------------------------------------------------------------------- schedule


class MaintenanceSchedule:
    """The windows in force for a worker (or a backtest): added, cancelled, asked.

    >>> s = MaintenanceSchedule(parse_windows("from=600,until=1200,models=llama-*,id=w"))
    >>> [w.id for w, _, _ in s.in_force("llama-7b", 700.0)], s.in_force("sdxl", 700.0)
    (['w'], [])
    >>> s.marks("metric_anomaly", "llama-7b", 700.0), s.marks("metric_anomaly", "sdxl", 700.0)
    ('w', None)
    >>> s.marks("low_accuracy", None, 700.0)  # a worker-wide kind: windows of every model only
    >>> s.cancel("w"), s.cancel("w"), len(s)
    (True, False, 0)
    """

    def __init__(self, windows: Iterable[Window] = ()) -> None:
        self.windows: dict[str, Window] = {w.id: w for w in windows}
        #: cron window id -> (minute, its occurrence then): constant within a minute
        self._seen: dict[str, tuple[int, tuple[float, float] | None]] = {}

    def __len__(self) -> int:
        return len(self.windows)

    def add(self, window: Window) -> None:
        """Add (or, same id, replace) a window."""
        self.windows[window.id] = window
        self._seen.pop(window.id, None)

    def cancel(self, window_id: str) -> bool:
        """Remove a window; whether there was one of that id."""
        found = self.windows.pop(window_id, None) is not None
        self._seen.pop(window_id, None)
        return found

    def occurrence(self, window: Window, ts: float) -> tuple[float, float] | None:
        """:meth:`Window.occurrence`, remembered for the minute of ``ts`` (cron windows
        start on whole minutes: within one, the answer does not change)."""
        if window.cron is None:
            return window.occurrence(ts)
        minute = int(ts // 60)
        seen = self._seen.get(window.id)
        if seen is not None and seen[0] == minute:
            return seen[1]
        found = window.occurrence(ts)
        self._seen[window.id] = (minute, found)
        return found

    def in_force(self, model_id: str, ts: float) -> list[tuple[Window, float, float]]:
        """The windows in force at ``ts`` for a model, each with its occurrence."""
        out: list[tuple[Window, float, float]] = []
        for window in self.windows.values():
            if window.covers(model_id):
                occurrence = self.occurrence(window, ts)
                if occurrence is not None:
                    out.append((window, occurrence[0], occurrence[1]))
        return out

    def active(self, ts: float) -> list[Window]:
        """The windows with an occurrence in force at ``ts``, whatever their models."""
        return [w for w in self.windows.values() if self.occurrence(w, ts) is not None]

    def marks(self, kind: str, model_id: str | None, ts: float) -> str | None:
        """The id of the window that puts an alert of ``kind`` on ``model_id`` (``None``:
        of no single model) raised at ``ts`` in maintenance, if one does."""
        for window in self.windows.values():
            if kind not in window.alerts:
                continue
            if model_id is None and not window.every_model:
                continue
            if model_id is not None and not window.covers(model_id):
                continue
            if self.occurrence(window, ts) is not None:
                return window.id
        return None


def lead_seconds(window: Window, load_seconds: float | None) -> float:
    """How long before a window's end a model expected after it starts warming: the
    window's ``lead``, else the model's predicted load time, else the default; in whole
    minutes, one at least.

    >>> w = parse_window("from=0,until=3600")
    >>> lead_seconds(w, None), lead_seconds(w, 0.5), lead_seconds(w, 150.0)
    (120.0, 60.0, 180.0)
    """
    lead = window.lead if window.lead is not None else load_seconds
    return 60.0 * max(math.ceil((lead or DEFAULT_LEAD_SECONDS) / 60.0), 1)


#: A model's predicted load time in seconds (``None``: not known).
LoadTimes = Callable[[str], float | None]
#: A model's lease in force (``None``: none).
Leases = Callable[[str], Lease | None]


class MaintenanceGate:
    """An engine's side of a schedule: which warm leases start now, which wait.

    ``admit`` is asked for every warm lease the policy hands out at ``minute``; a lease it
    refuses is held and handed back by ``due`` at a later minute, when it may start then
    (its start moved to that minute), or dropped when it is over first. At most ``cap``
    warm-ups start per minute of a capped window (counted per engine; renewing the lease of
    a model loaded then is not one).

    >>> from engine.timebase import MinuteGrid
    >>> s = MaintenanceSchedule(parse_windows("from=600,until=1200,id=w"))   # minutes 10..19
    >>> gate = MaintenanceGate(s, MinuteGrid())
    >>> def no_load_time(model_id): return None
    >>> gate.admit("a", Lease("warm", 12, 22), 12, no_load_time)   # a warm-up inside: held
    False
    >>> gate.admit("b", Lease("warm", 12, 15), 12, no_load_time)   # over inside the window
    False
    >>> [gate.due(m, no_load_time) for m in (17, 18)]  # two minutes before the end
    [[], [('a', Lease(warm 18..22))]]
    >>> gate.held_dropped, gate.admit("c", Lease("warm", 20, 30), 20, no_load_time)   # after it
    (1, True)
    """

    def __init__(self, schedule: MaintenanceSchedule, grid: MinuteGrid) -> None:
        self.schedule = schedule
        self.grid = grid
        #: held warm leases by model, oldest first
        self.held: dict[str, Lease] = {}
        #: (window id, minute) -> warm leases started in it (capped windows)
        self.started: dict[tuple[str, int], int] = {}
        self.held_dropped = 0  # held leases over before they could start

    def admit(
        self,
        model_id: str,
        lease: Lease,
        minute: int,
        load_seconds: LoadTimes,
        current: Lease | None = None,
    ) -> bool:
        """Whether a warm lease the policy hands out at ``minute`` may start; else it is held
        (``load_seconds`` is asked only of a model expected after a window; ``current`` is
        the model's lease in force, whose renewal a cap does not count)."""
        if self._may_start(model_id, lease, minute, load_seconds, current):
            self.held.pop(model_id, None)
            return True
        self.held[model_id] = lease
        return False

    def drop(self, model_id: str) -> None:
        """Forget a model's held lease (it was released, or evicted)."""
        self.held.pop(model_id, None)

    def due(
        self, minute: int, load_seconds: LoadTimes, current: Leases | None = None
    ) -> list[tuple[str, Lease]]:
        """The held leases that may start at ``minute``, their start moved to it; those
        over by then are dropped."""
        if self.started:
            self.started = {k: n for k, n in self.started.items() if k[1] >= minute}
        out: list[tuple[str, Lease]] = []
        for model_id, lease in list(self.held.items()):
            if lease.end <= minute:
                del self.held[model_id]
                self.held_dropped += 1
            elif self._may_start(
                model_id, lease, minute, load_seconds, current(model_id) if current else None
            ):
                del self.held[model_id]
                out.append((model_id, lease if lease.start >= minute else lease.with_start(minute)))
        return out

    def next_due(self, after: int, load_seconds: LoadTimes) -> int | None:
        """The first minute after ``after`` at which a held lease may start or be dropped
        (``None``: none is held); the engine visits it even when no event falls in it."""
        first = after + 1
        best: int | None = None
        origin = self.grid.origin
        for model_id, lease in self.held.items():
            windows = self.schedule.in_force(model_id, self.grid.start_of(max(lease.start, first)))
            when = lease.end if windows else first  # no window any more: it starts now
            for window, _, end in windows:
                if window.cap is not None:
                    when = first
                    break
                when = min(when, math.ceil((end - origin) / 60.0))
                if self.grid.start_of(lease.end) > end:
                    lead = lead_seconds(window, load_seconds(model_id))
                    when = min(when, math.ceil((end - lead - origin) / 60.0))
            when = max(when, first)
            best = when if best is None else min(best, when)
        return best

    def _may_start(
        self,
        model_id: str,
        lease: Lease,
        minute: int,
        load_seconds: LoadTimes,
        current: Lease | None,
    ) -> bool:
        begins = max(lease.start, minute)
        at = self.grid.start_of(begins)
        windows = self.schedule.in_force(model_id, at)
        if not windows:
            return True
        ends = self.grid.start_of(lease.end)
        capped: list[str] = []
        for window, _, end in windows:
            ahead_of_end = ends > end and (
                at >= end - lead_seconds(window, None if window.lead else load_seconds(model_id))
            )
            if window.cap is None:
                if not ahead_of_end:
                    return False
            elif current is not None and current.covers(begins):
                continue  # a renewal: the model is loaded then, nothing starts loading
            elif self.started.get((window.id, begins), 0) >= window.cap:
                return False
            else:
                capped.append(window.id)
        for window_id in capped:
            key = (window_id, begins)
            self.started[key] = self.started.get(key, 0) + 1
        return True


__all__ = [
    "AFFECTED_KINDS",
    "DEFAULT_LEAD_SECONDS",
    "Cron",
    "MaintenanceGate",
    "MaintenanceSchedule",
    "Window",
    "WindowSpecError",
    "parse_window",
    "parse_windows",
]
