"""ACRIMA: 705 disc-centred photographs (396 glaucomatous, 309 normal) from Spain.

Citation: Diaz-Pinto et al., "CNNs for automatic glaucoma assessment using fundus images: an
extensive validation", BioMedical Engineering OnLine 18, 29 (2019).

Layout expected (the figshare release; the naming rule is confirmed, the folder depth is not
fixed, so the tree below ``root`` is searched)::

    root/                         e.g. ACRIMA/ or Database/
      Images/Im001_ACRIMA.jpg     normal
      Images/Im311_g_ACRIMA.jpg   glaucoma ("_g_" in the name)

The label is in the file name: ``_g_`` marks glaucoma, its absence a normal eye; there is no
label file. Extensions are matched case-insensitively (the release has a few ``.JPG``). An image
file whose name does not follow ``Im<number>[_g]_ACRIMA`` is reported, not guessed.

Harmonisation: ``label`` 1 = glaucoma, 0 = normal; ACRIMA publishes no split, eye, patient,
findings or vCDR (left empty / NaN). ``id`` is the file stem (``Im311_g_ACRIMA``).

Example:
    >>> from xmed.data.datasets import get_dataset
    >>> ds = get_dataset("acrima", root="/data/ACRIMA")      # doctest: +SKIP
    >>> int(ds.labels().sum()), len(ds)                      # doctest: +SKIP
    (396, 705)
"""

from __future__ import annotations

import re

from xmed.data.datasets.base import FundusDataset, Record
from xmed.data.datasets.common import list_images

#: an ACRIMA file name; group 1 is "_g" for glaucoma
PATTERN = re.compile(r"^Im\d+(_g)?_ACRIMA$", re.IGNORECASE)


class AcrimaDataset(FundusDataset):
    """ACRIMA as released (see the module docstring for the layout).

    Args:
        root: a folder containing the ACRIMA images (at any depth).
        **kwargs: :class:`~xmed.data.datasets.base.FundusDataset` arguments.
    """

    def load_records(self) -> list[Record]:
        records = []
        for path in list_images(self.root, recursive=True):
            match = PATTERN.match(path.stem)
            if match is None:
                self.skip_or_raise(path, "file name does not follow ACRIMA's "
                                         "Im<number>[_g]_ACRIMA pattern, so its label is unknown")
                continue
            records.append(Record(id=path.stem, image_path=path,
                                  label=1.0 if match.group(1) else 0.0, source=self.name))
        if not records and not self.skipped:
            self.skip_or_raise(self.root, "no ACRIMA images (Im<number>[_g]_ACRIMA.jpg) found")
        return records
