"""The two kinds of failure mgc distinguishes.

`MgcError` is a user mistake or environment problem found before work starts (a missing FMA root,
an unwritable output): the CLI prints its message as one line. `Reject` is a single bad track
found during work: it becomes a row in the rejects table and the run goes on.
"""


class MgcError(Exception):
    """A problem the user can fix; its message names the file or option and what is wrong."""


class Reject(Exception):
    """A track that cannot be used, with a machine-readable reason and a human detail."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail

    def naming(self, path: str) -> "Reject":
        """This reject with a detail that names `path` (checks on decoded audio do not know it)."""
        return self if self.detail.startswith(path) else Reject(self.reason, f"{path}: {self.detail}")
