"""Data Docs pages point at the site's own copies of their scripts and styles (no CDN)."""

from __future__ import annotations

from pathlib import Path

from pipelines.quality.data_docs import VENDOR, localize_site

PAGE = """<html><head>
<link rel="stylesheet" href="https://maxcdn.bootstrapcdn.com/bootstrap/4.3.1/css/bootstrap.min.css">
<link rel="stylesheet" href="https://cdn.jsdelivr.net/npm/@forevolve/bootstrap-dark@1.1.0/dist/css/bootstrap-prefers-dark.css">
<script src="https://code.jquery.com/jquery-3.7.1.min.js"></script>
<script src="https://unpkg.com/bootstrap-table@1.19.1/dist/bootstrap-table.min.js"></script>
<script src="https://cdn.jsdelivr.net/npm/vega@5"></script>
<link rel="stylesheet" href="https://cdnjs.cloudflare.com/ajax/libs/font-awesome/6.6.0/css/all.min.css">
<link rel="shortcut icon" href="./static/images/favicon.ico">
</head><body>suite</body></html>
"""


def test_every_page_loads_its_scripts_from_the_site_and_calls_nothing_outside(tmp_path: Path):
    site = tmp_path / "local_site"
    nested = site / "validations" / "gold" / "customer_360" / "run"
    nested.mkdir(parents=True)
    (site / "index.html").write_text(PAGE)
    (nested / "page.html").write_text(PAGE)

    assert localize_site(site) is None
    index = (site / "index.html").read_text()
    page = (nested / "page.html").read_text()
    assert "https://" not in index and "https://" not in page
    assert 'src="static/vendor/jquery/jquery.min.js"' in index
    assert 'src="../../../../static/vendor/bootstrap-table/dist/bootstrap-table.min.js"' in page
    assert 'href="./static/images/favicon.ico"' in index  # the site's own links stay
    for asset in (
        "jquery/jquery.min.js",
        "bootstrap/css/bootstrap.min.css",
        "bootstrap-table/dist/bootstrap-table.min.js",
        "font-awesome/css/all.min.css",
        "font-awesome/webfonts/fa-solid-900.woff2",
    ):
        assert (site / VENDOR / asset).is_file(), asset
    assert localize_site(site) is None and (site / "index.html").read_text() == index  # idempotent
