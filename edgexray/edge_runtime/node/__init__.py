"""The device as a DICOM node (server.py has the map of its parts)."""
