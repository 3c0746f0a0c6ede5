"""Where MariaDB's programs are: PATH first, then the sbin directories Debian installs to."""

from __future__ import annotations

import os
import shutil

SEARCH_PATH = ["/usr/sbin", "/usr/local/sbin", "/usr/bin", "/usr/local/bin"]


class MariaDBError(RuntimeError):
    """A MariaDB program is missing or failed."""


def find_binary(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path=os.pathsep.join(SEARCH_PATH))
    if found is None:
        raise MariaDBError(
            f"{name} not found on PATH or in {', '.join(SEARCH_PATH)}: install mariadb-server "
            "and mariadb-client (./run does it with apt-get)"
        )
    return found
