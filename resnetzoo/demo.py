"""The main job behind ``make demo``.

For now: build every registered model, check it against torchvision with the same weights and
print the table (``resnetzoo.parity``). The fine-tune -> export -> benchmark pipeline grows here.
"""

from __future__ import annotations

from .parity import main

if __name__ == "__main__":
    raise SystemExit(main())
