# syntax=docker/dockerfile:1
# The one image of interlinked: flow runs (ECS tasks, AWS Batch jobs), the Prefect workers
# (`prefect worker start --type ecs | aws-batch`) and the services.
#
#   docker build -t interlinked:$(git rev-parse --short HEAD) .
#
# - Python packages: exactly requirements.lock (hash-checked, --no-deps: nothing is resolved
#   here), plus this project built as a wheel; setuptools (pinned below) only builds that wheel
#   in a throwaway environment and is not in the image;
# - R (r-base-core, r-cran-jsonlite, r-cran-httr) for R script jobs, with the repository's R
#   packages (r/interlinker, r/aws.s3: the seed's R interface) installed in R's site library;
# - the repository's code at /opt/interlinked, the working directory of every flow run
#   (prefect.yaml's pull step `set_working_directory: "{{ $INTERLINKED_CODE_DIR }}"`);
# - a non-root user (uid 10001), with /scratch writable for the worker service's PREFECT_HOME
#   and TMPDIR (infra/terraform/modules/compute mounts a volume there).
# tests/unit/test_dockerfile.py checks these properties (no Docker engine is needed for that).

# Python 3.11 like the lock (make lock); bump together with `make lock`.
ARG PYTHON_IMAGE=python:3.11.7-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ARG SETUPTOOLS_VERSION=80.9.0
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
COPY requirements.lock /build/requirements.lock
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install --require-hashes --no-deps -r /build/requirements.lock
COPY pyproject.toml README.md /build/src/
COPY interlinked /build/src/interlinked
COPY flows /build/src/flows
COPY blocks /build/src/blocks
COPY analyses /build/src/analyses
RUN python -m venv /build/tools \
 && /build/tools/bin/pip install "setuptools==${SETUPTOOLS_VERSION}" \
 && /build/tools/bin/pip wheel --no-deps --no-build-isolation --wheel-dir /build/wheels /build/src \
 && /opt/venv/bin/pip install --no-deps /build/wheels/interlinked-*.whl \
 && /opt/venv/bin/pip check

FROM ${PYTHON_IMAGE}
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends r-base-core r-cran-jsonlite r-cran-httr \
 && rm -rf /var/lib/apt/lists/*
RUN groupadd --gid 10001 interlinked \
 && useradd --uid 10001 --gid 10001 --create-home --home-dir /home/interlinked --shell /usr/sbin/nologin interlinked \
 && mkdir -p /scratch/prefect /scratch/tmp \
 && chown -R 10001:10001 /scratch
COPY --from=build /opt/venv /opt/venv
WORKDIR /opt/interlinked
COPY prefect.yaml pyproject.toml ./
COPY interlinked ./interlinked
COPY flows ./flows
COPY blocks ./blocks
COPY analyses ./analyses
COPY r ./r
RUN R CMD INSTALL --no-test-load -l /usr/local/lib/R/site-library r/interlinker r/aws.s3
ENV PATH=/opt/venv/bin:$PATH \
    VIRTUAL_ENV=/opt/venv \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    INTERLINKED_CODE_DIR=/opt/interlinked \
    PREFECT_HOME=/home/interlinked/.prefect \
    PREFECT_SERVER_ANALYTICS_ENABLED=false
USER 10001:10001
# ECS tasks and Batch jobs pass their command (the workers: `prefect flow-run execute` with
# PREFECT__FLOW_RUN_ID); the worker service runs `prefect worker start --pool ... --type ...`.
CMD ["prefect", "flow-run", "execute"]
