"""The report page: one self-contained HTML file (images embedded as data: URIs, no script, no external file).

Small builders that return HTML strings; every text from the workdir is escaped. Metric cells carry their
exact value (`data-value`, Python's `repr` of the float) next to the printed percentage, so a reader or a test
can check the page against the metrics module without parsing rounded text.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0 auto; max-width: 1100px;
       padding: 0 1.2em 3em; color: #111; line-height: 1.4; }
h1 { margin-top: 0.8em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: 0.2em; margin-top: 2em; }
table { border-collapse: collapse; margin: 0.6em 0 1.2em; font-size: 0.9em; }
th, td { border: 1px solid #bbb; padding: 0.2em 0.5em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
thead th { background: #eee; }
figure { margin: 1em 0 1.6em; } figure img { max-width: 100%; height: auto; border: 1px solid #ddd; }
figcaption { font-size: 0.85em; color: #333; max-width: 60em; }
pre { background: #f6f6f6; padding: 0.6em; overflow-x: auto; font-size: 0.8em; }
.note { background: #fff4d6; border-left: 4px solid #e69f00; padding: 0.4em 0.8em; }
nav ul { columns: 2; }
"""


def esc(text: Any) -> str:
  return html.escape(str(text), quote=True)


@dataclasses.dataclass(frozen=True)
class Image:
  """A PNG to embed: its bytes, alternative text, caption, and the file it was also written to (relative)."""

  png: bytes
  alt: str
  caption: str = ""
  file: str = ""


def figure(image: Image) -> str:
  data = base64.b64encode(image.png).decode("ascii")
  link = f' (<a href="{esc(image.file)}">{esc(image.file)}</a>)' if image.file else ""
  caption = f"<figcaption>{esc(image.caption)}{link}</figcaption>" if image.caption or link else ""
  return f'<figure><img src="data:image/png;base64,{data}" alt="{esc(image.alt)}">{caption}</figure>'


class Td(str):
  """A pre-rendered `<td>` element (from `metric_cell`), put into `table` as it is."""


def table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
  """A table; plain cells are escaped, `Td` cells are inserted as they are."""
  head = "".join(f"<th>{esc(h)}</th>" for h in header)
  body = "".join("<tr>" + "".join(c if isinstance(c, Td) else f"<td>{esc(c)}</td>" for c in row) + "</tr>"
                 for row in rows)
  return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def metric_cell(value: float | None, **attributes: str) -> Td:
  """A `<td>` printing `value` in percent (two decimals) and holding its exact value in `data-value`."""
  if value is None:
    return Td("<td></td>")
  attrs = "".join(f' data-{esc(k)}="{esc(v)}"' for k, v in attributes.items())
  return Td(f'<td class="metric"{attrs} data-value="{float(value)!r}">{100.0 * float(value):.2f}</td>')


def markdown_tables(text: str) -> str:
  """The pipeline's `tables.md`: pipe tables become HTML tables, other lines paragraphs."""
  out, block = [], []

  def flush():
    if block:
      cells = [[c.strip() for c in line.strip().strip("|").split("|")] for line in block]
      rows = [r for r in cells[1:] if not all(set(c) <= set("-: ") for c in r)]
      out.append(table(cells[0], rows))
      block.clear()

  for line in text.splitlines():
    if line.strip().startswith("|"):
      block.append(line)
      continue
    flush()
    if line.strip():
      out.append(f"<p><strong>{esc(line.strip())}</strong></p>")
  flush()
  return "\n".join(out)


def key_values(values: Mapping[str, Any]) -> str:
  return table(["", "value"], [(str(k), "" if v is None else str(v)) for k, v in values.items()])


def preformatted(value: Any) -> str:
  text = value if isinstance(value, str) else json.dumps(value, indent=1, sort_keys=True)
  return f"<pre>{esc(text)}</pre>"


def details(summary: str, body: str, *, open_: bool = False) -> str:
  return f"<details{' open' if open_ else ''}><summary>{esc(summary)}</summary>{body}</details>"


def page(title: str, sections: Sequence[tuple[str, str, str]], *, intro: str = "") -> str:
  """The whole page: `sections` are (anchor id, heading, body HTML); a table of contents links them."""
  toc = "".join(f'<li><a href="#{esc(a)}">{esc(h)}</a></li>' for a, h, _ in sections)
  body = "".join(f'<section id="{esc(a)}"><h2>{esc(h)}</h2>{b}</section>' for a, h, b in sections)
  return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
          f'<meta name="viewport" content="width=device-width, initial-scale=1"><title>{esc(title)}</title>'
          f"<style>{CSS}</style></head><body><h1>{esc(title)}</h1>{intro}<nav><ul>{toc}</ul></nav>{body}"
          "</body></html>\n")
