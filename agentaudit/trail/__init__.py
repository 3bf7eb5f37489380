"""The verifiable trail's pure core (issue 10): standard library and `cryptography` only.

No I/O here, and only relative imports, so `agentaudit export` copies these modules into an
auditor's bundle verbatim: `merkle` (RFC 6962/9162 trees and proofs), `leaf` (the bytes a row
commits to), `note` (C2SP signed notes, Ed25519), `checkpoint` (C2SP tlog checkpoints, chain
origins), `pubkeys` (the public-key history), `audit` (one chain's rows against its signed
checkpoints; `reorder` judges its disturbed rows), `verdicts` and `lines` (its rules and
report lines), `bundle` (the export layout and its `verify.py`), `proof` (tlog-proof
receipts). The sink, the store and the CLI build on these.
"""
