"""Package version and the supported MindSpore releases (single source of truth, read by setup.py)."""
__version__ = "0.1.0"

# The MindSpore releases mindpet supports: setup.py's install_requires, and the range
# mindpet._mindspore checks at import. CI runs the full suite on the newest (2.10) and the fast subset of
# tests/compat_subset.txt on 2.9 (`make test-compat`; README, "MindSpore versions").
MINDSPORE_REQUIREMENT = "mindspore>=2.9,<2.11"
