# The build stage compiles the engine's hot path (mypyc, setup.py) into a wheel; the image
# itself carries no compiler.
FROM python:3.11-slim AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY schemas ./schemas
COPY streams ./streams
COPY agents ./agents
COPY engine ./engine
COPY tools ./tools
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.11-slim
WORKDIR /app
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
ENV WARMCAST_DATA_DIR=/var/lib/warmcast
EXPOSE 6066
# /readyz answers in constant time (503 while starting, rebalancing, with bad settings or
# an agent crash-looping); /livez is the liveness probe of orchestrators that have one.
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
  CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('WARMCAST_WEB_PORT', '6066') + '/readyz', timeout=4)"
CMD ["warmcast", "worker"]
