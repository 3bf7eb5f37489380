"""OTLP/HTTP ingest: OpenTelemetry GenAI spans and evaluation events in, our
trace events out, onto the events topic (the sink prices, chains and stores them as any event).

`decode` turns a request body (protobuf or OTLP/JSON, gzip or not) into the collector's
request message; `genai` and `evals` map spans and log records to event documents; `ingest`
runs a whole request through them; `keys` resolves the tenant from an API key; `server` is the
aiohttp application that answers exporters.
"""
