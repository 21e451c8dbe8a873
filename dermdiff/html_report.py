"""HTML pages from the jinja2 templates in `dermdiff/templates/` (installed as package data).

The evaluation report and the demo report are template files, as the study app's pages are, so the
page can be read and edited as HTML and the Python that fills it stays short. Values are escaped.
"""

from __future__ import annotations


def render_page(template: str, path: str, **context) -> str:
    """Renders `dermdiff/templates/<template>` with `context` into the file `path` (UTF-8); returns `path`."""
    from jinja2 import Environment, PackageLoader, select_autoescape

    environment = Environment(loader=PackageLoader("dermdiff", "templates"), autoescape=select_autoescape(default=True))
    html = environment.get_template(template).render(**context)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(html)
    return path
