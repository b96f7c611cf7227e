"""The shopctl/registry image: the host's Debian docker-registry binary (Docker's
distribution 2.8) on the Python base, for the lab's registry (shopctl.lab_registry).

Like Consul's and Prometheus's, the binary is a Go program linked against glibc only,
so it is copied onto the Python base rather than debootstrapped. It runs as nobody and
keeps its blobs in /var/lib/registry (a volume). No auth and plain HTTP: it is reached on
the host's loopback and on the lab's private network only.

This module holds what the image is (its recipe's inputs); shopctl.images.base builds it.
"""

from __future__ import annotations

REGISTRY_IMAGE = "shopctl/registry:2.8"
PYTHON_BASE = "shopctl/python:3.11"  # = shopctl.images.base.PYTHON_IMAGE
REGISTRY_UID = REGISTRY_GID = 65534
STORAGE_DIR = "/var/lib/registry"

CONFIG = f"""\
version: 0.1
log:
  level: info
  fields:
    service: registry
storage:
  filesystem:
    rootdirectory: {STORAGE_DIR}
  delete:
    enabled: true
http:
  addr: :5000
  headers:
    X-Content-Type-Options: [nosniff]
"""

DOCKERFILE = f"""\
FROM {PYTHON_BASE}
COPY docker-registry /usr/local/bin/docker-registry
COPY config.yml /etc/docker/registry/config.yml
RUN install -d -o {REGISTRY_UID} -g {REGISTRY_GID} {STORAGE_DIR}
USER {REGISTRY_UID}:{REGISTRY_GID}
EXPOSE 5000
ENTRYPOINT ["/usr/local/bin/docker-registry"]
CMD ["serve", "/etc/docker/registry/config.yml"]
"""
