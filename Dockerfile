# vm-bot container image: slim Python, a wheel install into its own virtual environment, a non-root user.
#
# These are exactly the steps .ci/wheel-check.sh runs in CI on every change (build the wheel, install it into a fresh
# venv, run `vm-bot` from a directory without the sources): no base image can be pulled where vm-bot is developed,
# so that script is what proves this file's steps work. Keep the two in step.
FROM python:3.12-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY migrations ./migrations
RUN python -m pip wheel --no-cache-dir --no-deps --wheel-dir /dist .

FROM python:3.12-slim
RUN useradd --system --uid 10001 --create-home --home-dir /home/vmbot vmbot \
    && mkdir /data && chown vmbot /data
COPY --from=build /dist /dist
# The postgres extra brings psycopg 3, so the same image serves SQLite (one replica) and PostgreSQL (several).
RUN python -m venv /opt/vm-bot \
    && /opt/vm-bot/bin/python -m pip install --no-cache-dir "$(ls /dist/vm_bot-*.whl)[postgres]" \
    && rm -rf /dist
ENV PATH=/opt/vm-bot/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    HOST=0.0.0.0 \
    PORT=3000 \
    DATABASE_URL=sqlite:////data/vm-bot.db
USER vmbot
WORKDIR /home/vmbot
VOLUME ["/data"]
EXPOSE 3000
# /readyz: the database answers and takes writes, migrations are at head, and the watcher ticked recently.
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('PORT', '3000') + '/readyz', timeout=2)"]
CMD ["vm-bot", "run"]
