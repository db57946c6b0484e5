"""Small helpers that other packages (mindformers) import from ``mindpet.utils``."""
