"""``python -m bot live ...`` is the same as ``python -m bot.main live ...``."""

from bot.main import main

raise SystemExit(main())
