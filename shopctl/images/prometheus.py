"""The shopctl/prometheus image: the host's Debian prometheus binary on the Python base.

Debian's /usr/bin/prometheus (2.42, from `scripts/install-system.sh prometheus`) is a Go
binary linked against glibc only, so, as for Consul, copying it onto the Python base
takes seconds, where a debootstrap with the package would take a minute and pull in
the web UI's JavaScript libraries. The image's ENTRYPOINT is the binary, like the
official prom/prometheus image, so both take the same arguments. Its Python is what
lets the same image, or the base, run shopctl's Consul bridge (shopctl.prom.http_sd).

This module holds what the image is (its recipe's inputs); shopctl.images.base builds
it beside the Consul image and imports this module, never the other way round.
"""

from __future__ import annotations

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
