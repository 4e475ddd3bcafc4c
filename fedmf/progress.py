"""One progress bar for a whole federated run, advancing once per client upload.

A round of an encrypting backend over hundreds of clients can take minutes; a bar that
moves once per round shows nothing meanwhile. :class:`ClientProgress` is a tqdm bar of
``rounds x clients_per_round`` steps: its :meth:`~ClientProgress.client_done` is the
backend's progress hook (``backend.aggregate(..., progress=bar.client_done)``, the
contract of :mod:`secagg.backend`), so it advances as the server absorbs each upload
and tqdm's rate gives the ETA of the whole run. :meth:`~ClientProgress.round_done`
writes the round's summary line above the bar and fills the slots of clients that
dropped out, so the bar ends at its total.

The bar is drawn only on a terminal (stderr a TTY) and when enabled (the command
line's ``--no-progress`` turns it off); the per-round lines are printed either way.
"""

from __future__ import annotations

import sys

from tqdm import tqdm


def stderr_is_terminal() -> bool:
    """True when the bar would be seen (stderr is a terminal)."""
    return sys.stderr.isatty()


class ClientProgress:
    """A per-client bar over ``rounds`` rounds of ``clients_per_round`` clients (module docstring)."""

    def __init__(self, rounds: int, clients_per_round: int, *, enabled: bool = True,
                 desc: str = "clients") -> None:
        self.rounds, self.per_round = int(rounds), int(clients_per_round)
        self.round = 0
        self.bar = tqdm(total=self.rounds * self.per_round, desc=desc, unit="client",
                        disable=not (enabled and stderr_is_terminal()), file=sys.stderr,
                        dynamic_ncols=True)

    def client_done(self, client_id: int) -> None:
        """The backend's progress hook: one client's upload was absorbed."""
        if self.bar.n < (self.round + 1) * self.per_round:
            self.bar.update(1)

    def round_done(self, line: str, **postfix: str) -> None:
        """Close a round: fill the dropped clients' slots, show ``postfix``, print ``line``."""
        self.round += 1
        self.bar.update(min(self.round, self.rounds) * self.per_round - self.bar.n)
        self.bar.set_postfix(round=f"{self.round}/{self.rounds}", **postfix)
        tqdm.write(line)

    def close(self) -> None:
        self.bar.close()

    def __enter__(self) -> ClientProgress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
