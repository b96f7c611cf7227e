"""Images without a registry: base images from Debian packages, service images from code.

    ensure_base_images(config, progress)          base / consul / rabbitmq images present
    plan_service_image(config, service)           tag + content hash, nothing built
    build_service_image(config, service, progress) -> (tag, content_hash)
    build_service_images(config, services, progress) -> {service: (tag, content_hash)}

Modules: base (recipes for the shopctl/ images), rootfs (debootstrap + import), service
(plan and build), sources (what goes in, and its hash), dockerfile (the template),
wheels (host-side wheelhouses), tarball (deterministic contexts), engine (build
streaming and errors), cache (cache folder and file locks).

SERVICE_UID / SERVICE_GID: the unprivileged user every service runs as in its container
(see dockerfile); give files meant for a service (its secrets) to this owner.
"""

from shopctl.images.base import EnsuredImage, ensure_base_images, ensure_image
from shopctl.images.dockerfile import SERVICE_GID, SERVICE_UID, SERVICE_USER
from shopctl.images.service import (
    ServiceImagePlan,
    build_service_image,
    build_service_images,
    plan_service_image,
)

__all__ = [
    "SERVICE_GID",
    "SERVICE_UID",
    "SERVICE_USER",
    "EnsuredImage",
    "ServiceImagePlan",
    "build_service_image",
    "build_service_images",
    "ensure_base_images",
    "ensure_image",
    "plan_service_image",
]
