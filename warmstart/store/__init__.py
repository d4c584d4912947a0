"""Model files: where they come from, their digests and integrity, their tiers, and loading them fast."""
