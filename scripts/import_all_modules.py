"""Import a package and every module under it; exit 1 naming the first that fails.

Alembic migration scripts (`*.migrations.*`) are skipped: Alembic loads them itself, inside
a migration context, and they cannot be imported on their own.
"""

import importlib
import pkgutil
import sys


def main(package_name: str) -> int:
    package = importlib.import_module(package_name)
    names = [package_name]
    names += [
        m.name
        for m in pkgutil.walk_packages(package.__path__, f"{package_name}.")
        if ".migrations." not in f"{m.name}."
    ]
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError as error:
            print(f"{name}: {error} (is the dependency declared in its pyproject.toml?)")
            return 1
    print(f"{package_name}: {len(names)} modules import alone")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
