"""The README's and the docs' measured tables are the JSON of the runs that measured them, rendered by
``benchmarks/tables.py``: a page whose table and JSON disagree fails here."""
import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("tables", ROOT / "benchmarks" / "tables.py")
tables = importlib.util.module_from_spec(spec)
spec.loader.exec_module(tables)


@pytest.mark.parametrize("page", tables.PAGES)
def test_every_marked_table_is_its_json_rendered(page):
    text = (ROOT / page).read_text()
    assert text == tables.render(text), f"{page}: run python benchmarks/tables.py"


def test_every_table_is_on_a_page_and_a_changed_number_is_caught():
    names = {m.group(2) for page in tables.PAGES for m in tables.MARK.finditer((ROOT / page).read_text())}
    assert names == set(tables.TABLES)
    summary = json.loads((ROOT / tables.TABLES["compare_digits"][0]).read_text())
    table = tables.compare_table(summary)
    floor = summary["rows"][0]
    assert f"{floor['fd']:.3g} ± {floor['fd_std']:.2g}" in table and "**best**" in table
    summary["rows"][0]["fd"] += 0.5
    assert tables.compare_table(summary) != table
