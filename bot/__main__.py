"""`python -m bot` is the same as the `vm-bot` console script."""

from bot.cli import main

raise SystemExit(main())
