"""The segment-anywhere runtime: SAM model code behind the BentoML service.

Nothing in this package knows about HTTP frameworks or cloud control planes; the
service (``service.py``) and the platform folders (``deploy/``) build on it.
"""
