# jido-tasks worker / beat / flower image: `docker compose up` (see docker-compose.yml).
# Apps with their own actions build FROM this image, install their package and set
# JIDO_TASKS_ACTION_MODULES.
FROM python:3.11.9-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Install from a throwaway copy of the source; only the installed package stays in the image.
COPY pyproject.toml README.md /tmp/src/
COPY jido_tasks /tmp/src/jido_tasks
RUN pip install /tmp/src && rm -rf /tmp/src

# Run as an unprivileged user. The working directory is the one writable place: beat's
# schedule file, `config/jido-tasks.toml` (optional, mount it) and disk snapshots
# (`data/snapshots`, mount a volume there with JIDO_TASKS_PERSISTENCE=disk) live in it.
RUN useradd --system --uid 10001 --create-home --home-dir /home/jido jido \
    && mkdir -p /var/lib/jido-tasks \
    && chown jido:jido /var/lib/jido-tasks
USER jido
WORKDIR /var/lib/jido-tasks

CMD ["jido-tasks", "worker", "-c", "2"]
