"""The outputs floor: finding files, scanning them into reports (CSV, JSONL, HTML), the network view, scoring on
a Ray cluster, and the ``gan-face`` command line. It builds on the runtime core (``gan_face.detector`` and below)
and is never imported by it."""
