"""The Open Inference Protocol (KServe v2) with Triton's extensions, over REST (``/v2``) and gRPC
(``inference.GRPCInferenceService``): wire-neutral tensors, the detector's tensor contract, Triton-shaped
descriptions, error mapping, and the two thin transports. Imports nothing from ``model``."""
