"""What both lifecycles share for claims under `MAX_PROCESSING_PER_USER` (no I/O)."""

from __future__ import annotations

# Candidates one capped claim tries before it answers None (each skipped because another claim
# of the same user was running, or took the user's last place, at the same instant).
CAPPED_CLAIM_TRIES = 3


class SkipUser(Exception):
    """This try's user cannot be claimed for now: roll the try back and skip the user."""

    def __init__(self, user_id: int) -> None:
        super().__init__(user_id)
        self.user_id = user_id


__all__ = ["CAPPED_CLAIM_TRIES", "SkipUser"]
