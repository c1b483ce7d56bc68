"""Data Docs that work with no route to the internet.

Great Expectations' pages load jQuery, Bootstrap, bootstrap-table and Font Awesome from public
CDNs, and bootstrap-table draws the index's suite and validation tables: with the CDNs out of
reach (an auditor's workstation in a bank's network) the index is blank. After each build, the
pages are pointed at copies inside the site (``static/vendor/``), taken from the WebJars
``make jars`` resolved (``conf/jvm/data-docs.pom.xml``); any other external script or style
(Vega's charts, a dark theme) is dropped, so opening a page calls nothing outside the site.
"""

from __future__ import annotations

import os
import re
import zipfile
from functools import partial
from pathlib import Path

from pipelines.errors import SetupError
from pipelines.services.jars import webjars

VENDOR = Path("static") / "vendor"
_WEBJAR_ROOT = "META-INF/resources/webjars/"
# CDN address -> file under static/vendor/<library>/ (the WebJar's own layout)
_LOCAL: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern), local)
    for pattern, local in (
        (r"^https://code\.jquery\.com/jquery-[\d.]+\.min\.js$", "jquery/jquery.min.js"),
        (r"^https://cdnjs\.cloudflare\.com/ajax/libs/popper\.js/[\d.]+/umd/(.+)$", r"popper.js/umd/\1"),
        (
            r"^https://(?:stackpath|maxcdn)\.bootstrapcdn\.com/bootstrap/[\d.]+/(js|css)/(.+)$",
            r"bootstrap/\1/\2",
        ),
        (r"^https://unpkg\.com/bootstrap-table@[\d.]+/dist/(.+)$", r"bootstrap-table/dist/\1"),
        (
            r"^https://cdnjs\.cloudflare\.com/ajax/libs/bootstrap-datepicker/[\d.]+/(js|css)/(.+)$",
            r"bootstrap-datepicker/\1/\2",
        ),
        (r"^https://cdnjs\.cloudflare\.com/ajax/libs/font-awesome/[\d.]+/css/(.+)$", r"font-awesome/css/\1"),
    )
)
PAGE_SIZE = 100
_PAGINATION = "'pagination': 'true', "
_PAGE_SIZE_SET = "'pageSize': "
_TAG = re.compile(
    r"""<script[^>]*\bsrc="(?P<src>https?://[^"]+)"[^>]*>\s*</script>|<link[^>]*\bhref="(?P<href>https?://[^"]+)"[^>]*>""",
    re.I,
)


def localize_site(site: Path) -> str | None:
    """Copy the assets into ``site`` (once) and rewrite every page's external links. Where no
    WebJars were resolved (a Databricks job's wheel), the pages keep their CDN links: returns why."""
    if not site.is_dir():
        return None
    vendor = site / VENDOR
    try:
        _unpack(vendor)
    except SetupError as exc:
        return f"Data Docs load their scripts from public CDNs ({exc})"
    for page in site.rglob("*.html"):
        text = page.read_text(encoding="utf-8")
        relative = Path(os.path.relpath(vendor, page.parent)).as_posix()
        new = _TAG.sub(partial(_local_tag, vendor=relative), text)
        # bootstrap-table shows 10 rows a page: the index lists every suite on its first page
        new = (
            new.replace(_PAGINATION, f"{_PAGINATION}'pageSize': {PAGE_SIZE}, ")
            if _PAGE_SIZE_SET not in new
            else new
        )
        if new != text:
            page.write_text(new, encoding="utf-8")
    return None


def _local_tag(match: re.Match[str], vendor: str) -> str:
    url = match.group("src") or match.group("href")
    for pattern, local in _LOCAL:
        if pattern.match(url):
            return match.group(0).replace(url, f"{vendor}/{pattern.sub(local, url)}")
    return ""  # an asset with no local copy: the page must not call out


def _unpack(vendor: Path) -> None:
    """Each WebJar's files into ``vendor/<library>/`` (skipped when that version is there)."""
    for jar in webjars():
        with zipfile.ZipFile(jar) as archive:
            entries = [
                (i, i.filename[len(_WEBJAR_ROOT) :].split("/"))
                for i in archive.infolist()
                if i.filename.startswith(_WEBJAR_ROOT) and not i.is_dir()
            ]
            if not entries:
                continue
            library, version = entries[0][1][0], entries[0][1][1]
            marker = vendor / library / ".version"
            if marker.is_file() and marker.read_text() == version:
                continue
            for info, parts in entries:
                rest = parts[2:]
                if not rest or rest[0] in _SKIPPED:
                    continue
                target = vendor / library / Path(*rest)
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(archive.read(info))
            marker.write_text(version)


# sources and formats the pages never load (Font Awesome's SVGs alone are thousands of files)
_SKIPPED = {"src", "less", "scss", "svgs", "sprites", "metadata"}
