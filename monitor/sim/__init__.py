"""Simulated hardware for the demo and tests: the ophyd EIGER stand-in, the demo session, a simulated scan sent live."""
