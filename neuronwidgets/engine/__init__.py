"""The ranking engine: capture activations, split the model after a layer, ablate units, keep statistics.

Nothing here knows about ranking methods or widgets; methods are built on top of these pieces.
"""
