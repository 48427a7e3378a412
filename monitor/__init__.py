"""Maps, results files, figures, the command line and (later) the GUI and bluesky."""
