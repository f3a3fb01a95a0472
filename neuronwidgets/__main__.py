"""``python -m neuronwidgets``: the command line (also under ``torchrun ... -m neuronwidgets``)."""

from neuronwidgets.cli import main

raise SystemExit(main())
