"""asd_jax: anomalous sound detection for machine condition monitoring, in JAX.

Data flows one way: wav -> fbank -> encoder -> pooled embedding (per layer) ->
kNN score -> normalised / fused score -> official DCASE metrics.
"""

__version__ = "0.1.0"
