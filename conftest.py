"""pytest's own doctest collection imports a module and checks that it came from the file
collected; a compiled engine module comes from its extension instead. The doctests of the
compiled modules run from tests/engine/test_native.py, against whichever form
the engine runs in."""

from engine.native import COMPILED, source_of

collect_ignore = [str(source_of(module)) for module in COMPILED]
