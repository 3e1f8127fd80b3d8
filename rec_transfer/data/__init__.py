from rec_transfer.data.datamodule import DomainDataModule
from rec_transfer.data.domain import Domain, PreprocessConfig, preprocess
from rec_transfer.data.errors import DataFormatError
from rec_transfer.data.raw import RawDomain
from rec_transfer.data.synthetic import synthetic_domain
from rec_transfer.data.transfer import TransferDataModule

__all__ = [
    "DataFormatError",
    "Domain",
    "DomainDataModule",
    "PreprocessConfig",
    "RawDomain",
    "TransferDataModule",
    "preprocess",
    "synthetic_domain",
]
