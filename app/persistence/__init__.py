"""Persistence: records of every request, and content-addressed blobs."""
