# syntax=docker/dockerfile:1
# rolecall: one image for the operator (`rolecall run`, the default) and the credentials
# sidecar the webhook injects (`rolecall sidecar`).
#
#   docker build -t ghcr.io/rolecall/rolecall:0.1.0 .
#
# Stage 1 builds wheels for rolecall and every dependency, pinned by constraints.txt (the
# same pins `make test` installs). Stage 2 installs them with the same pip install and
# nothing else: no compilers, no source tree, no pip cache, no pip.

FROM python:3.11-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml constraints.txt README.md ./
COPY operator/ operator/
RUN pip wheel --no-cache-dir --wheel-dir /wheels --constraint constraints.txt .

FROM python:3.11-slim
LABEL org.opencontainers.image.title="rolecall" \
      org.opencontainers.image.description="AWS IAM roles for Kubernetes workloads, on any cluster" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/rolecall/rolecall"
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# --no-index: only the wheels built above; then pip itself goes (nothing installs at run time).
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links=/wheels rolecall==0.1.0 \
    && pip uninstall --yes pip setuptools wheel
# 65532: the conventional "nonroot" uid; the chart runs it with a read-only root filesystem.
USER 65532:65532
WORKDIR /tmp
EXPOSE 8080 9443
ENTRYPOINT ["rolecall"]
CMD ["run"]
