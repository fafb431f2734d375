# syntax=docker/dockerfile:1
# The one jobpulse image: `jobpulse run`, `jobpulse dashboard`, `jobpulse sink`,
# `jobpulse topics create`, `jobpulse produce`, ... (entry point `jobpulse`).
#
#   make image                      # docker or buildah, whichever is installed
#   make image IMAGE=<registry>/jobpulse:0.1.0
#
# The base is pinned by its full version tag. For a production build pin its digest as well,
# which makes the build reproducible whatever the tag later points to:
#   make image PYTHON_IMAGE=python:3.11.14-slim-bookworm@sha256:<digest of that tag>
# (`docker buildx imagetools inspect python:3.11.14-slim-bookworm` prints the digest).
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

# -- build: a virtualenv in /opt/jobpulse, copied whole into the runtime stage ----------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/jobpulse
WORKDIR /src
# The dependencies first, from pyproject.toml alone (all pinned there): this layer is rebuilt
# only when they change, not on every source edit.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && /opt/jobpulse/bin/pip install --no-cache-dir --requirement /tmp/requirements.txt
# Then jobpulse itself, without dependencies (they are all there). Its build directory and
# egg-info stay in this stage: the runtime stage copies the virtualenv only.
COPY README.md ./
COPY jobpulse jobpulse
COPY stack stack
COPY producer producer
COPY dataflows dataflows
COPY dashboard dashboard
COPY postgres postgres
COPY cli cli
RUN /opt/jobpulse/bin/pip install --no-cache-dir --no-deps /src

# -- runtime -----------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE}
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="jobpulse" \
      org.opencontainers.image.description="Live open job offers per category x continent: Kafka, Bytewax, Redis, PostgreSQL, Panel" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="MIT"
# PYTHONSAFEPATH: no `python -m` puts the working directory on sys.path (jobpulse's own
# children pass -P as well). XDG_CACHE_HOME: the geocoder's tables, built below, read-only.
# JOBPULSE_STATE_DIR: the one writable place (Kubernetes mounts an emptyDir there).
ENV PATH=/opt/jobpulse/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONSAFEPATH=1 \
    XDG_CACHE_HOME=/opt/jobpulse/cache \
    HOME=/var/lib/jobpulse \
    JOBPULSE_STATE_DIR=/var/lib/jobpulse
COPY --from=build /opt/jobpulse /opt/jobpulse
# The geocoder's precomputed grid (≈ 11 MB), built once here instead of at every pod start
# (the root filesystem is read-only in the pods); then the numeric non-root user that
# Kubernetes' runAsNonRoot can verify.
RUN python -c "from jobpulse.dataflows.geocoding import Geocoder; Geocoder.continent_codes([(0.0, 0.0)])" \
    && groupadd --system --gid 10001 jobpulse \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/jobpulse --no-create-home \
        --shell /usr/sbin/nologin jobpulse \
    && mkdir -p /var/lib/jobpulse /recovery \
    && chown 10001:10001 /var/lib/jobpulse /recovery
WORKDIR /var/lib/jobpulse
USER 10001:10001
EXPOSE 5006 2101 9100
# One check for every role of the image: the dashboard answers /healthz, a dataflow cluster
# member is connected to its peers, anything else is healthy while it runs. (Kubernetes
# ignores HEALTHCHECK: the manifests have their own probes, using the same checks.)
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
    CMD ["python", "-P", "-m", "jobpulse.cli.kubernetes", "healthcheck"]
ENTRYPOINT ["jobpulse"]
CMD ["--help"]
