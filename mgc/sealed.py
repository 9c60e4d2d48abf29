"""An object pickled where it is made and unpickled where it is used, for the processes that only
pass it on. Ray Train's controller unpickles its arguments as it starts: a config sealed in them
costs it no import of the modules its classes live in (mgc.train imports torch, scikit-learn and
matplotlib: seconds a run), and Ray's record of the run shows the config's size, not its bytes."""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, repr=False)
class Sealed:
    """`obj` pickled (`seal`), opened where it is used (`open`)."""

    data: bytes

    @classmethod
    def seal(cls, obj: Any) -> Sealed:
        """`obj` pickled."""
        return cls(pickle.dumps(obj))

    def open(self) -> Any:
        """The sealed object, unpickled."""
        return pickle.loads(self.data)

    def __repr__(self) -> str:
        return f"Sealed({len(self.data)} bytes)"
