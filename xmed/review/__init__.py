"""Clinician review of explanations: readers rate explanation panels of eyes (cases), one rating per
(reader, case, method), and :mod:`xmed.review.analysis` turns those ratings into a reader study
(scores with case-bootstrap intervals, paired method comparisons, inter-reader agreement).

Nothing heavy loads here; import :mod:`xmed.review.analysis` for the statistics.

Example:
    >>> from xmed.review.analysis import SCALES
    >>> SCALES
    ('location', 'rationale')
"""
