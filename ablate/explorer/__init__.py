"""``ablate explore``: a local web page over a finished study, one column per masking of the study
(``Run.masking``: a preset such as ``dirichlet_4m``, or a family).

- ``checkpoints.py``: the best finished run of each masking by the study's objective, loaded once.
- ``scenes.py``: the input scene (held-out, generated from a seed, or a typed caption) as tokens.
- ``predict.py``: one strategy's generations, confidences, attention maps and training masks on it.
- ``features.py``: a 2-D PCA of each model's encoder features over held-out scenes.
- ``draw.py``: native images as PNG data URLs for the page.
- ``requests.py`` and ``server.py``: the validated HTTP API (FastAPI) and the static page in ``static/``.
"""
