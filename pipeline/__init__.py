"""Object-detection batch prediction output (AutoML Vision, Vertex AI) -> Parquet tables and dead letters."""
