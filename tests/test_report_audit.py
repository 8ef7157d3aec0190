"""What the report says to an auditor beyond the verdict (issue 19): what a seed really loaded."""

from __future__ import annotations

from engine.journal import ComponentResult
from reports import render_html
from tests.test_scrub import _results


def _component(**kw: object) -> ComponentResult:
    return ComponentResult.model_validate({"name": "stock", "kind": "postgres", **kw})


def test_components_table_shows_what_a_sql_file_seed_really_loaded() -> None:
    results = _results("name: s\n")
    results.components = [
        _component(
            seed={"customers": 0, "orders": 0, "database": "warehouse"},
            content={"rows": 130_500, "objects": 11},
            row_counts={"table public.orders": 130_000, "table public.customers": 500},
        )
    ]
    html = render_html(results)
    assert "130,500 rows" in html and "table public.orders 130,000; table public.customers 500" in html
    assert "<dt>customers</dt><dd>0</dd>" not in html  # the generator's count is not shown as the content
    assert "<dt>database</dt><dd>warehouse</dd>" in html


def test_older_results_without_content_still_show_the_seed() -> None:
    results = _results("name: s\n")
    results.components = [_component(seed={"customers": 20, "orders": 60})]
    html = render_html(results)
    assert "as the seed reported it" in html and "<dt>customers</dt><dd>20</dd>" in html


def test_many_tables_are_capped_with_a_count_of_the_rest() -> None:
    results = _results("name: s\n")
    rows = {f"table public.t{i:02d}": i for i in range(25)}
    results.components = [_component(content={"rows": sum(rows.values())}, row_counts=rows)]
    html = render_html(results)
    assert "table public.t24 24" in html and "table public.t04 4" not in html
    assert "and 5 more tables in results.json" in html
