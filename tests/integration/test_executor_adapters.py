"""Every model-server adapter keeps the same contract: what it loads is listed as loaded,
what it unloads is not, an unknown model is a failure the server answered (not retried),
a server that does not answer is a retriable failure. kserve-v2 runs against a real
MLServer; ollama against a small HTTP server that implements Ollama's documented
``keep_alive`` protocol (``/api/generate``, ``/api/ps``), not a real Ollama."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aiohttp import web

from streams.broker import free_port
from streams.executor.adapters import AdapterError, adapter_for, known_schemes
from tools.mlserver import MLServer, MLServerUnavailable, ensure_venv

MODELS = ("alpha", "beta")


@asynccontextmanager
async def mlserver() -> AsyncIterator[str]:
    try:
        ensure_venv()
    except MLServerUnavailable as exc:
        if exc.offline:
            pytest.skip(f"PyPI is unreachable: MLServer cannot be installed ({exc})")
        raise
    server = MLServer(dict.fromkeys(MODELS, 0.1))
    try:
        server.start()
        yield server.target
    finally:
        server.close()


@asynccontextmanager
async def ollama_protocol() -> AsyncIterator[str]:
    """Ollama's documented protocol: a generate request with an empty prompt loads the
    model (``keep_alive`` < 0: until told otherwise; 0: unload it now); ``/api/ps`` lists
    the running models with their size in bytes."""
    running: dict[str, int] = {}

    async def generate(request: web.Request) -> web.Response:
        body = await request.json()
        model = body.get("model")
        if model not in MODELS:
            return web.json_response({"error": f"model '{model}' not found"}, status=404)
        if body.get("keep_alive") == 0:
            running.pop(model, None)
            return web.json_response({"model": model, "done": True, "done_reason": "unload"})
        running[model] = 4_000_000_000 + len(model)
        return web.json_response({"model": model, "response": "", "done": True})

    async def ps(_: web.Request) -> web.Response:
        models = [{"name": m, "model": m, "size": size} for m, size in running.items()]
        return web.json_response({"models": models})

    app = web.Application()
    app.router.add_post("/api/generate", generate)
    app.router.add_get("/api/ps", ps)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"ollama://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


SERVERS: dict[str, Callable[[], Any]] = {"kserve-v2": mlserver, "ollama": ollama_protocol}


@pytest.mark.parametrize("scheme", sorted(known_schemes()))
async def test_adapter_contract(scheme: str) -> None:
    assert scheme in SERVERS, f"adapter {scheme} has no server to be tested against"
    async with SERVERS[scheme]() as target:
        adapter = adapter_for(target)
        await adapter.start()
        try:
            assert await adapter.loaded(10) == set()
            result = await adapter.load("alpha", 30)
            assert await adapter.loaded(10) == {"alpha"}
            if result.memory_bytes is not None:
                assert result.memory_bytes > 0
            await adapter.load("beta", 30)
            await adapter.unload("alpha", 10)
            assert await adapter.loaded(10) == {"beta"}
            await adapter.unload("alpha", 10)  # not loaded: no error
            with pytest.raises(AdapterError) as refused:
                await adapter.load("no-such-model", 30)
            assert not refused.value.retriable
        finally:
            await adapter.close()
    down = adapter_for(target)  # the server has gone
    await down.start()
    try:
        with pytest.raises(AdapterError) as failed:
            await down.load("alpha", 5)
        assert failed.value.retriable
    finally:
        await down.close()
