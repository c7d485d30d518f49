"""A tiny MLServer runtime whose load takes a configurable time (tests and benchmarks).

``load_seconds`` in the model settings' ``parameters.extra`` (else the environment
variable ``SLEEPY_LOAD_SECONDS``, else 0.2) is how long ``load()`` takes. ``predict`` echoes
its inputs. This file runs inside MLServer's own environment, not warmcast's.
"""

import asyncio
import os

from mlserver import MLModel
from mlserver.types import InferenceRequest, InferenceResponse


class SleepyRuntime(MLModel):
    async def load(self) -> bool:
        extra = (self.settings.parameters.extra if self.settings.parameters else None) or {}
        seconds = float(extra.get("load_seconds", os.environ.get("SLEEPY_LOAD_SECONDS", 0.2)))
        await asyncio.sleep(seconds)
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        return InferenceResponse(model_name=self.name, outputs=[])
