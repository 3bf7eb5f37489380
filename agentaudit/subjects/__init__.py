"""Erasure by crypto-shredding (issue 11, part E; README "Erasure").

- `keystore`: per-(tenant, subject) data keys on disk, wrapped by a key-encryption key.
- `seal`: which fields of an event are personal content, their sealed form, the sink's
  `Sealer` (before chaining) and `open_event` (for `agentaudit reveal`).
- `erasure`: `agentaudit erase` (publish `subject_erased`, then destroy the keys) and
  `agentaudit reveal` (an operator reads an event's content while its key exists).
"""
