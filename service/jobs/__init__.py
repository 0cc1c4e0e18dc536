"""Job running: device choice, the runner, restart recovery."""
