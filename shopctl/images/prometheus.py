"""The shopctl/prometheus image: the host's Debian prometheus binary on the Python base.

Debian's /usr/bin/prometheus (2.42, from `scripts/install-system.sh prometheus`) is a Go
binary linked against glibc only, so, as for Consul, copying it onto the Python base
takes seconds, where a debootstrap with the package would take a minute and pull in
the web UI's JavaScript libraries. The image's ENTRYPOINT is the binary, like the
official prom/prometheus image, so both take the same arguments. Its Python is what
lets the same image, or the base, run shopctl's Consul bridge (shopctl.prom.http_sd).

This module must not import shopctl.images.base at import time: base imports it to
register the recipe.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from shopctl.errors import RuntimeUnavailable
from shopctl.runtime.base import Progress

if TYPE_CHECKING:
    import docker

PROMETHEUS_IMAGE = "shopctl/prometheus:2.42"
PYTHON_BASE = "shopctl/python:3.11"  # = shopctl.images.base.PYTHON_IMAGE
# Prometheus runs as nobody, as in the official prom/prometheus image, so the two images
# can take turns on one TSDB volume; the image makes /prometheus (the TSDB) nobody's.
PROMETHEUS_UID = PROMETHEUS_GID = 65534
TSDB_DIR = "/prometheus"

DOCKERFILE = f"""\
FROM {PYTHON_BASE}
COPY prometheus /usr/local/bin/prometheus
COPY prometheus.yml /etc/prometheus/prometheus.yml
RUN install -d -o {PROMETHEUS_UID} -g {PROMETHEUS_GID} {TSDB_DIR}
USER {PROMETHEUS_UID}:{PROMETHEUS_GID}
EXPOSE 9090
ENTRYPOINT ["/usr/local/bin/prometheus"]
CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]
"""

# Only for `docker run shopctl/prometheus:2.42` alone; shopctl always passes its own.
DEFAULT_CONFIG = """\
global:
  scrape_interval: 15s
scrape_configs:
- job_name: prometheus
  static_configs:
  - targets: [localhost:9090]
"""


def build_prometheus(client: docker.DockerClient, fingerprint: str, progress: Progress) -> str:
    from shopctl.images.base import LABEL_RECIPE, PYTHON_IMAGE, ensure_image
    from shopctl.images.engine import build_from_context
    from shopctl.images.tarball import ContextTar

    binary = shutil.which("prometheus") or (
        "/usr/bin/prometheus" if Path("/usr/bin/prometheus").exists() else None
    )
    if binary is None:
        raise RuntimeUnavailable(
            "no prometheus binary on this host to put in the Prometheus image",
            hint="install it with `make system` (scripts/install-system.sh prometheus), or "
            "set infra.prometheus.image to an image your registry provides (prom/prometheus)",
        )
    ensure_image(client, PYTHON_IMAGE, progress)
    context = ContextTar()
    context.add_bytes("Dockerfile", DOCKERFILE.encode())
    context.add_bytes("prometheus.yml", DEFAULT_CONFIG.encode())
    context.add_file("prometheus", Path(binary).resolve())
    return build_from_context(
        client,
        context.finish(),
        PROMETHEUS_IMAGE,
        labels={LABEL_RECIPE: fingerprint},
        subject=PROMETHEUS_IMAGE,
        progress=progress,
    )
