"""``python -m sparseinst_cli`` (what ``torchrun -m sparseinst_cli train ...`` runs)."""

from .cli.app import main

main()
