"""`python -m etong` is the `etong` command."""

from etong.cli import main

raise SystemExit(main())
