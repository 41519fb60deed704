"""transferlab: pretrain, transfer, fine-tune, and measure what the transfer bought.

Importing the package is cheap and has no side effects; the heavy pieces live in submodules.
"""

__version__ = "0.1.0"
