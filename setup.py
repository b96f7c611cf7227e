"""Build hook: ship the scaffolding templates, the service kit and the demo shop inside
the shopctl package, copied from this checkout's top-level folders at build time.

They stay where they are in the repository (templates/, services/shopkit, services/,
protos/, shop.yaml); a wheel carries them as shopctl/_bundle/, which shopctl.bundle
finds at run time. An editable install finds the top-level folders instead.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
# Caches, state and what builds generate: never shipped.
IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache", "*.egg-info",
                                "data", "generated", ".shopctl", "build", "dist")


class BuildWithBundle(build_py):
    def run(self):
        super().run()
        bundle = Path(self.build_lib) / "shopctl" / "_bundle"
        shutil.rmtree(bundle, ignore_errors=True)
        shutil.copytree(HERE / "templates", bundle / "templates", ignore=IGNORE)
        shutil.copytree(HERE / "services" / "shopkit", bundle / "shopkit", ignore=IGNORE)
        demo = bundle / "demo"
        for service in sorted((HERE / "services").iterdir()):
            if service.is_dir() and service.name != "shopkit":
                shutil.copytree(service, demo / "services" / service.name, ignore=IGNORE)
        shutil.copytree(HERE / "protos", demo / "protos", ignore=IGNORE)
        shutil.copy2(HERE / "shop.yaml", demo / "shop.yaml")


setup(cmdclass={"build_py": BuildWithBundle})
