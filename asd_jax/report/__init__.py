"""Results a person can look at: ROC curves, score histograms, embedding maps, training curves, one HTML page.

  python -m asd_jax.report --workdir=DIR        # writes DIR/report/index.html and DIR/report/figures/*.png

`workdir` reads a pipeline workdir into plain arrays (the only module that knows the workdir's files);
`roc`, `histograms`, `embedding_map` and `curves` draw figures from NumPy arrays; `html` assembles the page;
`build` joins them. The figure modules need matplotlib (the `[report]` extra); importing this package does not.
"""
