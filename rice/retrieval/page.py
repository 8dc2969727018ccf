"""`rice search --html`: one static page with each query's sampled frames and its top-k shop images and scores.

The images are written as thumbnails into a folder beside the page (``results.html`` -> ``results_files/``) and
referenced by relative paths, so the page opens from anywhere the two are copied together. The page layout is the
template ``templates/search_page.html``.
"""

from __future__ import annotations

import html
import os
import shutil
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from string import Template

from PIL import Image

from rice.retrieval.catalogue import SearchHit

THUMB = 160


def _thumbnail(image: Image.Image, path: Path, size: int = THUMB) -> None:
    image = image.convert("RGB")
    image.thumbnail((size, size))
    image.save(path, quality=90)


def _metadata(hit: SearchHit) -> str:
    """The manifest's columns of a hit (title, price, ...), escaped; a web address (http/https only) as a link."""
    lines = []
    for key, value in (hit.metadata or {}).items():
        text = html.escape(str(value))
        if str(value).startswith(("http://", "https://")):
            text = f'<a href="{text}" rel="noopener noreferrer">{html.escape(str(key))}</a>'
        else:
            text = f"{html.escape(str(key))}: {text}"
        lines.append(f'<br><span class="meta">{text}</span>')
    return "".join(lines)


def write_search_page(out: str | os.PathLike[str], queries: Sequence[str | os.PathLike[str]],
                      frames: Sequence[Sequence[Image.Image]], hits: Sequence[Sequence[SearchHit]],
                      title: str = "rice search") -> Path:
    """Write the page and its images; returns the page path. Every image it references exists."""
    from rice.data.frames import load_image

    page = Path(out)
    assets = page.with_name(f"{page.stem}_files")
    shutil.rmtree(assets, ignore_errors=True)
    assets.mkdir(parents=True)
    sections = []
    for q, (query, query_frames, row) in enumerate(zip(queries, frames, hits)):
        frame_tags = []
        for f, frame in enumerate(query_frames):
            name = f"q{q:04d}_frame{f:02d}.jpg"
            _thumbnail(frame, assets / name, 2 * THUMB)
            frame_tags.append(f'<img src="{assets.name}/{name}" alt="frame {f + 1}">')
        figures = []
        for hit in row:
            name = f"q{q:04d}_rank{hit.rank:03d}.jpg"
            try:
                _thumbnail(load_image(hit.path), assets / name)
                image = f'<img src="{assets.name}/{name}" alt="{html.escape(hit.id)}">'
            except (ValueError, TypeError, OSError):  # the shop file is gone: say so instead of a broken image
                image = "<div>(image missing)</div>"
            group = f"<br>{html.escape(hit.group)}" if hit.group else ""
            figures.append(f"<figure>{image}<figcaption>#{hit.rank} {html.escape(hit.id)}<br>"
                           f'<span class="score">{hit.score:.4f}</span>{group}{_metadata(hit)}</figcaption></figure>')
        sections.append(
            f'<section class="query"><h2>{html.escape(str(query))}</h2>'
            f'<div class="label">sampled frames</div><div class="frames">{"".join(frame_tags)}</div>'
            f'<div class="label">top {len(row)} shop images</div><div class="hits">{"".join(figures)}</div></section>'
        )
    template = Template(resources.files("rice.retrieval").joinpath("templates/search_page.html").read_text())
    page.write_text(template.substitute(title=html.escape(title), body="\n".join(sections), thumb=THUMB))
    return page
