"""Circuit breakers (issue #3): pure logic, no faust.

- `config`: thresholds with per-tenant overrides (YAML);
- `signals`: error rate, loop, cost velocity, token flood, on bucketed sliding windows;
- `state`: the closed -> open -> half_open -> closed state machine of one scope;
- `messages`: the `BreakerTransition`, `ControlMessage` and `BreakerOpen` alert records;
- `board`: `BreakerBoard`, every breaker of a worker's tenants, what faust calls.
"""
