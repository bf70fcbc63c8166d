"""The library's exceptions: every mistake a user can make raises a FeatxError child."""


class FeatxError(Exception):
    """Base class; the CLI prints these as ``Error: …`` and exits 1, the service returns 4xx."""


class BackboneError(FeatxError):
    """Unknown backbone, unavailable or incompatible weights."""


class SourceError(FeatxError):
    """A dataset source that cannot be read: missing path, empty folder, malformed manifest."""


class StoreError(FeatxError):
    """A feature store or dataset that does not exist, or is busy or inconsistent."""


class ImageError(FeatxError):
    """One image that cannot be decoded; embedding records it as a failure and carries on."""


class TrainingError(FeatxError):
    """A fine-tuning run that cannot go on: bad settings, or a loss that diverged."""
