"""``ablate explore``: a local web page over a finished study, one column per masking of the study
(``Run.masking``: a preset such as ``dirichlet_4m``, or a family).

- ``checkpoints.py``: the best finished run of each masking by the study's objective, loaded once.
- ``scenes.py``: the input scene (held-out, generated from a seed, a typed caption, an upload, or an image
  with a typed caption) as tokens, with its ground truth where it has one.
- ``uploads.py``: the user's PNG or JPEG checked, resized to the data's canvas and kept by id.
- ``predict.py``: one strategy's generations, confidences, scores, changes from hiding, attention maps,
  training masks and time on it.
- ``features.py``: held-out scenes laid out by each model's encoder features, in one shared frame.
- ``draw.py``: native images as PNG data URLs for the page.
- ``requests.py`` and ``server.py``: the validated HTTP API (FastAPI) and the static page in ``static/``.
"""
