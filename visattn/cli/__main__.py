"""``python -m visattn.cli`` (and ``torchrun -m visattn.cli train RECIPE``)."""

from visattn.cli import main

raise SystemExit(main())
