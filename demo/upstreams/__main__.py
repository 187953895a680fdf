"""``python -m demo.upstreams``: serve the sample upstreams on fixed ports."""

from __future__ import annotations

from demo.upstreams.runner import main

raise SystemExit(main())
