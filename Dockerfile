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
CMD ["warmcast", "worker"]
