"""``python -m sparseinst_cli`` (what ``torchrun -m sparseinst_cli train ...`` runs)."""

from .cli import main

main()
