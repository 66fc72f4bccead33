"""Reward functions for training tests, plugged in by import path as a user would (tests.toy_rewards:NAME)."""


def first_token_even(row, state) -> float:
    """Reachable by a random tiny model in a few GRPO steps when it writes one token: half its tokens are even."""
    ids = [t for s in state.trajectory.segments if s.source == "requester" for t in s.token_ids]
    return float(bool(ids) and ids[0] % 2 == 0)
