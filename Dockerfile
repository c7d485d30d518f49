FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY schemas ./schemas
COPY streams ./streams
COPY agents ./agents
COPY engine ./engine
COPY tools ./tools
RUN pip install --no-cache-dir .
ENV WARMCAST_DATA_DIR=/var/lib/warmcast
EXPOSE 6066
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
  CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('WARMCAST_WEB_PORT', '6066') + '/health', timeout=4)"
CMD ["warmcast", "worker"]
