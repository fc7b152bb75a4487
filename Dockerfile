# pgqueue in a container. One image, four entry points:
#   pgqueue serve     the API (add --no-workers when `pgqueue worker` containers do the work)
#   pgqueue worker    runner, executor, rescuer and cron scheduler, to scale out
#   pgqueue realtime  realtime subscribers (WebSocket, SSE) and publishing alone, beside a serverless
#                     API (terraform/realtime.tf runs it on ECS)
#   pgqueue migrate   one-off schema step before the others start (see docker-compose.yml)
# The package is installed from the checkout with the pinned versions of requirements/lock.txt, as in the README.
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY pgqueue ./pgqueue
COPY api ./api
COPY sql ./sql
COPY requirements ./requirements
RUN pip install -c requirements/lock.txt . && rm -rf /src

RUN useradd --system --uid 10001 --no-create-home pgqueue
USER pgqueue
WORKDIR /tmp

ENV PGQUEUE_HOST=0.0.0.0 \
    PGQUEUE_PORT=8288
EXPOSE 8288

# `pgqueue serve` (and `pgqueue realtime`) answers /health with 200 once the database is reachable and
# migrated (503 else). Only those listen: docker-compose.yml turns the check off for the worker and migrate containers.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('PGQUEUE_PORT', '8288'), timeout=2)"]

ENTRYPOINT ["pgqueue"]
CMD ["serve"]
