"""Regenerate README.md's config reference from the schema: python docs/update_readme.py"""

from pathlib import Path

from minescan.config import reference_markdown

readme = Path(__file__).resolve().parents[1] / "README.md"
text = readme.read_text()
start, end = "<!-- config-reference:start -->\n", "<!-- config-reference:end -->"
head, rest = text.split(start, 1)
_, tail = rest.split(end, 1)
readme.write_text(head + start + reference_markdown() + end + tail)
print(f"updated {readme}")
