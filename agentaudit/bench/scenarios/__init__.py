"""Labelled traffic for detector quality: bench and test support, not runtime code.

`traffic` simulates tenants, `inject` writes labelled anomalies into it, `suites` and
`drift_suite` are the fixed-seed scenarios, `score` and `drift_score` measure the anomaly and
drift monitors on them, `report` gathers the figures `agentaudit bench` prints, and `events`
builds real, validated events for the jobs' tests.
"""
