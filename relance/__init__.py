"""relance's command line: run the whole service locally, a worker, or check the rules."""
