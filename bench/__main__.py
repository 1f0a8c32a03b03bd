"""``python -m bench``: run portanet's benchmark suite."""

from bench.cli import main

raise SystemExit(main())
