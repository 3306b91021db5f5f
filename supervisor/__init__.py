"""The sender's supervisor (arbiter, admission, liveness, control socket) and the CLI."""
