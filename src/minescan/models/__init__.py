"""Networks and the model directory format.

- :mod:`minescan.models.networks`: the discovery FCN and the impact CNN (Keras);
- :mod:`minescan.models.store`: a model directory (``model.keras`` + ``card.json``): save, load, normalise;
- :mod:`minescan.models.train_points`: training from labelled points on GeoTIFFs (``minescan train``);
- :mod:`minescan.models.chips`, :mod:`~minescan.models.train_chips`, :mod:`~minescan.models.score_chips`:
  labelled chip archives (.npz), training on them and scoring them (``train-chips``, ``evaluate-chips``).
- :mod:`minescan.models.imported`: published Keras ``.h5`` patch classifiers (Amazon Mining Watch) as model
  directories (``import-model``); the scan runs them with :mod:`minescan.scan.patches`.

A new detector writes a model directory whose card names its kind, bands and input scaling; the scan loads
it with :func:`minescan.models.store.load_model`.
"""
