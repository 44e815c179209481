"""What the commands do, as functions: each runs a model over a data set and writes a run folder.

The layers, from the bottom: ``xmed.data``, ``xmed.models``, ``xmed.explain`` and ``xmed.metrics``
work on tensors and never write a run folder; :mod:`xmed.inference` is the one way a model is run
over data (Lightning's predict loop, on any device); this package turns those into the outputs of
a run — :mod:`~xmed.pipeline.training`, :mod:`~xmed.pipeline.evaluation`,
:mod:`~xmed.pipeline.prediction`, :mod:`~xmed.pipeline.explanation`, with the tables, plots and
model-card sections in :mod:`~xmed.pipeline.reports`; ``xmed.cli`` holds only the Hydra entry
points that call them with a composed config.

Example::

    from omegaconf import OmegaConf
    from xmed.pipeline.evaluation import evaluate
    cfg = OmegaConf.load("outputs/demo/eval/.hydra/config.yaml")
    evaluate(cfg)["auroc"]
"""
