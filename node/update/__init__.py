"""Signed software updates: release verification, the persisted update state machine, install beside."""
