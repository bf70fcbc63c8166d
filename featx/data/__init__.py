"""Data: sources (folders, CSV, built-ins), content hashes, image decoding, and the one reader every path uses."""

from ..lazy import lazy_exports

BUILTINS = ("digits", "fashion-mnist")  # datasets featx can open by name

_EXPORTS = {
    "content_hash": "hashing", "hash_source": "hashing",
    "decode_input": "reader", "read_image": "reader", "read_input": "reader",
    "ArraySource": "sources", "CsvSource": "sources", "FileListSource": "sources", "FolderSource": "sources", "Item": "sources", "Source": "sources", "SubsetSource": "sources", "split_from_key": "sources",
    "open_source": "open",
}
__all__ = sorted(_EXPORTS) + ["BUILTINS"]
__getattr__ = lazy_exports(__name__, _EXPORTS)
