"""Error types shared across kroncl. Each carries a message that names the bad value and what to change."""


class KronclError(Exception):
    """Base class of every error kroncl raises on purpose."""


class ConfigError(KronclError, ValueError):
    """A configuration value is invalid; the message names the config key to change."""


class AdapterConfigError(KronclError, ValueError):
    """An adapter cannot be built as configured (factor does not divide, bad target, ...)."""


class AdapterLoadError(KronclError):
    """An adapter file does not match the model or is malformed."""


class AdapterStateError(KronclError, RuntimeError):
    """An adapter operation does not fit the layer's current state (unknown set, merged set, non-finite merge)."""


class QuantizationError(KronclError, ValueError):
    """A tensor cannot be quantized as asked (non-finite values, non-float dtype, bad scheme)."""


class QuantFormatError(KronclError, ValueError):
    """Stored quantized data is malformed: missing/extra keys, wrong dtype, truncated, bad shape."""
