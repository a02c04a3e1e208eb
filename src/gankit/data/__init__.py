"""Data sources by name (see `gankit list datasets`)."""
from gankit.data.toy import DATASETS, Points, VectorSource, make_source

__all__ = ["DATASETS", "Points", "VectorSource", "make_source"]
