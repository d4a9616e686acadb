"""`smim serve`: the latent space of one model in a browser, and a JSON API.

    ops.py        the operations (reconstruct, interpolate, sample, QA, neighbours) over
                  sentencemim.api.SentenceMIM and sentencemim.qa, as plain dicts
    latentmap.py  an indexed corpus: its codes projected to 2-D (PCA; UMAP when installed)
    app.py        the FastAPI application: request models with their limits, errors as
                  one-line 4xx, request size and rate limits, the static page
    static/       index.html, app.js, style.css: hand-written, no CDN
    browser.py    drives the page in headless Chromium (tests and docs screenshots)

Needs the `serve` extra (fastapi, uvicorn); nothing here is imported by `smim` until
`smim serve` runs.
"""
