"""What a user runs on a finished run: embed/index/search (``embed``), the web app (``browse``),
and the demo world's generator."""
