"""The clinician review of explanations (``xmed-review``): readers rate the explanation panels of
eyes (cases) in the browser, one rating per (reader, case, method), and the ratings become a reader
study.

- :mod:`~xmed.review.session`: the session folder's contract (``session.json``, ``cases/``) and the
  blinded protocol (each reader's case order, the A/B letters of panels);
- :mod:`~xmed.review.build`: a session from an ``xmed-explain`` run, or a model and images;
- :mod:`~xmed.review.panels`: the panel images (heatmap layer, amplified difference map) and what an
  edit changed and how far to trust it;
- :mod:`~xmed.review.store`: the ratings in SQLite, acknowledged only once committed, and the
  study's lock;
- :mod:`~xmed.review.views`: a case as the page and the export both show it (its text, and the one
  template set ``templates/``);
- :mod:`~xmed.review.server`: the page (Starlette; ``templates/``, ``static/``);
- :mod:`~xmed.review.export`: a self-contained HTML report (with each reader's progress and the
  study's statistics) and a PNG per case;
- :mod:`~xmed.review.analysis` and :mod:`~xmed.review.study`: the statistics of the reader study;
- :mod:`~xmed.review.simulate`: simulated readers, and the power of a planned study.

Nothing heavy loads here.

Example:
    >>> from xmed.review.analysis import SCALES
    >>> SCALES
    ('location', 'rationale')
"""
