"""Wire formats, detector files and scan context: no physics, no Qt.

The lowest layer of nanomaps: it knows how EIGER frames travel (DECTRIS stream
messages, DECTRIS/NeXus HDF5 files) and which frame is which scan point.
"""
