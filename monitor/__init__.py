"""The application: command line, live session, links to viewers, bluesky, simulation, GUI, report.

Subpackages by responsibility; their layering is in docs/architecture.md §3."""
