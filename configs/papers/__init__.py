"""The results tables of the papers behind crowdjax, as data (`crowdjax.paper_tables`); run them
with `python -m crowdjax.reproduce --paper=<name> --table=<n>`."""
