"""A circuit breaker: a failing server is not hammered.

``closed``: calls go through; after ``failures`` failures in a row the circuit *opens*.
``open``: no call goes through for ``cooldown`` seconds; then it is ``half_open``: one
call (a probe) may go through. The probe's success closes the circuit; its failure opens
it again, with the cooldown doubled (at most ``max_cooldown``). Times are passed in.

>>> b = CircuitBreaker(failures=2, cooldown=10.0)
>>> b.allow(0.0), b.failure(0.0), b.failure(1.0)
(True, None, 'open')
>>> b.state, b.allow(5.0), b.allow(11.0), b.allow(11.5)   # one probe after the cooldown
('open', False, True, False)
>>> b.failure(12.0), b.open_until
('open', 32.0)
>>> b.allow(32.0), b.success(33.0), b.state
(True, 'closed', 'closed')
"""

from __future__ import annotations

from typing import Literal

State = Literal["closed", "open", "half_open"]


class CircuitBreaker:
    def __init__(
        self, failures: int = 5, cooldown: float = 5.0, max_cooldown: float = 60.0
    ) -> None:
        self.threshold = failures
        self.cooldown = cooldown
        self.max_cooldown = max_cooldown
        self.state: State = "closed"
        self.consecutive = 0
        self.open_until = 0.0
        self.opened = 0  # times the circuit opened from closed
        self._current_cooldown = cooldown
        self._probing = False

    def allow(self, now: float) -> bool:
        """Whether a call may go through now (in ``half_open``, only the one probe)."""
        if self.state == "closed":
            return True
        if self.state == "open" and now >= self.open_until:
            self.state = "half_open"
            self._probing = False
        if self.state == "half_open" and not self._probing:
            self._probing = True
            return True
        return False

    def blocked(self, now: float) -> bool:
        """No call would go through now (unlike :meth:`allow`, this takes no probe).

        >>> b = CircuitBreaker(failures=1, cooldown=10.0)
        >>> b.blocked(0.0), b.failure(0.0), b.blocked(5.0), b.blocked(10.0)
        (False, 'open', True, False)
        """
        if self.state == "open":
            return now < self.open_until
        return self.state == "half_open" and self._probing

    def success(self, now: float) -> State | None:
        """A call succeeded; the new state when it changed (``'closed'``)."""
        self.consecutive = 0
        if self.state == "closed":
            return None
        self.state = "closed"
        self._probing = False
        self._current_cooldown = self.cooldown
        return "closed"

    def failure(self, now: float) -> State | None:
        """A call failed; the new state when it changed (``'open'``)."""
        self.consecutive += 1
        if self.state == "half_open":
            self._current_cooldown = min(self.max_cooldown, self._current_cooldown * 2)
            self.state = "open"
            self.open_until = now + self._current_cooldown
            self._probing = False
            return "open"
        if self.state == "closed" and self.consecutive >= self.threshold:
            self.state = "open"
            self.opened += 1
            self.open_until = now + self._current_cooldown
            return "open"
        return None

    def retry_at(self) -> float | None:
        """When a call may go through again (``None``: now)."""
        return self.open_until if self.state == "open" else None


__all__ = ["CircuitBreaker", "State"]
