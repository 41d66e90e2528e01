"""Serving: REST + gRPC front ends over one dynamically batched engine.

Imports only ``model.artifacts`` / ``model.predictor`` from the model package (the bundle API), never training code.
"""
