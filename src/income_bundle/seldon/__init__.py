"""Seldon Core v2 on one machine: manifests, their validation, and a seldon-mesh compatible gateway."""
