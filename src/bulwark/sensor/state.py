"""The sensor's local state (the device's "registry"): onboarding information, enrolment, service state."""

from __future__ import annotations

import copy
import json
import os
import tempfile
import uuid
from pathlib import Path
from typing import Any, Protocol

RUNNING = "running"
STOPPED = "stopped"


def new_state(device_identity: str | None = None) -> dict[str, Any]:
    """A fresh device: an identity of its own, not onboarded, service running."""
    return {
        "deviceIdentity": device_identity or str(uuid.uuid4()),
        "onboarding": None,
        "enrolment": None,
        "service": RUNNING,
        "currentAction": None,
    }


class StateStore(Protocol):
    """Where a sensor keeps its state: a file for a real device, memory for a simulated one."""

    def load(self) -> dict[str, Any]: ...

    def save(self, state: dict[str, Any]) -> None: ...


class FileState:
    """State in a JSON file, replaced atomically so that a crash never leaves half a file."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def exists(self) -> bool:
        """Whether the device has a state file yet."""
        return self.path.exists()

    def load(self) -> dict[str, Any]:
        """The stored state, or a fresh one if there is no file."""
        if not self.path.exists():
            return new_state()
        return {**new_state(), **json.loads(self.path.read_text())}

    def save(self, state: dict[str, Any]) -> None:
        """Write the whole state atomically (the file may hold a credential: owner-only)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.")
        try:
            with os.fdopen(fd, "w") as handle:
                json.dump(state, handle, indent=2, sort_keys=True)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


class MemoryState:
    """State held in memory, for simulated fleets."""

    def __init__(self, state: dict[str, Any]) -> None:
        self._state = copy.deepcopy(state)

    def load(self) -> dict[str, Any]:
        """A copy of the state."""
        return copy.deepcopy(self._state)

    def save(self, state: dict[str, Any]) -> None:
        """Keep a copy of ``state``."""
        self._state = copy.deepcopy(state)
