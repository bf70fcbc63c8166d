"""Every exception featx raises, in one hierarchy; messages name parameters, and the skins map them to flags
and HTTP statuses."""

from __future__ import annotations


class FeatxError(Exception):
    """Base class; the CLI prints these as ``Error: …`` and exits 1, the service answers with a 4xx
    (serve/errors.py says which).

    ``params`` names the library parameters the message mentions (``batch_size``, ``weights``…),
    so a skin can say them its own way (the CLI as ``--batch-size``, ``--weights``).
    """


    def __init__(self, message: str, *, params: tuple[str, ...] = ()):
        super().__init__(message)
        self.params = tuple(params)


class ParameterError(FeatxError):
    """A parameter value out of its range or of the wrong form; the message starts with its name (``also``: other
    parameters it names, as ``name=value``)."""


    def __init__(self, param: str, message: str, *, also: tuple[str, ...] = ()):
        super().__init__(f"{param} {message}", params=(param, *also))
        self.param = param


class BackboneError(FeatxError):
    """Unknown backbone, unavailable or incompatible weights."""


class DamagedModelError(BackboneError):
    """A converted model under the cache whose files are not the ones written (bytes changed, truncated,
    missing, or made for another configuration); featx converts it again rather than run it."""

    def __init__(self, folder, problem: str):
        super().__init__(f"the converted model in {str(folder)!r} is damaged: {problem}", params=("runtime",))
        self.folder, self.problem = folder, problem


class SourceError(FeatxError):
    """A dataset source that cannot be read: missing path, empty folder, malformed manifest."""


class ImageError(FeatxError):
    """One image that cannot be decoded; embedding records it as a failure and carries on."""



class StoreError(FeatxError):
    """A feature store or dataset that does not exist or is inconsistent."""



class DatasetNotStoredError(StoreError):
    """No feature store (among those matching the settings asked for) holds the dataset."""


class DamagedStoreError(StoreError):
    """A store whose catalog SQLite cannot read: skipped when listing, reported by verify."""


    def __init__(self, store, problem: str):
        super().__init__(f"store {str(store)!r} is damaged: its catalog cannot be read ({problem}). Run `featx "
                         "verify` to see what is wrong; move that folder aside (its vectors cannot be trusted) and "
                         "embed again.")
        self.store, self.problem = store, problem


class StoreBusyError(StoreError):
    """Another process holds the store's write lock; reading still works, writing must wait."""



class DataError(FeatxError):
    """A dataset that cannot serve this purpose: no labels, one class, a missing split."""



class BundleError(FeatxError):
    """A head bundle that cannot be read, or that belongs to another backbone configuration."""


class SearchError(FeatxError):
    """An index that cannot be built, read or used with this data, or a query it cannot answer."""


class TrainingError(FeatxError):
    """A fine-tuning run that cannot go on: bad settings, or a loss that diverged."""

