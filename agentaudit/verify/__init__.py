"""`agentaudit verify` and `agentaudit export` over a store (issue 10).

Not shippable (it reads the store and imports the whole package); the checking itself is
`agentaudit.trail.audit`, which ships in an export bundle unchanged.
"""
