#!/usr/bin/env python3
"""Build the installable add-on zip: ``dist/bildwerk_blender-<version>.zip``.

The zip holds one folder, ``bildwerk_blender/``, with ``__init__.py`` (``bl_info``, for
Blender 3.4 to 4.1: Preferences > Add-ons > Install) and ``blender_manifest.toml`` (for
4.2+: Preferences > Get Extensions > Install from Disk, or drag and drop).

    python3 clients/blender/build.py            # prints the zip's path
    python3 clients/blender/build.py --out /tmp
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
PACKAGE = "bildwerk_blender"
SKIP_DIRS = {"__pycache__"}
SKIP_SUFFIXES = (".pyc", ".pyo", ".orig", ".rej", "~")


def version() -> str:
    with open(os.path.join(HERE, PACKAGE, "blender_manifest.toml"), encoding="utf-8") as fh:
        match = re.search(r'^version\s*=\s*"([^"]+)"', fh.read(), re.MULTILINE)
    if not match:
        raise SystemExit("blender_manifest.toml has no version")
    return match.group(1)


def build(out_dir: str) -> str:
    source = os.path.join(HERE, PACKAGE)
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, f"{PACKAGE}-{version()}.zip")
    tmp = path + ".part"
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        for root, dirs, files in os.walk(source):
            dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS and not d.startswith("."))
            for name in sorted(files):
                if name.endswith(SKIP_SUFFIXES) or name.startswith("."):
                    continue
                full = os.path.join(root, name)
                arcname = os.path.join(PACKAGE, os.path.relpath(full, source))
                zf.write(full, arcname.replace(os.sep, "/"))
    os.replace(tmp, path)  # never a half-written zip under the final name
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join(HERE, "dist"),
                        help="folder for the zip (default: clients/blender/dist)")
    args = parser.parse_args(argv)
    print(build(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
