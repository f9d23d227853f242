"""Owner-only files and directories: the state directory holds prompts, answers, spend and keys.

Run outside systemd (no UMask=0077, no StateDirectoryMode=0700) a umask of 022
would leave them readable by every local user, so modes are set explicitly.
"""

from __future__ import annotations

import os
import pathlib
import stat


def private_dir(path: pathlib.Path) -> None:
    """Create the directory 0700, or narrow an existing one of ours to 0700.

    A directory someone else owns (one an admin shares on purpose) is left
    alone: chmod would fail, and the files Ponder writes in it are 0600 anyway.
    """
    path.mkdir(mode=0o700, parents=True, exist_ok=True)  # the umask filters mkdir's mode
    owner_only(path, 0o700)


def owner_only(path: pathlib.Path, mode: int = 0o600) -> None:
    """Set `mode` on a file or directory of ours that exists; leave others' alone."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return
    if st.st_uid == os.getuid() and stat.S_IMODE(st.st_mode) != mode:
        os.chmod(path, mode)
