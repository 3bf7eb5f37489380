"""The verifiable trail's pure core (issue 10): Merkle trees, leaves, signed notes, checkpoints.

No I/O here: `merkle` (RFC 6962/9162 trees and proofs), `leaf` (the bytes a row commits to),
`note` (C2SP signed notes, Ed25519) and `checkpoint` (C2SP tlog checkpoints, chain origins).
The sink, the store and the CLI build on these.
"""
