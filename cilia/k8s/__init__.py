"""Kubernetes objects: loading, typed models and validation (the bottom layer)."""
