"""The trace simulator: replays request traces on virtual time through the policy and pool code."""
