# syntax=docker/dockerfile:1
# rolecall: one image for the operator (`rolecall run`, the default) and the credentials
# sidecar the webhook injects (`rolecall sidecar`). docs/image.md says how it is built,
# published and tested (`make image-test` builds this file with buildah).
#
#   docker build -t ghcr.io/rolecall/rolecall:0.1.0 .
#
# BASE_IMAGE: any Debian-like image with Python 3.11 and its venv module; both stages use it
# (the virtual environment links to the base's interpreter).
ARG BASE_IMAGE=python:3.11-slim

# Stage 1: a virtual environment with rolecall and its dependencies, pinned by constraints.txt
# (the same pins `make test` installs). Behind a proxy: --build-arg HTTPS_PROXY=... (and
# HTTP_PROXY, NO_PROXY), --build-arg PIP_INDEX_URL=<mirror>, and a corporate CA bundle as the
# build secret `ca-bundle` (docker build --secret id=ca-bundle,src=/path/to/ca.pem).
FROM ${BASE_IMAGE} AS build
ARG PIP_INDEX_URL=https://pypi.org/simple
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore
WORKDIR /src
COPY pyproject.toml constraints.txt README.md ./
COPY operator/ operator/
# The venv's own pip and setuptools go once the install is done: nothing installs at run time.
# Then what rolecall never loads: kubernetes' asyncio client (kubernetes/aio, 66 MB; the
# operator talks through kopf and the synchronous client) and botocore's models of every AWS
# service but STS and the SSO pair its credential chain can use (23 MB -> 1.4 MB).
RUN --mount=type=secret,id=ca-bundle \
    if [ -s /run/secrets/ca-bundle ]; then export PIP_CERT=/run/secrets/ca-bundle; fi \
    && python3 -m venv /opt/rolecall \
    && /opt/rolecall/bin/pip install --no-cache-dir --constraint constraints.txt . \
    && /opt/rolecall/bin/pip uninstall --yes pip setuptools \
    && rm -rf /opt/rolecall/lib/python3*/site-packages/kubernetes/aio \
    && find /opt/rolecall/lib/python3*/site-packages/botocore/data -mindepth 1 -maxdepth 1 -type d \
        ! -name sts ! -name sso ! -name sso-oidc -exec rm -rf {} +

# Stage 2: the base image plus that environment; no compiler, no source tree, no pip.
FROM ${BASE_IMAGE}
LABEL org.opencontainers.image.title="rolecall" \
      org.opencontainers.image.description="AWS IAM roles for Kubernetes workloads, on any cluster" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/rolecall/rolecall"
# The base's pip (python:3.11-slim has one) goes too. 65532 gets a name: kopf asks for the
# user's name at start (getpass.getuser(): no name, no operator).
RUN if python3 -m pip --version >/dev/null 2>&1; then \
        python3 -m pip uninstall --yes --no-cache-dir pip setuptools wheel; \
    fi \
    && echo 'nonroot:x:65532:65532:rolecall:/nonexistent:/usr/sbin/nologin' >> /etc/passwd \
    && echo 'nonroot:x:65532:' >> /etc/group
COPY --from=build /opt/rolecall /opt/rolecall
ENV PATH=/opt/rolecall/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# 65532: the conventional "nonroot" uid; the chart runs it with a read-only root filesystem.
USER 65532:65532
WORKDIR /tmp
EXPOSE 8080 9443
ENTRYPOINT ["rolecall"]
CMD ["run"]
