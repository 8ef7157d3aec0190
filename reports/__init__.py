"""Reports rendered from a drill's results: results.json, junit.xml and report.html.

Reports are derived only from :class:`engine.journal.Results`, never from live state, so
a report can be re-rendered later from results.json and will show the same figures.
"""

from reports.writers import (
    FILENAMES,
    load_results,
    render_html,
    render_junit,
    write_all,
    write_html,
    write_json,
    write_junit,
)

__all__ = [
    "FILENAMES",
    "load_results",
    "render_html",
    "render_junit",
    "write_all",
    "write_html",
    "write_json",
    "write_junit",
]
