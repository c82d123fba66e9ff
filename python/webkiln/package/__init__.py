"""Writing built artifacts for the static site."""
