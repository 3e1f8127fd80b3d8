"""One reader per input format, each producing a ``RawDomain``; ``rec_transfer.data.formats`` picks one."""

from rec_transfer.data.readers.amazon import read_amazon
from rec_transfer.data.readers.recbole import read_recbole
from rec_transfer.data.readers.unisrec import read_unisrec

__all__ = ["read_amazon", "read_recbole", "read_unisrec"]
