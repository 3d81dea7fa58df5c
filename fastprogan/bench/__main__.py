"""``python -m fastprogan.bench``: the bench without the top-level CLI."""

from fastprogan.bench.cli import main

raise SystemExit(main())
