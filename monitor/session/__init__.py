"""The processing session: the live loop (receiver thread, runs, batches, workers, results files) and the offline
driver (reprocess) over the same collector and writer. No Qt, no bluesky, no simulation."""
