"""Limits that keep parsing, checking and evaluating an expression bounded in time and memory."""

from __future__ import annotations

from typing import Final

VARIABLES: Final = ("event", "async", "vars")
"""Top-level variables an expression may read; anything else is refused when the app syncs."""

SEARCH_VARIABLES: Final = ("event", "output")
"""What a run search's expression reads: the run's triggering event and its output."""

MAX_SOURCE_BYTES: Final = 16 * 1024
"""Longer expressions are refused: parsing cost and error messages stay bounded."""

MAX_DEPTH: Final = 100
"""Deepest nesting of the syntax tree; keeps every recursive pass far from Python's recursion limit."""

MAX_COST: Final = 1_000_000
"""Work one evaluation may do, in cost units of roughly 50 ns of interpreter time (about 50 ms in all).

One unit is charged for each syntax node evaluated (per element inside macros: `all`, `exists`,
`exists_one`, `filter` and `map` charge elements x nodes of their body up front), for each element of a
list or map that `in` or `==` walks, for each 64 characters that `+`, `==`, ordering, `contains`,
`lowercase` or `uppercase` copy or compare, for each 8 characters `json_parse` reads and each 8 list items
`+` copies, and for each 16 byte-steps of an RE2 search (subject bytes x program size). Real expressions
over events (at most 512 KB) use a few thousand units; running out raises ExpressionEvalError
"expression exceeded its evaluation budget"."""

MAX_STRING_CHARS: Final = 1 << 20
"""Longest string `+` may build (twice the largest event); `json_parse` reads at most this many characters."""

MAX_LIST_ITEMS: Final = 1 << 18
"""Longest list `+` may build (an event of 512 KB holds at most about 256 K elements)."""

MAX_PATTERN_CHARS: Final = 1000
"""Longest regular expression `matches()` accepts (bounds compile time and the pattern cache's memory)."""

INT64_MIN: Final = -(1 << 63)
INT64_MAX: Final = (1 << 63) - 1
UINT64_MAX: Final = (1 << 64) - 1
