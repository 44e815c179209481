"""The one place a data set is named: registry key -> ``"module:Class"`` in this package.

The classes take their :attr:`~xmed.data.datasets.FundusDataset.name` from here when they are
defined, ``configs/data/<name>.yaml`` selects one by the same key (a test checks both), and the
classes are imported only when used, so a user of one data set never needs another's
dependencies.

Example:
    >>> DATASETS["refuge"]
    'refuge:RefugeDataset'
    >>> registered_name("xmed.data.datasets.refuge", "RefugeDataset")
    'refuge'
"""

from __future__ import annotations

DATASETS: dict[str, str] = {
    "phantom": "phantom:PhantomDataset",
    "phantom_render": "phantom:PhantomRenderDataset",
    "refuge": "refuge:RefugeDataset",
    "refuge2": "refuge2:Refuge2Dataset",
    "origa": "origa:OrigaDataset",
    "g1020": "g1020:G1020Dataset",
    "papila": "papila:PapilaDataset",
    "acrima": "acrima:AcrimaDataset",
    "rimone_dl": "rimone:RimOneDLDataset",
    "airogs": "airogs:AirogsDataset",
    "justraigs": "justraigs:JustRaigsDataset",
    "smdg": "smdg:SmdgDataset",
    "csv": "generic:CsvDataset",
    "image_folder": "generic:ImageFolderDataset",
    "dicom_folder": "generic:DicomFolderDataset",
    "photo_folder": "generic:PhotoFolderDataset",
}

PACKAGE = __name__.rpartition(".")[0]

_NAMES = {f"{PACKAGE}.{target.replace(':', '.')}": name for name, target in DATASETS.items()}


def registered_name(module: str, qualname: str) -> str | None:
    """The key a class is registered under (by its module and qualified name), or None."""
    return _NAMES.get(f"{module}.{qualname}")
