"""Model-server adapters: how the executor loads and unloads models on one kind of server.

An adapter is a class with the :class:`ModelServer` methods and a ``from_url`` class
method; ``--target`` picks it by the URL's scheme. Built in:

- ``kserve-v2://host:port``: the V2 inference protocol's model repository extension
  (``POST /v2/repository/index``, ``POST /v2/repository/models/{name}/load`` and
  ``/unload``), as MLServer, Triton and KServe's model server implement it;
- ``ollama://host:port``: Ollama's ``keep_alive`` (``POST /api/generate`` with an empty
  prompt loads a model and keeps it; ``keep_alive: 0`` unloads it; ``GET /api/ps`` lists
  the loaded models and the memory each takes).

Other servers are a class away: publish it under the ``warmcast.executor_adapters`` entry
point group, named by its scheme::

    [project.entry-points."warmcast.executor_adapters"]
    my-server = "my_package.adapter:MyServer"

>>> sorted(known_schemes())[:2]
['kserve-v2', 'ollama']
>>> adapter_for("kserve-v2://127.0.0.1:8080").base
'http://127.0.0.1:8080'
>>> adapter_for("nope://x")
Traceback (most recent call last):
...
streams.executor.adapters.AdapterError: no adapter for nope:// (known: kserve-v2, ollama)
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, Protocol, runtime_checkable
from urllib.parse import quote, urlsplit

import aiohttp

ENTRY_POINT_GROUP = "warmcast.executor_adapters"


class AdapterError(RuntimeError):
    """A server call that failed. ``retriable``: the server (or the way to it) is in
    trouble, the call may succeed later and counts against the circuit; otherwise the
    server answered and refused (an unknown model), trying again will not help."""

    def __init__(self, message: str, *, retriable: bool = True, status: int | None = None):
        super().__init__(message)
        self.retriable = retriable
        self.status = status


@dataclass(frozen=True, slots=True)
class LoadResult:
    """What a load returned: the memory the model takes, where the server says."""

    memory_bytes: float | None = None


@runtime_checkable
class ModelServer(Protocol):
    """The calls the executor makes on a model server (each within ``timeout`` seconds)."""

    target: str

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def load(self, model_id: str, timeout: float) -> LoadResult:
        """Load the model; return once it is ready to serve."""
        ...

    async def unload(self, model_id: str, timeout: float) -> None:
        """Unload the model (a model that is not loaded is not an error)."""
        ...

    async def loaded(self, timeout: float) -> set[str]:
        """The models loaded and ready now."""
        ...


class HttpServer:
    """Shared plumbing of the HTTP adapters: one session, JSON calls, errors classified."""

    def __init__(self, target: str, base: str) -> None:
        self.target = target
        self.base = base
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession()

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def call(
        self, method: str, path: str, timeout: float, body: Any = None, ok: tuple[int, ...] = ()
    ) -> Any:
        """The decoded JSON answer (``None`` when empty); :class:`AdapterError` otherwise.
        Statuses in ``ok`` count as success."""
        await self.start()
        assert self._session is not None
        url = self.base + path
        try:
            async with self._session.request(
                method, url, json=body, timeout=aiohttp.ClientTimeout(total=timeout)
            ) as response:
                text = await response.text()
                if response.status >= 400 and response.status not in ok:
                    raise AdapterError(
                        f"{method} {path}: HTTP {response.status}: {text[:300]}",
                        retriable=response.status >= 500 or response.status in (408, 429),
                        status=response.status,
                    )
                if not text.strip():
                    return None
                try:
                    return await response.json(content_type=None)
                except ValueError:
                    return None
        except AdapterError:
            raise
        except TimeoutError as exc:
            raise AdapterError(f"{method} {path}: no answer within {timeout:g}s") from exc
        except aiohttp.ClientError as exc:
            raise AdapterError(f"{method} {path}: {type(exc).__name__}: {exc}") from exc
        except asyncio.CancelledError:
            raise


def _host_port(url: str, default_port: int) -> str:
    parts = urlsplit(url)
    if not parts.hostname:
        raise AdapterError(f"{url}: no host (expected scheme://host:port)", retriable=False)
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{host}:{parts.port or default_port}"


class KServeV2(HttpServer):
    """The V2 inference protocol's model repository extension (MLServer, Triton, KServe).

    ``kserve-v2://host:port`` talks plain HTTP; ``kserve-v2+https://host:port`` TLS.
    """

    scheme = "kserve-v2"

    @classmethod
    def from_url(cls, url: str) -> KServeV2:
        tls = urlsplit(url).scheme.endswith("+https")
        return cls(url, ("https://" if tls else "http://") + _host_port(url, 8080))

    async def load(self, model_id: str, timeout: float) -> LoadResult:
        await self.call("POST", f"/v2/repository/models/{quote(model_id, safe='')}/load", timeout)
        return LoadResult()

    async def unload(self, model_id: str, timeout: float) -> None:
        # 404: not loaded (MLServer answers so for a model it does not hold): already done
        path = f"/v2/repository/models/{quote(model_id, safe='')}/unload"
        await self.call("POST", path, timeout, ok=(404,))

    async def loaded(self, timeout: float) -> set[str]:
        answer = await self.call("POST", "/v2/repository/index", timeout, body={"ready": True})
        if not isinstance(answer, list):
            raise AdapterError("POST /v2/repository/index: the answer is not a list")
        return {
            str(entry["name"])
            for entry in answer
            if isinstance(entry, dict)
            and "name" in entry
            and str(entry.get("state", "READY")).upper() == "READY"
        }


class Ollama(HttpServer):
    """Ollama's ``keep_alive``: a model stays loaded while its keep-alive lasts; the
    executor loads with ``keep_alive: -1`` (until unloaded) and unloads with ``0``."""

    scheme = "ollama"

    @classmethod
    def from_url(cls, url: str) -> Ollama:
        return cls(url, "http://" + _host_port(url, 11434))

    async def load(self, model_id: str, timeout: float) -> LoadResult:
        body = {"model": model_id, "prompt": "", "keep_alive": -1, "stream": False}
        await self.call("POST", "/api/generate", timeout, body=body)
        return LoadResult(memory_bytes=(await self._running(timeout)).get(model_id))

    async def unload(self, model_id: str, timeout: float) -> None:
        body = {"model": model_id, "prompt": "", "keep_alive": 0, "stream": False}
        await self.call("POST", "/api/generate", timeout, body=body, ok=(404,))

    async def loaded(self, timeout: float) -> set[str]:
        return set(await self._running(timeout))

    async def _running(self, timeout: float) -> dict[str, float | None]:
        answer = await self.call("GET", "/api/ps", timeout)
        models = answer.get("models") if isinstance(answer, dict) else None
        if not isinstance(models, list):
            raise AdapterError("GET /api/ps: the answer has no models list")
        running: dict[str, float | None] = {}
        for entry in models:
            if isinstance(entry, dict) and isinstance(entry.get("name"), str):
                size = entry.get("size")
                running[entry["name"]] = float(size) if isinstance(size, int | float) else None
        return running


BUILT_IN: dict[str, type[Any]] = {"kserve-v2": KServeV2, "ollama": Ollama}


def known_schemes() -> dict[str, Any]:
    """Adapter classes by scheme: the built-in ones and the entry points'."""
    found: dict[str, Any] = dict(BUILT_IN)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        found.setdefault(ep.name, ep)
    return found


def adapter_for(target: str) -> ModelServer:
    """The adapter for a ``--target`` URL (``kserve-v2+https`` is ``kserve-v2`` over TLS)."""
    scheme = urlsplit(target).scheme.split("+", 1)[0].lower()
    found = known_schemes()
    if scheme not in found:
        raise AdapterError(
            f"no adapter for {scheme}:// (known: {', '.join(sorted(found))})", retriable=False
        )
    cls = found[scheme]
    if not isinstance(cls, type):
        cls = cls.load()
    adapter = cls.from_url(target)
    if not isinstance(adapter, ModelServer):
        raise AdapterError(f"{cls!r} is not a model-server adapter", retriable=False)
    return adapter


__all__ = [
    "BUILT_IN",
    "ENTRY_POINT_GROUP",
    "AdapterError",
    "HttpServer",
    "KServeV2",
    "LoadResult",
    "ModelServer",
    "Ollama",
    "adapter_for",
    "known_schemes",
]
