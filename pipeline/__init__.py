"""prediction-tables: object-detection batch prediction output into clean tables."""
__version__ = '0.3.0'  # CHANGELOG.md says what changed
