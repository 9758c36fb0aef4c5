"""labkit: the instruments and labs behind Container Labs.

Nothing happens at import: no engine connection, no plotting style, no file written.
"""

__version__ = "0.1.0"
