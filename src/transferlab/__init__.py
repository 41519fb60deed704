"""transferlab: pretrain, transfer, fine-tune, and measure what the transfer bought.

Importing the package is cheap and has no side effects; the heavy pieces live in submodules.
"""

__version__ = "0.1.0"


def __getattr__(name):
    # The public API, imported lazily so `import transferlab` stays cheap.
    if name in ("from_pretrained", "load"):
        from . import transfer

        return getattr(transfer, name)
    if name in ("EarlyStopping", "ModelCheckpoint", "Callback"):
        from .training import callbacks

        return getattr(callbacks, name)
    if name == "convert":  # transferlab.convert.from_hf / to_hf
        from .transfer import convert

        return convert
    raise AttributeError(f"module 'transferlab' has no attribute {name!r}")
