"""The health store's rankings against a naive sort of everything it holds: kept as models
change, after models leave, and rebuilt in steps while changes go on."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest

from engine.health import ModelHealth
from streams.healthstore import RANKED, HealthStore, flush_in_steps, rebuild_rankings

T0 = 1_700_000_000.0


def naive(store: HealthStore, name: str, n: int) -> list[tuple[str, Any]]:
    """The first ``n`` models by ``name`` from a full pass over the store, highest first."""
    items = [(m, d[name]) for m, d in store.items()]
    items.sort(key=lambda kv: (kv[1], kv[0]), reverse=True)
    return items[:n]


def traffic(store: HealthStore, rng: random.Random, models: int, batches: int) -> None:
    """Batches of usage over ``models`` served models, marked as the usage agent marks."""
    for b in range(batches):
        touched: dict[str, ModelHealth] = {}
        for _ in range(50):
            model_id = f"model-{rng.randrange(models):06d}"
            health = touched.get(model_id) or store.decoded(model_id) or ModelHealth(model_id)
            health.update(
                T0 + b + rng.random(),
                count=rng.choice((1, 1, 2, 30)),
                cold=rng.choice((0, 0, 0, 1)),
                errors=rng.choice((0,) * 9 + (1,)),
            )
            touched[model_id] = health
        store.mark(touched)
        if b % 3 == 0:  # the worker ranks on a timer, each changed model once
            store.rank_changed()
        if b % 7 == 0:
            store.flush_oldest(len(store.pending) // 2)
    store.rank_changed()


@pytest.mark.parametrize("name", RANKED)
def test_the_listing_of_many_models_is_the_head_of_a_full_sort(name: str) -> None:
    store = HealthStore({}, ranked=200)
    store.rankings.stale = False  # told of every model from the first
    traffic(store, random.Random(4), models=8_000, batches=600)
    assert len(list(store.items())) > 5_000
    assert store.rankings.complete(name, 100)
    assert store.rankings.ranked(name, 100) == naive(store, name, 100)
    assert store.rankings.ranked(name, 50, offset=50) == naive(store, name, 100)[50:]
    assert len(store.rankings.ranked(name, 10_000)) <= 200


def test_changes_reach_the_rankings_when_ranked_each_model_once() -> None:
    store = HealthStore({}, ranked=10)
    store.rankings.stale = False
    health = ModelHealth("m")
    for ts in range(5):  # five batches change the same model before it is ranked
        health.update(T0 + ts, count=2)
        store.mark({"m": health})
    assert store.rankings.ranked("requests_total", 1) == [] and len(store.unranked) == 1
    assert store.rank_changed() == 1
    assert store.rankings.ranked("requests_total", 1) == [("m", 10)]
    store.mark({"m": health})
    store.forget(["m"])  # evicted before it was ranked again
    assert store.rank_changed() == 0 and store.rankings.ranked("requests_total", 1) == []


def test_models_that_leave_make_it_incomplete_until_rebuilt() -> None:
    store = HealthStore({}, ranked=20)
    store.rankings.stale = False
    traffic(store, random.Random(7), models=2_000, batches=200)
    store.flush()
    top = [m for m, _ in store.rankings.ranked("requests_total", 15)]
    store.forget(top)  # the engine evicted them
    assert not store.rankings.complete("requests_total", 10)
    assert store.rankings.wants_rebuild(10)
    assert asyncio.run(rebuild_rankings(store, step=100))
    assert store.rankings.complete("requests_total", 10)
    for name in RANKED:
        assert store.rankings.ranked(name, 20) == naive(store, name, 20)


def test_a_rebuild_in_steps_ranks_the_changes_made_meanwhile() -> None:
    store = HealthStore({}, ranked=50)
    traffic(store, random.Random(9), models=5_000, batches=100)
    store.flush()
    store.rankings = type(store.rankings)(50)  # a recovered table: nothing ranked yet
    assert not store.rankings.complete("cold_starts_total", 10)
    rng = random.Random(10)

    async def rebuild_while_traffic_goes_on() -> bool:
        rebuild = asyncio.create_task(rebuild_rankings(store, step=200))
        while not rebuild.done():
            traffic(store, rng, models=6_000, batches=2)  # new models too
            await flush_in_steps(store, step=100, pause=0)
        return rebuild.result()

    assert asyncio.run(rebuild_while_traffic_goes_on())
    for name in RANKED:
        assert store.rankings.complete(name, 50)
        assert store.rankings.ranked(name, 50) == naive(store, name, 50)


def test_partitions_taken_away_leave_the_rankings_and_void_a_rebuild() -> None:
    store = HealthStore({}, ranked=100)
    store.rankings.stale = False
    traffic(store, random.Random(11), models=500, batches=50)
    store.flush()
    fresh = store.rankings.begin_rebuild()
    store.rankings.drop(lambda model_id: model_id.endswith(("0", "2", "4")))
    assert not any(m.endswith(("0", "2", "4")) for m, _ in store.rankings.ranked("last_seen", 100))
    assert store.rankings.stale and not store.rankings.finish_rebuild(fresh)
