"""The application floor: the ``portanet`` command, its presets, reports, plots,
self-check and draw page. Nothing in the core imports from here."""
