"""``python -m contrastkit`` (and ``torchrun -m contrastkit``) runs the ``contrastkit`` command."""

from contrastkit.cli.main import main

raise SystemExit(main())
