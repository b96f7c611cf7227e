"""The shopctl/postgres image: Debian's PostgreSQL 15 package installed on the Python base.

No registry and no network inside a build: the host's apt downloads the .debs that
postgresql-15 needs and the base lacks (apt is told the base's own dpkg status, so it
fetches only those: 29 packages, ~70 MB, about a second from the host's mirror), the
build context carries them and `dpkg -i` installs them in one layer. That takes ~20 s
where a debootstrap with the package would take a minute and a second root filesystem.

The server runs as `postgres`, uid and gid 999 (made before the packages, so Debian's
scripts keep it): the official image's numbers, so either image can take over the
other's data volume. No cluster is created at build time: shopctl's start script makes
one in the data volume (shopctl.infra.postgres).

This module holds what the image is and the host-side download; shopctl.images.base
builds it beside the other infra images and imports this module, never the reverse.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from shopctl.errors import OperationFailed, RuntimeUnavailable

POSTGRES_IMAGE = "shopctl/postgres:15"
PYTHON_BASE = "shopctl/python:3.11"  # = shopctl.images.base.PYTHON_IMAGE
PACKAGES = ("postgresql-15",)
UID = GID = 999
BINARIES = "/usr/lib/postgresql/15/bin"
DEBS = "debs"  # the context's folder of packages

DOCKERFILE = f"""\
FROM {PYTHON_BASE}
COPY {DEBS}/ /tmp/{DEBS}/
RUN groupadd --system --gid {GID} postgres \\
 && useradd --system --uid {UID} --gid {GID} --home-dir /var/lib/postgresql \\
    --shell /bin/sh postgres \\
 && printf '#!/bin/sh\\nexit 101\\n' > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d \\
 && mkdir -p /etc/postgresql-common \\
 && echo 'create_main_cluster = false' > /etc/postgresql-common/createcluster.conf \\
 && dpkg -i --force-confold /tmp/{DEBS}/*.deb \\
 && rm -rf /tmp/{DEBS} /usr/sbin/policy-rc.d \\
 && install -d -o {UID} -g {GID} -m 700 /var/lib/postgresql/data
ENV PATH={BINARIES}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
ENV PGDATA=/var/lib/postgresql/data
USER {UID}:{GID}
EXPOSE 5432
"""


def download_debs(base_status: bytes, folder: Path) -> list[Path]:
    """The .debs PACKAGES need on a system whose dpkg status is `base_status`, fetched
    by the host's apt into `folder` (emptied first). Raises RuntimeUnavailable without
    apt, OperationFailed when apt cannot resolve or fetch them."""
    apt = shutil.which("apt-get")
    if apt is None:
        raise RuntimeUnavailable(
            "building shopctl/postgres:15 needs apt-get on this host (Debian's packages)",
            hint="set infra.postgres.image to a PostgreSQL image your registry provides "
                 "(e.g. postgres:15)")
    shutil.rmtree(folder, ignore_errors=True)
    (folder / "partial").mkdir(parents=True)
    status = folder.parent / f"{folder.name}.status"
    status.write_bytes(base_status)
    command = [apt, "-o", f"Dir::State::status={status}", "-o", f"Dir::Cache::archives={folder}",
               "-o", "Debug::NoLocking=1", "-o", "APT::Get::Download-Only=1",
               "install", "--no-install-recommends", "-y", "-q", *PACKAGES]
    result = subprocess.run(command, capture_output=True, text=True)
    status.unlink(missing_ok=True)
    shutil.rmtree(folder / "partial", ignore_errors=True)
    (folder / "lock").unlink(missing_ok=True)
    debs = sorted(folder.glob("*.deb"))
    if result.returncode != 0 or not debs:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-10:])
        raise OperationFailed(
            f"apt could not fetch {', '.join(PACKAGES)} for shopctl/postgres:15",
            hint=f"`apt-get update` may help; apt said:\n{tail}")
    return debs
