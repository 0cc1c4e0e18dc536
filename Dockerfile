# Runnable image of kidney-node: the node on embedded defaults (SQLite and the archive in
# the volume /opt/kidney-node/var), DICOM on 11112, HTTP on 8080 (on the container's
# network only with KIDNEY_NODE_HTTP__TOKEN set: docker/entrypoint.sh).
#
# CPU torch (default):  docker build -t kidney-node .
# CUDA torch:           docker build -t kidney-node:cuda \
#     --build-arg BASE_IMAGE=nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04 \
#     --build-arg EXTRA_PACKAGES="python3 python3-venv" --build-arg TORCH=cu126 .
#   (Ubuntu 24.04's python3 is 3.12; run with --gpus all.)
# Without a registry: `make image` builds it on a Debian base made here (README, Docker).
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}

# TORCH: the torch build (cpu, cu126, ...; empty: what the build's pip configuration
# gives). PIP_OPTS: more pip options. EXTRA_PACKAGES: Debian/Ubuntu packages a base lacks.
ARG TORCH=cpu
ARG PIP_OPTS=""
ARG EXTRA_PACKAGES=""
ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1

# dcmtk: dcmdjpeg decodes 12-bit JPEG Extended (service/imaging/dcmtk_decode.py).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends make dcmtk ${EXTRA_PACKAGES} \
    && rm -rf /var/lib/apt/lists/*

# The working directory belongs to the user who installs into it.
RUN useradd --create-home --uid 1000 kidney \
    && install -d -o 1000 -g 1000 /opt/kidney-node
WORKDIR /opt/kidney-node
COPY --chown=1000:1000 . .
USER 1000:1000
RUN make install TORCH="${TORCH}" PIP_OPTS="${PIP_OPTS}" && mkdir -p var

VOLUME ["/opt/kidney-node/var"]
EXPOSE 11112 8080
HEALTHCHECK --interval=30s --timeout=5s CMD ["/opt/kidney-node/.venv/bin/python", "-c", "import socket; socket.create_connection(('127.0.0.1', 11112), 3)"]
ENTRYPOINT ["/opt/kidney-node/docker/entrypoint.sh"]
CMD ["serve"]
