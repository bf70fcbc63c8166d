"""Embedding: the runner (decoders → mapper → writer), loose files through the cache, and the Ray engine."""

from ..lazy import lazy_exports

ENGINES = ("local", "ray")  # what runs the model: this machine, or Ray actors (featx.embed.ray_engine)

_EXPORTS = {
    "DecoderPool": "decoders", "decode_batch": "decoders",
    "embed_files": "files",
    "Embedder": "mapper",
    "EmbedResult": "runner", "Engine": "engines", "LocalEngine": "engines", "embed_into_store": "runner", "embed_source": "runner",
    "embed_missing": "runner",
}
__all__ = sorted(_EXPORTS) + ["ENGINES"]
__getattr__ = lazy_exports(__name__, _EXPORTS)
