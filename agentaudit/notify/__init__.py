"""Alert delivery: the alerts topic to webhooks, Slack and Alertmanager, once per receiver.

`routes` (the routing file), `payloads` (what each receiver type is sent), `backoff` and
`deliver` (attempts, retries, the HTTP client), `receiver` (one consumer group per receiver,
commit after acknowledgement, dedup by alert id), `service` (the supervised notifier, alone
or in the worker), `redact` (secrets out of logs), `metrics` (the Prometheus counters).
README "On-call", "Alert delivery" says what "exactly once" means here.
"""
