"""``python -m adapters.samples``: serve the sample upstreams on fixed ports."""

from __future__ import annotations

from adapters.samples.runner import main

raise SystemExit(main())
